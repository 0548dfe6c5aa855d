"""Expected EndpointSlices: the EndpointSlice controller's rules."""

from __future__ import annotations

from typing import Any

from k8sobjs import container, cport, node, pod, port, service

from svcaudit.core.endpoints import (
    address_types,
    expected_endpoints,
    expected_slice_labels,
    is_managed,
)
from svcaudit.core.model import EndpointPort, Node, Pod, Service

SEL = {"app": "web"}


def run(
    svc: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: list[dict[str, Any]] | None = None,
    **kw: Any,
):  # type: ignore[no-untyped-def]
    nodes = [node()] if nodes is None else nodes
    return expected_endpoints(
        Service.from_api(svc),
        [Pod.from_api(p) for p in pods],
        {n.name: n for n in (Node.from_api(x) for x in nodes)},
        **kw,
    )


def by_pod(result) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {ep.target_ref.name: (s, ep) for s in result.slices for ep in s.endpoints}


def test_simple_service_one_ready_endpoint() -> None:
    r = run(service("web", selector=SEL), [pod("a")])
    (s,) = r.slices
    assert s.address_type == "IPv4"
    assert s.ports == (EndpointPort("", 8080, "TCP"),)
    (ep,) = s.endpoints
    assert ep.addresses == ("10.244.0.5",)
    assert (ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating) == (
        True,
        True,
        False,
    )
    assert (ep.node_name, ep.zone, ep.hostname) == ("node-1", "zone-a", None)
    assert ep.target_ref is not None and ep.target_ref.name == "a"


def test_not_managed_without_selector_empty_selector_or_external_name() -> None:
    for svc in (
        service("a"),
        service("b", selector={}),
        service(
            "c", selector=SEL, type_="ExternalName", external_name="x.example", cluster_ip=None
        ),
    ):
        assert not is_managed(Service.from_api(svc))
        assert run(svc, [pod("p")]).slices == ()


def test_candidate_filtering_phase_ip_namespace_labels() -> None:
    pods = [
        pod("ok"),
        pod("pending-with-ip", phase="Pending", ips=["10.244.0.6"]),
        pod("succeeded", phase="Succeeded", ips=["10.244.0.7"]),
        pod("failed", phase="Failed", ips=["10.244.0.8"]),
        pod("no-ip", ips=[], phase="Pending"),
        pod("other-ns", ns="other", ips=["10.244.0.9"]),
        pod("other-labels", labels={"app": "db"}, ips=["10.244.0.10"]),
        pod("superset", labels={"app": "web", "tier": "x"}, ips=["10.244.0.11"]),
    ]
    r = run(service("web", selector=SEL), pods)
    assert sorted(by_pod(r)) == ["ok", "pending-with-ip", "superset"]
    assert r.pods_without_ip == ("no-ip",)
    assert "succeeded" in r.selected_pods and "succeeded" not in r.candidate_pods


def test_not_ready_and_terminating_conditions() -> None:
    r = run(
        service("web", selector=SEL),
        [
            pod("unready", ready=False, ips=["10.244.0.1"]),
            pod("term-ready", terminating=True, ips=["10.244.0.2"]),
            pod("term-unready", terminating=True, ready=False, ips=["10.244.0.3"]),
        ],
    )
    c = {name: ep.conditions for name, (_, ep) in by_pod(r).items()}
    assert (c["unready"].ready, c["unready"].serving, c["unready"].terminating) == (
        False,
        False,
        False,
    )
    assert (c["term-ready"].ready, c["term-ready"].serving, c["term-ready"].terminating) == (
        False,
        True,
        True,
    )
    assert (c["term-unready"].ready, c["term-unready"].serving) == (False, False)


def test_publish_not_ready_addresses_makes_everything_ready() -> None:
    r = run(
        service("web", selector=SEL, publish_not_ready=True),
        [
            pod("unready", ready=False, ips=["10.244.0.1"]),
            pod("term", terminating=True, ready=False, ips=["10.244.0.2"]),
        ],
    )
    c = {name: ep.conditions for name, (_, ep) in by_pod(r).items()}
    assert c["unready"].ready and not c["unready"].serving
    assert c["term"].ready and c["term"].terminating


def test_named_target_port_resolved_per_pod_and_grouped_by_port_set() -> None:
    svc = service("web", selector=SEL, ports=[port(80, "http", target="web")])
    pods = [
        pod("a", ips=["10.244.0.1"], containers=[container(ports=[cport(8080, "web")])]),
        pod("b", ips=["10.244.0.2"], containers=[container(ports=[cport(9090, "web")])]),
        pod("c", ips=["10.244.0.3"], containers=[container(ports=[cport(8080, "web")])]),
    ]
    r = run(svc, pods)
    groups = {s.ports: sorted(ep.target_ref.name for ep in s.endpoints) for s in r.slices}
    assert groups == {
        (EndpointPort("http", 8080, "TCP"),): ["a", "c"],
        (EndpointPort("http", 9090, "TCP"),): ["b"],
    }


