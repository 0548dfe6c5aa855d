"""The kubelet's service-environment rules that test_realnode.py's engine comparison leaves
out, against the real kubelet: a Service named `kubernetes` in the pod's own namespace
replaces default/kubernetes; init containers get the same variables as the others;
LoadBalancer services give the same variables as ClusterIP ones. Compared as sets, like
test_envvars_engine_predicts_exactly_what_printenv_shows."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.tests.realnode_helpers import (
    SHELL,
    apply,
    container,
    get,
    pod_spec,
    printenv,
    service,
    wait_ready,
)
from tests.fixtures import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.local_only]

IMAGE_ENV = {"PATH", "HOME", "HOSTNAME"}  # the image's and the runtime's, not the kubelet's


@pytest.fixture(scope="module")
def real(cluster: Cluster) -> Cluster:
    if not cluster.real_node or cluster.provider != "local":
        pytest.skip("needs the local cluster with its real node (NODE=real)")
    return cluster


def _init_env(cluster: Cluster, namespace: str, pod_name: str) -> dict[str, str]:
    """What the init container `init` printed (printenv), from its log."""
    deadline = time.monotonic() + 60
    out = ""
    while time.monotonic() < deadline:
        proc = cluster.run_kubectl("logs", "-n", namespace, pod_name, "-c", "init", check=False)
        out = proc.stdout
        if proc.returncode == 0 and "KUBERNETES_SERVICE_HOST=" in out:
            break
        time.sleep(0.5)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_local_kubernetes_service_init_containers_and_load_balancers(
    real: Cluster, namespace: str
) -> None:
    from svcaudit.core import envvars
    from svcaudit.core.model import Pod, Service

    apply(
        real,
        namespace,
        # selectorless, so it takes nothing from anyone: only its name matters here
        service("kubernetes", [{"name": "https", "port": 8443}], selector={}),
        service("lb", [{"name": "web", "port": 80, "targetPort": 9876}], type="LoadBalancer"),
    )
    init = {"name": "init", "image": SHELL, "imagePullPolicy": "Never", "command": ["printenv"]}
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "withinit", "labels": {"app": "rules"}},
        "spec": {**pod_spec(container()), "initContainers": [init]},
    }
    apply(real, namespace, body)
    wait_ready(real, namespace, "app=rules", 1)
    services = [Service.from_api(s) for s in get(real, namespace, "services")["items"]]
    services.append(Service.from_api(get(real, "default", "service", "kubernetes")))
    obj = Pod.from_api(get(real, namespace, "pod", "withinit"))
    predicted = {c.container: c.env for c in envvars.pod_env(obj, services)}
    shown = {
        "init": _init_env(real, namespace, "withinit"),
        "sise": printenv(real, namespace, "withinit"),
    }
    local_ip = next(s.cluster_ip for s in services if s.key == (namespace, "kubernetes"))
    for name, env in shown.items():
        derived = {(k, v) for k, v in env.items() if k not in IMAGE_ENV}
        assert set(predicted[name].items()) == derived, name
        assert env["KUBERNETES_SERVICE_HOST"] == local_ip  # not default/kubernetes's
        assert env["KUBERNETES_SERVICE_PORT"] == "8443"
        assert env["LB_SERVICE_PORT_WEB"] == "80" and env["LB_PORT"].endswith(":80")
