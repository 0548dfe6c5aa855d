"""Asking the cluster DNS (dnspython, asyncio): bounded concurrency, timeouts, no retries storm.

The prober answers a list of questions (name, type) with the raw records it got back. It
decides nothing: NXDOMAIN and NODATA are simply "no records"; a server that does not answer
(timeout, refused, SERVFAIL) makes the whole observation an error, which the core turns into
DNSConsistent=Unknown (never False).

`on_query(seconds, outcome)`, if given, is called once per question sent, with its latency
(semaphore wait excluded) and outcome "answer" (NOERROR, NODATA included), "nxdomain",
"timeout" or "error" (refused, SERVFAIL, network error): the metrics' `dns_query`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from socket import SOCK_DGRAM
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.rcode
import dns.rdatatype


@dataclasses.dataclass(frozen=True)
class Answer:
    name: str  # lower-case, no trailing dot
    rtype: str  # "A", "AAAA", "SRV", "PTR", "CNAME"
    text: str  # the rdata's presentation text (dnspython `to_text()`), canonicalised by the core


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    answers: frozenset[Answer]
    error: str | None
    server: str
    nxdomain: frozenset[tuple[str, str]] = frozenset()  # questions answered NXDOMAIN


def _strip(name: str) -> str:
    return name.rstrip(".").lower()


class DnsProber:
    """Queries one server over UDP (TCP on truncation).

    UDP sockets are pooled, at most one per concurrency slot: opening an asyncio datagram
    endpoint per question was a third of the prober's CPU (thousands of questions per pass).
    A socket whose question failed is closed, not reused (a late answer could arrive on it;
    answers to other questions are skipped by id anyway)."""

    def __init__(
        self,
        server: Callable[[], Awaitable[tuple[str | None, int]]],
        timeout: float = 2.0,
        concurrency: int = 16,
        on_query: Callable[[float, str], None] | None = None,
    ) -> None:
        self._server = server
        self._timeout = timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._on_query = on_query
        self._idle: dict[int, list[Any]] = {}  # address family -> idle sockets
        self._backend = dns.asyncbackend.get_backend("asyncio")

    @property
    def pooled_sockets(self) -> int:
        """Idle sockets held for reuse: at most one per concurrency slot."""
        return sum(len(sockets) for sockets in self._idle.values())

    async def aclose(self) -> None:
        """Close the pooled sockets (the prober stays usable: it opens new ones)."""
        idle, self._idle = self._idle, {}
        for sockets in idle.values():
            for sock in sockets:
                await _close(sock)

    async def probe(self, questions: Iterable[tuple[str, str]]) -> ProbeResult:
        host, port = await self._server()
        where = f"{host}:{port}" if host else ""
        if not host:
            return ProbeResult(
                frozenset(),
                "no cluster DNS server known "
                "(kube-system/kube-dns not found and --dns-server not set)",
                where,
            )
        unique = sorted(set(questions))
        results = await asyncio.gather(
            *(self._ask(host, port, name, rtype) for name, rtype in unique),
            return_exceptions=True,
        )
        answers: set[Answer] = set()
        nxdomain: set[tuple[str, str]] = set()
        errors: list[str] = []
        for (name, rtype), res in zip(unique, results, strict=True):
            if isinstance(res, BaseException):
                errors.append(f"{name} {rtype}: {_describe(res)}")
            elif res is None:
                nxdomain.add((name, rtype))
            else:
                answers |= res
        if errors:
            return ProbeResult(
                frozenset(answers),
                f"DNS server {where} unreachable or failing: " + "; ".join(errors[:3]),
                where,
                frozenset(nxdomain),
            )
        return ProbeResult(frozenset(answers), None, where, frozenset(nxdomain))

    async def _ask(self, host: str, port: int, name: str, rtype: str) -> set[Answer] | None:
        """The answers, or None for NXDOMAIN."""
        query = dns.message.make_query(name if name.endswith(".") else name + ".", rtype)
        async with self._sem:
            started = time.perf_counter()
            family = dns.inet.af_for_address(host)
            idle = self._idle.setdefault(family, [])
            sock: Any = idle.pop() if idle else None
            try:
                if sock is None:
                    sock = await self._backend.make_socket(  # type: ignore[no-untyped-call]
                        family, SOCK_DGRAM
                    )
                response, _ = await dns.asyncquery.udp_with_fallback(
                    query,
                    host,
                    port=port,
                    timeout=self._timeout,
                    ignore_unexpected=True,
                    udp_sock=sock,
                )
            except dns.exception.Timeout:
                await _close(sock)
                self._record(started, "timeout")
                raise
            except Exception:
                await _close(sock)
                self._record(started, "error")
                raise
            idle.append(sock)
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            self._record(started, "error")
            raise RuntimeError(f"rcode {dns.rcode.to_text(rcode)}")
        if rcode == dns.rcode.NXDOMAIN:
            self._record(started, "nxdomain")
            return None
        self._record(started, "answer")
        out: set[Answer] = set()
        for rrset in response.answer:
            for rdata in rrset:
                out.add(
                    Answer(
                        _strip(rrset.name.to_text()),
                        dns.rdatatype.to_text(rrset.rdtype),
                        rdata.to_text(),
                    )
                )
        return out

    def _record(self, started: float, outcome: str) -> None:
        if self._on_query is not None:
            self._on_query(time.perf_counter() - started, outcome)


async def _close(sock: Any) -> None:
    """Close a dnspython DatagramSocket (untyped in dnspython), if any."""
    if sock is not None:
        await sock.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
