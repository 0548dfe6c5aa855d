"""Expected access points of a service: where a client reaches it, by service type.

- ClusterIP, NodePort, LoadBalancer with a cluster IP: every spec.clusterIPs entry x every
  port, from inside the cluster (scope "cluster"). Headless and ExternalName: none (DNS
  only).
- NodePort and LoadBalancer: every node's InternalIP x every port's nodePort (scope
  "node"), as kube-proxy opens them. Only node IPs of the service's families: a
  single-stack IPv4 service is not served on a node's IPv6 address.

Node ports follow the apiserver's allocation (pkg/registry/core/service/storage/alloc.go,
initNodePorts): ports that share a number (53/TCP + 53/UDP) share one node port, and a
LoadBalancer with allocateLoadBalancerNodePorts=false gets none unless a port asks for one.
Offline manifests may predate allocation; `missing_node_ports` names the ports the apiserver
would still allocate for. The LoadBalancer's external address and healthCheckNodePort are
not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from svcaudit.core.dns import canonical_ip
from svcaudit.core.model import Node, Service, ServicePort, ip_family

CLUSTER = "cluster"
NODE = "node"
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True, slots=True)
class AccessPoint:
    address: str  # canonical IP, no brackets
    port: int
    protocol: str
    scope: str  # CLUSTER (ClusterIP:port) | NODE (node InternalIP:nodePort)

    @property
    def hostport(self) -> str:
        """address:port, IPv6 in brackets."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def allocates_node_ports(service: Service) -> bool:
    """shouldAllocateNodePorts: NodePort always; LoadBalancer unless
    allocateLoadBalancerNodePorts is false; other types never."""
    if service.type == "NodePort":
        return True
    return service.type == "LoadBalancer" and service.allocate_load_balancer_node_ports


def node_ports(service: Service) -> tuple[tuple[ServicePort, int | None], ...]:
    """Each spec.ports entry with its node port (None: none), in spec order.

    A port without nodePort takes the one of a port with the same number when the service
    allocates node ports (the apiserver reuses it); a LoadBalancer that does not allocate
    keeps only the node ports written in its spec. Types other than NodePort/LoadBalancer
    have none.
    """
    if service.type not in NODE_PORT_TYPES:
        return tuple((sp, None) for sp in service.ports)
    allocate = allocates_node_ports(service)
    out: list[tuple[ServicePort, int | None]] = []
    for sp in service.ports:
        number = sp.node_port
        if number is None and allocate:
            number = next(
                (p.node_port for p in service.ports if p.port == sp.port and p.node_port), None
            )
        out.append((sp, number))
    return tuple(out)


def missing_node_ports(service: Service) -> tuple[ServicePort, ...]:
    """Ports the apiserver would allocate a node port for but that have none in the input
    (an offline manifest before creation)."""
    if not allocates_node_ports(service):
        return ()
    return tuple(sp for sp, number in node_ports(service) if number is None)


def expected_access_points(service: Service, nodes: Iterable[Node]) -> tuple[AccessPoint, ...]:
    """Cluster access points first (clusterIPs order x spec port order), then node access
    points (nodes by name x their InternalIPs x spec port order); duplicates dropped."""
    points: list[AccessPoint] = []
    if service.has_cluster_ip:
        for ip in service.cluster_ips:
            for sp in service.ports:
                points.append(AccessPoint(canonical_ip(ip), sp.port, sp.protocol, CLUSTER))
    with_node_port = [(sp, n) for sp, n in node_ports(service) if n is not None]
    if with_node_port:
        families = set(service.ip_families)
        for node in sorted(nodes, key=lambda n: n.name):
            for ip in node.internal_ips:
                if not _is_ip(ip) or (families and ip_family(ip) not in families):
                    continue
                for sp, number in with_node_port:
                    points.append(AccessPoint(canonical_ip(ip), number, sp.protocol, NODE))
    return tuple(dict.fromkeys(points))


def _is_ip(value: str) -> bool:
    try:
        ip_family(value)
    except ValueError:
        return False
    return True
