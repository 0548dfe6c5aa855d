"""Issue 19's "no false positive", all at once: one consistent namespace with hints,
appProtocol, a sidecar's named port, a headless service, pods behind several services (their
addresses' PTR answers name every one of them) and the local cluster's two DNS replicas asked
directly (no --dns-server: kube-system/kube-dns's endpoints). Both front ends, the running
operator and `svcaudit check`, find every service DiscoveryHealthy=True."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.cluster import cluster as local
from tests.fixtures import Cluster, eventually
from tests.integration.op_helpers import PREFIX, Operator, all_true, apply, audit, ensure_crd
from tests.integration.test_check_helpers import by_name, check_json, statuses

pytestmark = pytest.mark.cluster

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, labels: {{app: web}}}}
spec:
  nodeSelector: {{type: kwok}}
  containers:
  - name: web
    image: quay.io/openshiftlabs/simpleservice:0.5.0
    ports: [{{containerPort: 9876, name: web}}]
  - name: exporter
    image: quay.io/openshiftlabs/simpleservice:0.5.0
    ports: [{{containerPort: 9901, name: metrics}}]
"""

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: web, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: close}
spec:
  selector: {app: web}
  trafficDistribution: PreferClose
  ports: [{name: h2c, port: 80, targetPort: 9876, appProtocol: kubernetes.io/h2c}]
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
metadata: {name: metrics}
spec:
  selector: {app: web}
  ports: [{name: metrics, port: 9901, targetPort: metrics}]
---
apiVersion: v1
kind: Service
metadata: {name: peers}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 9876}]
"""
NAMES = ("web", "close", "same-node", "metrics", "peers")


@pytest.mark.local_only  # the local cluster's two CoreDNS processes behind kube-dns
def test_a_consistent_namespace_with_everything_is_healthy_in_both_front_ends(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, "---".join([POD.format(i=i) for i in range(2)] + [SERVICES]))
    ensure_crd(cluster)
    op = Operator(cluster, namespace, tmp_path / "operator.log")
    at = op.args.index("--dns-server")
    del op.args[at : at + 2]  # every replica of kube-system/kube-dns, asked directly
    op.start()
    try:
        for name in NAMES:
            eventually(lambda n=name: all_true(cluster, namespace, n), 120, f"{name} healthy")
        replicas = ", ".join(f"{a}:53" for a in local.DNS_REPLICA_ADDRESSES)
        for name in NAMES:
            status = (audit(cluster, namespace, name) or {}).get("status") or {}
            assert status["summary"]["healthy"] == "True", (name, status.get("discrepancies"))
            assert status["dns"]["server"] == replicas, status["dns"]
            ptrs = [r for r in status["dns"]["expected"] if r["type"] == "PTR"]
            assert len(ptrs) >= 2, (name, status["dns"]["expected"])  # the two pods' addresses
            observed = {(r["name"], r["value"]) for r in status["dns"]["observed"]}
            assert {(r["name"], r["value"]) for r in ptrs} <= observed
        assert op.alive()
        assert not [e for e in op.logs() if e.get("level") in ("error", "critical")]
    finally:
        op.stop()
    _, doc = check_json(cluster, "-n", namespace, dns=False)  # check asks both replicas too
    services = by_name(doc, namespace)
    assert {n: statuses(services[n])["Healthy"] for n in NAMES} == {n: "True" for n in NAMES}
    assert doc["dns"]["server"] == replicas
    for name in NAMES:  # and the operator wrote True on every condition of ours
        conds = (audit(cluster, namespace, name) or {})["status"]["conditions"]
        assert {c["type"]: c["status"] for c in conds} == {
            PREFIX + a: "True"
            for a in ("EndpointsConsistent", "EnvironmentConsistent", "DNSConsistent")
        } | {PREFIX + "DiscoveryHealthy": "True"}
