"""audit_service: comparisons, user-mistake findings, verdicts and flap suppression."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from k8sobjs import BEFORE, container, cport, endpoint, eslice, node, pod, port, service

from svcaudit.core.audit import (
    AuditInputs,
    AuditSettings,
    DnsObservation,
    ServiceAudit,
    SettleState,
    audit_service,
    settle,
)
from svcaudit.core.codes import Aspect
from svcaudit.core.dns import DnsQuestion, DnsRecord
from svcaudit.core.model import EndpointSlice, Node, Pod, Service

NOW = datetime(2025, 1, 2, tzinfo=UTC)
SEL = {"app": "web"}
BASE = "web.default.svc.cluster.local."
KUBE = service(
    "kubernetes",
    cluster_ip="10.96.0.1",
    ports=[port(443, "https", target=6443)],
    created="2024-01-01T00:00:00Z",
)


def good_dns() -> DnsObservation:
    return DnsObservation(
        frozenset(
            {
                DnsRecord(BASE, "A", "10.96.0.10"),
                DnsRecord("10.0.96.10.in-addr.arpa.", "PTR", BASE),
                # the pod's address: its PTR names the service's endpoint (reverse.go)
                DnsRecord("5.0.244.10.in-addr.arpa.", "PTR", "10-244-0-5." + BASE),
            }
        )
    )


def audit(
    svc: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    slices: list[dict[str, Any]] | None = None,
    *,
    dns: DnsObservation | None = None,
    nodes: list[dict[str, Any]] | None = None,
    no_slices: bool = False,
    services: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> ServiceAudit:
    s = Service.from_api(svc or service("web", selector=SEL))
    pods = [pod("a")] if pods is None else pods
    slices = [eslice("web-x", "web", [endpoint("10.244.0.5", "a")])] if slices is None else slices
    nodes = [node()] if nodes is None else nodes
    inputs = AuditInputs(
        service=s,
        pods=[Pod.from_api(p) for p in pods],
        slices=None if no_slices else [EndpointSlice.from_api(x) for x in slices],
        nodes={n.name: n for n in (Node.from_api(x) for x in nodes)},
        env_services=[Service.from_api(x) for x in (services or [KUBE])] + [s],
    )
    return audit_service(inputs, dns=dns if dns is not None else as_expected(inputs), now=NOW, **kw)


def as_expected(inputs: AuditInputs) -> DnsObservation:
    """DNS answering exactly what the engine expects (tests about other aspects; the DNS
    rules themselves are tested against literal records and against the real CoreDNS)."""
    want = audit_service(inputs, dns=None, now=NOW).expected_dns
    return DnsObservation(want.records, nxdomain=want.nxdomain)


def codes(result: ServiceAudit) -> set[str]:
    return {d.code for d in result.discrepancies}


def status(result: ServiceAudit) -> dict[str, str]:
    return {str(a): v.status for a, v in result.verdicts.items()}


def test_consistent_service_is_healthy() -> None:
    r = audit(dns=good_dns())
    assert r.discrepancies == ()
    assert status(r) == {
        "Endpoints": "True",
        "Environment": "True",
        "DNS": "True",
        "Healthy": "True",
    }
    detail = r.to_status_detail()
    assert detail["expectedEndpointSlices"][0]["endpoints"][0]["addresses"] == ["10.244.0.5"]  # type: ignore[index]


def test_slices_compared_as_sets_names_counts_order_ignored() -> None:
    pods = [pod("a", ips=["10.244.0.1"]), pod("b", ips=["10.244.0.2"])]
    slices = [
        eslice("s2", "web", [endpoint("10.244.0.2", "b")]),
        eslice("s1", "web", [endpoint("10.244.0.1", "a")]),
    ]
    assert audit(pods=pods, slices=slices).discrepancies == ()


def test_missing_and_unexpected_endpoint() -> None:
    r = audit(slices=[eslice("s", "web", [endpoint("10.244.0.9", "gone")])])
    assert codes(r) == {"SVA-EP-001", "SVA-EP-002"}
    assert r.verdicts[Aspect.ENDPOINTS].status == "False"
    assert r.verdicts[Aspect.HEALTHY].status == "False"


def test_readiness_and_other_condition_mismatch() -> None:
    r = audit(slices=[eslice("s", "web", [endpoint("10.244.0.5", "a", ready=False)])])
    assert codes(r) == {"SVA-EP-003"}
    r2 = audit(slices=[eslice("s", "web", [endpoint("10.244.0.5", "a", serving=False)])])
    assert codes(r2) == {"SVA-EP-004"}


def test_port_set_grouping_checked() -> None:
    r = audit(
        slices=[
            eslice(
                "s",
                "web",
                [endpoint("10.244.0.5", "a")],
                ports=[{"name": "", "port": 9999, "protocol": "TCP"}],
            )
        ]
    )
    assert codes(r) == {"SVA-EP-005"}


def test_hostname_node_zone_mismatch() -> None:
    r = audit(
        slices=[
            eslice("s", "web", [endpoint("10.244.0.5", "a", hostname="h", node="n9", zone="z9")])
        ]
    )
    assert codes(r) == {"SVA-EP-006", "SVA-EP-007", "SVA-EP-008"}


def test_duplicate_endpoint_and_over_capacity() -> None:
    ep = endpoint("10.244.0.5", "a")
    r = audit(slices=[eslice("s1", "web", [ep]), eslice("s2", "web", [ep])])
    assert codes(r) == {"SVA-EP-009"}
    r2 = audit(
        slices=[eslice("s1", "web", [endpoint("10.244.0.5", "a")])],
        settings=AuditSettings(max_endpoints_per_slice=0 + 1),
    )
    assert "SVA-EP-010" not in codes(r2)


def test_missing_placeholder_is_info_only() -> None:
    r = audit(pods=[], slices=[])
    assert "SVA-EP-012" in codes(r) and "SVA-EP-101" in codes(r)
    assert r.verdicts[Aspect.ENDPOINTS].reason == "SelectorMatchesNoPod"


def test_selector_matches_no_pod() -> None:
    r = audit(svc=service("web", selector={"app": "wbe"}), slices=[eslice("s", "web", [], [])])
    assert codes(r) == {"SVA-EP-101"}
    assert r.verdicts[Aspect.ENDPOINTS].status == "False"


def test_no_ready_endpoint() -> None:
    r = audit(
        pods=[pod("a", ready=False)],
        slices=[eslice("s", "web", [endpoint("10.244.0.5", "a", ready=False)])],
    )
    assert codes(r) == {"SVA-EP-107"}


def test_named_target_port_declared_by_no_pod_or_wrong_protocol_or_some_pods() -> None:
    svc = service("web", selector=SEL, ports=[port(80, target="http")])
    empty = eslice("s", "web", [endpoint("10.244.0.5", "a")], ports=[])
    r = audit(
        svc=svc, pods=[pod("a", containers=[container(ports=[cport(8080, "htp")])])], slices=[empty]
    )
    assert codes(r) == {"SVA-EP-102"}
    r2 = audit(
        svc=svc,
        pods=[pod("a", containers=[container(ports=[cport(8080, "http", "UDP")])])],
        slices=[empty],
    )
    assert codes(r2) == {"SVA-EP-103"}
    good = [container(ports=[cport(8080, "http")])]
    r3 = audit(
        svc=svc,
        pods=[pod("a", containers=good), pod("b", ips=["10.244.0.6"], containers=[container()])],
        slices=[
            eslice("s", "web", [endpoint("10.244.0.5", "a")]),
            eslice("t", "web", [endpoint("10.244.0.6", "b")], ports=[]),
        ],
    )
    assert codes(r3) == {"SVA-EP-104"}


def test_numeric_target_port_not_declared() -> None:
    svc = service("web", selector=SEL, ports=[port(80, target=9876)])
    sl = [
        eslice(
            "s",
            "web",
            [endpoint("10.244.0.5", "a")],
            [{"name": "", "port": 9876, "protocol": "TCP"}],
        )
    ]
    r = audit(svc=svc, slices=sl)  # pod declares 8080
    assert codes(r) == {"SVA-EP-105"}
    r2 = audit(svc=svc, slices=sl, pods=[pod("a", containers=[container()])])
    assert codes(r2) == {"SVA-EP-106"}
    assert r2.verdicts[Aspect.ENDPOINTS].status == "True"  # info only


def test_selectorless_service() -> None:
    svc = service("web")
    assert codes(audit(svc=svc, slices=[])) == {"SVA-EP-108"}
    manual = eslice("web-1", "web", [endpoint("10.244.0.5", "a")], managed_by="me")
    assert audit(svc=svc, slices=[manual]).discrepancies == ()
    stale = eslice("web-1", "web", [endpoint("10.244.0.5", "a")])
    assert codes(audit(svc=svc, slices=[stale])) == {"SVA-EP-013"}


def external(ip: str) -> dict[str, Any]:
    """An endpoint without targetRef (a backend outside the cluster)."""
    ep = endpoint(ip, "unused")
    del ep["targetRef"]
    return ep


def manual_slice(*endpoints: dict[str, Any], address_type: str = "IPv4") -> dict[str, Any]:
    return eslice("web-1", "web", list(endpoints), managed_by="me", address_type=address_type)


def test_selectorless_slice_address_not_the_pods_ip() -> None:
    svc = service("web")
    r = audit(svc=svc, slices=[manual_slice(endpoint(["10.244.0.5", "10.0.0.1"], "a"))])
    assert codes(r) == {"SVA-EP-014"}
    (d,) = r.discrepancies
    assert d.reason == "EndpointAddressNotPodIP" and d.severity == "error"
    assert d.aspect is Aspect.ENDPOINTS and d.hint
    assert d.subject == "Pod default/a" and d.pod == "a" and d.container is None
    assert d.observed == "10.0.0.1" and "10.244.0.5" in d.expected
    assert d.related == ("Service default/web", "EndpointSlice default/web-1")
    assert r.verdicts[Aspect.ENDPOINTS].status == "False"
    assert r.verdicts[Aspect.ENDPOINTS].reason == "EndpointAddressNotPodIP"
    # a pod without IP yet: no address can be its own
    r2 = audit(svc=svc, pods=[pod("a", ips=[])], slices=[manual_slice(endpoint("10.0.0.1", "a"))])
    assert codes(r2) == {"SVA-EP-014"} and "none" in r2.discrepancies[0].expected


def test_selectorless_slice_target_pod_missing() -> None:
    svc = service("web")
    elsewhere = pod("x", ns="other", ips=["10.0.0.1"])  # same name, another namespace
    r = audit(svc=svc, pods=[pod("a"), elsewhere], slices=[manual_slice(endpoint("10.0.0.1", "x"))])
    assert codes(r) == {"SVA-EP-015"}
    (d,) = r.discrepancies
    assert d.reason == "EndpointTargetPodMissing" and d.severity == "error" and d.hint
    assert d.subject == "Pod default/x" and d.pod == "x"
    assert "10.0.0.1" in d.observed and d.expected
    assert r.verdicts[Aspect.ENDPOINTS].status == "False"


def test_selectorless_slice_endpoints_not_judged() -> None:
    svc = service("web")
    node_ref = endpoint("192.168.0.10", "node-1")
    node_ref["targetRef"] = {"kind": "Node", "name": "node-1"}
    other_ns = endpoint("10.0.0.1", "x", ns="other")
    no_ns = endpoint("10.244.0.5", "a")
    del no_ns["targetRef"]["namespace"]  # the slice's namespace
    ok = manual_slice(external("203.0.113.7"), node_ref, other_ns, no_ns)
    assert audit(svc=svc, slices=[ok]).discrepancies == ()
    no_ns_wrong = endpoint("10.0.0.1", "a")
    del no_ns_wrong["targetRef"]["namespace"]
    assert codes(audit(svc=svc, slices=[manual_slice(no_ns_wrong)])) == {"SVA-EP-014"}
    fqdn = manual_slice(endpoint("db.example.com", "x"), address_type="FQDN")
    assert audit(svc=svc, slices=[fqdn]).discrepancies == ()


def test_selectorless_slice_ipv6_compared_as_addresses() -> None:
    svc = service("web", cluster_ip="fd00::10", families=["IPv6"])
    pods = [pod("a", ips=["fd00:10:244::5"])]
    spelled = manual_slice(endpoint("fd00:10:244:0:0:0:0:5", "a"), address_type="IPv6")
    assert "SVA-EP-014" not in codes(audit(svc=svc, pods=pods, slices=[spelled]))
    wrong = manual_slice(endpoint("fd00:10:244::6", "a"), address_type="IPv6")
    assert "SVA-EP-014" in codes(audit(svc=svc, pods=pods, slices=[wrong]))


def test_stale_controller_slice_of_selectorless_service_also_checked() -> None:
    svc = service("web")
    stale = eslice("web-1", "web", [endpoint("10.0.0.1", "gone")])
    assert codes(audit(svc=svc, slices=[stale])) == {"SVA-EP-013", "SVA-EP-015"}


def test_headless_label_checked_on_managed_slices() -> None:
    headless = service("web", selector=SEL, cluster_ip="None", families=["IPv4"])
    plain = [eslice("s", "web", [endpoint("10.244.0.5", "a")])]
    labelled = [eslice("s", "web", [endpoint("10.244.0.5", "a")], headless=True)]
    assert ep_findings(audit(svc=headless, slices=labelled)) == []
    (d,) = ep_findings(audit(svc=headless, slices=plain))
    assert (d.code, d.subject) == ("SVA-EP-016", "EndpointSlice default/s")
    assert d.expected == "labelled service.kubernetes.io/headless"
    assert d.observed == "not labelled service.kubernetes.io/headless"
    r = audit(slices=labelled)  # a ClusterIP service: kube-proxy would skip this slice
    (d,) = r.discrepancies
    assert (d.code, d.observed) == ("SVA-EP-016", "labelled service.kubernetes.io/headless")
    assert r.verdicts[Aspect.ENDPOINTS].reason == "SliceHeadlessLabelMismatch"


def test_headless_label_not_judged_on_foreign_slices() -> None:
    headless = service("web", selector=SEL, cluster_ip="None", families=["IPv4"])
    foreign = eslice("s", "web", [endpoint("10.244.0.5", "a")], managed_by="me")
    assert "SVA-EP-016" not in codes(audit(svc=headless, slices=[foreign]))
    selectorless = eslice("s", "web", [], managed_by="me")
    assert codes(audit(svc=service("web"), slices=[selectorless])) == set()


def ep_findings(result: ServiceAudit) -> list[Any]:
    return [d for d in result.discrepancies if d.code.startswith("SVA-EP-")]


def test_external_name_service() -> None:
    svc = service(
        "web", type_="ExternalName", external_name="db.example.com", cluster_ip=None, ports=[]
    )
    dns = DnsObservation(frozenset({DnsRecord(BASE, "CNAME", "db.example.com.")}))
    r = audit(svc=svc, slices=[], dns=dns)
    assert r.discrepancies == () and r.verdicts[Aspect.HEALTHY].status == "True"


def test_slices_not_observed_is_unknown() -> None:
    r = audit(no_slices=True)
    assert r.verdicts[Aspect.ENDPOINTS].status == "Unknown"
    assert r.verdicts[Aspect.HEALTHY].status == "Unknown"


def test_dns_missing_unexpected_and_unknown() -> None:
    wrong = DnsObservation(
        frozenset(
            {DnsRecord(BASE, "A", "10.96.0.99"), DnsRecord("10.0.96.10.in-addr.arpa.", "PTR", BASE)}
        )
    )
    r = audit(dns=wrong)
    assert codes(r) == {"SVA-DNS-001", "SVA-DNS-002"}
    assert r.verdicts[Aspect.DNS].status == "False"
    web = Service.from_api(service("web", selector=SEL))
    none = audit_service(AuditInputs(web, [], [], {}, []), None, NOW)
    assert none.verdicts[Aspect.DNS].status == "Unknown"
    failed = audit(dns=DnsObservation(frozenset(), error="timeout"))
    assert failed.verdicts[Aspect.DNS].status == "Unknown"
    assert "timeout" in failed.verdicts[Aspect.DNS].message


def test_headless_nxdomain_expected() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", families=["IPv4"])
    sl = [eslice("s", "web", [endpoint("10.244.0.5", "a", ready=False)], headless=True)]
    ok = DnsObservation(frozenset(), nxdomain=frozenset({DnsQuestion(BASE, "A")}))
    r = audit(svc=svc, pods=[pod("a", ready=False)], slices=sl, dns=ok)
    assert codes(r) == {"SVA-EP-107", "SVA-DNS-101"}
    assert r.verdicts[Aspect.DNS].status == "True"
    bad = DnsObservation(frozenset({DnsRecord(BASE, "A", "10.244.0.5")}))
    r2 = audit(svc=svc, pods=[pod("a", ready=False)], slices=sl, dns=bad)
    assert "SVA-DNS-003" in codes(r2) and r2.verdicts[Aspect.DNS].status == "False"


def test_stale_environment_of_pod_started_before_service() -> None:
    r = audit(pods=[pod("a", started=BEFORE)])
    assert codes(r) == {"SVA-ENV-001"}
    assert r.verdicts[Aspect.ENVIRONMENT].status == "False"
    assert r.env_findings[0].subject == "Pod default/a container app"


def test_env_findings_name_their_pod_and_container() -> None:
    sidecar = container("side", restart_policy="Always")
    p = pod("a", started=BEFORE, containers=[container(ports=[cport(8080)])])
    p["spec"]["initContainers"] = [sidecar]
    p["status"]["initContainerStatuses"] = [
        {"name": "side", "state": {"running": {"startedAt": BEFORE}}}
    ]
    r = audit(pods=[p])
    assert {(d.code, d.pod, d.container) for d in r.env_findings} == {
        ("SVA-ENV-001", "a", "app"),
        ("SVA-ENV-001", "a", "side"),
    }
    d = r.env_findings[0]
    assert d.to_dict()["pod"] == "a" and d.to_dict()["container"] == d.container
    shadow = container(ports=[cport(8080)], env=[{"name": "WEB_SERVICE_HOST", "value": "1.2.3.4"}])
    env_from = container("cfg", env_from=[{"configMapRef": {"name": "cfg"}}])
    r2 = audit(pods=[pod("b", containers=[shadow, env_from])])
    assert {(d.code, d.pod, d.container) for d in r2.env_findings} == {
        ("SVA-ENV-004", "b", "app"),
        ("SVA-ENV-006", "b", "cfg"),
    }
    # observed environments (compare_env) too
    r3 = audit(observed_env={("a", "app"): {}})
    assert {(d.code, d.pod, d.container) for d in r3.env_findings} == {("SVA-ENV-010", "a", "app")}
    # a collision is about services, not a pod; non-pod findings keep pod=None
    svc = service("foo", selector=SEL, cluster_ip="10.96.0.10", ports=[port(8080)])
    other = service("foo-port-8080-tcp", cluster_ip="10.96.0.11", ports=[port(80)])
    sl = [eslice("s", "foo", [endpoint("10.244.0.5", "a")])]
    r4 = audit(svc=svc, slices=sl, services=[KUBE, other], dns=DnsObservation(frozenset()))
    col = next(d for d in r4.discrepancies if d.code == "SVA-ENV-003")
    assert col.pod is None and col.container is None and "pod" not in col.to_dict()
    assert all(d.pod is None for d in r4.discrepancies if d.aspect is Aspect.DNS)


def test_endpoint_findings_about_one_pod_name_it() -> None:
    r = audit(slices=[])
    assert [(d.code, d.pod) for d in r.discrepancies] == [("SVA-EP-001", "a")]
    r2 = audit(slices=[eslice("web-x", "web", [endpoint("10.244.0.5", "a", ready=False)])])
    assert [(d.code, d.pod, d.container) for d in r2.discrepancies] == [("SVA-EP-003", "a", None)]


def test_every_pod_of_the_namespace_is_checked_not_only_selected_ones() -> None:
    client = pod("client", labels={"app": "other"}, ips=["10.244.0.7"], started=BEFORE)
    r = audit(pods=[pod("a"), client])
    assert {d.subject for d in r.discrepancies} == {"Pod default/client container app"}


def test_enable_service_links_false_pod_not_judged() -> None:
    r = audit(
        pods=[pod("a"), pod("x", labels={"app": "x"}, started=BEFORE, enable_service_links=False)]
    )
    assert r.discrepancies == ()


def test_shadowing_explicit_variable() -> None:
    c = container(ports=[cport(8080)], env=[{"name": "WEB_SERVICE_HOST", "value": "1.2.3.4"}])
    r = audit(pods=[pod("a", containers=[c])])
    assert codes(r) == {"SVA-ENV-004"}
    same = container(ports=[cport(8080)], env=[{"name": "WEB_SERVICE_HOST", "value": "10.96.0.10"}])
    r2 = audit(pods=[pod("a", containers=[same])])
    assert codes(r2) == {"SVA-ENV-005"} and r2.verdicts[Aspect.ENVIRONMENT].status == "True"


def test_collision_reported() -> None:
    svc = service("foo", selector=SEL, cluster_ip="10.96.0.10", ports=[port(8080)])
    other = service("foo-port-8080-tcp", cluster_ip="10.96.0.11", ports=[port(80)])
    sl = [eslice("s", "foo", [endpoint("10.244.0.5", "a")])]
    r = audit(svc=svc, slices=sl, services=[KUBE, other], dns=DnsObservation(frozenset()))
    assert "SVA-ENV-003" in codes(r)


def test_observed_env_compared_exactly() -> None:
    full = {
        "WEB_SERVICE_HOST": "10.96.0.10",
        "WEB_SERVICE_PORT": "80",
        "WEB_PORT": "tcp://10.96.0.10:80",
        "WEB_PORT_80_TCP": "tcp://10.96.0.10:80",
        "WEB_PORT_80_TCP_PROTO": "tcp",
        "WEB_PORT_80_TCP_PORT": "80",
        "WEB_PORT_80_TCP_ADDR": "10.96.0.10",
    }
    assert audit(observed_env={("a", "app"): full}).discrepancies == ()
    stale = {**full, "WEB_SERVICE_HOST": "10.96.0.99"}
    assert codes(audit(observed_env={("a", "app"): stale})) == {"SVA-ENV-011"}
    missing = {k: v for k, v in full.items() if k != "WEB_PORT"}
    assert codes(audit(observed_env={("a", "app"): missing})) == {"SVA-ENV-010"}
    # observation wins over the start-time prediction
    r = audit(pods=[pod("a", started=BEFORE)], observed_env={("a", "app"): full})
    assert r.discrepancies == ()


def test_observed_mismatch_with_env_from_is_not_a_failure() -> None:
    c = container(ports=[cport(8080)], env_from=[{"configMapRef": {"name": "cfg"}}])
    r = audit(
        pods=[pod("a", containers=[c])],
        observed_env={
            ("a", "app"): {
                "WEB_SERVICE_HOST": "1.1.1.1",
                "WEB_SERVICE_PORT": "80",
                "WEB_PORT": "tcp://10.96.0.10:80",
                "WEB_PORT_80_TCP": "tcp://10.96.0.10:80",
                "WEB_PORT_80_TCP_PROTO": "tcp",
                "WEB_PORT_80_TCP_PORT": "80",
                "WEB_PORT_80_TCP_ADDR": "10.96.0.10",
            }
        },
    )
    assert codes(r) == {"SVA-ENV-006"}
    assert r.verdicts[Aspect.ENVIRONMENT].status == "True"


def test_running_container_without_start_time_makes_env_unknown() -> None:
    p = pod("a")
    p["status"]["containerStatuses"][0]["state"] = {"running": {}}
    r = audit(pods=[p])
    assert r.verdicts[Aspect.ENVIRONMENT].status == "Unknown"
    assert r.verdicts[Aspect.HEALTHY].status == "Unknown"


def test_false_wins_over_unknown_in_healthy() -> None:
    r = audit(pods=[pod("a", started=BEFORE)], dns=DnsObservation(frozenset(), error="x"))
    assert r.verdicts[Aspect.HEALTHY].status == "False"


def test_settle_suppresses_young_discrepancies() -> None:
    r = audit(slices=[])  # EndpointMissing
    first, state = settle(r, None, NOW, 30)
    assert first.discrepancies == () or all(not d.severity.reportable for d in first.discrepancies)
    assert first.verdicts[Aspect.ENDPOINTS].status == "Unknown"
    assert first.verdicts[Aspect.ENDPOINTS].reason == "Settling"
    later, state2 = settle(r, state, NOW + timedelta(seconds=31), 30)
    assert "SVA-EP-001" in {d.code for d in later.discrepancies}
    assert later.verdicts[Aspect.ENDPOINTS].status == "False"
    healed, state3 = settle(audit(), state2, NOW + timedelta(seconds=40), 30)
    assert healed.verdicts[Aspect.HEALTHY].status == "True" and not state3.first_seen
    again, _ = settle(r, state3, NOW + timedelta(seconds=50), 30)  # the clock restarted
    assert "SVA-EP-001" in {d.code for d in again.pending}
    assert again.verdicts[Aspect.ENDPOINTS].status == "True"  # published True is kept


def test_settle_hysteresis_published_true_not_flipped_by_pending() -> None:
    clean, state = settle(audit(), None, NOW, 30)
    assert clean.verdicts[Aspect.ENDPOINTS].status == "True" and state.next_due is None
    assert state.published[Aspect.ENDPOINTS] == "True"
    churn = audit(pods=[pod("a"), pod("b", ips=["10.244.0.6"])])  # b not in a slice yet
    t1 = NOW + timedelta(seconds=5)
    r1, s1 = settle(churn, state, t1, 30)
    assert r1.discrepancies == () and {d.code for d in r1.pending} == {"SVA-EP-001"}
    assert r1.verdicts == clean.verdicts  # no flap, same reasons and messages
    assert s1.next_due == t1 + timedelta(seconds=30)
    assert s1.published[Aspect.ENDPOINTS] == "True"
    r2, s2 = settle(churn, s1, t1 + timedelta(seconds=10), 30)  # still young: still True
    assert r2.verdicts[Aspect.ENDPOINTS].status == "True" and s2.next_due == s1.next_due
    r3, s3 = settle(churn, s2, t1 + timedelta(seconds=30), 30)  # lasted: reported
    assert r3.verdicts[Aspect.ENDPOINTS].status == "False" and r3.pending == ()
    assert s3.published[Aspect.ENDPOINTS] == "False" and s3.next_due is None


def test_settle_hysteresis_published_false_kept_while_only_pending() -> None:
    broken = audit(slices=[])  # EndpointMissing
    _, s0 = settle(broken, None, NOW, 30)
    r1, s1 = settle(broken, s0, NOW + timedelta(seconds=30), 30)
    assert r1.verdicts[Aspect.ENDPOINTS].status == "False"
    # the old finding is fixed, a new one appears: False stays False until it settles/heals
    other = audit(slices=[eslice("web-x", "web", [endpoint("10.244.0.5", "a", ready=False)])])
    r2, s2 = settle(other, s1, NOW + timedelta(seconds=31), 30)
    assert r2.discrepancies == () and {d.code for d in r2.pending} == {"SVA-EP-003"}
    v = r2.verdicts[Aspect.ENDPOINTS]
    assert v.status == "False" and v.reason == "EndpointReadinessMismatch"
    assert "not yet lasting" in v.message
    assert r2.verdicts[Aspect.HEALTHY].status == "False"
    healed, s3 = settle(audit(), s2, NOW + timedelta(seconds=32), 30)
    assert healed.verdicts[Aspect.HEALTHY].status == "True" and s3.published
    assert s3.published[Aspect.ENDPOINTS] == "True"


def test_settle_first_audit_and_published_unknown_give_settling() -> None:
    broken = audit(slices=[])
    first, s0 = settle(broken, None, NOW, 30)
    assert first.verdicts[Aspect.ENDPOINTS].reason == "Settling"
    assert s0.published[Aspect.ENDPOINTS] == "Unknown"
    second, _ = settle(broken, s0, NOW + timedelta(seconds=1), 30)
    assert second.verdicts[Aspect.ENDPOINTS].reason == "Settling"
    assert second.verdicts[Aspect.HEALTHY].status == "Unknown"


def test_settle_missing_input_beats_hysteresis() -> None:
    _, state = settle(audit(), None, NOW, 30)
    r, _ = settle(audit(no_slices=True), state, NOW + timedelta(seconds=1), 30)
    assert r.verdicts[Aspect.ENDPOINTS].status == "Unknown"
    assert r.verdicts[Aspect.ENDPOINTS].reason == "EndpointSlicesNotObserved"


def test_settle_state_resumed_from_published_statuses() -> None:
    state = SettleState.resume(
        {"ENDPOINTS": "True", "DNS": "False", "Environment": "Unknown", "HEALTHY": "False"}
        | {"bogus": "True", "ENVIRONMENT": "maybe"}
    )
    assert state.first_seen == {} and state.next_due is None
    assert dict(state.published) == {
        Aspect.ENDPOINTS: "True",
        Aspect.DNS: "False",
        Aspect.ENVIRONMENT: "Unknown",
    }
    assert SettleState.resume({Aspect.DNS: "True"}).published == {Aspect.DNS: "True"}
    # after a restart (clocks lost) a published True is not flipped by a young finding
    r, s = settle(audit(slices=[]), state, NOW, 30)
    assert r.verdicts[Aspect.ENDPOINTS].status == "True" and r.pending
    assert s.next_due == NOW + timedelta(seconds=30)


def test_settle_is_pure_and_does_not_change_its_inputs() -> None:
    r = audit(slices=[])
    _, state = settle(audit(), None, NOW, 30)
    before = (dict(state.first_seen), dict(state.published), state.next_due)
    a = settle(r, state, NOW + timedelta(seconds=3), 30)
    b = settle(r, state, NOW + timedelta(seconds=3), 30)
    assert a == b
    assert (dict(state.first_seen), dict(state.published), state.next_due) == before


def test_a_failed_dns_query_is_retried_with_a_backoff_until_it_answers() -> None:
    """DNS Unknown because the query failed: no cluster event will bring the audit back, so
    settle() schedules the retry itself: 2 s, then doubling with the failure's age, at most
    60 s; an answer ends it."""
    failed = audit(dns=DnsObservation(frozenset(), error="timeout"))
    assert failed.transient == frozenset({Aspect.DNS})
    at, state = NOW, None
    delays = []
    for _ in range(9):
        reported, state = settle(failed, state, at, 30)
        assert reported.verdicts[Aspect.DNS].status == "Unknown"
        assert state.next_due is not None
        delays.append((state.next_due - at).total_seconds())
        at = state.next_due
    assert delays == [2, 2, 4, 8, 16, 32, 60, 60, 60]
    answered, after = settle(audit(), state, at, 30)
    assert answered.verdicts[Aspect.DNS].status == "True"
    assert after.next_due is None and not after.failing_since


def test_an_unknown_nobody_can_answer_by_asking_again_is_not_retried() -> None:
    """DNS not queried, or EndpointSlices not provided: the next event audits again; a retry
    would only cost."""
    web = Service.from_api(service("web", selector=SEL))
    not_asked = audit_service(AuditInputs(web, [], [], {}, []), None, NOW)
    no_slices = audit(no_slices=True)
    for r in (not_asked, no_slices):
        assert r.transient == frozenset()
        _, state = settle(r, None, NOW, 30)
        assert not state.failing_since
        assert state.next_due in (None, NOW + timedelta(seconds=30))  # a pending finding's


def test_a_retry_does_not_postpone_a_pending_deadline() -> None:
    failing_and_pending = audit(slices=[], dns=DnsObservation(frozenset(), error="timeout"))
    _, state = settle(failing_and_pending, None, NOW, 1)
    assert state.next_due == NOW + timedelta(seconds=1)  # the settle deadline comes first
    _, state = settle(failing_and_pending, None, NOW, 30)
    assert state.next_due == NOW + timedelta(seconds=2)  # the retry comes first
