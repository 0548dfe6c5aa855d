"""kind's own machinery, as `make e2e E2E_CLUSTER=kind` runs it: the node image (ours where the
public kindest/node cannot be pulled, as here), containerd in the nodes that can pull from
nowhere, pods that cannot send a packet off the machine, the operator running in the cluster
from deploy/, and a NodePort answered from the host. The tutorial's own steps, with svcaudit's
verdicts, are test_tutorial.py (on every provider).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.kind import local, node_image
from e2e.tests.realnode_helpers import (
    SHELL,
    apply,
    container,
    get,
    kexec,
    operator_processes,
    pod,
    rc,
    service,
    wait_ready,
)
from tests.fixtures import Cluster, eventually
from tests.outside import (
    PORT,
    TEST_HOST,
    forwarding_on,
    guard_drops,
    outside_host,
    wait_received,
)

pytestmark = [pytest.mark.cluster, pytest.mark.kind_only]

OUR_IMAGES = ("svcaudit.local/", f"docker.io/library/{local.OPERATOR_IMAGE}")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def nodes() -> list[str]:
    label = f"label=io.x-k8s.kind.cluster={local.NAME}"
    return docker("ps", "--filter", label, "--format", "{{.Names}}").split()


def ours() -> bool:
    """Whether the nodes run our node image (the public one could not be pulled)."""
    image = docker("inspect", "--format", "{{.Config.Image}}", nodes()[0]).strip()
    return image.startswith(node_image.NODE_REPOSITORY + ":")


@pytest.fixture
def forwarding() -> Iterator[None]:
    with forwarding_on():
        yield


def test_the_nodes_run_our_image_with_only_our_images(cluster: Cluster) -> None:
    assert nodes(), "no kind node container"
    if not ours():  # a machine that could pull kindest/node: it runs the pinned one
        pinned = local.public_node_image()
        for node in nodes():
            digest = docker("inspect", "--format", "{{.Image}}", node).strip()
            assert digest and pinned.split("@")[0] in docker("image", "inspect", digest)
        return
    for node in nodes():
        listed = json.loads(docker("exec", node, "crictl", "images", "-o", "json"))["images"]
        tags = [t for image in listed for t in image.get("repoTags") or []]
        assert tags and all(t.startswith(OUR_IMAGES) for t in tags), tags
        assert not any(t.startswith("registry.k8s.io/") for t in tags)


def test_pulls_fail_at_once_inside_the_nodes(cluster: Cluster, namespace: str) -> None:
    """An image nobody loaded: the nodes' containerd asks a closed local proxy, so the pull
    fails at once and no registry name is even looked up."""
    missing = container("nothing", "svcaudit.invalid/nothing:1")
    missing["imagePullPolicy"] = "Always"
    apply(cluster, namespace, pod("pull", missing))
    started = time.monotonic()

    def failed() -> str | None:
        events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=pull")
        return next(
            (e["message"] for e in events["items"] if e["reason"] == "Failed"),
            None,
        )

    message = eventually(failed, 60, "the pull's failure")
    assert time.monotonic() - started < 30
    if ours():
        assert "127.0.0.1:9" in message or "proxyconnect" in message, message


def test_no_packet_from_a_pod_leaves_the_machine(
    cluster: Cluster, namespace: str, tmp_path: Path, forwarding: None
) -> None:
    apply(cluster, namespace, pod("jumpod", container("shell", SHELL)))
    wait_ready(cluster, namespace, "!app", 1)
    with outside_host(tmp_path) as received:
        before = guard_drops()
        # busybox's nc speaks TCP only: its SYN (and retries) would leave by the test host's veth
        send = f"echo from-pod | nc -w 3 {TEST_HOST} {PORT}; true"
        kexec(cluster, namespace, "jumpod", "sh", "-c", send)
        assert not wait_received(received, "from-pod", 1), "a pod's packet left the machine"
        assert guard_drops() >= before + 2, "the Docker guard did not see the pod's packets"


def test_the_operator_runs_in_the_cluster_from_deploy(cluster: Cluster) -> None:
    pods = get(cluster, "svcaudit-system", "pods", "-l", "app.kubernetes.io/name=svcaudit")
    running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
    assert len(running) == 2
    assert {p["spec"]["containers"][0]["image"] for p in running} == {local.OPERATOR_IMAGE}
    holder = get(cluster, "svcaudit-system", "lease", "svcaudit-leader")["spec"]["holderIdentity"]
    assert holder.rsplit("_", 1)[0] in {p["metadata"]["name"] for p in running}
    # No operator process outside the kind nodes' containers.
    found = operator_processes()
    assert len(found) == 2 and all("docker" in cgroups for _, cgroups in found), found


def node_address(cluster: Cluster) -> str:
    node = get(cluster, "default", "nodes", "-l", "type=real")["items"][0]
    return str(next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"))


def test_a_node_port_answers_from_the_host_and_svcaudit_agrees(
    cluster: Cluster, namespace: str
) -> None:
    apply(
        cluster,
        namespace,
        rc(replicas=2),
        service("simpleservice", [{"port": 80, "targetPort": 9876}], type="NodePort"),
    )
    wait_ready(cluster, namespace, "app=sise", 2)
    svc = get(cluster, namespace, "service", "simpleservice")
    url = f"http://{node_address(cluster)}:{svc['spec']['ports'][0]['nodePort']}/info"

    def info() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    answer = eventually(info, 60, f"GET {url} from the host")
    assert answer["version"] == "0.5.0"

    def verdicts() -> dict[str, str] | None:
        conds = get(cluster, namespace, "service", "simpleservice")["status"].get("conditions")
        got = {c["type"]: c["status"] for c in conds or []}
        return got if got.get("svcaudit.dev/DiscoveryHealthy") == "True" else None

    assert eventually(verdicts, 90, "svcaudit's verdict on the NodePort Service")
