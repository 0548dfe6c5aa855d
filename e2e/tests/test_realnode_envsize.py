"""SVA-ENV-012 against the real kubelet + containerd + kernel: a container whose predicted
environment (svcaudit.core.envsize) is 1 KiB under execve's 2 MiB starts; one predicted at
exactly 2 MiB does not ("exec /bin/sh: argument list too long", Kubernetes issue 84539), and
`svcaudit check` reports the error naming it. The namespace's service variables come from
selectorless services with many ports; explicit padding variables put each container where
the test wants it, to the byte, by the core's own count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.tests.realnode_helpers import SHELL, get, pod_spec, wait_for
from svcaudit.core.envsize import DEFAULT_EXEC_LIMIT, container_env_size
from svcaudit.core.envvars import ServiceEnvIndex
from svcaudit.core.model import Pod, Service
from tests.fixtures import Cluster
from tests.integration.test_check_helpers import by_name, check_json

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.local_only]

SERVICES, PORTS = 58, 100  # ~1.9 MB of service variables: under the limit by themselves
CHUNK = 100_000
LOG_ARGS = (("--previous",), ())  # bytes per padding variable: under the 128 KiB per-string limit


@pytest.fixture(scope="module")
def real(cluster: Cluster) -> Cluster:
    if not cluster.real_node or cluster.provider != "local":
        pytest.skip("needs the local cluster with its real node (NODE=real)")
    return cluster


def _services(cluster: Cluster, namespace: str) -> list[Service]:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"service-with-a-long-name-{i:04d}"},
            "spec": {"ports": [{"name": f"p{j}", "port": 10000 + j} for j in range(PORTS)]},
        }
        for i in range(SERVICES)
    ]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=doc, timeout=120)
    listed = get(cluster, namespace, "services")["items"]
    master = get(cluster, "default", "service", "kubernetes")
    return [Service.from_api(s) for s in [*listed, master]]


def _padded(name: str, namespace: str, pad: int) -> dict[str, Any]:
    """A pod on the real node whose own env adds `pad` execve bytes (envvars.exec_bytes: name,
    '=', value, NUL, pointer), in variables under the per-string limit."""
    env = []
    i = 0
    while pad > 0:
        key = f"PAD_{i}"
        size = min(pad, CHUNK)
        if 0 < pad - size < len(key) + 10:  # leave the last variable room for its own name
            size -= len(key) + 10
        env.append({"name": key, "value": "x" * (size - len(key) - 10)})
        pad -= size
        i += 1
    c = {"name": "sh", "image": SHELL, "imagePullPolicy": "Never", "env": env}
    c["command"] = ["sh", "-c", "sleep 3600"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": pod_spec(c),
    }


@pytest.fixture
def big_namespace(real: Cluster) -> Iterator[str]:
    name = real.create_namespace("envsize")
    yield name
    real.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_predicted_size_decides_whether_the_container_starts(
    real: Cluster, big_namespace: str
) -> None:
    ns = big_namespace
    services = _services(real, ns)
    envs = ServiceEnvIndex(services)
    _, whole = envs.exec_size(ns, True)
    assert whole < DEFAULT_EXEC_LIMIT - 2048
    fits = _padded("fits", ns, DEFAULT_EXEC_LIMIT - 1024 - whole)
    over = _padded("over", ns, DEFAULT_EXEC_LIMIT - whole)
    for body in (fits, over):  # by the core's count, to the byte
        view = Pod.from_api(body)
        size = container_env_size(view, view.all_containers[0], envs.for_pod(view), (0, whole))
        assert size.bytes == whole + (DEFAULT_EXEC_LIMIT - whole - (1024 if body is fits else 0))
    # `create`, not `apply`: apply's last-applied annotation would copy the padding
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": [fits, over]})
    real.run_kubectl("create", "-n", ns, "-f", "-", input=doc, timeout=120)

    def state(name: str) -> dict[str, Any]:
        statuses = get(real, ns, "pod", name).get("status", {}).get("containerStatuses") or [{}]
        first: dict[str, Any] = statuses[0]
        return first

    wait_for(lambda: "running" in state("fits").get("state", {}), 90, "pod fits running")
    wait_for(lambda: "terminated" in state("over").get("lastState", {}), 90, "pod over failing")
    over_state = state("over")
    assert over_state["lastState"]["terminated"]["reason"] == "Error"
    assert over_state["lastState"]["terminated"]["exitCode"] == 1  # execve failed in runc init
    assert over_state["restartCount"] >= 1  # it never stays up (`started` may flicker true
    # for the instant between the task's start and its failed execve: not asserted)

    def said_why() -> bool:  # the last attempt's log, or the current one's between restarts
        logs = [real.run_kubectl("logs", "-n", ns, "over", *a, check=False) for a in LOG_ARGS]
        return any("exec /bin/sh: argument list too long" in p.stdout for p in logs)

    wait_for(said_why, 60, "pod over's log to say why")

    # The audit says so, naming the container that cannot start (and only it).
    _, report = check_json(real, "-n", ns, "--no-dns", dns=False)
    findings = [
        d
        for svc in by_name(report, ns).values()
        for d in svc["discrepancies"]
        if d["code"] == "SVA-ENV-012"
    ]
    assert len(findings) == SERVICES
    assert {d["severity"] for d in findings} == {"error"}
    assert {tuple(d["related"]) for d in findings} == {(f"Pod {ns}/over",)}
    assert (
        "pod over container sh: it cannot start (argument list too long); 1 container(s)"
        in (findings[0]["observed"])
    )
