"""Which DNS servers to ask: the one place `svcaudit check` and `svcaudit run` decide it.

The flag (`--dns-server HOST[:PORT]`) wins: the user chose that server, and only it is asked.
Otherwise the cluster DNS is the Service kube-system/kube-dns (`--dns-service`), which is
what the kubelet writes into every pod's resolv.conf; kube-proxy sends each query to one of
its ready endpoints. So its replicas (the ready endpoints of its EndpointSlices, core
dns_replicas) are asked directly, each one every question: the core compares them and
names a replica that answers otherwise. Without readable slices, its ClusterIP is asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from svcaudit.core.dns_replicas import dns_replicas
from svcaudit.core.model import SERVICE_NAME_LABEL, EndpointSlice, Unparsed, interpret

log = structlog.get_logger("svcaudit.dns")

KUBE_DNS = ("kube-system", "kube-dns")
DEFAULT_PORT = 53
REREAD_SECONDS = 60.0  # kube-dns's ClusterIP is immutable; re-read in case it is recreated

Body = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, order=True)
class Target:
    """A DNS server to ask: the one server (the flag, kube-dns's ClusterIP), or one replica
    of the cluster DNS (`replica`: how findings name it)."""

    host: str
    port: int
    replica: str | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_server(raw: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address. ValueError on a bad port."""
    if raw.startswith("[") and "]" in raw:
        host, _, rest = raw[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if raw.count(":") == 1:
        host, _, port = raw.partition(":")
        return host, int(port)
    return raw, default_port


def parse_service(raw: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` of the DNS Service. ValueError when it is not that."""
    namespace, sep, name = raw.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {raw!r}")
    return namespace, name


def kube_dns_address(service: Body | None) -> str | None:
    """kube-dns's ClusterIP, or None (no such Service, or a headless one)."""
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return ip if isinstance(ip, str) and ip and ip != "None" else None


def replica_targets(slices: Iterable[Body], service: tuple[str, str] = KUBE_DNS) -> list[Target]:
    """The replicas behind the DNS Service, from its EndpointSlices' bodies (others, and
    slices the core cannot interpret, are left out)."""
    views = [
        v
        for v in (interpret(EndpointSlice.from_api, b) for b in slices)
        if not isinstance(v, Unparsed)
        and (v.namespace, v.labels.get(SERVICE_NAME_LABEL)) == service
    ]
    return [Target(r.address, r.port, r.name) for r in dns_replicas(views)]


def resolve(
    flag: str | None,
    dns_service: Body | None,
    port: int,
    slices: Iterable[Body] | None = None,
    service: tuple[str, str] = KUBE_DNS,
) -> list[Target]:
    """The servers for one pass: the flag; else the DNS Service's replicas; else its
    ClusterIP (at `port`); [] when none is known."""
    if flag:
        return [Target(*parse_server(flag, port))]
    replicas = replica_targets(slices or (), service)
    if replicas:
        return replicas
    ip = kube_dns_address(dns_service)
    return [Target(ip, port)] if ip else []


class DnsServerSource:
    """The operator's servers, asked before each probe (`resolve`), the DNS Service and its
    EndpointSlices read through `fetch_service` / `fetch_slices` at most once per
    REREAD_SECONDS (monotonic `clock` injected), and again at the next call after
    `invalidate()` (the prober found a replica silent: it may be gone)."""

    def __init__(
        self,
        flag: str | None,
        port: int,
        fetch_service: Callable[[], Awaitable[Body | None]],
        fetch_slices: Callable[[], Awaitable[Sequence[Body]]] | None = None,
        service: tuple[str, str] = KUBE_DNS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flag = flag
        self._port = port
        self._fetch_service = fetch_service
        self._fetch_slices = fetch_slices
        self._service = service
        self._clock = clock
        self._targets: list[Target] = []
        self._until = -float("inf")
        self._reading: asyncio.Lock | None = None  # audits arriving together read once

    def invalidate(self) -> None:
        """Read the DNS Service's endpoints again at the next call."""
        self._until = -float("inf")

    async def __call__(self) -> list[Target]:
        if self._flag:
            return resolve(self._flag, None, self._port)
        if self._clock() < self._until:
            return self._targets
        if self._reading is None:
            self._reading = asyncio.Lock()  # made in the running loop
        async with self._reading:
            if self._clock() >= self._until:  # not read meanwhile by another audit
                service, slices = await self._read_service(), await self._read_slices()
                targets = resolve(None, service, self._port, slices, self._service)
                if targets != self._targets:
                    self._log(targets)
                self._targets = targets
                self._until = self._clock() + REREAD_SECONDS
        return self._targets

    async def _read_service(self) -> Body | None:
        try:
            return await self._fetch_service()
        except Exception:  # unreachable API: no server known, DNS verdicts Unknown
            return None

    async def _read_slices(self) -> Sequence[Body]:
        if self._fetch_slices is None:
            return ()
        try:
            return await self._fetch_slices()
        except Exception as exc:  # e.g. not allowed to list them: the ClusterIP instead
            log.warning("dns replicas unknown", error=str(exc), service="/".join(self._service))
            return ()

    def _log(self, targets: Sequence[Target]) -> None:
        how = "replicas" if any(t.replica for t in targets) else "ClusterIP"
        first = targets[0] if targets else None
        log.info(
            "dns server",
            host=first.host if first else None,
            port=first.port if first else self._port,
            servers=[t.address for t in targets],
            source=f"{'/'.join(self._service)} {how}",
        )
