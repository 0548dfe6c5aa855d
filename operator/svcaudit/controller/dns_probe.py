"""Asking the cluster DNS (dnspython, asyncio): bounded concurrency, timeouts, no retries storm.

The prober answers a list of questions (name, type) with the raw records it got back. It
decides nothing: NXDOMAIN and NODATA are simply "no records"; a server that does not answer
(timeout, refused, SERVFAIL) makes the whole observation an error, which the core turns into
DNSConsistent=Unknown (never False).

It asks what `servers()` gives (dns_server.py): one server, or the replicas of the cluster
DNS, each asked every question (one result per replica, which the core compares): all of
them, or `max_replicas` of them chosen per probe `key` (a service) by rendezvous hashing, so
that a service is always asked of the same ones and the services together cover them all.
A replica that timed out or refused, answering none of a probe's questions, is not asked
again for DOWN_SECONDS (its result says so at once): otherwise every audit would wait for its
timeout while the others answer. A replica that answered some questions is up: a question
it left unanswered (CoreDNS forwards a name its kubernetes plugin does not know yet, such as
a new endpoint's PTR, upstream, which an offline cluster never answers) fails that probe
only.

`on_query(seconds, outcome)`, if given, is called once per question sent, with its latency
(semaphore wait excluded) and outcome "answer" (NOERROR, NODATA included), "nxdomain",
"timeout" or "error" (refused, SERVFAIL, network error): the metrics' `dns_query`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from svcaudit.controller.dns_server import Target


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
    replica: str | None = None  # the replica this result is from (Target.replica)
    replicas: tuple[ProbeResult, ...] = ()  # several replicas asked: each one's result


def _strip(name: str) -> str:
    return name.rstrip(".").lower()


_Answer = asyncio.Future[dns.message.Message]
_HEADER = 12  # bytes of a DNS message header
_QR = 0x80  # "this is a response", in the header's third byte


_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_QUERY_HEADER = bytes.fromhex("000001000001000000000000")  # id 0, RD, one question
_IN = b"\x00\x01"


@functools.cache
def _type_code(rtype: str) -> bytes:
    return int(dns.rdatatype.from_text(rtype)).to_bytes(2, "big")


def _query_wire(name: str, rtype: str) -> bytes:
    """A question's message (id 0, recursion desired, no EDNS: what dnspython's make_query
    builds). The names asked are Kubernetes DNS names, plain letters, digits, '-' and '_',
    encoded here directly (~10 us): dnspython's builder cost ~60 us a question, a third of
    check's DNS time at 10k pods, and caching its output held 4 MB at 10k pods. Any other
    name is built by dnspython."""
    labels = name.rstrip(".").split(".")
    if len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels):
        qname = b"".join(len(label).to_bytes(1, "big") + label.encode() for label in labels)
        return _QUERY_HEADER + qname + b"\x00" + _type_code(rtype) + _IN
    query = dns.message.make_query(name if name.endswith(".") else name + ".", rtype)
    query.id = 0
    return query.to_wire()


def _expire(future: _Answer, timeout: float) -> None:
    if not future.done():
        future.set_exception(dns.exception.Timeout(timeout=timeout))  # type: ignore[no-untyped-call]


class _Channel(asyncio.DatagramProtocol):
    """One connected UDP socket to the DNS server, shared by every question in flight:
    answers are matched to questions by message id and question section. Connected, so
    that an ICMP refusal fails the questions at once instead of after the timeout."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[bytes, _Answer]] = {}  # by id: (question section, answer)
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        entry = self.waiting.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
        if entry is None:
            return  # a late answer to a question given up on
        question, future = entry
        end = _HEADER + len(question)
        if (
            len(data) < end
            or not data[2] & _QR
            or data[4:6] != b"\x00\x01"  # one question: ours (names compare case-blind)
            or data[_HEADER:end].lower() != question.lower()
        ):
            return  # not an answer to what we asked: keep waiting (as dnspython does)
        # The additional section (the A records CoreDNS adds after SRV answers) is not read:
        # its count is zeroed and what follows the authority section ignored.
        wire = data[:10] + b"\x00\x00" + data[_HEADER:]
        try:
            response = dns.message.from_wire(wire, ignore_trailing=True, raise_on_truncation=True)
        except dns.message.Truncated as exc:
            response = exc.message()  # type: ignore[no-untyped-call]  # TC: TCP fallback
        except dns.exception.DNSException:
            return
        if not future.done():
            future.set_result(response)

    def error_received(self, exc: Exception) -> None:
        self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("DNS socket closed"))

    def _fail(self, exc: Exception) -> None:
        self.broken = True
        for _, future in self.waiting.values():
            if not future.done():
                future.set_exception(exc)


