"""Expected EndpointSlices: the EndpointSlice controller's rules, applied to typed views.

Follows staging/src/k8s.io/endpointslice (reconciler.go, utils.go) and
pkg/api/v1/pod.FindPort. Slices are grouped by resolved port set and chunked at
max_endpoints_per_slice; the controller's packing of existing slices is not reproduced
because comparison ignores slice names, counts and order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial

from svcaudit.core.model import (
    IPV4,
    IPV6,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    Container,
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    Node,
    Pod,
    Service,
    ServicePort,
    TargetRef,
    ip_family,
)

DEFAULT_MAX_ENDPOINTS_PER_SLICE = 100
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
# Labels the controller owns on its slices: never copied from the service.
RESERVED_SLICE_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
# spec.trafficDistribution values the v1.34 controller acts on (trafficdist.go, and
# Reconciler.validTrafficDistribution with ServiceTrafficDistribution GA and
# PreferSameTrafficDistribution beta, both on by default): PreferClose is the older name
# of PreferSameZone. Any other value is ignored like an absent one.
SAME_ZONE_VALUES = ("PreferClose", "PreferSameZone")
SAME_NODE_VALUE = "PreferSameNode"


class HintsPolicy(StrEnum):
    """Which hints the controller maintains on a service's endpoints (reconciler.go)."""

    NONE = "None"  # no hints at all: the controller removes any it finds
    SAME_ZONE = "PreferSameZone"  # ready endpoints: forZones = [their zone]
    SAME_NODE = "PreferSameNode"  # ready endpoints: forZones = [zone], forNodes = [node]
    # topology-mode Auto: hints spread by allocatable CPU per zone, redistributed in Go map
    # order and kept from earlier syncs (topologycache): not predicted, never judged.
    TOPOLOGY_AUTO = "TopologyModeAuto"


@dataclass(frozen=True, slots=True)
class ExpectedSlice:
    """One slice the controller should write (ports in service order, labels as
    expected_slice_labels). Its endpoints carry the hints `hints_policy` predicts where
    `hints_predicted` says so (the rest are not predicted: see hints_predicted)."""

    address_type: str
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[Endpoint, ...]
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    hints_policy: HintsPolicy = HintsPolicy.NONE
    zones_known: bool = True  # the nodes were known (zones, and so zone hints, predicted)

    @property
    def port_set(self) -> frozenset[EndpointPort]:
        return frozenset(self.ports)

    def hints_predicted(self, endpoint: Endpoint) -> bool:
        """Whether `endpoint.hints` is a prediction (else: whatever the slice holds is
        right): not under topology-mode Auto, not on an endpoint that is not ready under
        trafficDistribution, not for zone hints when the nodes were unknown."""
        if not hints_judged(self.hints_policy, endpoint):
            return False
        return self.hints_policy is HintsPolicy.NONE or self.zones_known


@dataclass(frozen=True, slots=True)
class DroppedPort:
    """A service port left out of a pod's endpoint because its named targetPort is unresolved."""

    pod: str
    service_port: ServicePort


@dataclass(frozen=True, slots=True)
class ExpectedEndpoints:
    """The controller's output for one service, plus why pods or ports were left out."""

    managed: bool
    slices: tuple[ExpectedSlice, ...] = ()
    hints_policy: HintsPolicy = HintsPolicy.NONE
    selected_pods: tuple[str, ...] = ()  # label-matched, before phase/IP filtering
    candidate_pods: tuple[str, ...] = ()
    pods_without_ip: tuple[str, ...] = ()
    pods_node_missing: tuple[str, ...] = ()
    dropped_ports: tuple[DroppedPort, ...] = ()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(ep for s in self.slices for ep in s.endpoints)

    def port_set_of(self, endpoint: Endpoint) -> frozenset[EndpointPort] | None:
        for s in self.slices:
            if endpoint in s.endpoints:
                return s.port_set
        return None


def is_managed(service: Service) -> bool:
    """The controller ignores ExternalName and selectorless (or empty-selector) services."""
    return not service.is_external_name and service.has_selector


def address_types(service: Service) -> tuple[str, ...]:
    """One slice family per spec.ipFamilies; legacy fallbacks as getAddressTypesForService."""
    if service.ip_families:
        return tuple(sorted(set(service.ip_families)))
    if service.has_cluster_ip:
        return (ip_family(service.cluster_ip),)
    return (IPV4, IPV6)


