"""Issue 19 (fidelity, round 2), the EndpointSlice controller's items, on the real cluster:

- services with appProtocol, trafficDistribution (PreferClose, PreferSameNode) and the
  topology-mode Auto annotation stay DiscoveryHealthy=True under the running operator, and
  its ServiceAudit shows the hints it expected and those published (no false positive: the
  real kube-controller-manager wrote them);
- `svcaudit check -A` reports SVA-EP-017 for a hand-written endpoint (no targetRef) whose
  address lies in a node's pod range and belongs to no pod, not for one held by a pod of
  ANOTHER namespace, nor for an address outside the pod ranges; once that other pod is
  deleted its address is dead too. Scoped to one namespace (`-n`), check cannot know other
  namespaces' pods and judges none of them.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Cluster, eventually
from tests.integration.op_helpers import (
    PREFIX,
    all_true,
    apply,
    audit,
    kubectl_json,
    running_operator,
    service_conditions,
)
from tests.integration.test_check_helpers import by_name, check_json, codes, statuses

pytestmark = pytest.mark.cluster

WORKLOAD = """
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, labels: {{app: web}}}}
spec:
  nodeSelector: {{type: kwok}}
  containers:
  - name: web
    image: quay.io/openshiftlabs/simpleservice:0.5.0
    ports: [{{containerPort: 9876, name: web}}]
"""

CONSISTENT = """
apiVersion: v1
kind: Service
metadata: {name: proto}
spec:
  selector: {app: web}
  ports: [{name: h2c, port: 80, targetPort: web, appProtocol: kubernetes.io/h2c}]
---
apiVersion: v1
kind: Service
metadata: {name: close}
spec:
  selector: {app: web}
  trafficDistribution: PreferClose
  ports: [{name: http, port: 80, targetPort: 9876, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: same-node}
spec:
  selector: {app: web}
  trafficDistribution: PreferSameNode
  ports: [{name: http, port: 80, targetPort: 9876}]
---
apiVersion: v1
kind: Service
metadata:
  name: auto
  annotations: {service.kubernetes.io/topology-mode: Auto}
spec:
  selector: {app: web}
  trafficDistribution: PreferClose
  ports: [{name: http, port: 80, targetPort: 9876}]
"""
HINTED = ("proto", "close", "same-node", "auto")


def _selectorless(name: str, address: str) -> list[dict[str, Any]]:
    """A Service without selector and its hand-written slice: one endpoint, no targetRef."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 5432, "targetPort": 5432}]},
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-1",
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "svcaudit-test",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 5432, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
    }
    return [service, eps]


def _apply_list(cluster: Cluster, namespace: str, items: list[dict[str, Any]]) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=doc)


def _pod_ip(cluster: Cluster, namespace: str, name: str) -> str | None:
    pod = kubectl_json(cluster, "pod", name, "-n", namespace) or {}
    ip = (pod.get("status") or {}).get("podIP")
    return str(ip) if ip else None


def _unused_pod_address(cluster: Cluster) -> str:
    """An address of a kwok node's pod range that no pod of the cluster holds, from the top
    of the range (kwok hands addresses out from the bottom)."""
    nodes = kubectl_json(cluster, "nodes")["items"]
    held = {
        p["status"].get("podIP")
        for p in kubectl_json(cluster, "pods", "-A")["items"]
        if p.get("status")
    }
    node = next(n for n in nodes if (n["metadata"].get("labels") or {}).get("type") == "kwok")
    net = ipaddress.ip_network(node["spec"]["podCIDR"])
    for offset in range(3, 100):
        candidate = str(net.broadcast_address - offset)
        if candidate not in held:
            return candidate
    pytest.fail(f"no free address at the top of {net}")


