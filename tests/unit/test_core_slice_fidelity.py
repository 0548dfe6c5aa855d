"""Issue 19 (fidelity, round 2), the EndpointSlice controller's items: appProtocol on slice
ports, topology hints (trafficDistribution, topology-mode Auto) and hand-written endpoints
pointing at an address of the pod network that no pod holds (SVA-EP-017).

Ground truth: k8s.io/endpointslice v0.34 (utils.go getEndpointPorts, reconciler.go,
trafficdist/trafficdist.go, topologycache/) and pkg/features (v1.34 defaults)."""

from __future__ import annotations

import copy
import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest
from k8sobjs import endpoint, eslice, node, pod, port, service

from svcaudit.core.audit import (
    AuditInputs,
    DnsObservation,
    ServiceAudit,
    audit_service,
    slice_to_dict,
)
from svcaudit.core.codes import Aspect
from svcaudit.core.endpoints import (
    HintsPolicy,
    endpoint_hints,
    expected_endpoints,
    hints_policy,
)
from svcaudit.core.expect import expect_document, parse_inventory
from svcaudit.core.model import (
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    Node,
    Pod,
    Service,
)
from svcaudit.core.podnet import (
    canonical_ip,
    dead_pod_addresses,
    live_ips,
    pod_assignable,
    pod_ranges,
    possible_ips,
)

NOW = datetime(2025, 1, 2, tzinfo=UTC)
SEL = {"app": "web"}
KUBE = service("kubernetes", cluster_ip="10.96.0.1", ports=[port(443, "https", target=6443)])


def svc(**spec: Any) -> dict[str, Any]:
    """Service web (selector app=web, 80 -> 8080) with extra spec fields; `annotations=`."""
    annotations = spec.pop("annotations", None)
    body = service("web", selector=SEL)
    body["spec"].update(spec)
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    return body


