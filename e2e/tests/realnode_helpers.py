"""Helpers for tests that run pods on the local cluster's real node: objects pinned to it
(the tutorial's RC, pods, services), apply, waits, and commands inside pods."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Cluster, eventually

SIMPLESERVICE = "svcaudit.local/simpleservice:0.5.0"
SHELL = "svcaudit.local/shell:1.0"
ON_REAL_NODE = {"type": "real"}


def wait_for(check: Any, timeout: float, what: str) -> None:
    eventually(check, timeout, what, interval=0.3)


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    proc = cluster.run_kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False
    )
    assert proc.returncode == 0, proc.stderr


def container(
    name: str = "sise",
    image: str = SIMPLESERVICE,
    env: dict[str, str] | None = None,
    probe: bool = True,
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": "Never"}
    if image == SIMPLESERVICE:
        c["ports"] = [{"containerPort": 9876}]
        if probe:
            c["readinessProbe"] = {"httpGet": {"path": "/health", "port": 9876}, "periodSeconds": 1}
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return c


def pod_spec(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeSelector": ON_REAL_NODE,
        "terminationGracePeriodSeconds": 1,
        "containers": list(containers),
    }


def rc(name: str = "rcsise", replicas: int = 1) -> dict[str, Any]:
    """The tutorial's ReplicationController: app=sise, simpleservice on 9876."""
    return {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"app": "sise"},
            "template": {"metadata": {"labels": {"app": "sise"}}, "spec": pod_spec(container())},
        },
    }


def pod(
    name: str,
    *containers: dict[str, Any],
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": pod_spec(*(containers or (container(),))),
    }


def service(
    name: str,
    ports: list[dict[str, Any]] | None = None,
    selector: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": selector if selector is not None else {"app": "sise"},
            "ports": ports or [{"port": 80, "targetPort": 9876}],
            **spec,
        },
    }


def get(cluster: Cluster, namespace: str, *what: str) -> dict[str, Any]:
    out = cluster.run_kubectl("get", "-n", namespace, *what, "-o", "json").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def wait_ready(
    cluster: Cluster, namespace: str, selector: str, count: int, timeout: float = 90
) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal pods
        pods = get(cluster, namespace, "pods", "-l", selector)["items"]
        ok = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]
        return len(ok) == count == len(pods)

    wait_for(ready, timeout, f"{count} Ready pods {selector} in {namespace}")
    return pods


def kexec(
    cluster: Cluster, namespace: str, pod_name: str, *cmd: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.run_kubectl("exec", "-n", namespace, pod_name, "--", *cmd, check=check)


def curl_json(cluster: Cluster, namespace: str, pod_name: str, url: str) -> dict[str, Any]:
    """GET url from inside the pod (busybox wget), parsed; retried while kube-proxy or DNS
    catch up with a brand-new service."""
    last = ""
    for _ in range(40):
        proc = kexec(cluster, namespace, pod_name, "wget", "-qO-", url, check=False)
        if proc.returncode == 0 and proc.stdout:
            return json.loads(proc.stdout)  # type: ignore[no-any-return]
        last = proc.stderr
        time.sleep(0.5)
    pytest.fail(f"GET {url} from {namespace}/{pod_name} failed: {last}")


def printenv(cluster: Cluster, namespace: str, pod_name: str) -> dict[str, str]:
    out = kexec(cluster, namespace, pod_name, "printenv").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cluster_ip(cluster: Cluster, namespace: str, name: str) -> str:
    return str(get(cluster, namespace, "service", name)["spec"]["clusterIP"])


def local_node_module(cluster: Cluster) -> tuple[Any, Any, Any]:
    """(e2e.cluster.cluster module, its node.realnode module, loaded State) of the local
    cluster."""
    from e2e.cluster import cluster as local
    from e2e.cluster.node import realnode

    assert cluster.state_dir is not None
    state = local.State.load(cluster.state_dir)
    assert state is not None and state.real_node
    return local, realnode, state


def operator_processes() -> list[tuple[str, str]]:
    """(pid, /proc/PID/cgroup) of every `svcaudit run` process on this machine, in a container
    or not (a container's processes are the host's too, seen from here)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cgroups = (proc / "cgroup").read_text()
        except OSError:
            continue
        if any(a.endswith(b"svcaudit") for a in argv) and b"run" in argv:
            found.append((proc.name, cgroups))
    return found
