"""Which DNS servers are asked (dns_server.py) and how the prober asks several (dns_probe.py):
the flag alone; else every replica of the DNS Service; else its ClusterIP. A silent replica
is not asked again for a while, and the source re-reads the Service's endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest
from k8sobjs import endpoint, eslice

from svcaudit.controller import translate
from svcaudit.controller.dns_probe import DOWN_SECONDS, DnsProber, chosen
from svcaudit.controller.dns_server import (
    REREAD_SECONDS,
    DnsServerSource,
    Target,
    parse_service,
    resolve,
)

KUBE_DNS_SVC = {"metadata": {"name": "kube-dns"}, "spec": {"clusterIP": "10.96.0.10"}}
PORTS = [
    {"name": "dns", "port": 53, "protocol": "UDP"},
    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
]


def dns_slice(*ips: str, service: str = "kube-dns", ns: str = "kube-system") -> dict[str, Any]:
    return eslice(
        f"{service}-x", service, [endpoint(ip, f"coredns-{i}", ns=ns) for i, ip in enumerate(ips)],
        PORTS, ns=ns,
    )  # fmt: skip


def test_the_flag_alone_is_asked() -> None:
    got = resolve("10.0.0.53:5353", KUBE_DNS_SVC, 53, [dns_slice("10.244.0.7")])
    assert got == [Target("10.0.0.53", 5353)]


def test_else_every_replica_named_by_address_port_and_pod() -> None:
    got = resolve(None, KUBE_DNS_SVC, 53, [dns_slice("10.244.1.8", "10.244.0.7")])
    assert [(t.address, t.replica) for t in got] == [
        ("10.244.0.7:53", "10.244.0.7:53 (pod kube-system/coredns-1)"),
        ("10.244.1.8:53", "10.244.1.8:53 (pod kube-system/coredns-0)"),
    ]


def test_else_the_cluster_ip_and_else_nothing() -> None:
    other = dns_slice("10.244.0.7", service="web", ns="kube-system")
    broken = dns_slice("010.244.0.7")  # uninterpretable: left out, never guessed
    assert resolve(None, KUBE_DNS_SVC, 53, [other, broken]) == [Target("10.96.0.10", 53)]
    assert resolve(None, None, 53, []) == []


def test_another_dns_service_by_name() -> None:
    mine = dns_slice("10.201.0.9", service="dns", ns="shop")
    got = resolve(None, None, 53, [mine, dns_slice("10.244.0.7")], service=("shop", "dns"))
    assert [t.host for t in got] == ["10.201.0.9"]
    assert parse_service("shop/dns") == ("shop", "dns")
    with pytest.raises(ValueError):
        parse_service("kube-dns")


def test_source_reads_now_and_then_and_again_when_invalidated() -> None:
    now = [0.0]
    reads: list[str] = []
    slices = [[dns_slice("10.244.0.7")]]

    async def service() -> dict[str, Any]:
        reads.append("svc")
        return KUBE_DNS_SVC

    async def listing() -> list[dict[str, Any]]:
        reads.append("slices")
        return slices[0]

    source = DnsServerSource(None, 53, service, listing, clock=lambda: now[0])

    async def run() -> list[list[Target]]:
        out = [await source()]
        slices[0] = [dns_slice("10.244.0.7", "10.244.1.8")]
        now[0] = REREAD_SECONDS - 1
        out.append(await source())  # cached
        source.invalidate()
        out.append(await source())  # read again at once
        return out

    first, cached, fresh = asyncio.run(run())
    assert [t.host for t in first] == [t.host for t in cached] == ["10.244.0.7"]
    assert [t.host for t in fresh] == ["10.244.0.7", "10.244.1.8"]
    assert reads == ["svc", "slices", "svc", "slices"]


def test_audits_arriving_together_read_the_dns_service_once() -> None:
    reads: list[str] = []

    async def service() -> dict[str, Any]:
        reads.append("svc")
        await asyncio.sleep(0.01)
        return KUBE_DNS_SVC

    async def listing() -> list[dict[str, Any]]:
        return [dns_slice("10.244.0.7")]

    source = DnsServerSource(None, 53, service, listing)

    async def run() -> list[list[Target]]:
        return list(await asyncio.gather(*(source() for _ in range(8))))

    got = asyncio.run(run())
    assert reads == ["svc"] and all(g == got[0] for g in got) and len(got[0]) == 1


def test_source_falls_back_to_the_cluster_ip_when_slices_cannot_be_read() -> None:
    async def service() -> dict[str, Any]:
        return KUBE_DNS_SVC

    async def forbidden() -> list[dict[str, Any]]:
        raise PermissionError("403")

    got = asyncio.run(DnsServerSource(None, 53, service, forbidden)())
    assert got == [Target("10.96.0.10", 53)]


# ---- the prober asking several servers (fake DNS servers on loopback) ---------------------


class _Answering(asyncio.DatagramProtocol):
    """Answers every A question with `address` (or NXDOMAIN when None); a question for a
    name starting with `unanswered` gets no answer (a CoreDNS forwarding it upstream, which
    an offline cluster never answers)."""

    def __init__(self, address: str | None, unanswered: str | None = None) -> None:
        self.address = address
        self.unanswered = unanswered
        self.questions = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        self.questions += 1
        if self.unanswered and str(query.question[0].name).startswith(self.unanswered):
            return
        reply = dns.message.make_response(query)
        if self.address is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        else:
            name = query.question[0].name
            reply.answer.append(dns.rrset.from_text(name, 5, "IN", "A", self.address))
        self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]


async def serve(
    address: str | None, unanswered: str | None = None
) -> tuple[asyncio.DatagramTransport, _Answering, int]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Answering(address, unanswered), local_addr=("127.0.0.1", 0)
    )
    return transport, proto, transport.get_extra_info("sockname")[1]


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there now: a question gets an ICMP refusal at once


def test_every_replica_is_asked_and_a_silent_one_is_left_alone_for_a_while() -> None:
    name = "web.shop.svc.cluster.local."
    now = [100.0]
    downs: list[Target] = []

    async def run() -> tuple[Any, Any, Any, int, int]:
        t1, good, p1 = await serve("10.96.0.20")
        t2, odd, p2 = await serve("10.96.9.9")
        dead = free_udp_port()
        targets = [
            Target("127.0.0.1", p, f"127.0.0.1:{p} (pod kube-system/{n})")
            for p, n in ((p1, "good"), (p2, "odd"), (dead, "dead"))
        ]

        async def servers() -> list[Target]:
            return targets

        prober = DnsProber(servers, timeout=1.0, monotonic=lambda: now[0], on_down=downs.append)
        try:
            first = await prober.probe([(name, "A")])
            again = await prober.probe([(name, "A")])  # the dead one is not asked
            now[0] += DOWN_SECONDS
            later = await prober.probe([(name, "A")])  # asked again (and still dead)
            sockets = prober.open_sockets
        finally:
            await prober.aclose()
            t1.close()
            t2.close()
        return first, again, later, sockets, good.questions + odd.questions

    first, again, later, sockets, asked = asyncio.run(run())
    assert first.error is None and len(first.replicas) == 3
    by_pod = {r.replica.rsplit("/", 1)[1].rstrip(")"): r for r in first.replicas}
    assert {a.text for a in by_pod["good"].answers} == {"10.96.0.20"}
    assert {a.text for a in by_pod["odd"].answers} == {"10.96.9.9"}
    assert "connection refused" in (by_pod["dead"].error or "")
    silent = {r.replica: r.error for r in again.replicas if r.error}
    assert len(silent) == 1 and "asked again within" in next(iter(silent.values()))
    assert any("connection refused" in (r.error or "") for r in later.replicas)
    assert len(downs) == 2 and all("dead" in (t.replica or "") for t in downs)
    assert sockets >= 2 and asked == 6
    # the core's view: each replica's answers, the silent one named
    obs = translate.dns_observation(first)
    assert len(obs.replicas) == 3 and obs.error is None
    assert sum(r.error is not None for r in obs.replicas) == 1


def test_a_replica_that_answers_but_not_every_question_is_asked_again_at_once() -> None:
    """CoreDNS forwards a PTR its kubernetes plugin does not know yet (a new endpoint) upstream;
    offline, that question times out while the others are answered. The replica is up: that
    probe fails, and the next one asks it again (it is not left alone for DOWN_SECONDS, which
    would make every other service's DNS Unknown meanwhile)."""
    known, late = "web.shop.svc.cluster.local.", "9.0.244.10.in-addr.arpa."
    downs: list[Target] = []

    async def run() -> tuple[Any, Any, int]:
        transport, proto, port = await serve("10.96.0.20", unanswered="9.0.244")
        target = Target("127.0.0.1", port, f"127.0.0.1:{port} (pod kube-system/coredns-a)")

        async def servers() -> list[Target]:
            return [target]

        prober = DnsProber(servers, timeout=0.3, on_down=downs.append)
        try:
            first = await prober.probe([(known, "A"), (late, "PTR")])
            second = await prober.probe([(known, "A")])
        finally:
            await prober.aclose()
            transport.close()
        return first, second, proto.questions

    first, second, asked = asyncio.run(run())
    assert first.error is not None and "timeout" in first.error
    assert late.rstrip(".") in first.error
    assert second.error is None and {a.text for a in second.replicas[0].answers} == {"10.96.0.20"}
    assert asked == 3 and downs == []


def test_no_replica_answering_is_an_error() -> None:
    async def run() -> Any:
        targets = [Target("127.0.0.1", free_udp_port(), "a"), Target("127.0.0.1", 9, "b")]

        async def servers() -> list[Target]:
            return targets

        prober = DnsProber(servers, timeout=1.0)
        try:
            return await prober.probe([("x.cluster.local.", "A")])
        finally:
            await prober.aclose()

    result = asyncio.run(run())
    assert result.error is not None and result.error.startswith("no DNS replica answered")
    assert translate.dns_observation(result).error is not None


def test_at_most_n_replicas_per_service_the_same_ones_and_all_of_them_covered() -> None:
    replicas = [Target(f"10.244.0.{i}", 53, f"r{i}") for i in range(1, 11)]
    keys = [f"shop/svc-{i}" for i in range(200)]
    picks = {k: chosen(replicas, k, 3) for k in keys}
    assert all(len(p) == 3 for p in picks.values())
    assert all(chosen(list(reversed(replicas)), k, 3) == p for k, p in picks.items())
    assert {t for p in picks.values() for t in p} == set(replicas)  # every replica asked
    fewer = [r for r in replicas if r.host != "10.244.0.5"]  # one gone: few services move
    moved = sum(set(chosen(fewer, k, 3)) != set(p) for k, p in picks.items())
    assert moved == sum(replicas[4] in p for p in picks.values())
    assert chosen(replicas[:2], "x", 3) == replicas[:2]
    assert chosen(replicas, "x", 0) == replicas
