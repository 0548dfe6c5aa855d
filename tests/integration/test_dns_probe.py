"""The DNS prober against the cluster's real CoreDNS: every question shares one UDP socket,
answers are matched to their questions however many are in flight, and a socket an ICMP
refusal broke is replaced by the next question."""

from __future__ import annotations

import asyncio

import pytest

from svcaudit.controller.dns_probe import DnsProber, ProbeResult
from tests.fixtures import Cluster

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
    async def current() -> tuple[str | None, int]:
        return server[0]

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
