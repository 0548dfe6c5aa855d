"""A DNS server that receives questions and never answers (a real UDP socket on loopback):
each question times out after the prober's timeout, the observation is an error naming the
timeout (never "no records"), and the metrics hear "timeout" once per question."""

from __future__ import annotations

import asyncio
import socket
import time

from svcaudit.controller.dns_probe import DnsProber
from svcaudit.controller.dns_server import Target


def test_a_silent_server_times_out_every_question_once() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    outcomes: list[str] = []

    async def servers() -> list[Target]:
        return [Target("127.0.0.1", port)]

    async def main() -> tuple[str | None, float]:
        prober = DnsProber(servers, timeout=0.3, on_query=lambda _, o: outcomes.append(o))
        started = time.monotonic()
        result = await prober.probe([("a.ns.svc.cluster.local.", "A"), ("b.ns.svc.x.", "SRV")])
        took = time.monotonic() - started
        await prober.aclose()
        return result.error, took

    try:
        error, took = asyncio.run(main())
    finally:
        silent.close()
    assert error is not None and "timeout" in error
    assert 0.25 <= took < 1.5  # asked together: one timeout, not one after the other
    assert outcomes == ["timeout", "timeout"]