def test_hints_and_app_protocol_no_false_positive_under_the_operator(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    manifest = "---".join([WORKLOAD.format(i=i) for i in range(2)] + [CONSISTENT])
    apply(cluster, namespace, manifest)
    with running_operator(cluster, namespace, tmp_path) as op:
        for name in HINTED:
            eventually(lambda n=name: all_true(cluster, namespace, n), 90, f"{name} healthy")
        # settled: a few more resyncs (3 s) change nothing
        eventually(lambda: _all_hinted(cluster, namespace), 30, "hints published")
        for name in HINTED:
            conds = service_conditions(cluster, namespace, name)
            assert conds[PREFIX + "DiscoveryHealthy"]["status"] == "True", (name, op.logs_text())
        status = (audit(cluster, namespace, "same-node") or {})["status"]
        expected = status["endpoints"]["expected"]
        observed = status["endpoints"]["observed"]
        assert len(expected) == len(observed) == 2
        assert sorted(json.dumps(e["hints"]) for e in expected) == sorted(
            json.dumps(e["hints"]) for e in observed
        )
        for entry in observed:
            assert entry["hints"] == {
                "forZones": [{"name": entry["zone"]}],
                "forNodes": [{"name": entry["nodeName"]}],
            }
        proto = (audit(cluster, namespace, "proto") or {})["status"]["endpoints"]
        assert {p.get("appProtocol") for e in proto["observed"] for p in e["ports"]} == {
            "kubernetes.io/h2c"
        }
        auto = (audit(cluster, namespace, "auto") or {})["status"]["endpoints"]
        assert {e["hints"] for e in auto["expected"]} == {"unpredicted"}


def _all_hinted(cluster: Cluster, namespace: str) -> bool:
    slices = kubectl_json(cluster, "endpointslices", "-n", namespace)["items"]
    mine = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] in HINTED]
    close = [e for s in mine for e in s.get("endpoints") or [] if _svc(s) == "close"]
    return len(close) == 2 and all(e.get("hints") for e in close)


def _svc(s: dict[str, Any]) -> str:
    return str(s["metadata"]["labels"]["kubernetes.io/service-name"])


def test_check_reports_a_hand_written_endpoint_no_pod_holds(
    cluster: Cluster, namespace: str
) -> None:
    other = cluster.create_namespace("slice-fidelity-other")
    try:
        apply(cluster, other, WORKLOAD.format(i=9))
        live = eventually(lambda: _pod_ip(cluster, other, "web-9"), 90, "web-9's IP")
        dead = _unused_pod_address(cluster)
        _apply_list(
            cluster,
            namespace,
            _selectorless("dead-db", dead)
            + _selectorless("live-db", live)
            + _selectorless("external-db", "10.201.9.9"),
        )

        def audited() -> dict[str, dict[str, Any]] | None:
            _, doc = check_json(cluster, "-A")
            found = by_name(doc, namespace)
            return found if {"dead-db", "live-db", "external-db"} <= set(found) else None

        services = eventually(audited, 60, "check -A to audit the selectorless services", 2)
        dead_db = services["dead-db"]
        assert codes(dead_db) == {"SVA-EP-017"}, dead_db["discrepancies"]
        (finding,) = dead_db["discrepancies"]
        assert finding["severity"] == "error"
        assert finding["observed"] == f"{dead}: no pod of the cluster holds it"
        assert statuses(dead_db)["Endpoints"] == "False"
        for name in ("live-db", "external-db"):  # held by a pod of another namespace; outside
            assert "SVA-EP-017" not in codes(services[name]), services[name]["discrepancies"]
            assert statuses(services[name])["Endpoints"] == "True", services[name]

        # scoped to one namespace, check cannot know other namespaces' pods: nothing judged
        _, scoped = check_json(cluster, "-n", namespace)
        assert "SVA-EP-017" not in codes(by_name(scoped, namespace)["dead-db"])

        # the other namespace's pod goes away: the address it held is dead now
        cluster.run_kubectl("delete", "pod", "web-9", "-n", other, "--wait=true", "--timeout=60s")

        def live_db_dead() -> dict[str, Any] | None:
            _, doc = check_json(cluster, "-A")
            svc = by_name(doc, namespace)["live-db"]
            return svc if "SVA-EP-017" in codes(svc) else None

        found = eventually(live_db_dead, 60, "live-db's address to be reported dead", 2)
        assert statuses(found)["Endpoints"] == "False"
    finally:
        cluster.run_kubectl("delete", "namespace", other, "--wait=false", check=False)