def with_node_cidr(body: dict[str, Any], *cidrs: str, legacy: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["spec"] = {"podCIDR": cidrs[0]} if legacy else {"podCIDR": cidrs[0], "podCIDRs": cidrs}
    return out


def hinted(
    ep: dict[str, Any],
    zones: tuple[str, ...] | list[str] = (),
    nodes: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    out = dict(ep)
    hints: dict[str, Any] = {}
    if zones:
        hints["forZones"] = [{"name": z} for z in zones]
    if nodes:
        hints["forNodes"] = [{"name": n} for n in nodes]
    out["hints"] = hints
    return out


def run(
    service_body: dict[str, Any],
    slices: list[dict[str, Any]],
    pods: list[dict[str, Any]] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    live: frozenset[str] | None = None,
) -> ServiceAudit:
    s = Service.from_api(service_body)
    pod_views = [Pod.from_api(p) for p in ([pod("a")] if pods is None else pods)]
    inputs = AuditInputs(
        service=s,
        pods=pod_views,
        slices=[EndpointSlice.from_api(x) for x in slices],
        nodes={n.name: n for n in (Node.from_api(x) for x in (nodes or [node()]))},
        env_services=[Service.from_api(KUBE), s],
        live_pod_ips=live,
    )
    want = audit_service(inputs, dns=None, now=NOW).expected_dns
    return audit_service(inputs, DnsObservation(want.records, nxdomain=want.nxdomain), NOW)


def codes(result: ServiceAudit) -> list[str]:
    return sorted(d.code for d in result.discrepancies)


# ---- the model ---------------------------------------------------------------------------------


def test_model_reads_traffic_distribution_annotations_pod_cidrs_and_hints() -> None:
    s = Service.from_api(
        svc(
            trafficDistribution="PreferSameNode",
            annotations={"service.kubernetes.io/topology-mode": "Auto", "other": "x"},
        )
    )
    assert (s.traffic_distribution, s.topology_mode, s.topology_aware_hints) == (
        "PreferSameNode",
        "Auto",
        None,
    )
    assert Service.from_api(svc()).traffic_distribution is None
    dual = Node.from_api(with_node_cidr(node(), "10.244.1.0/24", "fd00:10:244:1::/64"))
    assert dual.pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    assert Node.from_api(with_node_cidr(node(), "10.244.2.0/24", legacy=True)).pod_cidrs == (
        "10.244.2.0/24",
    )
    assert Node.from_api(node()).pod_cidrs == ()
    ep = hinted(endpoint("10.244.0.5", "a"), ["zone-a"], ["node-1"])
    (parsed,) = EndpointSlice.from_api(eslice("s", "web", [ep])).endpoints
    assert parsed.hints == EndpointHints(("zone-a",), ("node-1",))
    empty = hinted(endpoint("10.244.0.5", "a"))  # "hints: {}" reads as none, as kube-proxy
    (parsed,) = EndpointSlice.from_api(eslice("s", "web", [empty])).endpoints
    assert parsed.hints is None


# ---- which hints the controller maintains ------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "annotations", "policy"),
    [
        ({}, None, HintsPolicy.NONE),
        ({"trafficDistribution": "PreferClose"}, None, HintsPolicy.SAME_ZONE),
        ({"trafficDistribution": "PreferSameZone"}, None, HintsPolicy.SAME_ZONE),
        ({"trafficDistribution": "PreferSameNode"}, None, HintsPolicy.SAME_NODE),
        ({"trafficDistribution": "PreferSomewhere"}, None, HintsPolicy.NONE),  # ignored
        ({}, {"service.kubernetes.io/topology-mode": "Auto"}, HintsPolicy.TOPOLOGY_AUTO),
        ({}, {"service.kubernetes.io/topology-mode": "auto"}, HintsPolicy.TOPOLOGY_AUTO),
        ({}, {"service.kubernetes.io/topology-mode": "AUTO"}, HintsPolicy.NONE),
        # the annotation wins over trafficDistribution
        (
            {"trafficDistribution": "PreferClose"},
            {"service.kubernetes.io/topology-mode": "Auto"},
            HintsPolicy.TOPOLOGY_AUTO,
        ),
        # the deprecated annotation, when present, alone decides (hintsEnabled)
        (
            {"trafficDistribution": "PreferClose"},
            {
                "service.kubernetes.io/topology-aware-hints": "Disabled",
                "service.kubernetes.io/topology-mode": "Auto",
            },
            HintsPolicy.SAME_ZONE,
        ),
        ({}, {"service.kubernetes.io/topology-aware-hints": "auto"}, HintsPolicy.TOPOLOGY_AUTO),
    ],
)
def test_hints_policy(spec: dict[str, Any], annotations: Any, policy: HintsPolicy) -> None:
    body = svc(**spec, **({"annotations": annotations} if annotations else {}))
    assert hints_policy(Service.from_api(body)) is policy


def expected(service_body: dict[str, Any], pods: list[dict[str, Any]], nodes: Any = None) -> Any:
    nodes_map = (
        None
        if nodes == "unknown"
        else {n.name: n for n in (Node.from_api(x) for x in (nodes or [node()]))}
    )
    return expected_endpoints(
        Service.from_api(service_body), [Pod.from_api(p) for p in pods], nodes_map
    )


def test_expected_hints_follow_zone_and_node_of_ready_endpoints_only() -> None:
    pods = [pod("a"), pod("b", ips=["10.244.0.6"], ready=False)]
    for value in ("PreferClose", "PreferSameZone"):
        eps = {
            ep.target_ref.name: ep
            for ep in expected(svc(trafficDistribution=value), pods).endpoints
        }
        assert eps["a"].hints == EndpointHints(("zone-a",), ())
        assert eps["b"].hints is None  # not ready: the heuristic leaves it alone
    same_node = expected(svc(trafficDistribution="PreferSameNode"), pods)
    assert same_node.hints_policy is HintsPolicy.SAME_NODE
    eps = {ep.target_ref.name: ep for ep in same_node.endpoints}
    assert eps["a"].hints == EndpointHints(("zone-a",), ("node-1",))
    # a node without zone label: node hint only (PreferSameNode), none at all (PreferClose)
    zoneless = [node(zone=None)]
    (ep,) = expected(svc(trafficDistribution="PreferSameNode"), [pod("a")], zoneless).endpoints
    assert ep.hints == EndpointHints((), ("node-1",))
    (ep,) = expected(svc(trafficDistribution="PreferClose"), [pod("a")], zoneless).endpoints
    assert ep.hints is None
    # publishNotReadyAddresses: every endpoint is ready, so every one is hinted
    pna = svc(trafficDistribution="PreferClose", publishNotReadyAddresses=True)
    assert all(ep.hints is not None for ep in expected(pna, pods).endpoints)
    (ep,) = expected(svc(), [pod("a")]).endpoints
    assert ep.hints is None


def test_endpoint_hints_read_from_the_endpoint_itself() -> None:
    (ep,) = EndpointSlice.from_api(
        eslice("s", "web", [endpoint("10.244.0.5", "a", zone="z9", node="n9")])
    ).endpoints
    assert endpoint_hints(HintsPolicy.SAME_NODE, ep) == EndpointHints(("z9",), ("n9",))
    assert endpoint_hints(HintsPolicy.NONE, ep) is None
    assert endpoint_hints(HintsPolicy.TOPOLOGY_AUTO, ep) is None


def test_slice_document_shows_app_protocol_hints_and_what_is_not_predicted() -> None:
    body = svc(trafficDistribution="PreferSameNode")
    body["spec"]["ports"] = [port(80, "http", 8080, appProtocol="kubernetes.io/h2c")]
    pods = [pod("a"), pod("b", ips=["10.244.0.6"], ready=False)]
    (sl,) = expected(body, pods).slices
    doc = slice_to_dict(sl)
    assert doc["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}
    ]
    assert doc["hintsPolicy"] == "PreferSameNode"
    hints = {e["targetRef"]["name"]: e["hints"] for e in doc["endpoints"]}  # type: ignore[attr-defined]
    assert hints == {
        "a": {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]},
        "b": "unpredicted",
    }
    (plain,) = expected(svc(), [pod("a")]).slices
    assert slice_to_dict(plain)["endpoints"][0]["hints"] is None  # type: ignore[index]
    assert "appProtocol" not in slice_to_dict(plain)["ports"][0]  # type: ignore[index]
    auto = svc(annotations={"service.kubernetes.io/topology-mode": "Auto"})
    (sl,) = expected(auto, [pod("a")]).slices
    assert slice_to_dict(sl)["endpoints"][0]["hints"] == "unpredicted"  # type: ignore[index]
    # without nodes, zones (and so zone hints) are unknown: not predicted
    (sl,) = expected(svc(trafficDistribution="PreferClose"), [pod("a")], "unknown").slices
    assert slice_to_dict(sl)["endpoints"][0]["hints"] == "unpredicted"  # type: ignore[index]


