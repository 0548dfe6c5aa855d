"""The local cluster is a real cluster: versions, nodes, the EndpointSlice controller, CoreDNS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from e2e.cluster import cluster as local
from e2e.cluster.node import realnode
from tests.fixtures import CLUSTER_CMD, REPO, Cluster, cluster_env, process_alive
from tests.integration.op_helpers import eventually

pytestmark = pytest.mark.cluster


def read_versions() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO / "e2e/cluster/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.run_kubectl("get", *args, "-o", "json").stdout)


TUTORIAL_RC = (REPO / "e2e/manifests/tutorial-kwok.yaml").read_text()


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    if cluster.provider != "local":
        pytest.skip("the pinned version is a property of the local cluster only")
    version = json.loads(cluster.run_kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == read_versions()["KUBE_VERSION"]
    assert version["clientVersion"]["gitVersion"] == read_versions()["KUBE_VERSION"]


def test_fake_nodes_are_ready_with_distinct_ips_and_zones(cluster: Cluster) -> None:
    nodes = [
        n
        for n in get_json(cluster, "nodes")["items"]
        if n["metadata"]["labels"].get("type") == "kwok"
    ]
    assert len(nodes) >= 2
    ips, zones = set(), set()
    for node in nodes:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True", node["metadata"]["name"]
        assert not node["spec"].get("taints")
        ips |= {a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"}
        zones.add(node["metadata"]["labels"]["topology.kubernetes.io/zone"])
        assert node["spec"]["podCIDR"]
    assert len(ips) == len(nodes)
    assert len(zones) >= 2


def slice_endpoints(cluster: Cluster, namespace: str) -> tuple[set[str], set[int]]:
    """Ready endpoint addresses and ports of simpleservice's controller-managed slices."""
    slices = get_json(
        cluster, "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=simpleservice"
    )["items"]
    addresses: set[str] = set()
    ports: set[int] = set()
    for s in slices:
        labels = s["metadata"]["labels"]
        assert labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
        for ep in s.get("endpoints") or []:
            if ep["conditions"].get("ready"):
                addresses.update(ep["addresses"])
        ports.update(p["port"] for p in s.get("ports") or [])
    return addresses, ports


def running_pod_ips(cluster: Cluster, namespace: str) -> list[str]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=sise")["items"]
    return [
        p["status"]["podIP"]
        for p in pods
        if p["status"].get("phase") == "Running"
        and p["status"].get("podIP")
        and not p["metadata"].get("deletionTimestamp")
    ]


def test_tutorial_service_gets_endpoints_from_the_real_controller(
    cluster: Cluster, namespace: str
) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=TUTORIAL_RC)

    def settled(n: int) -> Callable[[], Any]:
        def check() -> Any:
            ips = running_pod_ips(cluster, namespace)
            if len(ips) != n:
                return None
            addresses, ports = slice_endpoints(cluster, namespace)
            return (ips, addresses, ports) if addresses == set(ips) else None

        return check

    ips, addresses, ports = eventually(settled(2), what="2 running pods in the slice")
    assert len(set(ips)) == 2
    assert ports == {9876}
    for replicas in (3, 1):
        cluster.run_kubectl("scale", "-n", namespace, f"--replicas={replicas}", "rc/rcsise")
        ips, addresses, _ = eventually(settled(replicas), what=f"{replicas} pods in the slice")
        assert addresses == set(ips)


def dns_query(cluster: Cluster, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, cluster.dns_host, port=cluster.dns_port, timeout=3)


