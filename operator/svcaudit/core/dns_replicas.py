"""The cluster DNS's replicas: which endpoints they are, and their answers judged together.

Clients ask the DNS Service's ClusterIP, and kube-proxy sends each query to one of its
ready endpoints: a replica whose answers differ from the others' gives some clients wrong
answers, some of the time. Asking each replica directly, the same questions, names it.
A deviation every answering replica shares is the cluster's (SVA-DNS-001/002/003, as with
one server); one that only some replicas show is theirs (SVA-DNS-004, one finding per
replica); a replica that does not answer while others do is SVA-DNS-005.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from svcaudit.core.codes import Discrepancy, discrepancy, ref
from svcaudit.core.compare import (
    DnsObservation,
    ReplicaAnswers,
    answer_text,
    by_question,
    dns_findings_by_question,
)
from svcaudit.core.dns import DEFAULT_ZONE, DnsQuestion, ExpectedDns
from svcaudit.core.model import IPV4, IPV6, EndpointPort, EndpointSlice, Service

DNS_PORT_NAME = "dns"  # the kube-dns Service's UDP port (kubeadm, the CoreDNS chart)
DNS_PORT = 53

__all__ = [
    "DnsReplica",
    "ReplicaAnswers",
    "compare_replicas",
    "dns_replicas",
    "observe_replicas",
]


@dataclass(frozen=True, slots=True, order=True)
class DnsReplica:
    """One endpoint of the cluster DNS Service: where kube-proxy may send a query."""

    address: str
    port: int
    pod: str | None = None  # "namespace/name" of its targetRef pod, when it has one

    @property
    def host_port(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def name(self) -> str:
        """How findings name it: `10.244.0.7:53 (pod kube-system/coredns-abc)`."""
        return self.host_port + (f" (pod {self.pod})" if self.pod else "")


def dns_port(ports: Sequence[EndpointPort]) -> int | None:
    """The slice port queries go to: the UDP port named `dns`, else UDP 53; None if none."""
    udp = [p for p in ports if p.protocol == "UDP" and p.port is not None]
    named = [p.port for p in udp if p.name == DNS_PORT_NAME]
    if named:
        return named[0]
    return DNS_PORT if any(p.port == DNS_PORT for p in udp) else None


def dns_replicas(slices: Sequence[EndpointSlice]) -> tuple[DnsReplica, ...]:
    """The replicas behind the DNS Service's `slices`: each ready endpoint address (what
    kube-proxy routes to; nil ready reads as ready) of an IPv4/IPv6 slice with a DNS port
    (`dns_port`), once per address and port, sorted."""
    out: set[DnsReplica] = set()
    for s in slices:
        port = dns_port(s.ports)
        if port is None or s.address_type not in (IPV4, IPV6):
            continue
        for ep in s.endpoints:
            if not ep.conditions.ready:
                continue
            ref_ = ep.target_ref
            pod = (
                f"{ref_.namespace or s.namespace}/{ref_.name}"
                if ref_ is not None and ref_.kind == "Pod"
                else None
            )
            out |= {DnsReplica(str(ipaddress.ip_address(a)), port, pod) for a in ep.addresses}
    return tuple(sorted(out))


def observe_replicas(replicas: Sequence[ReplicaAnswers]) -> DnsObservation:
    """One observation from each replica's answers: every record some replica answered,
    the questions every answering replica answered NXDOMAIN, and an error (DNS Unknown)
    only when none answered."""
    answering = [r for r in replicas if r.error is None]
    if not answering:
        failed = "; ".join(f"{r.replica}: {r.error}" for r in replicas[:3])
        return DnsObservation(
            frozenset(), f"no DNS replica answered: {failed}", replicas=tuple(replicas)
        )
    queried = frozenset(rec for r in answering for rec in r.queried)
    nxdomain = frozenset.intersection(*(r.nxdomain for r in answering))
    return DnsObservation(queried, None, nxdomain, tuple(replicas))


def compare_replicas(
    service: Service,
    expected: ExpectedDns,
    replicas: Sequence[ReplicaAnswers],
    zone: str = DEFAULT_ZONE,
) -> list[Discrepancy]:
    """Each answering replica judged as one server would be (compare_dns); a finding they
    all share is reported once as it is, a replica with findings the others lack gets one
    SVA-DNS-004, a replica that did not answer SVA-DNS-005 (only when another did: with
    none, the observation failed and DNS is Unknown)."""
    answering = [r for r in replicas if r.error is None]
    if not answering:
        return []
    judged = {
        r.replica: dns_findings_by_question(service, expected, _alone(r), zone) for r in answering
    }
    out: list[Discrepancy] = []
    odd: dict[str, list[DnsQuestion]] = {}
    for q in expected.questions:
        keys = {name: {(d.code, d.expected) for d in f.get(q, ())} for name, f in judged.items()}
        shared = set.intersection(*keys.values())
        out += [
            d for d in judged[answering[0].replica].get(q, ()) if (d.code, d.expected) in shared
        ]
        for name, mine in keys.items():
            if mine - shared:
                odd.setdefault(name, []).append(q)
    out += [
        _differs(service, r, odd[r.replica], answering, expected)
        for r in answering
        if r.replica in odd
    ]
    out += [_silent(service, r) for r in replicas if r.error is not None]
    return out


def _alone(replica: ReplicaAnswers) -> DnsObservation:
    return DnsObservation(replica.queried, None, replica.nxdomain)


def _answer(replica: ReplicaAnswers, q: DnsQuestion) -> str:
    return answer_text(q, by_question(replica.queried).get(q, set()), replica.nxdomain)


def _spec(expected: ExpectedDns, q: DnsQuestion) -> str:
    if q in expected.nxdomain:
        return "NXDOMAIN"
    return ", ".join(sorted(r.data for r in expected.records if r.question == q)) or "no records"


def _differs(
    service: Service,
    replica: ReplicaAnswers,
    questions: Sequence[DnsQuestion],
    answering: Sequence[ReplicaAnswers],
    expected: ExpectedDns,
) -> Discrepancy:
    """SVA-DNS-004 for one replica: the first question it answers unlike the spec and the
    others, what it and they answer, and how many more questions differ."""
    q = questions[0]
    others = sorted({_answer(o, q) for o in answering if o.replica != replica.replica})
    more = len(questions) - 1
    return discrepancy(
        "SVA-DNS-004",
        ref("Service", service.namespace, service.name),
        f"{q.name} {q.type}: {_spec(expected, q)}",
        f"DNS replica {replica.replica} answers {q.name} {q.type}: {_answer(replica, q)}; "
        f"the other replicas: {' / '.join(others)}"
        + (f" (and {more} more question(s) answered unlike them)" if more else ""),
        (f"DNS replica {replica.replica}",),
    )


def _silent(service: Service, replica: ReplicaAnswers) -> Discrepancy:
    return discrepancy(
        "SVA-DNS-005",
        ref("Service", service.namespace, service.name),
        "an answer from every ready replica of the cluster DNS (the others answer)",
        f"DNS replica {replica.replica}: {replica.error}",
        (f"DNS replica {replica.replica}",),
    )