# ---- appProtocol -------------------------------------------------------------------------------


def h2c_service() -> dict[str, Any]:
    body = svc()
    body["spec"]["ports"] = [port(80, "http", 8080, appProtocol="kubernetes.io/h2c")]
    return body


def test_app_protocol_copied_and_compared() -> None:
    (sl,) = expected(h2c_service(), [pod("a")]).slices
    assert sl.ports == (EndpointPort("http", 8080, "TCP", "kubernetes.io/h2c"),)
    good = [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}]
    ok = run(h2c_service(), [eslice("s", "web", [endpoint("10.244.0.5", "a")], good)])
    assert ok.discrepancies == ()
    assert ok.verdicts[Aspect.HEALTHY].status == "True"
    for wrong in ("http", None):
        ports = [{"name": "http", "port": 8080, "protocol": "TCP"}]
        if wrong:
            ports[0]["appProtocol"] = wrong
        r = run(h2c_service(), [eslice("s", "web", [endpoint("10.244.0.5", "a")], ports)])
        (d,) = r.discrepancies
        assert d.code == "SVA-EP-005" and d.pod == "a"
        assert d.expected == "[http:8080/TCP appProtocol=kubernetes.io/h2c]"
        assert d.observed == (
            f"[http:8080/TCP appProtocol={wrong}]" if wrong else "[http:8080/TCP]"
        )
    # an appProtocol the service does not have is as wrong
    extra = [{"name": "", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
    r = run(svc(), [eslice("s", "web", [endpoint("10.244.0.5", "a")], extra)])
    assert codes(r) == ["SVA-EP-005"]


# ---- hints compared ----------------------------------------------------------------------------


def test_consistent_hints_are_healthy_and_wrong_ones_are_ep_018() -> None:
    body = svc(trafficDistribution="PreferClose")
    good = hinted(endpoint("10.244.0.5", "a"), ["zone-a"])
    assert run(body, [eslice("s", "web", [good])]).verdicts[Aspect.HEALTHY].status == "True"
    missing = run(body, [eslice("s", "web", [endpoint("10.244.0.5", "a")])])
    (d,) = missing.discrepancies
    assert (d.code, d.severity, d.pod) == ("SVA-EP-018", "warning", "a")
    assert d.expected == "forZones=zone-a (trafficDistribution PreferClose)"
    assert d.observed == "no hints"
    assert missing.verdicts[Aspect.ENDPOINTS].status == "False"
    wrong = hinted(endpoint("10.244.0.5", "a"), ["zone-b"])
    (d,) = run(body, [eslice("s", "web", [wrong])]).discrepancies
    assert (d.code, d.observed) == ("SVA-EP-018", "forZones=zone-b")
    # a node hint is PreferSameNode's only
    extra = hinted(endpoint("10.244.0.5", "a"), ["zone-a"], ["node-1"])
    assert codes(run(body, [eslice("s", "web", [extra])])) == ["SVA-EP-018"]
    same_node = svc(trafficDistribution="PreferSameNode")
    assert codes(run(same_node, [eslice("s", "web", [extra])])) == []
    assert codes(run(same_node, [eslice("s", "web", [good])])) == ["SVA-EP-018"]


def test_hints_without_traffic_distribution_are_stale() -> None:
    stale = hinted(endpoint("10.244.0.5", "a"), ["zone-a"])
    (d,) = run(svc(), [eslice("s", "web", [stale])]).discrepancies
    assert (d.code, d.expected) == ("SVA-EP-018", "no hints (no trafficDistribution)")
    # the controller removes hints from every endpoint then, not-ready ones included
    pods = [pod("a"), pod("b", ips=["10.244.0.6"], ready=False)]
    stale_nr = hinted(endpoint("10.244.0.6", "b", ready=False), ["zone-a"])
    sl = eslice("s", "web", [endpoint("10.244.0.5", "a"), stale_nr])
    (d,) = run(svc(), [sl], pods).discrepancies
    assert (d.code, d.pod) == ("SVA-EP-018", "b")
    # a value the controller ignores removes them too
    odd = svc(trafficDistribution="PreferSomewhere")
    (d,) = run(odd, [eslice("s", "web", [stale])]).discrepancies
    assert d.expected == "no hints (trafficDistribution PreferSomewhere makes none)"


def test_hints_not_judged_where_the_controller_does_not_decide_them() -> None:
    pods = [pod("a"), pod("b", ips=["10.244.0.6"], ready=False)]
    body = svc(trafficDistribution="PreferClose")
    ready = hinted(endpoint("10.244.0.5", "a"), ["zone-a"])
    # not ready: the heuristic skips it (and keeps whatever it holds); kube-proxy ignores it
    for ep in (
        endpoint("10.244.0.6", "b", ready=False),
        hinted(endpoint("10.244.0.6", "b", ready=False), ["zone-z"]),
    ):
        assert run(body, [eslice("s", "web", [ready, ep])], pods).discrepancies == ()
    # topology-mode Auto: whatever the slice holds (hints by CPU share, not predicted)
    auto = svc(
        trafficDistribution="PreferSameNode",
        annotations={"service.kubernetes.io/topology-mode": "Auto"},
    )
    for ep in (endpoint("10.244.0.5", "a"), hinted(endpoint("10.244.0.5", "a"), ["zone-b"])):
        r = run(auto, [eslice("s", "web", [ep])])
        assert r.discrepancies == () and r.verdicts[Aspect.HEALTHY].status == "True"


def test_stale_zone_is_one_finding_not_two() -> None:
    """The controller hints an endpoint for the zone the slice holds: a zone gone stale (the
    node relabelled) is SVA-EP-008; its matching hint is not a second finding."""
    body = svc(trafficDistribution="PreferClose")
    stale = hinted(endpoint("10.244.0.5", "a", zone="zone-old"), ["zone-old"])
    assert codes(run(body, [eslice("s", "web", [stale])])) == ["SVA-EP-008"]


def test_hints_of_hand_written_slices_not_judged() -> None:
    body = service("db", selector=None)
    body["spec"]["trafficDistribution"] = "PreferClose"
    ep = hinted(endpoint("10.244.0.5", "a"), ["zone-q"])
    foreign = eslice("db-1", "db", [ep], managed_by="someone")
    assert codes(run(body, [foreign])) == []


# ---- dead pod addresses (SVA-EP-017) -----------------------------------------------------------

CIDR_NODES = [
    with_node_cidr(node("node-1"), "10.244.1.0/24", "fd00:10:244:1::/64"),
    with_node_cidr(node("node-2", "zone-b"), "10.244.2.0/24", legacy=True),
]


def manual(*addresses: str, target: str | None = None, family: str = "IPv4") -> dict[str, Any]:
    eps = []
    for a in addresses:
        ep = endpoint(a, target or "x")
        if target is None:
            del ep["targetRef"]
        eps.append(ep)
    return eslice("db-1", "db", eps, [{"name": "", "port": 5432}], managed_by="me",
                  address_type=family)  # fmt: skip


def db() -> dict[str, Any]:
    return service("db", selector=None, ports=[port(5432)])


def test_hand_written_endpoint_in_a_pod_range_no_pod_holds_is_dead() -> None:
    r = run(db(), [manual("10.244.1.77", "10.244.1.5")], [], CIDR_NODES, frozenset({"10.244.1.5"}))
    (d,) = r.discrepancies
    assert (d.code, d.severity, d.subject) == ("SVA-EP-017", "error", "EndpointSlice default/db-1")
    assert (
        d.expected
        == "10.244.1.77 held by a live pod (it is in node node-1's pod range 10.244.1.0/24)"
    )
    assert d.observed == "10.244.1.77: no pod of the cluster holds it"
    assert d.related == ("Service default/db",)
    assert r.verdicts[Aspect.ENDPOINTS].status == "False"
    # node-2's legacy spec.podCIDR counts, IPv6 ranges too (compared as addresses)
    r6 = run(db(), [manual("fd00:10:244:1:0::9", family="IPv6")], [], CIDR_NODES, frozenset())
    assert codes(r6) == ["SVA-EP-017"]
    r6ok = run(
        db(),
        [manual("fd00:10:244:1::9", family="IPv6")],
        [],
        CIDR_NODES,
        frozenset({"fd00:10:244:1::9"}),
    )
    assert codes(r6ok) == []
    assert codes(run(db(), [manual("10.244.2.9")], [], CIDR_NODES, frozenset())) == ["SVA-EP-017"]


def test_addresses_not_judged_without_proof() -> None:
    live = frozenset({"10.244.1.5"})
    cases = [
        manual("10.201.9.9"),  # outside every pod range: an external backend
        manual("10.96.0.50"),  # a service address: not a pod range
        manual("10.244.1.0", "10.244.1.1", "10.244.1.255"),  # network, gateway, broadcast
        manual("10.244.1.5"),  # a live pod holds it (in any namespace: `live` is cluster-wide)
        manual("10.244.1.77", target="gone"),  # a targetRef: SVA-EP-015's business
    ]
    for sl in cases:
        found = codes(run(db(), [sl], [], CIDR_NODES, live))
        assert "SVA-EP-017" not in found, sl
    # without every namespace's pods (live None) or without nodes: never judged
    assert codes(run(db(), [manual("10.244.1.77")], [], CIDR_NODES, None)) == []
    assert codes(run(db(), [manual("10.244.1.77")], [], [node()], frozenset())) == []
    # a selector service's foreign endpoints are SVA-EP-002, not this
    r = run(svc(), [manual("10.244.1.77")], [], CIDR_NODES, frozenset())
    assert "SVA-EP-017" not in codes(r)


def test_live_and_possible_ips() -> None:
    assert live_ips(Pod.from_api(pod("a", ips=["10.244.1.5", "fd00::0:5"]))) == {
        "10.244.1.5",
        "fd00::5",
    }
    assert live_ips(Pod.from_api(pod("a", phase="Succeeded"))) == frozenset()
    assert live_ips(Pod.from_api(pod("a", phase="Failed"))) == frozenset()
    assert live_ips(Pod.from_api(pod("a", phase="Pending"))) == {"10.244.0.5"}
    odd = pod("a")
    odd["status"]["podIPs"] = [{"ip": "010.244.001.010"}]
    odd["status"]["podIP"] = "010.244.001.010"
    assert possible_ips(odd) == {"10.244.1.10", "8.164.1.8"}  # decimal and octal readings
    odd["status"]["podIPs"] = [{"ip": "010.244.001.009"}]  # 9: not octal
    odd["status"]["podIP"] = "010.244.001.009"
    assert possible_ips(odd) == {"10.244.1.9"}
    assert possible_ips({"status": {"phase": "Succeeded", "podIP": "10.0.0.1"}}) == frozenset()
    assert possible_ips({"status": "garbage"}) == frozenset()
    assert canonical_ip("fd00:0::1") == "fd00::1" and canonical_ip("x") is None


def test_pod_ranges_skip_unreadable_cidrs() -> None:
    bad = with_node_cidr(node("n"), "10.244.001.0/24", "not-a-cidr", "10.244.3.0/24")
    ranges = pod_ranges([Node.from_api(bad)])
    assert [str(net) for _, net in ranges] == ["10.244.3.0/24"]
    tiny = pod_ranges([Node.from_api(with_node_cidr(node("t"), "10.9.9.8/31"))])
    assert pod_assignable(ipaddress.ip_address("10.9.9.8"), tiny) is not None


def test_dead_pod_addresses_directly() -> None:
    nodes = {n.name: n for n in (Node.from_api(x) for x in CIDR_NODES)}
    sl = EndpointSlice.from_api(manual("10.244.2.40"))
    found = dead_pod_addresses(Service.from_api(db()), [sl], nodes, {"10.244.2.41": 1})
    assert [d.code for d in found] == ["SVA-EP-017"]
    assert dead_pod_addresses(Service.from_api(db()), [sl], nodes, {"10.244.2.40": 1}) == []


# ---- `svcaudit expect` -------------------------------------------------------------------------


def test_expect_document_shows_hints() -> None:
    body = svc(trafficDistribution="PreferClose")
    body["spec"]["ports"] = [port(80, "http", 8080, appProtocol="http")]
    inventory, errors = parse_inventory([body, pod("a"), node()])
    assert errors == ()
    (web,) = expect_document(inventory)["services"]
    (sl,) = web["endpointSlices"]
    assert sl["hintsPolicy"] == "PreferSameZone"
    assert sl["ports"][0]["appProtocol"] == "http"
    assert sl["endpoints"][0]["hints"] == {"forZones": [{"name": "zone-a"}]}


def test_expect_table_shows_hints_column_only_with_a_policy() -> None:
    from svcaudit.cli.expect import render_table

    body = svc(trafficDistribution="PreferSameNode")
    body["spec"]["ports"] = [port(80, "http", 8080, appProtocol="kubernetes.io/h2c")]
    other = service("plain", selector=SEL, cluster_ip="10.96.0.11")
    late = pod("b", ips=["10.244.0.6"], ready=False)
    inventory, _ = parse_inventory([body, other, pod("a"), late, node()])
    table = render_table(expect_document(inventory))
    web = table.split("SERVICE default/web")[1]
    assert "HINTS" in web.splitlines()[2]
    assert "zones=zone-a nodes=node-1" in web and "appProtocol=kubernetes.io/h2c" in web
    assert " ?" in next(ln for ln in web.splitlines() if "10.244.0.6" in ln)
    assert "hints: PreferSameNode: each ready endpoint hinted for its zone and node" in web
    plain = table.split("SERVICE default/plain")[1].split("SERVICE ")[0]
    assert "HINTS" not in plain and "hints:" not in plain