def test_coredns_answers_service_names(cluster: Cluster, namespace: str) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=TUTORIAL_RC)
    cluster_ip = get_json(cluster, "svc", "simpleservice", "-n", namespace)["spec"]["clusterIP"]
    name = f"simpleservice.{namespace}.svc.cluster.local."

    def answer() -> Any:
        reply = dns_query(cluster, name, "A")
        return {rr.address for rrset in reply.answer for rr in rrset} or None

    assert eventually(answer, 30, f"A record for {name}") == {cluster_ip}
    missing = dns_query(cluster, f"nosuchservice.{namespace}.svc.cluster.local.", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN


def test_cluster_ranges_and_names_never_leave_the_machine(cluster: Cluster) -> None:
    """While the cluster is up: the service, pod and kwok node ranges are blackholed on the
    host, and CoreDNS has no upstream (a name outside the cluster zones is refused, never
    forwarded)."""
    if cluster.state_dir is None:
        pytest.skip("only the local cluster is started by this project")
    import subprocess

    routes = subprocess.run(
        ["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True, check=True
    ).stdout.split()
    for cidr in local.BLACKHOLES:
        assert cidr in routes, f"{cidr} is not blackholed: {routes}"
    corefile = (cluster.state_dir / "Corefile").read_text()
    assert "forward" not in corefile and "proxy" not in corefile
    outside = dns_query(cluster, "example.com.", "A")
    assert outside.rcode() == dns.rcode.REFUSED
    assert not outside.answer


def test_up_twice_is_harmless(cluster: Cluster) -> None:
    if cluster.state_dir is None:
        pytest.skip("only the local cluster is started by this project")
    pids_before = {p.name: p.read_text() for p in (cluster.state_dir / "pids").glob("*.pid")}
    import subprocess

    proc = subprocess.run(
        [*CLUSTER_CMD, "up"], capture_output=True, text=True, timeout=120, env=cluster_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stdout
    pids_after = {p.name: p.read_text() for p in (cluster.state_dir / "pids").glob("*.pid")}
    assert pids_after == pids_before


def listening_ports() -> set[int]:
    """TCP and UDP ports with a listening socket on this machine (from /proc/net)."""
    ports: set[int] = set()
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == listen_state:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.lifecycle
def test_down_leaves_no_process_and_no_port(cluster: Cluster) -> None:
    """Runs last (see tests/fixtures.py): stops the cluster, checks, and starts it again."""
    if cluster.state_dir is None:
        pytest.skip("only the local cluster is started by this project")
    import subprocess

    pids = {}
    for path in (cluster.state_dir / "pids").glob("*.pid"):
        pid_text = path.read_text().split("\n", 1)[0]
        pids[path.stem] = int(pid_text)
    assert {"etcd", "apiserver", "controller-manager", "scheduler", "kwok", "coredns"} <= set(pids)
    ports = set(local.PORTS.values())
    assert ports & listening_ports(), "the running cluster should be listening"
    try:
        down = subprocess.run(
            [*CLUSTER_CMD, "down"], capture_output=True, text=True, timeout=180, env=cluster_env()
        )
        assert down.returncode == 0, down.stderr
        alive = [name for name, pid in pids.items() if process_alive(pid)]
        assert alive == []
        assert ports & listening_ports() == set()
        assert not list((cluster.state_dir / "pids").glob("*.pid"))
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert local.HOST_IFACE not in links
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        assert "blackhole" not in routes
    finally:
        args = [*CLUSTER_CMD, "up"] + (["--real-node"] if cluster.real_node else [])
        subprocess.run(args, capture_output=True, text=True, timeout=600, env=cluster_env())


def test_a_cluster_that_cannot_start_ends_the_session_once(tmp_path: Path) -> None:
    """Every test needs the cluster: when it cannot start, the session stops at the first one
    with the cluster's own error line, instead of the same traceback once per test."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_two.py").write_text(
        "def test_one(cluster):\n    pass\n\n\ndef test_two(cluster):\n    pass\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NODE": "real",
        "E2E_CLUSTER": "local",
        "SVCAUDIT_CLUSTER_DIR": str(tmp_path / "state"),
        # the real node runs only in the offset-0 cluster: `up` refuses at once
        "SVCAUDIT_CLUSTER_PORT_OFFSET": "500",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.fixtures", "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout + proc.stderr
    reason = "the local cluster did not start: [cluster] the real node runs only in the offset-0"
    assert out.count(reason) == 1, out
    assert "passed" not in out and " error" not in out, out


def test_the_real_node_raises_the_cluster_modules_own_error() -> None:
    """e2e/cluster is one package: the real node uses the very module the command line runs
    (not a second copy with another ClusterError), and no other name holds that file."""
    import sys

    assert realnode.cluster is local
    assert realnode.cluster.ClusterError is local.ClusterError
    copies = [
        name
        for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None) == local.__file__
    ]
    assert copies == ["e2e.cluster.cluster"]


def test_a_real_node_failure_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A ClusterError raised by the real node reaches the command line's handler: `python -m
    e2e.cluster up --real-node` with the node's tools out of reach (an empty PATH) prints the
    `[cluster] FAILED` line naming them and exits 1, having started nothing."""
    import subprocess

    kubernetes = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    needed = [local.binary(c) for c in ("etcd", "kwok", "coredns")] + [
        local.binary("kubernetes", b) for b in (*kubernetes, "kubelet", "kube-proxy")
    ]
    if not all(p.exists() for p in needed):
        pytest.skip("the cluster binaries are not built (make build): `up` would build them")
    empty = tmp_path / "bin"
    empty.mkdir()
    env = cluster_env({"PATH": str(empty), "SVCAUDIT_CLUSTER_DIR": str(tmp_path / "state")})
    env.pop("SVCAUDIT_CLUSTER_PORT_OFFSET", None)
    proc = subprocess.run(
        [*CLUSTER_CMD, "up", "--real-node"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "[cluster] FAILED: real node prerequisites missing: containerd" in proc.stderr
    assert not (tmp_path / "state" / "pids").exists()


def test_the_old_script_path_names_the_command_line() -> None:
    """e2e/cluster/cluster.py is a module, not a script any more: run as one, it does nothing
    but name `python -m e2e.cluster`."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO / "e2e/cluster/cluster.py"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    expected = "the local cluster's command line is: python -m e2e.cluster status"
    assert proc.stderr.strip() == expected
