"""The environment audit at scale: the fast path (ServiceEnvIndex, memoised service variables)
equals the straightforward per-pod derivation, costs one service environment per audit, and
SVA-ENV-002 is summarised per service instead of flooding one finding per pod x container."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8sobjs import AFTER, BEFORE, container, pod, port, service

from svcaudit.core import envvars
from svcaudit.core.audit import AuditInputs, audit_service
from svcaudit.core.codes import Aspect, Discrepancy, discrepancy, ref
from svcaudit.core.compare import compare_env
from svcaudit.core.envvars import (
    Freshness,
    ServiceEnvIndex,
    container_env,
    freshness,
    service_env,
    service_variables,
    visible_services,
)
from svcaudit.core.findings import (
    POSSIBLY_STALE_EXAMPLES,
    env_container_findings,
    env_findings,
    pod_ref,
    service_ref,
    summarise_possibly_stale,
    with_service,
)
from svcaudit.core.model import Pod, Service

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2025, 1, 2, tzinfo=UTC)
GRACE = timedelta(seconds=5)
NEAR_AFTER = "2025-01-01T10:00:03Z"  # inside the grace window of T0
NEAR_BEFORE = "2025-01-01T09:59:58Z"


# ---- the straightforward derivation (what env_findings did before the index) ---------------


def reference_container_findings(
    service: Service,
    pods: Sequence[Pod],
    env_services: Sequence[Service],
    grace: timedelta,
    observed_containers: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[list[Discrepancy], list[str]]:
    """Per pod: visible services and the whole service environment re-derived, per container
    container_env() (the kubelet's precedence on the whole map); no cache anywhere."""
    if not service.has_cluster_ip or not service.ports:
        return [], []
    names = {n for n, _ in envvars._variables(service.name, service.cluster_ip, service.ports)}
    services = with_service(env_services, service)
    svc = service_ref(service)
    out: list[Discrepancy] = []
    unknown: list[str] = []
    for col in service_env(service.namespace, True, services).collisions:
        keys = [k for k, _ in col.sources]
        if service.key in keys:
            detail = "; ".join(f"{ns}/{n}={v}" for (ns, n), v in col.sources)
            others = tuple(ref("Service", ns, n) for ns, n in keys if (ns, n) != service.key)
            out.append(
                discrepancy("SVA-ENV-003", svc, f"{col.name} from one service", detail, others)
            )
    for p in sorted(pods, key=lambda p: p.key):
        visible = visible_services(p.namespace, p.enable_service_links, services)
        if not any(s.key == service.key for s in visible):
            continue
        senv = service_env(p.namespace, p.enable_service_links, services)
        for c in p.all_containers:
            subject = f"{pod_ref(p)} container {c.name}"
            cenv = container_env(c, senv)
            for sh in cenv.shadowed:
                if sh.name not in names or sh.service != service.key:
                    continue
                shown = "<valueFrom>" if sh.explicit_value is None else sh.explicit_value
                code = "SVA-ENV-004" if sh.explicit_value not in (None, sh.service_value) else (
                    "SVA-ENV-005"
                )  # fmt: skip
                out.append(
                    discrepancy(code, subject, f"{sh.name}={sh.service_value}",
                                f"{sh.name}={shown}", (svc,), pod=p.name, container=c.name)
                )  # fmt: skip
            if cenv.unresolved_env_from:
                srcs = ", ".join(f"{e.kind}/{e.name}" for e in cenv.unresolved_env_from)
                out.append(
                    discrepancy("SVA-ENV-006", subject,
                                f"no envFrom key shadows {service.name}'s variables",
                                f"envFrom {srcs}", (svc,), pod=p.name, container=c.name)
                )  # fmt: skip
            if (p.name, c.name) in observed_containers:
                continue
            if not any(n in cenv.env for n in names):
                continue
            fresh = freshness(p, c.name, service, grace)
            started = (
                p.container_states[c.name].started_at if fresh is not Freshness.NOT_RUNNING
                else None
            )  # fmt: skip
            created = service.creation_timestamp
            if fresh is Freshness.STALE:
                out.append(
                    discrepancy("SVA-ENV-001", subject,
                                f"started after {svc} was created ({_t(created)})",
                                f"started {_t(started)}", (svc,), pod=p.name, container=c.name)
                )  # fmt: skip
            elif fresh in (Freshness.UNCERTAIN, Freshness.SPEC_CHANGED):
                when = created if fresh is Freshness.UNCERTAIN else service.env_spec_touched_at
                what = "created" if fresh is Freshness.UNCERTAIN else "spec last touched"
                out.append(
                    discrepancy("SVA-ENV-002", subject, f"started after {svc} {what} ({_t(when)})",
                                f"started {_t(started)}", (svc,), pod=p.name, container=c.name)
                )  # fmt: skip
            elif fresh is Freshness.UNKNOWN:
                unknown.append(
                    f"{subject}: running without startedAt"
                    if started is None
                    else f"{svc}: no creationTimestamp"
                )
    return out, unknown


def _t(value: object) -> str:
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else "unknown"


# ---- generators ---------------------------------------------------------------------------------

# Names chosen to collide: foo:8080 and foo-port-8080-tcp:80 both produce FOO_PORT_8080_TCP_*.
SVC_NAMES = ["foo", "foo-port-8080-tcp", "web", "db", "kubernetes"]
ENV_NAMES = [
    "FOO_SERVICE_HOST",
    "FOO_PORT_8080_TCP_PORT",
    "WEB_SERVICE_PORT",
    "WEB_PORT",
    "DB_SERVICE_HOST",
    "KUBERNETES_SERVICE_HOST",
    "MODE",
]
ENV_VALUES = ["10.96.0.1", "10.96.0.2", "80", "8080", "tcp://10.96.0.3:80", "x"]
STARTS = [None, BEFORE, NEAR_BEFORE, "2025-01-01T10:00:00Z", NEAR_AFTER, AFTER]
TOUCH = {"f:spec": {"f:ports": {}}}


@st.composite
def services(draw: st.DrawFn) -> list[Service]:
    out = []
    if draw(st.booleans()):  # a sure collision on FOO_PORT_8080_TCP_*
        out += [
            Service.from_api(service("foo", cluster_ip="10.96.1.1", ports=[port(8080)])),
            Service.from_api(service("foo-port-8080-tcp", cluster_ip="10.96.1.2")),
        ]
    n = draw(st.integers(1, 6))
    for i in range(n):
        name = draw(st.sampled_from(SVC_NAMES))
        ns = draw(st.sampled_from(["default", "default", "other"]))
        kind = draw(st.sampled_from(["ip", "ip", "ip", "headless", "external"]))
        ports = [
            port(number, pname, protocol=draw(st.sampled_from([None, "UDP"])))
            for number, pname in draw(
                st.lists(
                    st.tuples(st.sampled_from([80, 8080, 443]), st.sampled_from(["http", "tcp"])),
                    min_size=1,
                    max_size=2,
                    unique_by=(lambda t: t[0], lambda t: t[1]),
                )
            )
        ]
        if len(ports) == 1 and draw(st.booleans()):
            ports[0].pop("name", None)
        touched = draw(st.sampled_from([None, NEAR_AFTER, AFTER]))
        obj = service(
            name,
            ns,
            cluster_ip={"ip": f"10.96.0.{i + 1}", "headless": "None", "external": None}[kind],
            ports=ports,
            type_="ExternalName" if kind == "external" else None,
            external_name="db.example.com" if kind == "external" else None,
            created=draw(st.sampled_from(["2025-01-01T10:00:00Z", "2025-01-01T10:00:00Z", None])),
            managed_fields=(
                None
                if touched is None
                else [{"manager": "kubectl", "time": touched, "fieldsV1": TOUCH}]
            ),
        )
        out.append(Service.from_api(obj))
    return out


@st.composite
def env_pods(draw: st.DrawFn, svcs: Sequence[Service] = ()) -> list[Pod]:
    """Pods whose containers set some service variable names explicitly, sometimes every
    variable of one of `svcs` (then the kubelet adds none of that service's)."""
    names = sorted(set(ENV_NAMES) | {n for s in svcs for n, _ in service_variables(s)})
    out = []
    for i in range(draw(st.integers(0, 8))):
        cs = []
        for cname in draw(st.lists(st.sampled_from(["app", "side", "x"]), max_size=2, unique=True)):
            env: list[dict[str, Any]] = []
            chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
            if svcs and draw(st.integers(0, 3)) == 0:
                chosen = [n for n, _ in service_variables(draw(st.sampled_from(list(svcs))))]
            for ename in chosen:
                if draw(st.booleans()):
                    values = [
                        *ENV_VALUES,
                        *(v for sv in svcs for n, v in service_variables(sv) if n == ename),
                    ]
                    env.append({"name": ename, "value": draw(st.sampled_from(values))})
                else:
                    env.append({"name": ename, "valueFrom": {"fieldRef": {"fieldPath": "x"}}})
            env_from = [{"configMapRef": {"name": "cfg"}}] if draw(st.booleans()) else None
            cs.append(container(cname, env=env, env_from=env_from))
        if not cs:
            cs = [container()]
        inits = [container("init")] if draw(st.booleans()) else None
        obj = pod(
            f"p{i}",
            draw(st.sampled_from(["default", "default", "other"])),
            containers=cs,
            init_containers=inits,
            enable_service_links=draw(st.sampled_from([None, True, False])),
            started=draw(st.sampled_from(STARTS)),
        )
        if inits and draw(st.booleans()):
            obj["status"]["initContainerStatuses"] = [
                {"name": "init", "state": {"running": {"startedAt": NEAR_AFTER}}}
            ]
        if draw(st.booleans()) and obj["status"].get("containerStatuses"):
            obj["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0}}
        out.append(Pod.from_api(obj))
    return out


# ---- properties --------------------------------------------------------------------------------


@SETTINGS
@given(services(), st.data())
def test_indexed_env_findings_equal_the_straightforward_derivation(
    svcs: list[Service], data: st.DataObject
) -> None:
    ps = data.draw(env_pods(svcs))
    service = data.draw(st.sampled_from(svcs))
    others = [s for s in svcs if s is not service]
    pairs = [(p.name, c.name) for p in ps for c in p.all_containers]
    observed = frozenset(data.draw(st.lists(st.sampled_from(pairs), max_size=3)) if pairs else [])
    want = reference_container_findings(service, ps, others, GRACE, observed)
    got = env_container_findings(service, ps, others, GRACE, observed)
    assert got == want
    # and through a shared index, and after the summary
    index = ServiceEnvIndex(with_service(others, service))
    assert env_container_findings(service, ps, others, GRACE, observed, index) == want
    summary = (summarise_possibly_stale(service, want[0], GRACE), want[1])
    assert env_findings(service, ps, others, GRACE, observed) == summary
    assert env_findings(service, ps, others, GRACE, observed, index) == summary


@SETTINGS
@given(services())
def test_service_variables_identical_with_and_without_cache(svcs: list[Service]) -> None:
    for s in svcs:
        uncached = (
            envvars._variables(s.name, s.cluster_ip, s.ports)
            if s.has_cluster_ip and s.ports
            else ()
        )
        envvars._variables_cached.cache_clear()
        first = service_variables(s)  # computed
        second = service_variables(s)  # from the cache
        assert first == second == uncached


@SETTINGS
@given(services(), env_pods(), st.data())
def test_observed_env_through_the_index_equals_per_pod_derivation(
    svcs: list[Service], ps: list[Pod], data: st.DataObject
) -> None:
    service = data.draw(st.sampled_from(svcs))
    observed = {
        (p.name, c.name): data.draw(
            st.dictionaries(st.sampled_from(ENV_NAMES), st.sampled_from(ENV_VALUES), max_size=3)
        )
        for p in ps
        for c in p.all_containers
        if data.draw(st.booleans())
    }
    ns_pods = [p for p in ps if p.namespace == service.namespace]
    services = with_service(svcs, service)
    want: list[Discrepancy] = []
    for p in sorted(ns_pods, key=lambda p: p.key):
        visible = visible_services(p.namespace, p.enable_service_links, services)
        if not any(s.key == service.key for s in visible):
            continue
        senv = service_env(p.namespace, p.enable_service_links, services)
        for c in p.all_containers:
            if (p.name, c.name) in observed:
                want += compare_env(
                    service, pod_ref(p), c, senv, observed[(p.name, c.name)], p.name
                )
    r = audit_service(AuditInputs(service, ps, None, None, svcs), None, NOW, observed_env=observed)
    got = [d for d in r.env_findings if d.code in ("SVA-ENV-010", "SVA-ENV-011")]
    assert got == [d for d in dict.fromkeys(want) if d.code in ("SVA-ENV-010", "SVA-ENV-011")]


# ---- cost ---------------------------------------------------------------------------------------


def namespace(
    n_services: int, n_pods: int, started: str = AFTER
) -> tuple[list[Service], list[Pod]]:
    svcs = [
        Service.from_api(
            service(
                f"svc-{j}", selector={"app": f"a{j}"}, cluster_ip=f"10.96.{j // 250}.{j % 250 + 1}"
            )
        )
        for j in range(n_services)
    ]
    ps = [
        Pod.from_api(pod(f"pod-{i}", labels={"app": f"a{i % n_services}"}, started=started))
        for i in range(n_pods)
    ]
    return svcs, ps


def test_one_audit_builds_the_service_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    svcs, ps = namespace(100, 100)
    calls: list[tuple[str, bool]] = []
    real = envvars.service_env

    def counting(ns: str, links: bool, services: Sequence[Service]) -> envvars.ServiceEnv:
        calls.append((ns, links))
        return real(ns, links, services)

    monkeypatch.setattr(envvars, "service_env", counting)
    r = audit_service(AuditInputs(svcs[0], ps, None, None, svcs), None, NOW)
    assert calls == [("default", True)]  # was one per pod (100) before the index
    assert r.verdicts[Aspect.ENVIRONMENT].status == "True"


def test_audit_of_a_namespace_is_not_cubic() -> None:
    """100 services x 100 pods: every service audited; the variables of each service are
    derived once (cache), not once per (audited service, pod)."""
    svcs, ps = namespace(100, 100)
    envvars._variables_cached.cache_clear()
    for s in svcs:
        audit_service(AuditInputs(s, ps, None, None, svcs), None, NOW)
    info = envvars._variables_cached.cache_info()
    assert info.misses == 100  # was ~1 M service_variables computations


# ---- SVA-ENV-002 summary ------------------------------------------------------------------------


def test_possibly_stale_is_one_finding_per_service_and_cause() -> None:
    svcs, ps = namespace(3, 8, started=NEAR_AFTER)
    r = audit_service(AuditInputs(svcs[0], ps, None, None, svcs), None, NOW)
    [d] = [d for d in r.discrepancies if d.code == "SVA-ENV-002"]
    assert d.subject == "Service default/svc-0" and d.pod is None and d.container is None
    assert d.expected == (
        "running containers started after Service default/svc-0 created (2025-01-01T10:00:00Z)"
    )
    assert d.observed.startswith(
        "8 container(s) in 8 pod(s) started within the 5s grace window of its creation: "
        "pod-0/app started 2025-01-01T10:00:03Z, pod-1/app started"
    )
    assert d.observed.endswith(f"and {8 - POSSIBLY_STALE_EXAMPLES} more")
    assert d.related == tuple(f"Pod default/pod-{i}" for i in range(POSSIBLY_STALE_EXAMPLES))
    assert r.verdicts[Aspect.ENVIRONMENT].status == "True"  # info only, as before


def test_possibly_stale_summary_separates_creation_and_spec_change() -> None:
    touched = [{"manager": "kubectl", "time": AFTER, "fieldsV1": TOUCH}]
    svc = Service.from_api(service("web", managed_fields=touched))
    near = Pod.from_api(pod("a", started=NEAR_AFTER))
    later = Pod.from_api(pod("b", started="2025-01-01T10:30:00Z"))
    r = audit_service(AuditInputs(svc, [later, near], None, None, [svc]), None, NOW)
    found = sorted((d.expected, d.observed) for d in r.env_findings)
    assert found == [
        (
            "running containers started after Service default/web created (2025-01-01T10:00:00Z)",
            "1 container(s) in 1 pod(s) started within the 5s grace window of its creation: "
            "a/app started 2025-01-01T10:00:03Z",
        ),
        (
            "running containers started after Service default/web spec last touched "
            "(2025-01-01T11:00:00Z)",
            "1 container(s) in 1 pod(s) started before its last possible spec change: "
            "b/app started 2025-01-01T10:30:00Z",
        ),
    ]


def test_stale_and_other_per_container_findings_are_not_summarised() -> None:
    svcs, ps = namespace(2, 4, started=BEFORE)
    r = audit_service(AuditInputs(svcs[0], ps, None, None, svcs), None, NOW)
    assert [(d.code, d.pod) for d in r.env_findings] == [
        ("SVA-ENV-001", f"pod-{i}") for i in range(4)
    ]