DOWN_SECONDS = 10.0  # a replica that answered nothing (timeouts, refusals): asked again after
NO_SERVER = "no cluster DNS server known (kube-system/kube-dns not found and --dns-server not set)"
Servers = Callable[[], Awaitable[Sequence[Target]]]


class DnsProber:
    """Queries the servers `servers()` names over UDP (TCP on truncation).

    All questions to one server share one connected UDP socket, matched by message id:
    opening a socket per question, and dnspython's per-question receive loop, were a third
    of the prober's CPU (thousands of questions per pass at 10k pods). dnspython builds and
    parses the messages; a broken socket (an ICMP error) is replaced at the next question.
    The concurrency limit is shared by every server asked."""

    def __init__(
        self,
        servers: Servers,
        timeout: float = 2.0,
        concurrency: int = 16,
        on_query: Callable[[float, str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_down: Callable[[Target], None] | None = None,
        max_replicas: int = 0,
    ) -> None:
        self._servers = servers
        self._on_down = on_down  # a replica just found silent (the source may re-read)
        self._max_replicas = max_replicas  # replicas asked per probe (0: all)
        self._timeout = timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._on_query = on_query
        self._monotonic = monotonic
        self._channels: dict[tuple[str, int], _Channel] = {}
        self._down: dict[tuple[str, int], tuple[float, str]] = {}  # until, why
        self._opening = asyncio.Lock()  # questions arriving together open one socket

    @property
    def open_sockets(self) -> int:
        """UDP sockets held open: one per server currently asked."""
        return len(self._channels)

    async def aclose(self) -> None:
        """Close the sockets (the prober stays usable: it opens new ones when asked)."""
        for key in list(self._channels):
            self._close(key)

    def _close(self, key: tuple[str, int]) -> None:
        channel = self._channels.pop(key, None)
        if channel is not None and channel.transport is not None:
            channel.transport.close()

    async def _open(self, host: str, port: int) -> _Channel:
        usable = self._usable(host, port)
        if usable is not None:
            return usable
        async with self._opening:
            usable = self._usable(host, port)  # opened by a question that had the lock?
            if usable is not None:
                return usable
            self._close((host, port))
            _, channel = await asyncio.get_running_loop().create_datagram_endpoint(
                _Channel, remote_addr=(host, port)
            )
            self._channels[(host, port)] = channel
            return channel

    def _usable(self, host: str, port: int) -> _Channel | None:
        channel = self._channels.get((host, port))
        return None if channel is None or channel.broken else channel

    async def probe(self, questions: Iterable[tuple[str, str]], key: str = "") -> ProbeResult:
        """Every question asked of every server: one server's result, or (replicas) a result
        holding each replica's, with an error only when none answered. `key` (the audited
        service) chooses the replicas when there are more than `max_replicas`."""
        known = sorted(set(await self._servers()))
        if not known:
            return ProbeResult(frozenset(), NO_SERVER, "")
        for gone in set(self._channels) - {(t.host, t.port) for t in known}:
            self._close(gone)  # a server no longer asked (a replica gone)
        targets = chosen(known, key, self._max_replicas)
        unique = sorted(set(questions))
        if len(targets) == 1 and targets[0].replica is None:
            return await self._probe_one(targets[0], unique)
        results = await asyncio.gather(*(self._probe_one(t, unique) for t in targets))
        where = ", ".join(t.address for t in targets)
        if any(r.error is None for r in results):
            return ProbeResult(frozenset(), None, where, replicas=tuple(results))
        failed = "; ".join(f"{r.server}: {r.error}" for r in results[:3])
        return ProbeResult(
            frozenset(), f"no DNS replica answered: {failed}", where, replicas=tuple(results)
        )

    async def _probe_one(self, target: Target, unique: list[tuple[str, str]]) -> ProbeResult:
        host, port, where = target.host, target.port, target.address
        down = self._down.get((host, port))
        if down is not None and self._monotonic() < down[0]:
            why = f"not answering ({down[1]}); asked again within {DOWN_SECONDS:g}s"
            return ProbeResult(frozenset(), why, where, replica=target.replica)
        results = await asyncio.gather(
            *(self._ask(host, port, name, rtype) for name, rtype in unique),
            return_exceptions=True,
        )
        answers: set[Answer] = set()
        nxdomain: set[tuple[str, str]] = set()
        errors: list[tuple[str, BaseException]] = []
        for (name, rtype), res in zip(unique, results, strict=True):
            if isinstance(res, BaseException):
                errors.append((f"{name} {rtype}", res))
            elif res is None:
                nxdomain.add((name, rtype))
            else:
                answers |= res
        error = None
        if errors:
            error = f"DNS server {where} unreachable or failing: " + "; ".join(
                f"{q}: {_describe(e)}" for q, e in errors[:3]
            )
            answered = len(unique) - len(errors)
            if (
                target.replica is not None
                and not answered
                and any(_unreachable(e) for _, e in errors)
            ):
                why = _describe(errors[0][1])
                self._down[(host, port)] = (self._monotonic() + DOWN_SECONDS, why)
                if self._on_down is not None:
                    self._on_down(target)
        else:
            self._down.pop((host, port), None)
        return ProbeResult(
            frozenset(answers), error, where, frozenset(nxdomain), replica=target.replica
        )

    async def _ask(self, host: str, port: int, name: str, rtype: str) -> set[Answer] | None:
        """The answers, or None for NXDOMAIN."""
        wire = _query_wire(name, rtype)
        async with self._sem:
            started = time.perf_counter()
            try:
                response = await self._exchange(wire, host, port)
                if response.flags & dns.flags.TC:
                    query = dns.message.from_wire(wire)
                    query.id = dns.entropy.random_16()
                    response = await dns.asyncquery.tcp(
                        query, host, port=port, timeout=self._timeout
                    )
            except dns.exception.Timeout:
                self._record(started, "timeout")
                raise
            except Exception:
                self._record(started, "error")
                raise
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

    async def _exchange(self, wire: bytes, host: str, port: int) -> dns.message.Message:
        """Send `wire` (a question with id 0) under a fresh id; the answer (or Timeout)."""
        channel = await self._open(host, port)
        qid = dns.entropy.random_16()
        while qid in channel.waiting:
            qid = dns.entropy.random_16()
        loop = asyncio.get_running_loop()
        future: _Answer = loop.create_future()
        channel.waiting[qid] = (wire[_HEADER:], future)
        # A timer on the future, not asyncio.wait_for (a task per question in Python 3.11).
        expiry = loop.call_later(self._timeout, _expire, future, self._timeout)
        try:
            assert channel.transport is not None
            channel.transport.sendto(qid.to_bytes(2, "big") + wire[2:])
            return await future
        finally:
            expiry.cancel()
            channel.waiting.pop(qid, None)

    def _record(self, started: float, outcome: str) -> None:
        if self._on_query is not None:
            self._on_query(time.perf_counter() - started, outcome)


def chosen(targets: Sequence[Target], key: str, at_most: int) -> list[Target]:
    """`at_most` of the replicas (all when 0 or enough), the same ones for the same `key`
    whatever the others (rendezvous hashing: a replica added or gone moves few keys)."""
    if at_most <= 0 or len(targets) <= at_most or any(t.replica is None for t in targets):
        return list(targets)
    ranked = sorted(targets, key=lambda t: hashlib.sha1(f"{key}|{t.address}".encode()).digest())
    return sorted(ranked[:at_most])


def _unreachable(exc: BaseException) -> bool:
    """No answer at all (a timeout, a refusal), as opposed to an answer saying SERVFAIL."""
    return isinstance(exc, dns.exception.Timeout | OSError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
