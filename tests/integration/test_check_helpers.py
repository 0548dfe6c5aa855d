"""Helpers shared by the check, deploy, RBAC and Helm tests: run `svcaudit check`, build
workloads on the kwok nodes, wait for things."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import REPO, Cluster, eventually

VENV_BIN = Path(sys.executable).parent
SA_USER = "system:serviceaccount:svcaudit-system:svcaudit"


def check(
    cluster: Cluster,
    *args: str,
    dns: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`svcaudit check` as a user runs it (a subprocess, no TTY)."""
    extra = [f"--dns-server={cluster.dns_host}:{cluster.dns_port}"] if dns else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "svcaudit",
            "check",
            f"--kubeconfig={cluster.kubeconfig}",
            *extra,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def check_json(cluster: Cluster, *args: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    proc = check(cluster, *args, "-o", "json", **kwargs)
    if proc.returncode not in (0, 1):
        pytest.fail(f"svcaudit check failed ({proc.returncode}):\n{proc.stderr}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, doc


def by_name(doc: dict[str, Any], namespace: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["services"] if s["namespace"] == namespace}


def statuses(svc: dict[str, Any]) -> dict[str, str]:
    return {a: v["status"] for a, v in svc["verdicts"].items()}


def codes(svc: dict[str, Any]) -> set[str]:
    return {d["code"] for d in svc["discrepancies"]}


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

HEALTHY = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 9876}]
"""

# targetPort names a port no container declares: the controller drops the port (SVA-EP-102).
BROKEN = """
apiVersion: v1
kind: Service
metadata: {name: named}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def make_workload(cluster: Cluster, namespace: str, pods: int = 2) -> None:
    manifest = "---".join([WORKLOAD.format(i=i) for i in range(pods)] + [HEALTHY, BROKEN])
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def settled_workload(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """Wait until the workload's state has settled (slices and pods up): web is healthy."""

    def ready() -> dict[str, Any] | None:
        _, doc = check_json(cluster, "-n", namespace)
        svc = by_name(doc, namespace).get("web")
        return doc if svc and statuses(svc)["Healthy"] == "True" else None

    doc: dict[str, Any] = eventually(ready, 90, "service web to be healthy")
    return doc