def test_named_port_missing_or_wrong_protocol_drops_port_not_pod() -> None:
    svc = service(
        "dns",
        selector=SEL,
        ports=[
            port(53, "dns", target="dns", protocol="UDP"),
            port(53, "dns-tcp", target="dns-tcp", protocol="TCP"),
        ],
    )
    pods = [
        pod(
            "both",
            ips=["10.244.0.1"],
            containers=[
                container(ports=[cport(5353, "dns", "UDP"), cport(5353, "dns-tcp", "TCP")])
            ],
        ),
        pod(
            "tcp-only-names",
            ips=["10.244.0.2"],
            containers=[container(ports=[cport(5353, "dns", "TCP"), cport(5353, "dns-tcp")])],
        ),  # 'dns' has wrong protocol
        pod("none", ips=["10.244.0.3"], containers=[container(ports=[])]),
    ]
    r = run(svc, pods)
    ports = {name: s.ports for name, (s, _) in by_pod(r).items()}
    assert ports["both"] == (EndpointPort("dns", 5353, "UDP"), EndpointPort("dns-tcp", 5353, "TCP"))
    assert ports["tcp-only-names"] == (EndpointPort("dns-tcp", 5353, "TCP"),)
    assert ports["none"] == ()  # the pod stays, with `ports: []`
    dropped = {(d.pod, d.service_port.name) for d in r.dropped_ports}
    assert dropped == {("tcp-only-names", "dns"), ("none", "dns"), ("none", "dns-tcp")}


def test_named_port_found_in_sidecar_init_container_only() -> None:
    svc = service("web", selector=SEL, ports=[port(80, target="proxy")])
    sidecar = pod(
        "s",
        containers=[container()],
        init_containers=[
            container("proxy", ports=[cport(15001, "proxy")], restart_policy="Always")
        ],
    )
    plain_init = pod(
        "i",
        ips=["10.244.0.9"],
        containers=[container()],
        init_containers=[container("proxy", ports=[cport(15001, "proxy")])],
    )
    r = run(svc, [sidecar, plain_init])
    eps = by_pod(r)
    assert eps["s"][0].ports == (EndpointPort("", 15001, "TCP"),)
    assert eps["i"][0].ports == ()


def test_regular_container_wins_over_sidecar() -> None:
    svc = service("web", selector=SEL, ports=[port(80, target="p")])
    p = pod(
        "a",
        containers=[container(ports=[cport(1111, "p")])],
        init_containers=[container("side", ports=[cport(2222, "p")], restart_policy="Always")],
    )
    (s,) = run(svc, [p]).slices
    assert s.ports[0].port == 1111


def test_numeric_target_port_used_as_is_multi_port_udp_sctp() -> None:
    svc = service(
        "multi",
        selector=SEL,
        ports=[
            port(80, "http", target=8080),
            port(53, "dns", target=5353, protocol="UDP"),
            port(9, "sctp", protocol="SCTP"),
        ],
    )
    (s,) = run(svc, [pod("a", containers=[container()])]).slices
    assert s.ports == (
        EndpointPort("http", 8080, "TCP"),
        EndpointPort("dns", 5353, "UDP"),
        EndpointPort("sctp", 9, "SCTP"),
    )


def test_hostname_only_with_matching_subdomain() -> None:
    svc = service("db", selector=SEL, cluster_ip="None")
    r = run(
        svc,
        [
            pod("a", hostname="db-0", subdomain="db", ips=["10.244.0.1"]),
            pod("b", hostname="db-1", subdomain="other", ips=["10.244.0.2"]),
            pod("c", subdomain="db", ips=["10.244.0.3"]),
        ],
    )
    h = {name: ep.hostname for name, (_, ep) in by_pod(r).items()}
    assert h == {"a": "db-0", "b": None, "c": None}


def test_zone_from_node_label_and_missing_label() -> None:
    r = run(
        service("web", selector=SEL),
        [pod("a", node="n1", ips=["10.244.0.1"]), pod("b", node="n2", ips=["10.244.0.2"])],
        nodes=[node("n1", "z1"), node("n2", None)],
    )
    z = {name: ep.zone for name, (_, ep) in by_pod(r).items()}
    assert z == {"a": "z1", "b": None}


def test_missing_node_drops_pod_unless_publish_not_ready() -> None:
    pods = [pod("a", node="ghost")]
    r = run(service("web", selector=SEL), pods)
    assert r.endpoints == () and r.pods_node_missing == ("a",)
    r2 = run(service("web", selector=SEL, publish_not_ready=True), pods)
    assert len(r2.endpoints) == 1 and r2.endpoints[0].zone is None


