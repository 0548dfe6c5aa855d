"""`svcaudit check -A -o json` agrees with the running operator's ServiceAudits: same engine,
same verdicts, same discrepancy codes, service by service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Cluster
from tests.integration.op_helpers import kubectl_json, running_operator
from tests.integration.test_check_helpers import (
    by_name,
    check_json,
    codes,
    eventually,
    make_workload,
    settled_workload,
    statuses,
)

pytestmark = pytest.mark.cluster

HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: web, port: 9876}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: typo}
  ports: [{port: 80, targetPort: 9876}]
"""

SUMMARY_KEYS = {
    "Endpoints": "endpoints",
    "Environment": "environment",
    "DNS": "dns",
    "Healthy": "healthy",
}


def operator_view(cluster: Cluster, namespace: str) -> dict[str, Any]:
    data = kubectl_json(cluster, "serviceaudits", "-n", namespace) or {"items": []}
    out = {}
    for item in data["items"]:
        status = item.get("status") or {}
        if not status.get("summary"):
            continue
        out[item["metadata"]["name"]] = (
            {a: status["summary"][k] for a, k in SUMMARY_KEYS.items()},
            sorted({d["code"] for d in status.get("discrepancies") or []}),
        )
    return out


def check_view(cluster: Cluster, namespace: str) -> dict[str, Any]:
    _, doc = check_json(cluster, "-A")
    return {name: (statuses(s), sorted(codes(s))) for name, s in by_name(doc, namespace).items()}


def test_check_agrees_with_the_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    make_workload(cluster, namespace)
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=HEADLESS)
    settled_workload(cluster, namespace)
    last: dict[str, Any] = {}

    def agree() -> dict[str, Any] | None:
        last["operator"] = operator_view(cluster, namespace)
        last["check"] = check_view(cluster, namespace)
        ok = last["operator"] == last["check"] and len(last["operator"]) == 4
        return last["operator"] if ok else None

    with running_operator(cluster, namespace, tmp_path):
        try:
            op = eventually(agree, 120, "check and operator to agree", interval=2)
        except BaseException:
            print("operator:", last.get("operator"), "\ncheck:", last.get("check"))
            raise
    assert set(op) == {"web", "named", "headless", "nobody"}
    assert op["web"][0]["Healthy"] == "True"
    assert op["headless"][0]["DNS"] == "True", "headless DNS checked the same way"
    assert "SVA-EP-102" in op["named"][1]
