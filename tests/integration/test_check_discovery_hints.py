"""`svcaudit check` on the real local cluster, issue 19's checks 6 and 7: a namespace whose
service variables grow past half (then past all) of execve's 2 MiB gets SVA-ENV-012 on its
services; a selector typo's SVA-EP-101 hint names the right value and the namespace whose
pods carry the selector; a consistent namespace gets neither."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures import Cluster, eventually
from tests.integration.test_check_helpers import by_name, check, check_json, codes

pytestmark = pytest.mark.cluster

PORTS = 100  # per service: ~33 KB of variables each, so 40 services pass 1 MiB, 70 pass 2 MiB


def _apply(cluster: Cluster, namespace: str, items: list[dict[str, Any]]) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=doc, timeout=120)


def _many_ports(first: int, count: int) -> list[dict[str, Any]]:
    """Selectorless services (no endpoints, nothing for the controllers to do) of PORTS
    named ports each."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"service-with-a-long-name-{i:04d}"},
            "spec": {"ports": [{"name": f"p{j}", "port": 10000 + j} for j in range(PORTS)]},
        }
        for i in range(first, first + count)
    ]


def _pod(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A pod on a kwok node: it gets an IP and turns Ready, but never runs."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "containers": [{"name": "app", "image": "quay.io/openshiftlabs/simpleservice:0.5.0"}],
            **spec,
        },
    }


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("hints-other")
    yield name
    cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


def _running(cluster: Cluster, namespace: str, count: int) -> None:
    def ready() -> bool:
        out = cluster.run_kubectl("get", "pods", "-n", namespace, "-o", "json").stdout
        pods = json.loads(out)["items"]
        return len(pods) == count and all(p["status"].get("podIP") for p in pods)

    eventually(ready, 90, f"{count} pods with an IP in {namespace}")


def test_env_too_large_warns_then_fails_and_a_consistent_namespace_is_quiet(
    cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    consistent = other_namespace
    _apply(
        cluster,
        consistent,
        [
            _pod("web-0", {"app": "web"}),
            _pod("web-1", {"app": "web"}),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            },
        ],
    )
    _apply(
        cluster,
        namespace,
        [
            *_many_ports(0, 40),
            _pod("app-1", {"app": "a"}),
            _pod("nolinks", {"app": "b"}, enableServiceLinks=False),
        ],
    )
    _running(cluster, namespace, 2)
    _running(cluster, consistent, 2)

    _, doc = check_json(cluster, "-n", namespace, "-n", consistent, "--no-dns", dns=False)
    quiet = by_name(doc, consistent)["web"]
    assert not codes(quiet) & {"SVA-ENV-012", "SVA-EP-101"}, quiet["discrepancies"]
    assert quiet["verdicts"]["Environment"]["status"] == "True"
    services = by_name(doc, namespace)
    assert len(services) == 40
    for svc in services.values():
        (found,) = [d for d in svc["discrepancies"] if d["code"] == "SVA-ENV-012"]
        assert found["severity"] == "warning"
        assert found["related"] == [f"Pod {namespace}/app-1"]  # nolinks gets no variables
        assert (
            "pod app-1 container app, the largest; 1 container(s) over 1.00 MiB"
            in (found["observed"])
        )
        assert svc["verdicts"]["Environment"]["status"] == "False"
    table = check(cluster, "-n", namespace, "--no-dns").stdout
    assert "SVA-ENV-012 EnvTooLarge" in table
    assert "fix: Set enableServiceLinks: false in the pod specs" in table

    # 30 more services: past 2 MiB, the container could not start any more.
    _apply(cluster, namespace, _many_ports(40, 30))
    _, doc = check_json(cluster, "-n", namespace, "--no-dns", dns=False)
    found = [
        d
        for svc in by_name(doc, namespace).values()
        for d in svc["discrepancies"]
        if d["code"] == "SVA-ENV-012"
    ]
    assert len(found) == 70 and {d["severity"] for d in found} == {"error"}
    assert (
        "pod app-1 container app: it cannot start (argument list too long)"
        in (found[0]["observed"])
    )


def test_selector_typo_hint_names_the_value_and_the_other_namespace(
    cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    _apply(
        cluster,
        namespace,
        [
            _pod("rcsise-a", {"app": "sise"}),
            _pod("rcsise-b", {"app": "sise"}),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "simpleservice"},
                "spec": {"selector": {"app": "sies"}, "ports": [{"port": 80, "targetPort": 9876}]},
            },
        ],
    )
    _apply(cluster, other_namespace, [_pod("sies-0", {"app": "sies"})])
    _running(cluster, namespace, 2)
    _running(cluster, other_namespace, 1)

    _, doc = check_json(cluster, "-n", namespace, "-n", other_namespace, "--no-dns", dns=False)
    svc = by_name(doc, namespace)["simpleservice"]
    (found,) = [d for d in svc["discrepancies"] if d["code"] == "SVA-EP-101"]
    assert found["hint"] == (
        "Did you mean app=sise instead of app=sies (2 pod(s): rcsise-a, rcsise-b)? "
        f"Or namespace {other_namespace}, where 1 pod(s) carry app=sies (sies-0): a Service "
        "selects pods of its own namespace only? "
        "Compare `kubectl get pods --show-labels` with the service's spec.selector."
    )
    assert (found["expected"], found["observed"]) == ("pods matching app=sies", "none")
    table = check(cluster, "-n", namespace, "-n", other_namespace, "--no-dns").stdout
    assert "fix: Did you mean app=sise instead of app=sies" in table

    # Only the namespaces a check lists are looked at.
    _, doc = check_json(cluster, "-n", namespace, "--no-dns", dns=False)
    (found,) = [
        d
        for d in by_name(doc, namespace)["simpleservice"]["discrepancies"]
        if d["code"] == "SVA-EP-101"
    ]
    assert other_namespace not in found["hint"] and "app=sise instead of app=sies" in found["hint"]
