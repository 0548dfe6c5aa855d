"""SVA-ENV-012: the size of the environment the kubelet gives a container, and the verdict on
it. The byte count is checked against this machine's execve (a child with the predicted
environment starts under the limit and fails with E2BIG past it), the finding on namespaces
of many services and many ports, and its absence where nothing is large."""

from __future__ import annotations

import errno
import functools
import resource
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8sobjs import container, pod, port, service

from svcaudit.core import envsize
from svcaudit.core.audit import AuditInputs, AuditSettings, audit_service
from svcaudit.core.codes import Severity
from svcaudit.core.envsize import (
    DEFAULT_EXEC_LIMIT,
    EnvLimits,
    container_env_size,
    env_size_finding,
)
from svcaudit.core.envvars import ServiceEnvIndex, container_env, exec_bytes
from svcaudit.core.expect import expect_document, parse_inventory
from svcaudit.core.model import Pod, Service
from svcaudit.core.podindex import PodIndex

NOW = datetime(2025, 1, 2, tzinfo=UTC)
LIMITS = EnvLimits.of()
KUBE = service("kubernetes", cluster_ip="10.96.0.1", ports=[port(443, "https", target=6443)])


# services of 100 ports each (~33 KB of variables per service)
HALF = 40  # ~1.3 MiB: a warning
OVER = 70  # ~2.2 MiB: an error


def many_ports(name: str, i: int, ports: int) -> dict[str, Any]:
    """A selectorless service with `ports` named ports: ~480 bytes of variables per port."""
    return service(
        name,
        ns="big",
        cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}",
        ports=[port(10000 + j, f"p{j}", target=10000 + j) for j in range(ports)],
    )


def namespace(services: int) -> list[Service]:
    """`services` services of 100 ports each in namespace big, plus default/kubernetes."""
    return list(_namespace(services))


@functools.cache
def _namespace(services: int) -> tuple[Service, ...]:
    objs = [many_ports(f"service-with-a-long-name-{i:04d}", i, 100) for i in range(services)]
    return tuple(Service.from_api(o) for o in [*objs, KUBE])


def size_of(services: list[Service], p: Pod) -> envsize.ContainerEnvSize:
    envs = ServiceEnvIndex(services)
    senv = envs.for_pod(p)
    whole = envs.exec_size(p.namespace, p.enable_service_links)
    return container_env_size(p, p.all_containers[0], senv, whole)


def finding(services: list[Service], pods: list[dict[str, Any]], audited: int = 0) -> Any:
    views = [Pod.from_api(x) for x in pods]
    return env_size_finding(services[audited], ServiceEnvIndex(services), PodIndex(views), LIMITS)


def big_pod(name: str = "app-1", **kw: Any) -> dict[str, Any]:
    return pod(name, ns="big", **kw)


# ---- the byte count is execve's ---------------------------------------------------------------


def _exec_with(env: dict[str, str]) -> int | None:
    """Start /bin/true with exactly `env` under the usual 8 MiB stack rlimit: None when it
    ran, else the errno execve failed with."""

    def eight_mib() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (8 * 1024 * 1024, resource.RLIM_INFINITY))

    try:
        subprocess.run(["/bin/true"], env=env, preexec_fn=eight_mib, check=True)
    except OSError as exc:
        return exc.errno
    return None


def test_predicted_size_is_what_execve_counts() -> None:
    """A container's predicted environment (service variables after precedence plus its own
    env) started as a real process: just under DEFAULT_EXEC_LIMIT it runs (argv and the file
    name take the few bytes left), at or past it execve fails with E2BIG. So the finding's
    error threshold is where containers really stop starting (on this kernel, 8 MiB stack)."""
    services = namespace(OVER)
    padding = "x" * 64
    p = Pod.from_api(big_pod(containers=[container(env=[{"name": "PAD", "value": padding}])]))
    full = size_of(services, p)
    assert full.bytes > DEFAULT_EXEC_LIMIT
    env = {**container_env(p.all_containers[0], ServiceEnvIndex(services).for_pod(p)).env}
    env["PAD"] = padding
    assert sum(exec_bytes(k, v) for k, v in env.items()) == full.bytes
    assert _exec_with(env) == errno.E2BIG
    # drop variables until the prediction is just under the limit (argv+filename: ~40 bytes)
    total = full.bytes
    for name in sorted(env, reverse=True):
        if total < DEFAULT_EXEC_LIMIT - 64:
            break
        total -= exec_bytes(name, env.pop(name))
    assert _exec_with(env) is None
    env["FILL"] = "y" * (DEFAULT_EXEC_LIMIT - total)
    assert sum(exec_bytes(k, v) for k, v in env.items()) > DEFAULT_EXEC_LIMIT
    assert _exec_with(env) == errno.E2BIG