def expected_slice_labels(service: Service) -> dict[str, str]:
    """setEndpointSliceLabels: the service's own labels minus the reserved keys, then
    kubernetes.io/service-name=<svc>, endpointslice.kubernetes.io/managed-by=<controller>
    and service.kubernetes.io/headless="" for a headless service (clusterIP None).

    The controller tests "clusterIP not set", which also holds for an empty clusterIP; a
    managed service read from a cluster always has one (the apiserver allocates it at
    creation), so an offline manifest without clusterIP is predicted as not headless.
    """
    labels = {k: v for k, v in service.labels.items() if k not in RESERVED_SLICE_LABELS}
    if service.is_headless:
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = service.name
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return dict(sorted(labels.items()))


def hints_policy(service: Service) -> HintsPolicy:
    """The hints the controller maintains: topology-mode Auto when the deprecated
    topology-aware-hints annotation (if present, it alone decides) or else topology-mode is
    "Auto"/"auto" (the annotation then wins over trafficDistribution); else those of a
    trafficDistribution value this version acts on; else none."""
    annotation = service.topology_aware_hints
    if annotation is None:
        annotation = service.topology_mode
    if annotation in ("Auto", "auto"):
        return HintsPolicy.TOPOLOGY_AUTO
    if service.traffic_distribution in SAME_ZONE_VALUES:
        return HintsPolicy.SAME_ZONE
    if service.traffic_distribution == SAME_NODE_VALUE:
        return HintsPolicy.SAME_NODE
    return HintsPolicy.NONE


def hints_judged(policy: HintsPolicy, endpoint: Endpoint) -> bool:
    """Whether the controller decides this endpoint's hints: every endpoint's when there
    should be none (it removes any); only a ready endpoint's under trafficDistribution (its
    heuristic skips the others, keeping what they hold, and kube-proxy reads only ready
    endpoints' hints); nobody's under topology-mode Auto (not predicted)."""
    if policy is HintsPolicy.NONE:
        return True
    if policy is HintsPolicy.TOPOLOGY_AUTO:
        return False
    return endpoint.conditions.ready


def endpoint_hints(policy: HintsPolicy, endpoint: Endpoint) -> EndpointHints | None:
    """preferCloseHeuristic.update: a ready endpoint gets forZones = [its zone] when it has
    one and, for PreferSameNode, forNodes = [its nodeName] when it has one; none otherwise
    (and none at all without a trafficDistribution policy). Read from the endpoint itself:
    the hint follows the zone the slice holds."""
    if policy not in (HintsPolicy.SAME_ZONE, HintsPolicy.SAME_NODE):
        return None
    if not endpoint.conditions.ready:
        return None
    zones = (endpoint.zone,) if endpoint.zone else ()
    nodes = (endpoint.node_name,) if endpoint.node_name and policy is HintsPolicy.SAME_NODE else ()
    return EndpointHints(zones, nodes) if zones or nodes else None


def selects(service: Service, pod: Pod) -> bool:
    """Equality-based selector over the same namespace; an empty selector selects nothing."""
    return (
        service.has_selector
        and pod.namespace == service.namespace
        and all(pod.labels.get(k) == v for k, v in service.selector.items())
    )


def is_candidate(pod: Pod) -> bool:
    """ShouldPodBeInEndpoints(includeTerminating=true): not terminal and has an IP."""
    return is_candidate_phase(pod) and bool(pod.pod_ips)


def port_containers(pod: Pod) -> tuple[Container, ...]:
    """Where named targetPorts are looked up: containers, then sidecar init containers."""
    return pod.containers + tuple(c for c in pod.init_containers if c.is_sidecar)


def resolve_target_port(pod: Pod, port: ServicePort) -> int | None:
    """FindPort: a number as is; a name by name AND protocol in containers, then sidecars."""
    if isinstance(port.target_port, int):
        return port.target_port
    for container in port_containers(pod):
        for cp in container.ports:
            if cp.name == port.target_port and cp.protocol == port.protocol:
                return cp.container_port
    return None


def endpoint_ports(service: Service, pod: Pod) -> tuple[EndpointPort, ...]:
    """The pod's resolved ports in service order; unresolved named ports are dropped."""
    out: list[EndpointPort] = []
    for sp in service.ports:
        number = resolve_target_port(pod, sp)
        if number is not None:
            out.append(EndpointPort(sp.name, number, sp.protocol, sp.app_protocol))
    return tuple(out)


def should_set_hostname(pod: Pod, service: Service) -> bool:
    return (
        bool(pod.hostname) and pod.subdomain == service.name and pod.namespace == service.namespace
    )


def endpoint_conditions(pod: Pod, service: Service) -> EndpointConditions:
    serving = pod.ready
    terminating = pod.terminating
    ready = service.publish_not_ready_addresses or (serving and not terminating)
    return EndpointConditions(ready=ready, serving=serving, terminating=terminating)


