"""The tutorial on the real node: kubelet + containerd + CNI + kube-proxy of the local cluster.

Everything here runs real containers (images built locally by e2e/cluster/node/images.py) and
reads what the kubelet, kube-proxy and CoreDNS really do: curl from inside pods to pod IPs,
ClusterIPs and service names, `printenv` of injected variables. Pods are pinned to the real
node with a nodeSelector (kwok nodes may run beside it). Needs `NODE=real` (`python -m
e2e.cluster up --real-node`); skipped otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.tests.realnode_helpers import (
    SHELL,
    apply,
    cluster_ip,
    container,
    curl_json,
    get,
    kexec,
    local_node_module,
    pod,
    pod_spec,
    printenv,
    rc,
    service,
    wait_for,
    wait_ready,
)
from tests.fixtures import REPO, Cluster

# The local cluster's own real node (its processes, network, teardown): kind's nodes are
# tested by test_kind.py, and the tutorial's steps on any provider by test_tutorial.py.
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.local_only]

TEST_NET_3 = "203.0.113.1"  # documentation range: never routed anywhere; nothing is sent to it


@pytest.fixture(scope="module")
def real(cluster: Cluster) -> Cluster:
    if not cluster.real_node or cluster.provider != "local":
        pytest.skip("needs the local cluster with its real node (NODE=real)")
    return cluster


@pytest.fixture
def other_namespace(real: Cluster) -> Iterator[str]:
    name = real.create_namespace("other")
    yield name
    real.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


# ---------------------------------------------------------------------------------------------
# the node itself


def test_node_is_a_real_registered_node(real: Cluster) -> None:
    node = get(real, "default", "node", "realnode")
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert info["kubeletVersion"].startswith("v1.34")
    assert node["metadata"]["labels"]["type"] == "real"
    assert ipaddress.IPv4Network(node["spec"]["podCIDR"]).subnet_of(
        ipaddress.IPv4Network("10.244.0.0/16")
    )
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == "10.201.0.1"
    dns = get(real, "kube-system", "service", "kube-dns")["spec"]
    assert dns["clusterIP"] == "10.96.0.10"
    assert {(p["name"], p["protocol"], p["port"]) for p in dns["ports"]} == {
        ("dns", "UDP", 53),
        ("dns-tcp", "TCP", 53),
    }


def test_rc_pods_become_ready_through_the_readiness_probe(real: Cluster, namespace: str) -> None:
    started = time.monotonic()
    apply(real, namespace, rc(replicas=2))
    pods = wait_ready(real, namespace, "app=sise", 2)
    elapsed = time.monotonic() - started
    print(f"2 rcsise pods Ready on the real node in {elapsed:.1f}s")
    cidr = ipaddress.ip_network(get(real, "default", "node", "realnode")["spec"]["podCIDR"])
    for p in pods:
        assert p["spec"]["nodeName"] == "realnode"
        assert ipaddress.ip_address(p["status"]["podIP"]) in cidr
        probe = p["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        assert probe["path"] == "/health"
    # the EndpointSlice controller publishes both pods as ready endpoints once a service exists
    apply(real, namespace, service("simpleservice"))
    want = {p["status"]["podIP"] for p in pods}

    def published() -> bool:
        slices = get(
            real, namespace, "endpointslices", "-l", "kubernetes.io/service-name=simpleservice"
        )["items"]
        ready = {
            a
            for s in slices
            for e in s.get("endpoints") or []
            if e["conditions"].get("ready")
            for a in e["addresses"]
        }
        return ready == want

    wait_for(published, 30, "both pods in simpleservice's EndpointSlice")


def test_tutorial_services_from_inside_the_pod(real: Cluster, namespace: str) -> None:
    apply(real, namespace, rc(), service("simpleservice"))
    (p,) = wait_ready(real, namespace, "app=sise", 1)
    name, ip = p["metadata"]["name"], p["status"]["podIP"]
    cip = cluster_ip(real, namespace, "simpleservice")
    by_pod_ip = curl_json(real, namespace, name, f"http://{ip}:9876/info")
    assert by_pod_ip == {"host": f"{ip}:9876", "version": "0.5.0", "from": ip}
    by_cluster_ip = curl_json(real, namespace, name, f"http://{cip}:80/info")
    assert by_cluster_ip["host"] == f"{cip}:80"
    assert by_cluster_ip["version"] == "0.5.0"
    ipaddress.ip_address(by_cluster_ip["from"])  # hairpin: masqueraded to the bridge address
    by_name = curl_json(real, namespace, name, "http://simpleservice/info")
    assert by_name["host"] == "simpleservice"
    assert by_name["version"] == "0.5.0"
    # the tutorial's own `curl` works too (a wget-backed shim in the image)
    curl = kexec(real, namespace, name, "curl", "-s", f"{cip}:80/info")
    assert json.loads(curl.stdout)["host"] == f"{cip}:80"
    health = kexec(real, namespace, name, "wget", "-qO-", f"http://{ip}:9876/health")
    assert health.stdout == "ok"


def test_scaled_rc_is_load_balanced_by_kube_proxy(real: Cluster, namespace: str) -> None:
    """Services page step 8: two replicas, the ClusterIP spreads requests over both."""
    apply(
        real,
        namespace,
        rc(replicas=2),
        service("simpleservice"),
        pod("jumpod", container("shell", SHELL)),
    )
    pods = wait_ready(real, namespace, "app=sise", 2)
    wait_ready(real, namespace, "!app", 1)
    names = {p["metadata"]["name"] for p in pods}
    seen: set[str] = set()
    for _ in range(30):  # /env tells which pod answered: its HOSTNAME
        seen.add(
            curl_json(real, namespace, "jumpod", "http://simpleservice/env")["env"]["HOSTNAME"]
        )
        if seen == names:
            break
    assert seen == names


def test_pods_resolve_through_cluster_dns(real: Cluster, namespace: str) -> None:
    apply(real, namespace, pod("jumpod", container("shell", SHELL)), service("simpleservice"))
    wait_ready(real, namespace, "!app", 1)
    resolv = kexec(real, namespace, "jumpod", "cat", "/etc/resolv.conf").stdout.splitlines()
    assert "nameserver 10.96.0.10" in resolv
    assert [ln for ln in resolv if ln.startswith("nameserver")] == ["nameserver 10.96.0.10"]
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    cip = cluster_ip(real, namespace, "simpleservice")
    fqdn = f"simpleservice.{namespace}.svc.cluster.local"
    out = kexec(real, namespace, "jumpod", "nslookup", fqdn).stdout
    assert f"Address: {cip}" in out, out


def test_cross_namespace_name_from_the_jump_pod(
    real: Cluster, namespace: str, other_namespace: str
) -> None:
    """Service discovery page: thesvc in two namespaces; `thesvc.<other>` from the jump pod."""
    for ns in (namespace, other_namespace):
        apply(real, ns, rc(replicas=1), service("thesvc"))
    apply(real, namespace, pod("jumpod", container("shell", SHELL)))
    wait_ready(real, namespace, "app=sise", 1)
    (remote,) = wait_ready(real, other_namespace, "app=sise", 1)
    wait_ready(real, namespace, "!app", 1)
    local_ip = cluster_ip(real, namespace, "thesvc")
    other_ip = cluster_ip(real, other_namespace, "thesvc")
    here = curl_json(real, namespace, "jumpod", "http://thesvc/info")
    assert here["host"] == "thesvc"
    there = curl_json(real, namespace, "jumpod", f"http://thesvc.{other_namespace}/info")
    assert there["host"] == f"thesvc.{other_namespace}"
    assert there["version"] == "0.5.0"
    # the answer really came from the other namespace's pod (its client: the jump pod)
    jump_ip = get(real, namespace, "pod", "jumpod")["status"]["podIP"]
    assert there["from"] == jump_ip
    out = kexec(
        real, namespace, "jumpod", "nslookup", f"thesvc.{other_namespace}.svc.cluster.local"
    ).stdout
    assert f"Address: {other_ip}" in out and local_ip != other_ip
    assert remote["spec"]["nodeName"] == "realnode"


def test_env_vars_only_for_pods_started_after_the_service(real: Cluster, namespace: str) -> None:
    apply(real, namespace, pod("before", labels={"app": "sise"}))
    wait_ready(real, namespace, "app=sise", 1)
    apply(real, namespace, service("simpleservice"))
    cip = cluster_ip(real, namespace, "simpleservice")
    apply(real, namespace, pod("after", labels={"app": "sise"}))
    wait_ready(real, namespace, "app=sise", 2)
    before, after = printenv(real, namespace, "before"), printenv(real, namespace, "after")
    assert after["SIMPLESERVICE_SERVICE_HOST"] == cip
    assert after["SIMPLESERVICE_SERVICE_PORT"] == "80"
    assert after["SIMPLESERVICE_PORT_80_TCP"] == f"tcp://{cip}:80"
    assert not [k for k in before if k.startswith("SIMPLESERVICE_")]
    for env in (before, after):  # default/kubernetes is always there
        assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    # /env of the app shows the same process environment
    app_env = curl_json(real, namespace, "after", "http://127.0.0.1:9876/env")["env"]
    assert app_env["SIMPLESERVICE_SERVICE_HOST"] == cip


def test_recreated_service_leaves_old_pods_with_the_stale_ip(real: Cluster, namespace: str) -> None:
    apply(real, namespace, service("simpleservice"))
    old_ip = cluster_ip(real, namespace, "simpleservice")
    apply(real, namespace, pod("old", labels={"app": "sise"}))
    wait_ready(real, namespace, "app=sise", 1)
    real.run_kubectl("delete", "service", "simpleservice", "-n", namespace)
    apply(real, namespace, service("simpleservice"))
    new_ip = cluster_ip(real, namespace, "simpleservice")
    assert new_ip != old_ip
    apply(real, namespace, pod("new", labels={"app": "sise"}))
    wait_ready(real, namespace, "app=sise", 2)
    assert printenv(real, namespace, "old")["SIMPLESERVICE_SERVICE_HOST"] == old_ip
    assert printenv(real, namespace, "new")["SIMPLESERVICE_SERVICE_HOST"] == new_ip


def test_version_from_the_environment(real: Cluster, namespace: str) -> None:
    """Environment variables page: SIMPLE_SERVICE_VERSION=1.0 makes /info report 1.0."""
    apply(
        real,
        namespace,
        pod("envs", container(env={"SIMPLE_SERVICE_VERSION": "1.0"}), labels={"app": "envs"}),
    )
    wait_ready(real, namespace, "app=envs", 1)
    info = curl_json(real, namespace, "envs", "http://127.0.0.1:9876/info")
    assert info == {"host": "127.0.0.1:9876", "version": "1.0", "from": "127.0.0.1"}
    env = curl_json(real, namespace, "envs", "http://127.0.0.1:9876/env")
    assert env["version"] == "1.0"
    assert env["env"]["SIMPLE_SERVICE_VERSION"] == "1.0"
    assert env["env"]["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert printenv(real, namespace, "envs")["SIMPLE_SERVICE_VERSION"] == "1.0"


def test_envvars_engine_predicts_exactly_what_printenv_shows(real: Cluster, namespace: str) -> None:
    """The expectation engine (svcaudit.core.envvars) against the kubelet, as sets."""
    from svcaudit.core import envvars
    from svcaudit.core.model import Pod, Service

    apply(
        real,
        namespace,
        service("simpleservice"),
        service(
            "multi-port",
            [
                {"name": "http", "port": 80, "targetPort": 9876},
                {"name": "metrics-tcp", "port": 9100, "protocol": "TCP"},
                {"name": "mdns", "port": 5353, "protocol": "UDP"},
            ],
        ),
        service(
            "dns-like",
            [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        ),
        service("headless-one", [{"port": 80}], clusterIP="None"),
        service("selectorless", [{"name": "web", "port": 8080}], selector={}),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "external"},
            "spec": {"type": "ExternalName", "externalName": "example.invalid"},
        },
        service("node-port", [{"port": 81, "targetPort": 9876}], type="NodePort"),
    )
    apply(
        real,
        namespace,
        pod(
            "probe",
            container(env={"MULTI_PORT_SERVICE_HOST": "explicit-wins"}),
            labels={"app": "probe"},
        ),
        {
            **pod("nolinks", container(), labels={"app": "probe"}),
            "spec": {**pod_spec(container()), "enableServiceLinks": False},
        },
    )
    wait_ready(real, namespace, "app=probe", 2)
    services = [Service.from_api(s) for s in get(real, namespace, "services")["items"]]
    services += [Service.from_api(get(real, "default", "service", "kubernetes"))]
    image_env = {"PATH", "HOME", "HOSTNAME"}
    for name in ("probe", "nolinks"):
        obj = get(real, namespace, "pod", name)
        (predicted,) = envvars.pod_env(Pod.from_api(obj), services)
        explicit = {e["name"] for e in obj["spec"]["containers"][0].get("env", [])}
        shown = printenv(real, namespace, name)
        service_derived = {
            (k, v) for k, v in shown.items() if k not in image_env and k not in explicit
        }
        assert set(predicted.env.items()) == service_derived, name
    assert printenv(real, namespace, "probe")["MULTI_PORT_SERVICE_HOST"] == "explicit-wins"


def test_pods_cannot_address_the_outside_world(real: Cluster, namespace: str) -> None:
    """Network safety, checked without sending anything outside: pods have no default route
    (the kernel refuses to route to an outside address), and the host's egress guard drops
    whatever comes from the pod CIDR or from a ClusterIP's DNAT on any other interface."""
    apply(real, namespace, pod("jumpod", container("shell", SHELL)))
    wait_ready(real, namespace, "!app", 1)
    routes = kexec(real, namespace, "jumpod", "ip", "route").stdout
    assert "default" not in routes
    refused = kexec(real, namespace, "jumpod", "ip", "route", "get", TEST_NET_3, check=False)
    assert refused.returncode != 0
    assert "unreachable" in refused.stderr.lower()
    _, realnode, _ = local_node_module(real)
    guard = subprocess.run(
        ["iptables", "-t", "mangle", "-S", realnode.GUARD_CHAIN],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"-s {realnode.cluster.CLUSTER_CIDR} " in guard and "-j DROP" in guard
    assert "--ctorigdst 10.96.0.0/16" in guard
    hooks = subprocess.run(
        ["iptables", "-t", "mangle", "-S", "POSTROUTING"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"-j {realnode.GUARD_CHAIN}" in hooks
    kubelet_resolv = (real.state_dir / "node" / "resolv.conf").read_text()  # type: ignore[operator]
    servers = [ln.split()[1] for ln in kubelet_resolv.splitlines() if ln.startswith("nameserver")]
    assert servers and all(
        ipaddress.ip_address(s) in ipaddress.ip_network("10.201.0.0/24") for s in servers
    )


def test_image_pulls_never_leave_the_machine(real: Cluster, namespace: str) -> None:
    """An image that was not imported fails to pull at once, through the closed local
    "proxy" containerd is given: no registry name is ever resolved or dialled."""
    apply(
        real,
        namespace,
        pod(
            "nopull",
            {"name": "x", "image": "registry.invalid/nothing:1", "imagePullPolicy": "Always"},
            labels={"app": "x"},
        ),
    )
    message = ""

    def refused() -> bool:
        nonlocal message
        obj = get(real, namespace, "pod", "nopull")
        statuses = obj.get("status", {}).get("containerStatuses") or [{}]
        message = statuses[0].get("state", {}).get("waiting", {}).get("message", "")
        return "proxyconnect" in message

    wait_for(refused, 60, "the pull to fail on the local proxy")
    assert "127.0.0.1:9" in message


@pytest.mark.lifecycle
def test_node_down_leaves_the_machine_as_it_was(real: Cluster) -> None:
    """Runs last: take the node down, compare the machine with the snapshot `up` took
    before touching anything (processes, netns, links, routes, iptables, mounts, cgroups,
    sysctls, host paths), then bring the node back."""
    local, realnode, state = local_node_module(real)
    paths = realnode.Paths(state)
    assert paths.baseline.exists(), "up() records the machine before touching it"
    baseline = json.loads(paths.baseline.read_text())
    during = realnode.snapshot(paths)
    assert realnode.differences(baseline, during), "the running node changes the machine"
    try:
        leftovers = realnode.down(state)
        after = realnode.snapshot(paths)
        assert leftovers == {}
        assert realnode.differences(baseline, after) == {}
        assert after["processes"] == []
        assert not [m for m in after["mounts"] if m.startswith(str(paths.root))]
        assert realnode.BRIDGE not in after["links"]
        assert not [c for c in after["iptables"] if "SVCAUDIT" in c or "KUBE-" in c]
        assert not any(local.running_pid(state, c) for c in realnode.COMPONENTS)
    finally:
        realnode.up(state)
    assert realnode.node_ready(state)


def test_image_tarballs_are_cached_by_source_hash(tmp_path: Path) -> None:
    """Built once per source hash, outside the checkout; a changed source means a new folder."""
    from e2e.cluster.node import images

    assert images.BUSYBOX.exists(), "busybox-static is missing: make deps"
    first = images.build(tmp_path)
    assert first.name == f"images-{images.sources_hash()}"
    stamp = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert images.build(tmp_path) == first
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamp
    tars = images.tarballs(first)
    assert set(tars) == set(images.IMAGES)
    with tarfile.open(tars[images.SIMPLESERVICE_IMAGE]) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == [images.SIMPLESERVICE_IMAGE]
    assert len(manifest[0]["Layers"]) == 2
    assert not images.cache_root().resolve().is_relative_to(REPO)
