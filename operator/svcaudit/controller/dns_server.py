"""Which DNS server to ask: the one place `svcaudit check` and `svcaudit run` decide it.

The flag (`--dns-server HOST[:PORT]`) wins; otherwise the cluster's DNS is the ClusterIP of
kube-system/kube-dns, which is what the kubelet writes into every pod's resolv.conf.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger("svcaudit.dns")

KUBE_DNS = ("kube-system", "kube-dns")
DEFAULT_PORT = 53
REREAD_SECONDS = 60.0  # kube-dns's ClusterIP is immutable; re-read in case it is recreated

Server = tuple[str | None, int]


def parse_server(raw: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address. ValueError on a bad port."""
    if raw.startswith("[") and "]" in raw:
        host, _, rest = raw[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if raw.count(":") == 1:
        host, _, port = raw.partition(":")
        return host, int(port)
    return raw, default_port


def kube_dns_address(service: Mapping[str, Any] | None) -> str | None:
    """kube-dns's ClusterIP, or None (no such Service, or a headless one)."""
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return ip if isinstance(ip, str) and ip and ip != "None" else None


def resolve(flag: str | None, kube_dns: Mapping[str, Any] | None, port: int) -> Server:
    """The server for one pass: the flag, else kube-dns's ClusterIP (None: none known)."""
    if flag:
        return parse_server(flag, port)
    return kube_dns_address(kube_dns), port


class DnsServerSource:
    """The operator's server, asked before each probe: the flag, else kube-dns's ClusterIP,
    read through `fetch` at most once per REREAD_SECONDS (monotonic `clock` injected)."""

    def __init__(
        self,
        flag: str | None,
        port: int,
        fetch: Callable[[], Awaitable[Mapping[str, Any] | None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flag = flag
        self._port = port
        self._fetch = fetch
        self._clock = clock
        self._host: str | None = None
        self._until = -float("inf")

    async def __call__(self) -> Server:
        if self._flag:
            return resolve(self._flag, None, self._port)
        if self._clock() >= self._until:
            try:
                body = await self._fetch()
            except Exception:  # unreachable API: no server known, DNS verdicts Unknown
                body = None
            host = kube_dns_address(body)
            if host != self._host:
                log.info("dns server", host=host, port=self._port, source="/".join(KUBE_DNS))
            self._host = host
            self._until = self._clock() + REREAD_SECONDS
        return self._host, self._port
