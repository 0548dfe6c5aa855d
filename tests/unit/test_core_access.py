"""Expected access points: ClusterIP:port from inside, node InternalIP:nodePort from outside."""

from __future__ import annotations

from typing import Any

from k8sobjs import node, port, service

from svcaudit.core.access import (
    AccessPoint,
    expected_access_points,
    missing_node_ports,
    node_ports,
)
from svcaudit.core.endpoints import expected_endpoints
from svcaudit.core.findings import endpoint_findings
from svcaudit.core.model import Node, Service

SEL = {"app": "web"}


def two_nodes() -> list[Node]:
    a = node("node-a")
    b = node("node-b")
    b["status"]["addresses"] = [
        {"type": "Hostname", "address": "node-b"},
        {"type": "InternalIP", "address": "192.168.0.11"},
        {"type": "ExternalIP", "address": "203.0.113.9"},
    ]
    return [Node.from_api(b), Node.from_api(a)]  # given out of order


def points(svc_obj: dict[str, Any], nodes: list[Node] | None = None) -> list[tuple[Any, ...]]:
    svc = Service.from_api(svc_obj)
    found = expected_access_points(svc, two_nodes() if nodes is None else nodes)
    return [(a.scope, a.address, a.port, a.protocol) for a in found]


def test_cluster_ip_service_cluster_ip_times_ports_only() -> None:
    svc = service("web", ports=[port(80, "http"), port(53, "dns", protocol="UDP")])
    assert points(svc) == [
        ("cluster", "10.96.0.10", 80, "TCP"),
        ("cluster", "10.96.0.10", 53, "UDP"),
    ]


def test_dual_stack_cluster_ips_both_reachable() -> None:
    svc = service("web", cluster_ips=["10.96.0.10", "fd00::a"], families=["IPv4", "IPv6"])
    found = expected_access_points(Service.from_api(svc), [])
    assert [a.hostport for a in found] == ["10.96.0.10:80", "[fd00::a]:80"]


def test_node_port_service_every_nodes_internal_ip() -> None:
    svc = service("web", type_="NodePort", ports=[port(80, "http", nodePort=30080)])
    assert points(svc) == [
        ("cluster", "10.96.0.10", 80, "TCP"),
        ("node", "192.168.0.10", 30080, "TCP"),  # node-a, sorted by name
        ("node", "192.168.0.11", 30080, "TCP"),  # node-b: ExternalIP/Hostname not used
    ]


def test_node_port_without_nodes_has_cluster_points_only() -> None:
    svc = service("web", type_="NodePort", ports=[port(80, nodePort=30080)])
    assert points(svc, nodes=[]) == [("cluster", "10.96.0.10", 80, "TCP")]


def test_ports_sharing_a_number_share_the_node_port() -> None:
    svc = service(
        "dns",
        type_="NodePort",
        ports=[port(53, "dns-udp", protocol="UDP"), port(53, "dns-tcp", nodePort=30053)],
    )
    s = Service.from_api(svc)
    assert [n for _, n in node_ports(s)] == [30053, 30053]
    assert missing_node_ports(s) == ()
    nodes = [Node.from_api(node("node-a"))]
    assert [
        (a.port, a.protocol) for a in expected_access_points(s, nodes) if a.scope == "node"
    ] == [
        (30053, "UDP"),
        (30053, "TCP"),
    ]


def test_load_balancer_like_node_port() -> None:
    svc = service("web", type_="LoadBalancer", ports=[port(443, nodePort=31443)])
    assert ("node", "192.168.0.11", 31443, "TCP") in points(svc)


def test_load_balancer_without_node_port_allocation() -> None:
    svc = service("web", type_="LoadBalancer", ports=[port(80), port(81, "asked", nodePort=30081)])
    svc["spec"]["allocateLoadBalancerNodePorts"] = False
    s = Service.from_api(svc)
    assert not s.allocate_load_balancer_node_ports
    assert [n for _, n in node_ports(s)] == [None, 30081]  # only what the spec asks for
    assert missing_node_ports(s) == ()  # nothing more will be allocated
    assert [a for a in points(svc) if a[0] == "node"] == [
        ("node", "192.168.0.10", 30081, "TCP"),
        ("node", "192.168.0.11", 30081, "TCP"),
    ]


def test_load_balancer_not_allocating_does_not_share_a_node_port() -> None:
    svc = service(
        "dns",
        type_="LoadBalancer",
        ports=[port(53, "u", protocol="UDP"), port(53, "t", nodePort=30053)],
    )
    svc["spec"]["allocateLoadBalancerNodePorts"] = False
    assert [n for _, n in node_ports(Service.from_api(svc))] == [None, 30053]


def test_headless_and_external_name_have_no_access_point() -> None:
    assert points(service("web", cluster_ip="None")) == []
    ext = service(
        "web", type_="ExternalName", external_name="db.example.com", cluster_ip=None, ports=[]
    )
    assert points(ext) == []


def test_node_ips_of_other_families_skipped() -> None:
    dual = node("node-a")
    dual["status"]["addresses"].append({"type": "InternalIP", "address": "fd00:1::10"})
    nodes = [Node.from_api(dual)]
    v4 = service("web", type_="NodePort", families=["IPv4"], ports=[port(80, nodePort=30080)])
    assert [a.address for a in expected_access_points(Service.from_api(v4), nodes)] == [
        "10.96.0.10",
        "192.168.0.10",
    ]
    both = service(
        "web",
        type_="NodePort",
        cluster_ips=["10.96.0.10", "fd00::a"],
        families=["IPv4", "IPv6"],
        ports=[port(80, nodePort=30080)],
    )
    found = expected_access_points(Service.from_api(both), nodes)
    assert [(a.scope, a.hostport) for a in found] == [
        ("cluster", "10.96.0.10:80"),
        ("cluster", "[fd00::a]:80"),
        ("node", "192.168.0.10:30080"),
        ("node", "[fd00:1::10]:30080"),
    ]


def test_cluster_ip_type_ignores_a_stray_node_port() -> None:
    svc = service("web", ports=[port(80, nodePort=30080)])
    assert [a[0] for a in points(svc)] == ["cluster"]
    assert missing_node_ports(Service.from_api(svc)) == ()


def findings(svc_obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    s = Service.from_api(svc_obj)
    found = endpoint_findings(s, [], expected_endpoints(s, [], {}))
    return [(d.code, d.expected, d.observed) for d in found if d.code.startswith("SVA-EP-11")]


def test_node_port_not_allocated_is_an_info_finding() -> None:
    svc = service(
        "web",
        selector=SEL,
        type_="NodePort",
        ports=[port(80, "http"), port(81, nodePort=30081), port(53, protocol="UDP")],
    )
    assert findings(svc) == [
        ("SVA-EP-112", "spec.ports[].nodePort allocated (NodePort)", "none for http/TCP, 53/UDP")
    ]
    assert AccessPoint("192.168.0.10", 30081, "TCP", "node") in expected_access_points(
        Service.from_api(svc), [Node.from_api(node())]
    )


def test_offline_manifest_gets_both_allocation_findings() -> None:
    lb = service("web", cluster_ip=None, type_="LoadBalancer", ports=[port(80)])
    assert [c for c, _, _ in findings(lb)] == ["SVA-EP-111", "SVA-EP-112"]
    lb["spec"]["allocateLoadBalancerNodePorts"] = False
    assert [c for c, _, _ in findings(lb)] == ["SVA-EP-111"]
    assert findings(service("web", ports=[port(80)])) == []
