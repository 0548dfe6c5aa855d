"""The cluster DNS's replicas: which endpoints are asked, and their answers judged together
(a deviation of some replicas only is theirs, SVA-DNS-004; a silent one SVA-DNS-005)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from k8sobjs import endpoint, eslice, node, pod, service

from svcaudit.core.audit import AuditInputs, DnsObservation, audit_service
from svcaudit.core.codes import Aspect
from svcaudit.core.compare import ReplicaAnswers
from svcaudit.core.dns import DnsQuestion, DnsRecord, ExpectedDns
from svcaudit.core.dns_replicas import (
    DnsReplica,
    compare_replicas,
    dns_replicas,
    observe_replicas,
)
from svcaudit.core.model import EndpointSlice, Node, Pod, Service

NOW = datetime(2025, 1, 2, tzinfo=UTC)
BASE = "web.default.svc.cluster.local."
DNS_PORTS = [
    {"name": "dns", "port": 53, "protocol": "UDP"},
    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    {"name": "metrics", "port": 9153, "protocol": "TCP"},
]


def kube_dns_slice(endpoints: list[dict[str, Any]], ports: Any = None, **kw: Any) -> EndpointSlice:
    return EndpointSlice.from_api(
        eslice("kube-dns-x", "kube-dns", endpoints, DNS_PORTS if ports is None else ports, **kw)
    )


def test_ready_endpoints_at_the_udp_port_named_dns_are_the_replicas() -> None:
    s = kube_dns_slice(
        [
            endpoint("10.244.0.7", "coredns-a", ns="kube-system"),
            endpoint("10.244.1.8", "coredns-b", ns="kube-system"),
            endpoint("10.244.2.9", "coredns-c", ns="kube-system", ready=False),  # not routed
        ],
        ns="kube-system",
    )
    assert dns_replicas([s]) == (
        DnsReplica("10.244.0.7", 53, "kube-system/coredns-a"),
        DnsReplica("10.244.1.8", 53, "kube-system/coredns-b"),
    )
    assert dns_replicas([s])[0].name == "10.244.0.7:53 (pod kube-system/coredns-a)"


def test_the_dns_port_by_name_else_udp_53_else_none() -> None:
    ep = [endpoint("10.201.0.1", "x")]
    named = kube_dns_slice(ep, [{"name": "dns", "port": 1053, "protocol": "UDP"}])
    assert [r.port for r in dns_replicas([named])] == [1053]
    unnamed = kube_dns_slice(ep, [{"name": "", "port": 53, "protocol": "UDP"}])
    assert [r.port for r in dns_replicas([unnamed])] == [53]
    tcp_only = kube_dns_slice(ep, [{"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    assert dns_replicas([tcp_only]) == ()


def test_a_replica_in_two_slices_is_one_and_ipv6_is_bracketed() -> None:
    a = kube_dns_slice([endpoint("10.244.0.7", "coredns-a")])
    b = kube_dns_slice([endpoint("10.244.0.7", "coredns-a")])
    v6 = kube_dns_slice([endpoint("FD00::7", "coredns-v6")], address_type="IPv6")
    replicas = dns_replicas([a, b, v6])
    assert [r.host_port for r in replicas] == ["10.244.0.7:53", "[fd00::7]:53"]
    bare = DnsReplica("10.201.0.2", 53)
    assert bare.name == "10.201.0.2:53"


# ---- answers judged together -------------------------------------------------------------

GOOD = frozenset(
    {
        DnsRecord(BASE, "A", "10.96.0.10"),
        DnsRecord("10.0.96.10.in-addr.arpa.", "PTR", BASE),
        DnsRecord("5.0.244.10.in-addr.arpa.", "PTR", "10-244-0-5." + BASE),
    }
)


def audit(dns: DnsObservation) -> Any:
    svc = Service.from_api(service("web", selector={"app": "web"}))
    inputs = AuditInputs(
        service=svc,
        pods=[Pod.from_api(pod("a"))],
        slices=[EndpointSlice.from_api(eslice("web-x", "web", [endpoint("10.244.0.5", "a")]))],
        nodes={"node-1": Node.from_api(node())},
        env_services=[svc],
    )
    return audit_service(inputs, dns=dns, now=NOW)


def replica(name: str, records: frozenset[DnsRecord] = GOOD, **kw: Any) -> ReplicaAnswers:
    return ReplicaAnswers(name, records, **kw)


def test_replicas_that_agree_with_the_spec_are_consistent() -> None:
    r = audit(observe_replicas([replica("10.201.0.1:53"), replica("10.201.0.2:53")]))
    assert r.discrepancies == ()
    assert r.verdicts[Aspect.DNS].status == "True"


def test_one_replica_answering_otherwise_is_named() -> None:
    wrong = (GOOD - {DnsRecord(BASE, "A", "10.96.0.10")}) | {DnsRecord(BASE, "A", "10.96.9.9")}
    r = audit(observe_replicas([replica("10.201.0.1:53"), replica("10.201.0.9:1053", wrong)]))
    (d,) = r.discrepancies
    assert (d.code, d.related) == ("SVA-DNS-004", ("DNS replica 10.201.0.9:1053",))
    assert d.expected == f"{BASE} A: 10.96.0.10"
    assert d.observed == (
        f"DNS replica 10.201.0.9:1053 answers {BASE} A: 10.96.9.9; the other replicas: 10.96.0.10"
    )
    assert r.verdicts[Aspect.DNS].status == "False"
    assert r.verdicts[Aspect.DNS].reason == "DnsReplicaDisagrees"


def test_a_deviation_every_replica_shares_is_the_clusters_not_a_replicas() -> None:
    stale = GOOD - {DnsRecord("5.0.244.10.in-addr.arpa.", "PTR", "10-244-0-5." + BASE)}
    r = audit(observe_replicas([replica("a:53", stale), replica("b:53", stale)]))
    assert [d.code for d in r.discrepancies] == ["SVA-DNS-001"]


def test_a_replica_with_more_wrong_than_the_others_gets_both_kinds() -> None:
    """Both miss the endpoint's PTR (the cluster's problem); one also misses the A record
    and answers NXDOMAIN there (its own)."""
    ptr = DnsRecord("5.0.244.10.in-addr.arpa.", "PTR", "10-244-0-5." + BASE)
    a = replica("a:53", GOOD - {ptr})
    b = replica(
        "b:53",
        GOOD - {ptr, DnsRecord(BASE, "A", "10.96.0.10")},
        nxdomain=frozenset({DnsQuestion(BASE, "A")}),
    )
    r = audit(observe_replicas([a, b]))
    assert sorted((d.code, d.related) for d in r.discrepancies) == [
        ("SVA-DNS-001", ()),
        ("SVA-DNS-004", ("DNS replica b:53",)),
    ]
    odd = next(d for d in r.discrepancies if d.code == "SVA-DNS-004")
    assert "answers web.default.svc.cluster.local. A: NXDOMAIN" in odd.observed


def test_a_silent_replica_while_another_answers_is_reported_and_judging_goes_on() -> None:
    r = audit(observe_replicas([replica("a:53"), replica("b:53", frozenset(), error="timeout")]))
    (d,) = r.discrepancies
    assert (d.code, str(d.severity), d.observed) == (
        "SVA-DNS-005",
        "warning",
        "DNS replica b:53: timeout",
    )
    assert r.verdicts[Aspect.DNS].status == "False"


def test_no_replica_answering_is_unknown_never_false() -> None:
    obs = observe_replicas(
        [
            replica("a:53", frozenset(), error="timeout"),
            replica("b:53", frozenset(), error="connection refused"),
        ]
    )
    assert obs.error is not None and "a:53: timeout" in obs.error
    r = audit(obs)
    assert r.discrepancies == ()
    assert r.verdicts[Aspect.DNS].status == "Unknown"


def test_observation_sums_the_replicas_up() -> None:
    q = DnsQuestion("x.default.svc.cluster.local.", "A")
    both = observe_replicas(
        [
            replica("a:53", frozenset(), nxdomain=frozenset({q})),
            replica("b:53", frozenset({DnsRecord(q.name, "A", "10.0.0.1")})),
        ]
    )
    assert both.queried == {DnsRecord(q.name, "A", "10.0.0.1")} and both.nxdomain == frozenset()
    assert len(both.replicas) == 2 and both.error is None


def test_other_services_ptrs_differing_between_replicas_are_not_this_ones_business() -> None:
    ptr_q = "5.0.244.10.in-addr.arpa."
    extra = GOOD | {DnsRecord(ptr_q, "PTR", "10-244-0-5.other.default.svc.cluster.local.")}
    r = audit(observe_replicas([replica("a:53"), replica("b:53", extra)]))
    assert r.discrepancies == ()


def test_compare_replicas_without_answers_reports_nothing() -> None:
    svc = Service.from_api(service("web"))
    silent = [replica("a:53", frozenset(), error="timeout")]
    assert compare_replicas(svc, ExpectedDns(frozenset(), frozenset()), silent) == []
