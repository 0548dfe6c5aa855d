"""Typed, defaulted views of the API objects the rules read.

`X.from_api(obj)` takes the camelCase dict the API returns and applies the defaults the
apiserver would (protocol TCP, targetPort = port, enableServiceLinks true, ...), so the
rules never see a missing field and never crash on a malformed one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from svcaudit.core.errors import MalformedObjectError
from svcaudit.core.parsing import Fields

__all__ = [
    "Container",
    "ContainerPort",
    "ContainerState",
    "Endpoint",
    "EndpointConditions",
    "EndpointHints",
    "EndpointPort",
    "EndpointSlice",
    "EnvFrom",
    "EnvVar",
    "MalformedObjectError",
    "Node",
    "Pod",
    "Service",
    "ServicePort",
    "TargetRef",
    "Unparsed",
    "interpret",
    "ip_family",
]

IPV4 = "IPv4"
IPV6 = "IPv6"
ZONE_LABEL = "topology.kubernetes.io/zone"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
# The annotations that ask the EndpointSlice controller for topology-aware hints ("Auto");
# when both are present the deprecated one wins (endpointslice utils.go hintsEnabled).
TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
TOPOLOGY_AWARE_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"
# Spec fields whose change alters the kubelet's service variables.
_ENV_SPEC_FIELDS = ("f:ports", "f:clusterIP", "f:clusterIPs", "f:type")


def ip_family(address: str) -> str:
    """IPv4 or IPv6 for a valid address; ValueError otherwise."""
    return IPV6 if ipaddress.ip_address(address).version == 6 else IPV4


def _ip(f: Fields, value: str, path: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise f.error(path, f"not an IP address: {value!r}") from None
    return value


# ---- objects the core cannot interpret --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unparsed:
    """An object whose body `from_api` rejected: which object, which field, why.

    `labels` are the object's labels when they are themselves readable (None otherwise), so
    the rules can still tell which services the object concerns (a pod's selector match, a
    slice's kubernetes.io/service-name). The audit turns what it feeds Unknown
    ("Uninterpretable", naming the field) instead of judging without it.
    """

    kind: str
    namespace: str
    name: str
    field: str
    reason: str
    uid: str = ""
    labels: Mapping[str, str] | None = None

    @property
    def ref(self) -> str:
        """`Kind ns/name` (`Kind name` for cluster-scoped objects), as in subjects."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name or "<unnamed>"
        return f"{self.kind} {where}"

    @property
    def message(self) -> str:
        """E.g. "Service ns/x: spec.clusterIPs[0]: not an IP address: '10.96.010.7'"."""
        return f"{self.ref}: {self.field or '<object>'}: {self.reason}"

    @classmethod
    def from_error(cls, error: MalformedObjectError, obj: object) -> Unparsed:
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        meta = meta if isinstance(meta, Mapping) else {}
        raw_labels = meta.get("labels")
        labels: dict[str, str] | None = {}
        if isinstance(raw_labels, Mapping):
            if all(isinstance(k, str) and isinstance(v, str) for k, v in raw_labels.items()):
                labels = dict(raw_labels)
            else:
                labels = None
        elif raw_labels is not None:
            labels = None
        uid = meta.get("uid")
        namespace = error.namespace or ("" if error.kind == "Node" else "default")
        return cls(
            kind=error.kind,
            namespace=namespace,
            name=error.name,
            field=error.field,
            reason=error.reason,
            uid=uid if isinstance(uid, str) else "",
            labels=labels,
        )


_View = TypeVar("_View")


def interpret(
    parse: Callable[[Mapping[str, Any]], _View], obj: Mapping[str, Any]
) -> _View | Unparsed:
    """`parse(obj)` (e.g. `Pod.from_api`), or what made it fail: never raises on a bad body."""
    try:
        return parse(obj)
    except MalformedObjectError as exc:
        return Unparsed.from_error(exc, obj)


# ---- Service ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One spec.ports entry; target_port is an int or a port name (never a digit string)."""

    name: str
    port: int
    protocol: str
    target_port: int | str
    node_port: int | None = None
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    uid: str = ""
    type: str = "ClusterIP"
    selector: Mapping[str, str] = field(default_factory=dict)
    cluster_ip: str = ""  # "None" for headless, "" when unset (ExternalName)
    cluster_ips: tuple[str, ...] = ()
    ip_families: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    external_name: str = ""
    publish_not_ready_addresses: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    allocate_load_balancer_node_ports: bool = True  # read for type LoadBalancer only
    traffic_distribution: str | None = None  # spec.trafficDistribution, as written
    # The two topology annotations (None: absent), read by endpoints.hints_policy.
    topology_mode: str | None = None
    topology_aware_hints: str | None = None
    creation_timestamp: datetime | None = None
    # Latest managedFields time of an entry owning ports/clusterIP/type: an upper bound of
    # the last env-relevant spec change (a manager's time moves on any change it makes).
    env_spec_touched_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def is_external_name(self) -> bool:
        return self.type == "ExternalName"

    @property
    def is_headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def has_cluster_ip(self) -> bool:
        """The kubelet's IsServiceIPSet: only such services get env vars and a VIP."""
        return self.cluster_ip not in ("", "None")

    @property
    def has_selector(self) -> bool:
        return bool(self.selector)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Service:
        f = Fields("Service", obj)
        meta = f.mapping(obj, "metadata", "metadata")
        spec = f.mapping(obj, "spec", "spec")
        stype = f.string(spec, "type", "spec.type", "ClusterIP")
        if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            raise f.error("spec.type", f"unknown service type {stype!r}")
        ports = tuple(
            _service_port(f, p, f"spec.ports[{i}]")
            for i, p in enumerate(f.items(spec, "ports", "spec.ports"))
        )
        external_name = ""
        cluster_ip = f.string(spec, "clusterIP", "spec.clusterIP")
        cluster_ips = f.strings(spec, "clusterIPs", "spec.clusterIPs")
        if stype == "ExternalName":
            external_name = f.string(spec, "externalName", "spec.externalName")
            if not external_name:
                raise f.error("spec.externalName", "required for type ExternalName")
            cluster_ip, cluster_ips = "", ()
        else:
            if not cluster_ip and cluster_ips:
                cluster_ip = cluster_ips[0]
            if cluster_ip and not cluster_ips:
                cluster_ips = (cluster_ip,)
            if cluster_ips and cluster_ips[0] != cluster_ip:
                raise f.error("spec.clusterIPs", "first entry must equal spec.clusterIP")
            if cluster_ip != "None":
                for i, ip in enumerate(cluster_ips):
                    _ip(f, ip, f"spec.clusterIPs[{i}]")
            if cluster_ip not in ("", "None") and not ports:
                raise f.error("spec.ports", "required for a service with a cluster IP")
        annotations = f.string_map(meta, "annotations", "metadata.annotations")
        families = f.strings(spec, "ipFamilies", "spec.ipFamilies")
        for i, fam in enumerate(families):
            if fam not in (IPV4, IPV6):
                raise f.error(f"spec.ipFamilies[{i}]", f"must be IPv4 or IPv6, got {fam!r}")
        if not families and cluster_ip not in ("", "None"):
            families = tuple(ip_family(ip) for ip in cluster_ips)
        if stype == "ExternalName":
            families = ()
        return cls(
            namespace=f.namespace or "default",
            name=f.name,
            uid=f.string(meta, "uid", "metadata.uid"),
            type=stype,
            selector=f.string_map(spec, "selector", "spec.selector"),
            cluster_ip=cluster_ip,
            cluster_ips=cluster_ips,
            ip_families=families,
            ports=ports,
            external_name=external_name,
            publish_not_ready_addresses=f.boolean(
                spec, "publishNotReadyAddresses", "spec.publishNotReadyAddresses", False
            ),
            labels=f.string_map(meta, "labels", "metadata.labels"),
            allocate_load_balancer_node_ports=f.boolean(
                spec,
                "allocateLoadBalancerNodePorts",
                "spec.allocateLoadBalancerNodePorts",
                True,
            ),
            traffic_distribution=f.opt_string(
                spec, "trafficDistribution", "spec.trafficDistribution"
            ),
            topology_mode=annotations.get(TOPOLOGY_MODE_ANNOTATION),
            topology_aware_hints=annotations.get(TOPOLOGY_AWARE_HINTS_ANNOTATION),
            creation_timestamp=f.time(meta, "creationTimestamp", "metadata.creationTimestamp"),
            env_spec_touched_at=_env_spec_touched_at(f, meta),
        )


def _service_port(f: Fields, p: Mapping[str, Any], path: str) -> ServicePort:
    port = f.port(p, "port", f"{path}.port")
    raw_target = p.get("targetPort")
    target: int | str
    if raw_target is None or raw_target in (0, ""):
        target = port  # apiserver default
    elif isinstance(raw_target, str):
        if raw_target.isdigit():
            raise f.error(
                f"{path}.targetPort", f"a port name must contain a letter: {raw_target!r}"
            )
        target = raw_target
    else:
        target = f.port_value(raw_target, f"{path}.targetPort")
    return ServicePort(
        name=f.string(p, "name", f"{path}.name"),
        port=port,
        protocol=f.protocol(p, "protocol", f"{path}.protocol"),
        target_port=target,
        node_port=f.opt_port(p, "nodePort", f"{path}.nodePort"),
        app_protocol=f.opt_string(p, "appProtocol", f"{path}.appProtocol"),
    )


def _env_spec_touched_at(f: Fields, meta: Mapping[str, Any]) -> datetime | None:
    latest: datetime | None = None
    for i, entry in enumerate(f.items(meta, "managedFields", "metadata.managedFields")):
        if entry.get("subresource"):
            continue  # status writes never change spec
        fields_v1 = entry.get("fieldsV1")
        spec = fields_v1.get("f:spec") if isinstance(fields_v1, Mapping) else None
        if not isinstance(spec, Mapping) or not any(k in spec for k in _ENV_SPEC_FIELDS):
            continue
        when = f.time(entry, "time", f"metadata.managedFields[{i}].time")
        if when is not None and (latest is None or when > latest):
            latest = when
    return latest


# ---- Pod ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    container_port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class EnvVar:
    """An explicit container variable; value is None when it comes from valueFrom."""

    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class EnvFrom:
    """An envFrom source; its keys live in a ConfigMap/Secret the core does not see."""

    kind: str  # ConfigMap | Secret
    name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    ports: tuple[ContainerPort, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    restart_policy: str | None = None
    init: bool = False

    @property
    def is_sidecar(self) -> bool:
        """A restartable init container: its ports count for named targetPorts."""
        return self.init and self.restart_policy == "Always"


@dataclass(frozen=True, slots=True)
class ContainerState:
    """The current instance of a container: started_at is set only while running."""

    name: str
    running: bool
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False  # metadata.deletionTimestamp set
    node_name: str = ""
    hostname: str = ""
    subdomain: str = ""
    enable_service_links: bool = True
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    phase: str = "Pending"
    pod_ips: tuple[str, ...] = ()
    ready: bool = False  # condition Ready == True
    container_states: Mapping[str, ContainerState] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def all_containers(self) -> tuple[Container, ...]:
        return self.init_containers + self.containers

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Pod:
        f = Fields("Pod", obj)
        meta = f.mapping(obj, "metadata", "metadata")
        spec = f.mapping(obj, "spec", "spec")
        status = f.mapping(obj, "status", "status")
        containers = tuple(
            _container(f, c, f"spec.containers[{i}]", init=False)
            for i, c in enumerate(f.items(spec, "containers", "spec.containers"))
        )
        inits = tuple(
            _container(f, c, f"spec.initContainers[{i}]", init=True)
            for i, c in enumerate(f.items(spec, "initContainers", "spec.initContainers"))
        )
        ips = tuple(
            f.string(p, "ip", f"status.podIPs[{i}].ip")
            for i, p in enumerate(f.items(status, "podIPs", "status.podIPs"))
        )
        if not ips and status.get("podIP"):
            ips = (f.string(status, "podIP", "status.podIP"),)  # podIPs mirrors podIP
        for i, ip in enumerate(ips):
            _ip(f, ip, f"status.podIPs[{i}].ip")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in f.items(status, "conditions", "status.conditions")
        )
        states: dict[str, ContainerState] = {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for i, cs in enumerate(f.items(status, key, f"status.{key}")):
                st = _container_state(f, cs, f"status.{key}[{i}]")
                states[st.name] = st
        return cls(
            namespace=f.namespace or "default",
            name=f.name,
            uid=f.string(meta, "uid", "metadata.uid"),
            labels=f.string_map(meta, "labels", "metadata.labels"),
            terminating=meta.get("deletionTimestamp") is not None,
            node_name=f.string(spec, "nodeName", "spec.nodeName"),
            hostname=f.string(spec, "hostname", "spec.hostname"),
            subdomain=f.string(spec, "subdomain", "spec.subdomain"),
            enable_service_links=f.boolean(
                spec, "enableServiceLinks", "spec.enableServiceLinks", True
            ),
            containers=containers,
            init_containers=inits,
            phase=f.string(status, "phase", "status.phase", "Pending"),
            pod_ips=ips,
            ready=ready,
            container_states=states,
        )


def _container(f: Fields, c: Mapping[str, Any], path: str, *, init: bool) -> Container:
    name = f.string(c, "name", f"{path}.name")
    if not name:
        raise f.error(f"{path}.name", "required non-empty string missing")
    ports = tuple(
        ContainerPort(
            name=f.string(p, "name", f"{path}.ports[{i}].name"),
            container_port=f.port(p, "containerPort", f"{path}.ports[{i}].containerPort"),
            protocol=f.protocol(p, "protocol", f"{path}.ports[{i}].protocol"),
        )
        for i, p in enumerate(f.items(c, "ports", f"{path}.ports"))
    )
    env: list[EnvVar] = []
    for i, e in enumerate(f.items(c, "env", f"{path}.env")):
        ename = f.string(e, "name", f"{path}.env[{i}].name")
        if not ename:
            raise f.error(f"{path}.env[{i}].name", "required non-empty string missing")
        has_from = e.get("valueFrom") is not None
        env.append(
            EnvVar(ename, None if has_from else f.string(e, "value", f"{path}.env[{i}].value"))
        )
    env_from: list[EnvFrom] = []
    for i, e in enumerate(f.items(c, "envFrom", f"{path}.envFrom")):
        prefix = f.string(e, "prefix", f"{path}.envFrom[{i}].prefix")
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = f.mapping(e, key, f"{path}.envFrom[{i}].{key}")
            if ref:
                env_from.append(
                    EnvFrom(kind, f.string(ref, "name", f"{path}.envFrom[{i}].{key}.name"), prefix)
                )
    return Container(
        name=name,
        ports=ports,
        env=tuple(env),
        env_from=tuple(env_from),
        restart_policy=f.opt_string(c, "restartPolicy", f"{path}.restartPolicy"),
        init=init,
    )


def _container_state(f: Fields, cs: Mapping[str, Any], path: str) -> ContainerState:
    name = f.string(cs, "name", f"{path}.name")
    state = f.mapping(cs, "state", f"{path}.state")
    running = f.mapping(state, "running", f"{path}.state.running")
    is_running = state.get("running") is not None
    started = f.time(running, "startedAt", f"{path}.state.running.startedAt")
    return ContainerState(name=name, running=is_running, started_at=started)


# ---- Node --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    internal_ips: tuple[str, ...] = ()
    # spec.podCIDRs (else spec.podCIDR) as written: the ranges the node's pods get IPs from
    # when the network plugin follows them; read leniently by podnet (never a parse error).
    pod_cidrs: tuple[str, ...] = ()

    @property
    def zone(self) -> str | None:
        """The controller copies this label only when it is non-empty."""
        return self.labels.get(ZONE_LABEL) or None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Node:
        f = Fields("Node", obj)
        meta = f.mapping(obj, "metadata", "metadata")
        status = f.mapping(obj, "status", "status")
        ips = tuple(
            f.string(a, "address", f"status.addresses[{i}].address")
            for i, a in enumerate(f.items(status, "addresses", "status.addresses"))
            if a.get("type") == "InternalIP"
        )
        spec = f.mapping(obj, "spec", "spec")
        cidrs = f.strings(spec, "podCIDRs", "spec.podCIDRs")
        if not cidrs and spec.get("podCIDR"):
            cidrs = (f.string(spec, "podCIDR", "spec.podCIDR"),)  # podCIDRs mirrors podCIDR
        return cls(
            name=f.name,
            labels=f.string_map(meta, "labels", "metadata.labels"),
            internal_ips=ips,
            pod_cidrs=cidrs,
        )


# ---- EndpointSlice -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class EndpointPort:
    """A slice port; name "" and protocol TCP when the API leaves them out."""

    name: str
    port: int | None
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True, order=True)
class EndpointConditions:
    """Conditions with the API nil rules applied: ready/serving nil = true, terminating false."""

    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True, slots=True, order=True)
class TargetRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True, order=True)
class EndpointHints:
    """endpoints[].hints: the zones (forZones) and nodes (forNodes) a ready endpoint should
    serve, for kube-proxy's topology-aware routing. Hints with neither are read as none."""

    for_zones: tuple[str, ...] = ()
    for_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None
    target_ref: TargetRef | None = None
    hints: EndpointHints | None = None

    @property
    def identity(self) -> tuple[tuple[str, ...], TargetRef | None]:
        """How an endpoint is matched between expected and observed slices."""
        return (tuple(sorted(self.addresses)), self.target_ref)


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    address_type: str
    ports: tuple[EndpointPort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def service_name(self) -> str:
        return self.labels.get(SERVICE_NAME_LABEL, "")

    @property
    def managed_by(self) -> str:
        return self.labels.get(MANAGED_BY_LABEL, "")

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> EndpointSlice:
        f = Fields("EndpointSlice", obj)
        meta = f.mapping(obj, "metadata", "metadata")
        address_type = f.string(obj, "addressType", "addressType")
        if address_type not in (IPV4, IPV6, "FQDN"):
            raise f.error("addressType", f"must be IPv4, IPv6 or FQDN, got {address_type!r}")
        ports = tuple(
            EndpointPort(
                name=f.string(p, "name", f"ports[{i}].name"),
                port=f.opt_port(p, "port", f"ports[{i}].port"),
                protocol=f.protocol(p, "protocol", f"ports[{i}].protocol"),
                app_protocol=f.opt_string(p, "appProtocol", f"ports[{i}].appProtocol"),
            )
            for i, p in enumerate(f.items(obj, "ports", "ports"))
        )
        endpoints = tuple(
            _endpoint(f, e, f"endpoints[{i}]", address_type)
            for i, e in enumerate(f.items(obj, "endpoints", "endpoints"))
        )
        return cls(
            namespace=f.namespace or "default",
            name=f.name,
            address_type=address_type,
            ports=ports,
            endpoints=endpoints,
            labels=f.string_map(meta, "labels", "metadata.labels"),
        )


def _endpoint(f: Fields, e: Mapping[str, Any], path: str, address_type: str) -> Endpoint:
    addresses = f.strings(e, "addresses", f"{path}.addresses")
    if not addresses:
        raise f.error(f"{path}.addresses", "at least one address required")
    if address_type != "FQDN":
        for i, a in enumerate(addresses):
            _ip(f, a, f"{path}.addresses[{i}]")
    cond = f.mapping(e, "conditions", f"{path}.conditions")
    ready = f.opt_boolean(cond, "ready", f"{path}.conditions.ready")
    serving = f.opt_boolean(cond, "serving", f"{path}.conditions.serving")
    terminating = f.boolean(cond, "terminating", f"{path}.conditions.terminating", False)
    ready_v = True if ready is None else ready
    ref = f.mapping(e, "targetRef", f"{path}.targetRef")
    target = (
        TargetRef(
            kind=f.string(ref, "kind", f"{path}.targetRef.kind"),
            namespace=f.string(ref, "namespace", f"{path}.targetRef.namespace"),
            name=f.string(ref, "name", f"{path}.targetRef.name"),
        )
        if ref
        else None
    )
    return Endpoint(
        addresses=addresses,
        conditions=EndpointConditions(
            ready=ready_v, serving=ready_v if serving is None else serving, terminating=terminating
        ),
        hostname=f.opt_string(e, "hostname", f"{path}.hostname") or None,
        node_name=f.opt_string(e, "nodeName", f"{path}.nodeName") or None,
        zone=f.opt_string(e, "zone", f"{path}.zone") or None,
        target_ref=target,
        hints=_hints(f, f.mapping(e, "hints", f"{path}.hints"), f"{path}.hints"),
    )


def _hints(f: Fields, hints: Mapping[str, Any], path: str) -> EndpointHints | None:
    """forZones[].name and forNodes[].name, in the order written; empty hints read as none
    (kube-proxy reads both as "no hint")."""
    zones = tuple(
        f.string(z, "name", f"{path}.forZones[{i}].name")
        for i, z in enumerate(f.items(hints, "forZones", f"{path}.forZones"))
    )
    nodes = tuple(
        f.string(n, "name", f"{path}.forNodes[{i}].name")
        for i, n in enumerate(f.items(hints, "forNodes", f"{path}.forNodes"))
    )
    return EndpointHints(zones, nodes) if zones or nodes else None
