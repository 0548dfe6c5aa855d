"""The DNS prober against the cluster's real CoreDNS: pooled UDP sockets give the same answers
as fresh ones, never more sockets than concurrency slots, and a failed question's socket is
dropped rather than reused."""

from __future__ import annotations

import asyncio

import pytest

from svcaudit.controller.dns_probe import DnsProber, ProbeResult
from tests.fixtures import Cluster

pytestmark = pytest.mark.cluster

KUBERNETES = "kubernetes.default.svc.cluster.local."
DNS_SVC = "kube-dns.kube-system.svc.cluster.local."


def _prober(host: str, port: int, concurrency: int) -> DnsProber:
    async def server() -> tuple[str | None, int]:
        return host, port

    return DnsProber(server, timeout=2.0, concurrency=concurrency)


def test_pooled_sockets_answer_like_fresh_ones_and_stay_bounded(cluster: Cluster) -> None:
    questions = [
        (KUBERNETES, "A"),
        (DNS_SVC, "A"),
        (f"_https._tcp.{KUBERNETES}", "SRV"),
        ("no-such-service.default.svc.cluster.local.", "A"),
    ]

    async def run() -> tuple[ProbeResult, list[ProbeResult], int, int, int]:
        prober = _prober(cluster.dns_host, cluster.dns_port, concurrency=3)
        first = await prober.probe(questions)
        after_first = prober.pooled_sockets
        # 40 rounds over the same pool: an answer mixed up between questions would show
        rounds = await asyncio.gather(*(prober.probe(questions) for _ in range(40)))
        bounded = prober.pooled_sockets
        await prober.aclose()
        return first, list(rounds), after_first, bounded, prober.pooled_sockets

    first, rounds, after_first, bounded, closed = asyncio.run(run())
    assert first.error is None
    assert "kubernetes.default.svc.cluster.local" in {a.name for a in first.answers}
    assert ("no-such-service.default.svc.cluster.local.", "A") in first.nxdomain
    assert all(r == first for r in rounds)
    assert 1 <= after_first <= 3 and 1 <= bounded <= 3, "at most one socket per slot"
    assert closed == 0


def test_a_failed_question_drops_its_socket() -> None:
    """Port 9 on loopback: nothing listens, the ICMP refusal fails each question. The error
    is reported, and no failed socket goes back to the pool."""

    async def run() -> tuple[str | None, int]:
        prober = _prober("127.0.0.1", 9, concurrency=2)
        result = await prober.probe([(KUBERNETES, "A"), (DNS_SVC, "A")])
        return result.error, prober.pooled_sockets

    error, idle = asyncio.run(run())
    assert error is not None and "unreachable or failing" in error
    assert idle == 0