def test_unknown_nodes_drop_nothing() -> None:
    r = expected_endpoints(
        Service.from_api(service("web", selector=SEL)), [Pod.from_api(pod("a", node="ghost"))], None
    )
    assert len(r.endpoints) == 1 and r.endpoints[0].zone is None


def test_placeholder_when_no_endpoints() -> None:
    r = run(service("web", selector=SEL), [])
    assert len(r.slices) == 1
    s = r.slices[0]
    assert (s.address_type, s.ports, s.endpoints) == ("IPv4", (), ())


def test_dual_stack_one_slice_per_family_and_placeholder_for_missing_family() -> None:
    svc = service(
        "web", selector=SEL, cluster_ips=["10.96.0.10", "fd00::a"], families=["IPv4", "IPv6"]
    )
    r = run(svc, [pod("a", ips=["10.244.0.1", "fd00:244::1"])])
    fams = {s.address_type: [ep.addresses for ep in s.endpoints] for s in r.slices}
    assert fams == {"IPv4": [("10.244.0.1",)], "IPv6": [("fd00:244::1",)]}
    r2 = run(svc, [pod("a", ips=["10.244.0.1"])])  # IPv4-only pod: IPv6 placeholder
    assert {(s.address_type, len(s.endpoints)) for s in r2.slices} == {("IPv4", 1), ("IPv6", 0)}


def test_ipv6_single_stack() -> None:
    svc = service("web", selector=SEL, cluster_ip="fd00::a", families=["IPv6"])
    r = run(svc, [pod("a", ips=["fd00:244::1"]), pod("b", ips=["10.244.0.2"])])
    (s,) = r.slices
    assert s.address_type == "IPv6" and [ep.addresses for ep in s.endpoints] == [("fd00:244::1",)]


def test_headless_without_families_falls_back_to_both() -> None:
    svc = Service.from_api(service("h", selector=SEL, cluster_ip="None"))
    assert address_types(svc) == ("IPv4", "IPv6")


def test_headless_without_ports_has_empty_port_list() -> None:
    r = run(service("h", selector=SEL, cluster_ip="None", families=["IPv4"], ports=[]), [pod("a")])
    (s,) = r.slices
    assert s.ports == () and len(s.endpoints) == 1
    assert r.dropped_ports == ()


def test_more_than_100_endpoints_several_slices() -> None:
    pods = [pod(f"p{i:03}", ips=[f"10.244.{i // 250}.{i % 250 + 1}"]) for i in range(250)]
    r = run(service("web", selector=SEL), pods)
    assert [len(s.endpoints) for s in r.slices] == [100, 100, 50]
    assert len({ep.identity for ep in r.endpoints}) == 250
    r2 = run(service("web", selector=SEL), pods, max_endpoints_per_slice=30)
    assert len(r2.slices) == 9 and max(len(s.endpoints) for s in r2.slices) == 30


def test_host_network_pods_sharing_an_ip_are_distinct_endpoints() -> None:
    r = run(
        service("web", selector=SEL),
        [pod("a", ips=["192.168.0.10"]), pod("b", ips=["192.168.0.10"])],
    )
    assert len(r.endpoints) == 2


MANAGED = {
    "kubernetes.io/service-name": "web",
    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
}


def test_slice_labels_of_a_cluster_ip_service_every_slice_and_placeholder() -> None:
    r = run(service("web", selector=SEL), [pod("a")])
    assert [dict(s.labels) for s in r.slices] == [MANAGED]
    empty = run(service("web", selector=SEL, families=["IPv4", "IPv6"]), [])
    assert len(empty.slices) == 2 and all(dict(s.labels) == MANAGED for s in empty.slices)


def test_slice_labels_of_a_headless_service_add_the_headless_label() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", families=["IPv4"])
    (s,) = run(svc, [pod("a")]).slices
    assert dict(s.labels) == {**MANAGED, "service.kubernetes.io/headless": ""}


def test_slice_labels_copy_the_services_own_labels_but_not_reserved_keys() -> None:
    obj = service("web", selector=SEL)
    obj["metadata"]["labels"] = {
        "team": "shop",
        "kubernetes.io/service-name": "spoof",
        "endpointslice.kubernetes.io/managed-by": "me",
        "service.kubernetes.io/headless": "",
    }
    assert expected_slice_labels(Service.from_api(obj)) == {**MANAGED, "team": "shop"}


def test_slice_labels_of_a_manifest_without_cluster_ip_predict_not_headless() -> None:
    # the apiserver allocates a clusterIP at creation: the slices will carry no headless label
    svc = Service.from_api(service("web", selector=SEL, cluster_ip=None))
    assert expected_slice_labels(svc) == MANAGED