def pod_endpoint(pod: Pod, node: Node | None, service: Service, address_type: str) -> Endpoint:
    """podToEndpoint: the endpoint for one pod in one family (addresses may be empty),
    with the hints the service's policy gives it (endpoint_hints)."""
    endpoint = Endpoint(
        addresses=tuple(ip for ip in pod.pod_ips if ip_family(ip) == address_type),
        conditions=endpoint_conditions(pod, service),
        hostname=pod.hostname if should_set_hostname(pod, service) else None,
        node_name=pod.node_name or None,
        zone=node.zone if node is not None else None,
        target_ref=TargetRef("Pod", pod.namespace, pod.name),
    )
    hints = endpoint_hints(hints_policy(service), endpoint)
    return replace(endpoint, hints=hints) if hints is not None else endpoint


def _sort_key(ep: Endpoint) -> tuple[str, tuple[str, ...]]:
    return (ep.target_ref.name if ep.target_ref else "", ep.addresses)


def expected_endpoints(
    service: Service,
    pods: Sequence[Pod],
    nodes: Mapping[str, Node] | None,
    max_endpoints_per_slice: int = DEFAULT_MAX_ENDPOINTS_PER_SLICE,
) -> ExpectedEndpoints:
    """What the controller should publish for `service`.

    `nodes` None means "node list unknown": pods are not dropped for a missing node and
    zones are left out. With a mapping, a pod whose node is absent is skipped unless
    publishNotReadyAddresses, as the controller does.
    """
    if max_endpoints_per_slice < 1:
        raise ValueError("max_endpoints_per_slice must be >= 1")
    if not is_managed(service):
        return ExpectedEndpoints(managed=False)
    selected = sorted((p for p in pods if selects(service, p)), key=lambda p: p.name)
    candidates = [p for p in selected if is_candidate(p)]
    no_ip = tuple(p.name for p in selected if not p.pod_ips and is_candidate_phase(p))
    node_missing: list[str] = []
    dropped: list[DroppedPort] = []
    groups: dict[
        tuple[str, frozenset[EndpointPort]], tuple[tuple[EndpointPort, ...], list[Endpoint]]
    ] = {}
    for pod in candidates:
        node = nodes.get(pod.node_name) if nodes is not None else None
        if nodes is not None and node is None and not service.publish_not_ready_addresses:
            node_missing.append(pod.name)
            continue
        ports = endpoint_ports(service, pod)
        if not (service.is_headless and not service.ports):
            resolved = {(p.name, p.protocol) for p in ports}
            dropped.extend(
                DroppedPort(pod.name, sp)
                for sp in service.ports
                if (sp.name, sp.protocol) not in resolved
            )
        for family in address_types(service):
            ep = pod_endpoint(pod, node, service, family)
            if ep.addresses:
                group = groups.setdefault((family, frozenset(ports)), (ports, []))
                group[1].append(ep)
    labels = expected_slice_labels(service)
    policy = hints_policy(service)
    make = partial(ExpectedSlice, labels=labels, hints_policy=policy, zones_known=nodes is not None)
    slices: list[ExpectedSlice] = []
    for (family, _), (ports, eps) in groups.items():
        eps.sort(key=_sort_key)
        for start in range(0, len(eps), max_endpoints_per_slice):
            chunk = tuple(eps[start : start + max_endpoints_per_slice])
            slices.append(make(family, ports, chunk))
    for family in address_types(service):
        if not any(s.address_type == family for s in slices):
            slices.append(make(family, (), ()))  # the placeholder
    slices.sort(key=lambda s: (s.address_type, port_set_key(s.ports), _first_key(s)))
    return ExpectedEndpoints(
        managed=True,
        slices=tuple(slices),
        hints_policy=policy,
        selected_pods=tuple(p.name for p in selected),
        candidate_pods=tuple(p.name for p in candidates),
        pods_without_ip=no_ip,
        pods_node_missing=tuple(node_missing),
        dropped_ports=tuple(dropped),
    )


def is_candidate_phase(pod: Pod) -> bool:
    """Terminal pods (Succeeded/Failed) never back a service."""
    return pod.phase not in ("Succeeded", "Failed")


def _first_key(s: ExpectedSlice) -> tuple[str, tuple[str, ...]]:
    return _sort_key(s.endpoints[0]) if s.endpoints else ("", ())


def port_set_key(ports: Sequence[EndpointPort]) -> tuple[tuple[str, int, str], ...]:
    """A sortable, order-free key of a port set (the controller hashes sorted ports too)."""
    return tuple(sorted((p.name, p.port or 0, p.protocol) for p in ports))
