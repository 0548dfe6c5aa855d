"""Expected DNS records: the kubernetes/dns spec as CoreDNS serves it."""

from __future__ import annotations

import ipaddress
from typing import Any

from k8sobjs import container, cport, endpoint, eslice, node, pod, port, service

from svcaudit.core.compare import DnsObservation, compare_dns
from svcaudit.core.dns import (
    DnsQuestion,
    DnsRecord,
    endpoint_label,
    endpoint_ptr_records,
    expected_dns,
    pod_dns,
    pod_ip_from_label,
    pod_ip_label,
    record_from_answer,
    reverse_name,
)
from svcaudit.core.endpoints import expected_endpoints
from svcaudit.core.model import EndpointSlice, Node, Pod, Service

SEL = {"app": "web"}
BASE = "web.default.svc.cluster.local."


def dns_for(svc_obj: dict[str, Any], pods: list[dict[str, Any]] = (), zone: str = "cluster.local"):  # type: ignore[assignment,no-untyped-def]
    s = Service.from_api(svc_obj)
    exp = expected_endpoints(s, [Pod.from_api(p) for p in pods], {"node-1": Node.from_api(node())})
    return expected_dns(s, exp.slices, zone)


def recs(result) -> set[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return {(r.name, r.type, r.data) for r in result.records}


def test_cluster_ip_service_a_ptr_srv_for_named_ports_only() -> None:
    r = dns_for(service("web", selector=SEL, ports=[port(80, "http"), port(81)]), pods=[])
    assert recs(r) == {
        (BASE, "A", "10.96.0.10"),
        ("10.0.96.10.in-addr.arpa.", "PTR", BASE),
        ("_http._tcp." + BASE, "SRV", "80 " + BASE),
    }
    assert r.nxdomain == frozenset()


def test_cluster_ip_answers_even_without_endpoints_and_without_selector() -> None:
    assert (BASE, "A", "10.96.0.10") in recs(dns_for(service("web")))


def test_udp_sctp_srv_and_zone_parameter() -> None:
    r = dns_for(
        service("web", ports=[port(53, "dns", protocol="UDP"), port(9, "s", protocol="SCTP")]),
        zone="corp.example",
    )
    base = "web.default.svc.corp.example."
    assert ("_dns._udp." + base, "SRV", "53 " + base) in recs(r)
    assert ("_s._sctp." + base, "SRV", "9 " + base) in recs(r)


def test_dual_stack_a_aaaa_and_two_ptrs() -> None:
    r = dns_for(service("web", cluster_ips=["10.96.0.10", "fd00::a"], families=["IPv4", "IPv6"]))
    assert (BASE, "AAAA", "fd00::a") in recs(r) and (BASE, "A", "10.96.0.10") in recs(r)
    v6ptr = "a.0.0.0." + "0." * 24 + "0.0.d.f.ip6.arpa."
    assert (v6ptr, "PTR", BASE) in recs(r)
    assert len(v6ptr.split(".")) == 32 + 3


def test_reverse_names() -> None:
    assert reverse_name("1.2.3.4") == "4.3.2.1.in-addr.arpa."
    assert reverse_name("fd00::1").count(".") == 34


def test_headless_ready_endpoints_only_hostnames_and_srv_targets() -> None:
    svc = service(
        "web",
        selector=SEL,
        cluster_ip="None",
        families=["IPv4"],
        ports=[port(80, "http", target="http")],
    )
    c = [container(ports=[cport(8080, "http")])]
    r = dns_for(
        svc,
        [
            pod("a", ips=["10.244.0.1"], containers=c, hostname="web-0", subdomain="web"),
            pod("b", ips=["10.244.0.2"], containers=c),
            pod("c", ips=["10.244.0.3"], containers=c, ready=False),
        ],
    )
    assert recs(r) == {
        (BASE, "A", "10.244.0.1"),
        (BASE, "A", "10.244.0.2"),
        ("web-0." + BASE, "A", "10.244.0.1"),
        ("10-244-0-2." + BASE, "A", "10.244.0.2"),
        ("_http._tcp." + BASE, "SRV", "8080 web-0." + BASE),
        ("_http._tcp." + BASE, "SRV", "8080 10-244-0-2." + BASE),
        ("1.0.244.10.in-addr.arpa.", "PTR", "web-0." + BASE),
        ("2.0.244.10.in-addr.arpa.", "PTR", "10-244-0-2." + BASE),
    }
    assert r.shared == {
        DnsQuestion("1.0.244.10.in-addr.arpa.", "PTR"),
        DnsQuestion("2.0.244.10.in-addr.arpa.", "PTR"),
    }


def test_headless_publish_not_ready_publishes_unready_pods() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", families=["IPv4"], publish_not_ready=True)
    r = dns_for(svc, [pod("c", ips=["10.244.0.3"], ready=False)])
    assert (BASE, "A", "10.244.0.3") in recs(r)


def test_headless_no_ready_endpoint_expects_nxdomain() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", families=["IPv4", "IPv6"])
    r = dns_for(svc, [pod("a", ready=False)])
    assert r.records == frozenset()
    assert r.nxdomain == {DnsQuestion(BASE, "A"), DnsQuestion(BASE, "AAAA")}
    assert set(r.questions) == set(r.nxdomain)


def test_headless_ipv6_aaaa_and_dashed_label() -> None:
    svc = service(
        "web", selector=SEL, cluster_ip="None", families=["IPv6"], ports=[port(80, "http")]
    )
    r = dns_for(svc, [pod("a", ips=["fd00:244::1"])])
    assert ("fd00-244--1." + BASE, "AAAA", "fd00:244::1") in recs(r)
    assert ("_http._tcp." + BASE, "SRV", "80 fd00-244--1." + BASE) in recs(r)


def test_endpoint_label_rules() -> None:
    assert endpoint_label("Web-0", "10.0.0.1") == "web-0"
    assert endpoint_label(None, "10.0.0.1") == "10-0-0-1"
    assert endpoint_label(None, "fd00::1") == "fd00--1"
    assert endpoint_label(None, "fd00:244::") == "fd00-244--0"  # CoreDNS >= 1.12: no trailing '-'


def test_headless_without_ports_still_has_a_records() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", families=["IPv4"], ports=[])
    assert (BASE, "A", "10.244.0.5") in recs(dns_for(svc, [pod("a")]))


def test_external_name_cname_only() -> None:
    svc = service(
        "web",
        type_="ExternalName",
        external_name="DB.Example.com",
        cluster_ip=None,
        ports=[port(5432, "pg")],
    )
    r = dns_for(svc)
    assert recs(r) == {(BASE, "CNAME", "db.example.com.")}


# ---- PTR of endpoint addresses (reverse.go serviceRecordForIP) ----------------------------


def ptrs(svc_obj: dict[str, Any], slices: list[dict[str, Any]]) -> set[tuple[str, str]]:
    s = Service.from_api(svc_obj)
    out = endpoint_ptr_records(s, [EndpointSlice.from_api(x) for x in slices])
    assert {r.type for r in out} <= {"PTR"}
    return {(r.name, r.data) for r in out}


def test_cluster_ip_service_endpoints_have_ptrs_naming_the_service() -> None:
    c = [container(ports=[cport(8080)])]
    r = dns_for(
        service("web", selector=SEL),
        [
            pod("a", ips=["10.244.0.1"], containers=c),
            pod("b", ips=["10.244.0.2"], containers=c, hostname="b0", subdomain="web"),
            pod("c", ips=["10.244.0.3"], containers=c, ready=False),  # not ready: none
        ],
    )
    assert {(x.name, x.data) for x in r.records if x.type == "PTR"} == {
        ("10.0.96.10.in-addr.arpa.", BASE),  # the ClusterIP: the service itself
        ("1.0.244.10.in-addr.arpa.", "10-244-0-1." + BASE),
        ("2.0.244.10.in-addr.arpa.", "b0." + BASE),  # the endpoint's hostname
    }
    assert DnsQuestion("10.0.96.10.in-addr.arpa.", "PTR") not in r.shared
    assert len(r.shared) == 2 and set(r.shared) <= set(r.questions)


def test_hand_written_slices_ptrs_ready_only_ipv6_and_canonical_spelling_only() -> None:
    svc = service("ext")  # no selector: the slices are someone else's
    sl = eslice(
        "ext-1",
        "ext",
        [
            endpoint("192.168.1.5", "x"),
            endpoint("192.168.1.6", "y", ready=False, serving=True),  # serving is not enough
            endpoint("192.168.1.7", "z", hostname="db"),
        ],
    )
    v6 = eslice(
        "ext-2",
        "ext",
        [endpoint("fd00::5", "x"), endpoint("fd00:0::6", "y")],  # 2nd: not canonical
        address_type="IPv6",
    )
    base = "ext.default.svc.cluster.local."
    v6name = "5." + "0." * 29 + "d.f.ip6.arpa."
    assert ptrs(svc, [sl, v6]) == {
        ("5.1.168.192.in-addr.arpa.", "192-168-1-5." + base),
        ("7.1.168.192.in-addr.arpa.", "db." + base),
        (v6name, "fd00--5." + base),
    }


def test_no_endpoint_ptr_at_the_services_own_cluster_ip_nor_for_fqdn_slices() -> None:
    svc = service("web", cluster_ip="10.96.0.10")
    own = eslice("w", "web", [endpoint("10.96.0.10", "a")])
    names = eslice("f", "web", [endpoint("db.example.com", "a")], address_type="FQDN")
    assert ptrs(svc, [own, names]) == set()


def test_an_address_shared_by_two_services_gives_each_its_own_ptr() -> None:
    a, b = service("a", selector=SEL), service("b", selector=SEL)
    p = [pod("x", ips=["10.244.0.9"])]
    got = {r for s in (a, b) for r in dns_for(s, p).records if r.type == "PTR"}
    shared = [r for r in got if r.name == "9.0.244.10.in-addr.arpa."]
    assert sorted(r.data for r in shared) == [
        "10-244-0-9.a.default.svc.cluster.local.",
        "10-244-0-9.b.default.svc.cluster.local.",
    ]


def _observed(*records: tuple[str, str, str], nx: tuple[tuple[str, str], ...] = ()) -> Any:
    return DnsObservation(
        frozenset(DnsRecord(*r) for r in records),
        nxdomain=frozenset(DnsQuestion(*q) for q in nx),
    )


def test_shared_ptr_compared_on_this_services_names_only() -> None:
    svc_obj = service("web", selector=SEL)
    svc = Service.from_api(svc_obj)
    want = dns_for(svc_obj, [pod("x", ips=["10.244.0.9"])])
    rev, mine = "9.0.244.10.in-addr.arpa.", "10-244-0-9." + BASE
    other = "10-244-0-9.api.default.svc.cluster.local."
    fine = _observed(*[(r.name, r.type, r.data) for r in want.records], (rev, "PTR", other))
    assert compare_dns(svc, want, fine) == []  # another service's PTR there: its business
    stale = _observed(
        *[(r.name, r.type, r.data) for r in want.records], (rev, "PTR", "old." + BASE)
    )
    (d,) = compare_dns(svc, want, stale)  # but one naming this service must be expected
    assert (d.code, d.observed) == ("SVA-DNS-002", f"{rev} PTR old.{BASE}")
    without = [(r.name, r.type, r.data) for r in want.records if r.data != mine]
    (missing,) = compare_dns(svc, want, _observed(*without, nx=((rev, "PTR"),)))
    assert (missing.code, missing.observed) == ("SVA-DNS-001", f"{rev} PTR: NXDOMAIN")
    only_other = _observed(*without, (rev, "PTR", other))
    (d2,) = compare_dns(svc, want, only_other)
    assert d2.code == "SVA-DNS-001" and other in d2.observed  # the whole answer is shown


def test_shared_ptr_answered_by_a_cluster_ip_owner_is_not_judged() -> None:
    """A hand-written slice pointing at another Service's ClusterIP: CoreDNS answers that
    Service's name, and no endpoint PTR at all (the ClusterIP index is read first)."""
    svc_obj = service("proxy", cluster_ip="10.96.5.5")
    svc = Service.from_api(svc_obj)
    sl = [EndpointSlice.from_api(eslice("p", "proxy", [endpoint("10.96.0.1", "k")]))]
    want = expected_dns(svc, sl)
    rev = "1.0.96.10.in-addr.arpa."
    assert DnsQuestion(rev, "PTR") in want.shared
    others = [(r.name, r.type, r.data) for r in want.records if r.name != rev]
    owner = _observed(*others, (rev, "PTR", "kubernetes.default.svc.cluster.local."))
    assert compare_dns(svc, want, owner) == []


def test_external_name_that_is_an_address_has_no_record() -> None:
    """CoreDNS answers NXDOMAIN there: nothing is expected (nor asked)."""
    svc = service("web", type_="ExternalName", external_name="192.0.2.7", cluster_ip=None)
    r = dns_for(svc)
    assert r.records == frozenset() and r.questions == ()


def test_questions_cover_every_record_name_and_type() -> None:
    r = dns_for(service("web", ports=[port(80, "http")]))
    assert {(q.name, q.type) for q in r.questions} == {(x.name, x.type) for x in r.records}


def test_record_from_answer_canonicalises() -> None:
    assert record_from_answer(
        "Web.Default.svc.cluster.local", "srv", "0 50 80 web.default.svc.cluster.local."
    ) == DnsRecord(BASE, "SRV", "80 " + BASE)
    assert record_from_answer(BASE, "AAAA", "FD00:0::A").data == "fd00::a"


# ---- pod records (CoreDNS `pods insecure`) -----------------------------------------------


def pod_recs(pod_obj: dict[str, Any], zone: str = "cluster.local") -> list[tuple[str, str, str]]:
    return [(r.name, r.type, r.data) for r in pod_dns(Pod.from_api(pod_obj), zone)]


def test_pod_a_record_dashed_ip_in_its_namespace() -> None:
    assert pod_recs(pod("a", "shop", ips=["10.244.0.5"])) == [
        ("10-244-0-5.shop.pod.cluster.local.", "A", "10.244.0.5")
    ]
    assert pod_recs(pod("a", ips=["10.244.0.5"]), zone="Corp.Example") == [
        ("10-244-0-5.default.pod.corp.example.", "A", "10.244.0.5")
    ]


def test_pod_ipv6_aaaa_record_colons_become_dashes() -> None:
    assert pod_recs(pod("a", ips=["FD00:10:244::5"])) == [
        ("fd00-10-244--5.default.pod.cluster.local.", "AAAA", "fd00:10:244::5")
    ]


def test_pod_dual_stack_one_record_per_family() -> None:
    assert pod_recs(pod("a", ips=["10.244.0.5", "fd00:10:244::5"])) == [
        ("10-244-0-5.default.pod.cluster.local.", "A", "10.244.0.5"),
        ("fd00-10-244--5.default.pod.cluster.local.", "AAAA", "fd00:10:244::5"),
    ]


def test_pod_without_ip_has_no_record() -> None:
    assert pod_recs(pod("a", ips=[], phase="Pending", ready=False)) == []


def test_pod_ip_labels_read_back_by_corednss_rule() -> None:
    cases = {
        "10.244.0.5": "10-244-0-5",
        "fd00::a": "fd00--a",
        "2001:db8:0:0:1::1": "2001-db8--1-0-0-1",
        "::1": "0--1",  # a leading '-' is not a hostname label; 0::1 is ::1
        "fd00::": "fd00--0",
        "1:2:3:4:5:6:7:8": "1-2-3-4-5-6-7-8",
        "::ffff:10.1.2.3": "0--ffff-a01-203",  # no dotted quad in the label
    }
    for address, label in cases.items():
        assert pod_ip_label(address) == label, address
        assert pod_ip_from_label(label) == str(ipaddress.ip_address(address)), address
    # CoreDNS also reads the unpadded spellings, and nothing from a non-address
    assert pod_ip_from_label("--1") == "::1" and pod_ip_from_label("fd00--") == "fd00::"
    assert pod_ip_from_label("web-0") is None and pod_ip_from_label("1-2-3") is None


def test_the_records_a_report_shows_are_those_about_its_service() -> None:
    """An endpoint address's PTR answer names every service with a ready endpoint there:
    a report shows only the records naming its own service (another service appearing at
    the same address must not change it), and none when the address is a ClusterIP."""
    from svcaudit.core.compare import records_about
    from svcaudit.core.dns import DnsQuestion, DnsRecord, ExpectedDns
    from svcaudit.core.model import Service

    web = Service(namespace="ns", name="web", uid="u")
    ptr = "6.0.244.10.in-addr.arpa."
    clusterip_ptr = "10.0.96.10.in-addr.arpa."
    own = DnsRecord(ptr, "PTR", "10-244-0-6.web.ns.svc.cluster.local.")
    other = DnsRecord(ptr, "PTR", "10-244-0-6.api.ns.svc.cluster.local.")
    a = DnsRecord("web.ns.svc.cluster.local.", "A", "10.96.0.20")
    service_name = DnsRecord(clusterip_ptr, "PTR", "kube-dns.kube-system.svc.cluster.local.")
    expected = ExpectedDns(
        records=frozenset({own, a}),
        nxdomain=frozenset(),
        shared=frozenset({DnsQuestion(ptr, "PTR"), DnsQuestion(clusterip_ptr, "PTR")}),
    )
    queried = frozenset({own, other, a, service_name})
    assert records_about(web, expected, queried) == {own, a}
    assert records_about(web, expected, queried - {other}) == {own, a}  # same report
