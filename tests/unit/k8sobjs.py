"""Builders of plain API dicts (as the Kubernetes API returns them) for the unit tests."""

from __future__ import annotations

from typing import Any

T0 = "2025-01-01T10:00:00Z"  # services are created at T0 unless told otherwise
BEFORE = "2025-01-01T09:00:00Z"
AFTER = "2025-01-01T11:00:00Z"


def port(
    number: int,
    name: str = "",
    target: int | str | None = None,
    protocol: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    p: dict[str, Any] = {"port": number, **extra}
    if name:
        p["name"] = name
    if target is not None:
        p["targetPort"] = target
    if protocol:
        p["protocol"] = protocol
    return p


def service(
    name: str,
    ns: str = "default",
    *,
    selector: dict[str, str] | None = None,
    cluster_ip: str | None = "10.96.0.10",
    cluster_ips: list[str] | None = None,
    families: list[str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    type_: str | None = None,
    external_name: str | None = None,
    publish_not_ready: bool | None = None,
    created: str | None = T0,
    managed_fields: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}"}
    if created:
        meta["creationTimestamp"] = created
    if managed_fields is not None:
        meta["managedFields"] = managed_fields
    spec: dict[str, Any] = {}
    if selector is not None:
        spec["selector"] = selector
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if cluster_ips is not None:
        spec["clusterIPs"] = cluster_ips
    if families is not None:
        spec["ipFamilies"] = families
    spec["ports"] = ports if ports is not None else [port(80, target=8080)]
    if type_:
        spec["type"] = type_
    if external_name:
        spec["externalName"] = external_name
    if publish_not_ready is not None:
        spec["publishNotReadyAddresses"] = publish_not_ready
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def container(
    name: str = "app",
    ports: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "img"}
    if ports is not None:
        c["ports"] = ports
    if env is not None:
        c["env"] = env
    if env_from is not None:
        c["envFrom"] = env_from
    if restart_policy:
        c["restartPolicy"] = restart_policy
    return c


def cport(number: int, name: str = "", protocol: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"containerPort": number}
    if name:
        p["name"] = name
    if protocol:
        p["protocol"] = protocol
    return p


def pod(
    name: str,
    ns: str = "default",
    *,
    labels: dict[str, str] | None = None,
    ips: list[str] | None = None,
    ready: bool = True,
    phase: str = "Running",
    node: str = "node-1",
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    terminating: bool = False,
    hostname: str | None = None,
    subdomain: str | None = None,
    enable_service_links: bool | None = None,
    started: str | None = AFTER,
) -> dict[str, Any]:
    containers = containers if containers is not None else [container(ports=[cport(8080)])]
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {"app": "web"}}
    if terminating:
        meta["deletionTimestamp"] = AFTER
    spec: dict[str, Any] = {"containers": containers}
    if node:
        spec["nodeName"] = node
    if init_containers:
        spec["initContainers"] = init_containers
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    if enable_service_links is not None:
        spec["enableServiceLinks"] = enable_service_links
    ips = ["10.244.0.5"] if ips is None else ips
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    if started:
        status["containerStatuses"] = [
            {"name": c["name"], "state": {"running": {"startedAt": started}}} for c in containers
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def node(name: str = "node-1", zone: str | None = "zone-a") -> dict[str, Any]:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]},
    }


def endpoint(
    ip: str | list[str],
    pod_name: str,
    *,
    ns: str = "default",
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    node: str | None = "node-1",
    zone: str | None = "zone-a",
    hostname: str | None = None,
) -> dict[str, Any]:
    ep: dict[str, Any] = {
        "addresses": [ip] if isinstance(ip, str) else ip,
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
        "targetRef": {"kind": "Pod", "namespace": ns, "name": pod_name},
    }
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    if hostname:
        ep["hostname"] = hostname
    return ep


def eslice(
    name: str,
    service_name: str,
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    *,
    ns: str = "default",
    address_type: str = "IPv4",
    managed_by: str = "endpointslice-controller.k8s.io",
    headless: bool = False,
) -> dict[str, Any]:
    labels = {
        "kubernetes.io/service-name": service_name,
        "endpointslice.kubernetes.io/managed-by": managed_by,
    }
    if headless:
        labels["service.kubernetes.io/headless"] = ""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }
