"""Every replica of the cluster DNS asked: CoreDNS processes of this test's own, listed as
the endpoints of a DNS Service of its namespace (`--dns-service`, so the cluster's kube-dns
is left alone). Two consistent replicas: every service healthy. A third one answering a
wrong address for one name: SVA-DNS-004 naming it. One stopped: SVA-DNS-005 naming it.

Each replica is a real CoreDNS (the cluster's binary, its kubernetes plugin watching the
cluster with the cluster's CoreDNS credentials) bound to the host's cluster address
(cluster.ADVERTISE_IP, on the local cluster's own interface) at a port of its own: an
EndpointSlice may not list a loopback address, and one slice per replica gives each its port.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest

from e2e.cluster import cluster as local
from tests.fixtures import Cluster, eventually
from tests.integration.op_helpers import Operator, condition_is, ensure_crd
from tests.integration.test_check_helpers import by_name, check_json

pytestmark = [pytest.mark.cluster, pytest.mark.local_only]

ADDRESS = local.ADVERTISE_IP
WRONG = "10.96.99.99"

WORKLOAD = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
# this namespace's cluster DNS: selectorless, one hand-written slice per replica
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {type: kwok}
      containers: [{name: main, image: example.invalid/web:1, ports: [{containerPort: 8080}]}]
"""


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{ADDRESS}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def free_port() -> int:
    """A port free for both TCP and UDP on ADDRESS (CoreDNS listens on both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind((ADDRESS, 0))
            port = int(tcp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((ADDRESS, port))
            except OSError:
                continue
        return port


def corefile(cluster: Cluster, port: int, extra: str = "") -> str:
    assert cluster.state_dir is not None
    kubeconfig = cluster.state_dir / "kubeconfigs" / "coredns.kubeconfig"
    return (
        f"cluster.local:{port} in-addr.arpa:{port} ip6.arpa:{port} {{\n"
        f"    bind {ADDRESS}\n    errors\n{extra}"
        f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {kubeconfig} svcaudit-local\n        pods insecure\n        ttl 5\n"
        f"    }}\n}}\n"
    )


def start_replica(cluster: Cluster, folder: Path, name: str, extra: str = "") -> Replica:
    port = free_port()
    conf = folder / f"Corefile-{name}"
    conf.write_text(corefile(cluster, port, extra))
    log = open(folder / f"coredns-{name}.log", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        [str(local.binary("coredns")), f"-conf={conf}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    replica = Replica(name, port, proc)

    def answers() -> bool:
        query = dns.message.make_query("kubernetes.default.svc.cluster.local.", "A")
        with suppress(OSError, dns.exception.DNSException):
            reply = dns.query.udp(query, ADDRESS, port=port, timeout=1)
            return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)
        return False

    try:
        eventually(answers, 30, f"CoreDNS replica {name} on {replica.address}")
    except BaseException:
        replica.stop()
        raise
    return replica


@contextmanager
def replicas(cluster: Cluster, folder: Path, *specs: tuple[str, str]) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for name, extra in specs:
            started.append(start_replica(cluster, folder, name, extra))
        yield started
    finally:
        for r in started:
            r.stop()


def wrong_answer(namespace: str) -> str:
    """A replica that answers another address for web's name (a stray template/rewrite)."""
    name = rf"^web\.{namespace}\.svc\.cluster\.local\.$"
    return (
        "    template IN A cluster.local {\n"
        f'        match "{name}"\n'
        f'        answer "{{{{ .Name }}}} 5 IN A {WRONG}"\n'
        "        fallthrough\n"
        "    }\n"
    )


def list_replica(cluster: Cluster, namespace: str, replica: Replica) -> None:
    """One EndpointSlice of the namespace's DNS Service per replica (its own port)."""
    cluster.run_kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata: {{name: dns-{replica.name}, labels: "
            "{kubernetes.io/service-name: dns}}\n"
            f"addressType: IPv4\nports: [{{name: dns, port: {replica.port}, protocol: UDP}}]\n"
            f"endpoints: [{{addresses: ['{ADDRESS}'], conditions: {{ready: true}}}}]\n"
        ),
    )


def check(cluster: Cluster, namespace: str) -> dict[str, Any]:
    _, doc = check_json(cluster, "-n", namespace, "--dns-service", f"{namespace}/dns", dns=False)
    return doc


def pods_running(cluster: Cluster, namespace: str) -> bool:
    out = cluster.run_kubectl(
        "get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].status.phase}"
    ).stdout.split()
    return out == ["Running", "Running"]