# ---- the prediction --------------------------------------------------------------------------

ENV_NAMES = st.sampled_from(
    ["KUBERNETES_SERVICE_HOST", "A_SERVICE_PORT", "A_PORT", "OTHER", "PAD", "A_PORT_80_TCP"]
)
EXPLICIT = st.lists(st.tuples(ENV_NAMES, st.one_of(st.none(), st.text(max_size=20))), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(explicit=EXPLICIT, links=st.booleans())
def test_size_equals_the_kubelets_environment_counted(
    explicit: list[tuple[str, str | None]], links: bool
) -> None:
    """container_env_size == the bytes of container_env's variables plus the explicit ones
    (a repeated name once, the last value: the kubelet's map), whatever overrides what."""
    services = [
        Service.from_api(service("a", ns="big", cluster_ip="10.96.0.7")),
        Service.from_api(KUBE),
    ]
    env = [
        {"name": n, "valueFrom": {"fieldRef": {"fieldPath": "x"}}}
        if v is None
        else {"name": n, "value": v}
        for n, v in explicit
    ]
    p = Pod.from_api(big_pod(containers=[container(env=env)], enable_service_links=links))
    got = size_of(services, p)
    senv = ServiceEnvIndex(services).for_pod(p)
    own = {n: v for n, v in explicit}
    kubelet = container_env(p.all_containers[0], senv).env
    assert got.bytes == sum(exec_bytes(k, v) for k, v in kubelet.items()) + sum(
        exec_bytes(k, v) for k, v in own.items()
    )
    assert got.variables == len(kubelet) + len(own)


def test_exec_bytes_counts_utf8_nul_and_pointer() -> None:
    assert exec_bytes("A", "b") == len("A=b") + 1 + 8
    assert exec_bytes("É", "€") == 2 + 1 + 3 + 1 + 8
    assert exec_bytes("X", None) == len("X=") + 1 + 8


# ---- the finding -----------------------------------------------------------------------------


def test_consistent_namespace_has_no_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few services with a few ports: far under the warning level, no finding and the
    containers are not even visited (the cached namespace size and the largest explicit
    env bound every container)."""
    services = [
        Service.from_api(service(f"s{i}", ns="big", cluster_ip=f"10.96.1.{i + 1}"))
        for i in range(50)
    ]
    services.append(Service.from_api(KUBE))

    def visited(*args: Any) -> None:
        raise AssertionError("containers visited below the warning level")

    monkeypatch.setattr(envsize, "_largest", visited)
    assert finding(services, [big_pod(f"p{i}") for i in range(20)]) is None


def test_namespace_over_half_the_limit_warns_naming_the_largest_container() -> None:
    services = namespace(HALF)
    pods = [
        big_pod("small"),
        big_pod("big", containers=[container(env=[{"name": "BLOB", "value": "z" * 5000}])]),
        big_pod("nolinks", enable_service_links=False),
    ]
    d = finding(services, pods)
    assert d is not None and d.code == "SVA-ENV-012" and d.severity is Severity.WARNING
    assert d.subject == "Service big/service-with-a-long-name-0000"
    assert d.related == ("Pod big/big",)
    assert d.pod is None and d.container is None  # about the namespace, not one pod
    assert "pod big container app, the largest; 2 container(s) over 1.00 MiB" in d.observed
    assert d.expected.startswith("under 1.00 MiB of environment per container")
    assert "enableServiceLinks: false" in d.hint


def test_past_the_limit_is_an_error_the_container_cannot_start() -> None:
    services = namespace(OVER)
    d = finding(services, [big_pod("a"), big_pod("b")])
    assert d is not None and d.severity is Severity.ERROR
    assert "pod a container app: it cannot start (argument list too long)" in d.observed
    assert "2 container(s) over 2.00 MiB" in d.observed


def test_no_finding_when_no_container_gets_the_variables() -> None:
    """enableServiceLinks: false everywhere (the fix), terminal pods, or no pod at all:
    nothing will start with that environment."""
    services = namespace(OVER)
    assert finding(services, []) is None
    assert finding(services, [big_pod("a", enable_service_links=False)]) is None
    assert finding(services, [big_pod("done", phase="Succeeded")]) is None


def test_services_without_variables_get_no_finding() -> None:
    """A headless service adds nothing to anyone's environment: it is not part of it."""
    headless = Service.from_api(
        service("peers", ns="big", cluster_ip="None", ports=[port(80)], selector={"a": "b"})
    )
    services = [headless, *namespace(OVER)]
    assert finding(services, [big_pod()], audited=0) is None
    assert finding(services, [big_pod()], audited=1) is not None


def test_observed_text_is_rounded_so_one_more_service_rewrites_nothing() -> None:
    """Sizes are floored to 0.01 MiB: one more small service (~300 bytes) in a namespace
    far past the warning level leaves the finding's text as it was."""
    services = namespace(HALF)
    small = Service.from_api(service("x", ns="big", cluster_ip="10.96.200.1"))
    before = finding(services, [big_pod()])
    after = finding([*services, small], [big_pod()])
    assert before is not None and after is not None
    assert envsize._mib(1024 * 1024 * 2 - 1) == "1.99 MiB"
    assert before.observed == after.observed


def test_audit_reports_it_on_the_environment_aspect() -> None:
    services = namespace(HALF)
    target = services[3]
    inputs = AuditInputs(
        service=target,
        pods=[Pod.from_api(big_pod())],
        slices=[],
        nodes={},
        env_services=services,
    )
    r = audit_service(inputs, dns=None, now=NOW)
    (d,) = [d for d in r.discrepancies if d.code == "SVA-ENV-012"]
    assert d in r.env_findings
    env = r.verdicts[next(a for a in r.verdicts if str(a) == "Environment")]
    assert env.status == "False" and env.reason == "EnvTooLarge"
    # a larger budget (an unlimited stack rlimit: 6 MiB) and the same namespace is fine
    roomy = AuditSettings(exec_args_limit=6 * 1024 * 1024)
    r = audit_service(inputs, dns=None, now=NOW, settings=roomy)
    assert "SVA-ENV-012" not in {d.code for d in r.discrepancies}


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_limits_follow_the_settings(fraction: float) -> None:
    assert EnvLimits.of(DEFAULT_EXEC_LIMIT, fraction) == (
        int(DEFAULT_EXEC_LIMIT * fraction),
        DEFAULT_EXEC_LIMIT,
    )


def test_expect_document_shows_sizes_and_the_finding() -> None:
    """`svcaudit expect`: every container's envSize, and SVA-ENV-012 with the service."""
    objs = [many_ports(f"service-with-a-long-name-{i:04d}", i, 100) for i in range(HALF)]
    inv, errors = parse_inventory([*objs, KUBE, big_pod("a"), pod("small")])
    assert not errors
    doc = expect_document(inv)
    sizes = {p["name"]: p["containers"][0]["envSize"] for p in doc["pods"]}
    assert sizes["a"]["bytes"] > 1024 * 1024 and sizes["a"]["variables"] > 20000
    assert sizes["small"]["variables"] == 8  # default/kubernetes's 8 variables, nothing else
    first = next(s for s in doc["services"] if s["namespace"] == "big")
    (found,) = [f for f in first["findings"] if f["code"] == "SVA-ENV-012"]
    assert found["severity"] == "warning" and found["related"] == ["Pod big/a"]
    kube = next(s for s in doc["services"] if s["name"] == "kubernetes")
    assert not [f for f in kube["findings"] if f["code"] == "SVA-ENV-012"]
