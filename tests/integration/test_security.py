"""Least privilege and tamper resistance (issue 9, security), against the real cluster.

The operator's effective permissions are asserted in test_rbac.py and its pod's security
context in test_deploy.py; here: what a user can do to our objects, and what the CRD lets in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import Cluster
from tests.integration.op_helpers import (
    PREFIX,
    apply,
    audit,
    condition_is,
    ensure_crd,
    eventually,
    running_operator,
    service_conditions,
)

pytestmark = pytest.mark.cluster

WORKLOAD = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec:
  nodeSelector: {type: kwok}
  containers: [{name: web, image: x, ports: [{containerPort: 8080}]}]
"""


def _patch_status(cluster: Cluster, ns: str, resource: str, patch: dict) -> None:
    # A Service's status is a subresource; a ServiceAudit is written whole (no subresource).
    sub = () if resource.startswith("serviceaudit") else ("--subresource=status",)
    cluster.run_kubectl("patch", resource, "-n", ns, *sub, "--type=merge", "-p", json.dumps(patch))


def test_user_edits_of_verdicts_are_overwritten_with_the_truth(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, WORKLOAD)
    with running_operator(cluster, namespace, tmp_path) as op:
        eventually(
            lambda: condition_is(cluster, namespace, "broken", "EndpointsConsistent", "False"),
            60,
            "broken reported",
        )
        eventually(
            lambda: condition_is(cluster, namespace, "web", "EndpointsConsistent", "True"),
            60,
            "web consistent",
        )
        # Someone "fixes" the broken service's verdict in its ServiceAudit...
        _patch_status(
            cluster,
            namespace,
            "serviceaudit/broken",
            {"status": {"summary": {"endpoints": "True"}, "discrepancies": []}},
        )
        # ...and someone else flips a condition on the Service itself (JSON merge patches
        # replace the whole list: their edit wipes the other conditions too).
        conditions = list(service_conditions(cluster, namespace, "web").values())
        for c in conditions:
            if c["type"] == PREFIX + "EndpointsConsistent":
                c.update(status="False", reason="EditedByHand", message="not true")
        _patch_status(cluster, namespace, "service/web", {"status": {"conditions": conditions}})

        def audit_restored() -> bool:
            status = (audit(cluster, namespace, "broken") or {}).get("status") or {}
            return status.get("summary", {}).get("endpoints") == "False" and any(
                d["code"] == "SVA-EP-101" for d in status.get("discrepancies") or []
            )

        eventually(audit_restored, 30, "the ServiceAudit's status rewritten with the truth")
        cond = eventually(
            lambda: condition_is(cluster, namespace, "web", "EndpointsConsistent", "True"),
            30,
            "the Service's condition rewritten with the truth",
        )
        assert cond["reason"] != "EditedByHand"
        assert op.proc is not None and op.proc.poll() is None


NONSENSE_SPECS = {
    "unknown field": {"color": "blue"},
    "wrong type": {"paused": "yes please"},
    "not an object": "everything",
}


@pytest.mark.parametrize("case", sorted(NONSENSE_SPECS))
def test_crd_schema_rejects_nonsense_in_spec(cluster: Cluster, namespace: str, case: str) -> None:
    ensure_crd(cluster)
    body = {
        "apiVersion": "svcaudit.dev/v1alpha1",
        "kind": "ServiceAudit",
        "metadata": {"name": "nonsense", "namespace": namespace},
        "spec": NONSENSE_SPECS[case],
    }
    proc = cluster.run_kubectl(
        "create", "--validate=strict", "-f", "-", input=json.dumps(body), check=False
    )
    assert proc.returncode != 0, f"accepted: {case}"
    assert "spec" in proc.stderr, proc.stderr
    gone = cluster.run_kubectl("get", "serviceaudit", "nonsense", "-n", namespace, check=False)
    assert gone.returncode != 0


def test_crd_schema_accepts_the_documented_spec(cluster: Cluster, namespace: str) -> None:
    ensure_crd(cluster)
    body = {
        "apiVersion": "svcaudit.dev/v1alpha1",
        "kind": "ServiceAudit",
        "metadata": {"name": "fine", "namespace": namespace},
        "spec": {"paused": False},
    }
    cluster.run_kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(body))
    cluster.run_kubectl("delete", "serviceaudit", "fine", "-n", namespace)