def test_two_consistent_replicas_are_healthy_and_a_wrong_third_is_named(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=WORKLOAD)
    eventually(lambda: pods_running(cluster, namespace), 60, "the pods Running")
    specs = [("a", ""), ("b", ""), ("wrong", wrong_answer(namespace))]
    with replicas(cluster, tmp_path, *specs) as (a, b, wrong):
        for r in (a, b):
            list_replica(cluster, namespace, r)

        def healthy() -> dict[str, Any] | None:
            doc = check(cluster, namespace)
            services = by_name(doc, namespace)
            ok = all(s["verdicts"]["Healthy"]["status"] == "True" for s in services.values())
            return doc if ok and set(services) == {"web", "dns"} else None

        doc = eventually(healthy, 60, "every service healthy with two consistent replicas")
        assert doc["dns"]["server"] == ", ".join(sorted((a.address, b.address)))
        list_replica(cluster, namespace, wrong)

        def named() -> dict[str, Any] | None:
            web = by_name(check(cluster, namespace), namespace)["web"]
            return next((d for d in web["discrepancies"] if d["code"] == "SVA-DNS-004"), None)

        found = eventually(named, 60, "SVA-DNS-004 about the wrong replica")
        assert found["related"] == [f"DNS replica {wrong.address}"]
        assert f"answers web.{namespace}.svc.cluster.local. A: {WRONG}" in found["observed"]
        assert f"the other replicas: {found['expected'].rsplit(': ', 1)[1]}" in found["observed"]
        final = by_name(check(cluster, namespace), namespace)
        assert final["web"]["verdicts"]["DNS"]["status"] == "False"
        assert final["web"]["verdicts"]["DNS"]["reason"] == "DnsReplicaDisagrees"
        codes = {d["code"] for s in final.values() for d in s["discrepancies"]}
        assert "SVA-DNS-001" not in codes and "SVA-DNS-002" not in codes  # the others agree
        assert final["dns"]["verdicts"]["DNS"]["status"] == "True"  # only web's name is wrong


def test_the_operator_names_a_silent_replica_and_recovers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The operator (no --dns-server, --dns-service this namespace's) reads the replicas from
    the slices it LISTs, asks both; one stopped: SVA-DNS-005 on the Service's condition; its
    slice removed (as the EndpointSlice controller does for a dead pod): True again."""
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=WORKLOAD)
    eventually(lambda: pods_running(cluster, namespace), 60, "the pods Running")
    ensure_crd(cluster)
    with replicas(cluster, tmp_path, ("a", ""), ("b", "")) as (a, b):
        for r in (a, b):
            list_replica(cluster, namespace, r)
        op = Operator(cluster, namespace, tmp_path / "operator.log")
        at = op.args.index("--dns-server")
        del op.args[at : at + 2]
        op.args += ["--dns-service", f"{namespace}/dns"]
        op.start()
        try:
            eventually(
                lambda: condition_is(cluster, namespace, "web", "DNSConsistent", "True"),
                60,
                "DNS True with both replicas",
            )
            servers = [e for e in op.logs() if e.get("event") == "dns server"]
            assert servers[-1]["servers"] == sorted((a.address, b.address))
            b.stop()
            cond = eventually(
                lambda: condition_is(cluster, namespace, "web", "DNSConsistent", "False"),
                60,
                "DNS False: a silent replica",
            )
            assert cond["reason"] == "DnsReplicaNotAnswering"
            assert b.address in cond["message"]
            cluster.run_kubectl("delete", "endpointslice", "dns-b", "-n", namespace)
            eventually(
                lambda: condition_is(cluster, namespace, "web", "DNSConsistent", "True"),
                90,
                "DNS True again once the silent replica left the slices",
            )
        finally:
            op.stop()


def test_the_local_cluster_runs_two_dns_replicas_and_check_asks_both(
    cluster: Cluster, namespace: str
) -> None:
    """kube-system/kube-dns lists the two CoreDNS processes of the local cluster
    (cluster.DNS_REPLICA_ADDRESSES, port 53); `svcaudit check` without --dns-server asks
    both, and a consistent namespace is healthy."""
    slices = json.loads(
        cluster.run_kubectl(
            "get", "endpointslices", "-n", "kube-system",
            "-l", "kubernetes.io/service-name=kube-dns", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    listed = sorted(a for s in slices for e in s["endpoints"] for a in e["addresses"])
    assert listed == sorted(local.DNS_REPLICA_ADDRESSES)
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=WORKLOAD)
    eventually(lambda: pods_running(cluster, namespace), 60, "the pods Running")

    def healthy() -> dict[str, Any] | None:
        _, doc = check_json(cluster, "-n", namespace, dns=False)
        web = by_name(doc, namespace).get("web") or {}
        return doc if web.get("verdicts", {}).get("Healthy", {}).get("status") == "True" else None

    doc = eventually(healthy, 60, "web healthy, both replicas asked")
    assert doc["dns"]["server"] == ", ".join(f"{a}:53" for a in local.DNS_REPLICA_ADDRESSES)
