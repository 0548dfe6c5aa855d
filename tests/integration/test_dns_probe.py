"""The DNS prober against the cluster's real CoreDNS: every question shares one UDP socket,
answers are matched to their questions however many are in flight, and a socket an ICMP
refusal broke is replaced by the next question."""

from __future__ import annotations

import asyncio
import time

import pytest

from svcaudit.controller.dns_probe import DnsProber, ProbeResult
from svcaudit.controller.dns_server import Target
from tests.fixtures import Cluster
from tests.integration.op_helpers import apply

pytestmark = pytest.mark.cluster

KUBERNETES = "kubernetes.default.svc.cluster.local."
DNS_SVC = "kube-dns.kube-system.svc.cluster.local."
QUESTIONS = [
    (KUBERNETES, "A"),
    (DNS_SVC, "A"),
    (f"_https._tcp.{KUBERNETES}", "SRV"),
    ("no-such-service.default.svc.cluster.local.", "A"),
]


def _prober(server: list[tuple[str, int]], concurrency: int) -> DnsProber:
    async def current() -> list[Target]:
        return [Target(*server[0])]

    return DnsProber(current, timeout=2.0, concurrency=concurrency)


def test_one_socket_answers_every_question_in_flight(cluster: Cluster) -> None:
    async def run() -> tuple[ProbeResult, list[ProbeResult], int, int]:
        prober = _prober([(cluster.dns_host, cluster.dns_port)], concurrency=8)
        first = await prober.probe(QUESTIONS)
        # 40 probes at once over the one socket: an answer given to the wrong question shows
        rounds = await asyncio.gather(*(prober.probe(QUESTIONS) for _ in range(40)))
        shared = prober.open_sockets
        await prober.aclose()
        return first, list(rounds), shared, prober.open_sockets

    first, rounds, shared, closed = asyncio.run(run())
    assert first.error is None
    assert "kubernetes.default.svc.cluster.local" in {a.name for a in first.answers}
    assert any(a.rtype == "SRV" for a in first.answers)
    assert ("no-such-service.default.svc.cluster.local.", "A") in first.nxdomain
    assert all(r == first for r in rounds)
    assert shared == 1 and closed == 0


def test_a_refused_socket_fails_fast_and_is_replaced(cluster: Cluster) -> None:
    """Port 9 on loopback: nothing listens; the ICMP refusal fails the questions as refused
    (not as timed out: the socket is connected). The next probe, to the real server, gets a
    new socket."""
    server = [("127.0.0.1", 9)]

    async def run() -> tuple[ProbeResult, ProbeResult]:
        prober = _prober(server, concurrency=2)
        refused = await prober.probe([(KUBERNETES, "A"), (DNS_SVC, "A")])
        server[0] = (cluster.dns_host, cluster.dns_port)
        answered = await prober.probe([(KUBERNETES, "A")])
        await prober.aclose()
        return refused, answered

    refused, answered = asyncio.run(run())
    assert refused.error is not None and "connection refused" in refused.error
    assert "timeout" not in refused.error
    assert answered.error is None and answered.answers


def test_an_answer_too_long_for_udp_is_asked_again_over_tcp(
    cluster: Cluster, namespace: str
) -> None:
    """A headless service with 60 ready endpoints: its A answer (~1 KB) does not fit the
    512 bytes of a plain UDP answer, so CoreDNS truncates it (TC). Every address must still
    come back: the prober asks again over TCP."""
    addresses = [f"10.250.1.{i}" for i in range(1, 61)]
    endpoints = "".join(
        f"  - addresses: ['{ip}']\n    conditions: {{ready: true}}\n" for ip in addresses
    )
    apply(
        cluster,
        namespace,
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: wide}\n"
            "spec: {clusterIP: None, ports: [{name: http, port: 80}]}\n"
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            "metadata: {name: wide-1, labels: {kubernetes.io/service-name: wide}}\n"
            "addressType: IPv4\nports: [{name: http, port: 80, protocol: TCP}]\n"
            f"endpoints:\n{endpoints}"
        ),
    )
    name = f"wide.{namespace}.svc.cluster.local."

    async def ask() -> ProbeResult:
        prober = _prober([(cluster.dns_host, cluster.dns_port)], concurrency=2)
        try:
            return await prober.probe([(name, "A")])
        finally:
            await prober.aclose()

    deadline = time.monotonic() + 30
    while True:  # CoreDNS picks the slice up from its watch
        result = asyncio.run(ask())
        got = {a.text for a in result.answers if a.rtype == "A"}
        if got == set(addresses) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.error is None
    assert got == set(addresses), f"{len(got)} of {len(addresses)} addresses"
