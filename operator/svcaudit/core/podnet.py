"""The pod network: which addresses only a pod can hold, and which of those no pod holds.

A hand-written EndpointSlice endpoint without targetRef names an address, not a pod. When
that address lies in a node's pod range (spec.podCIDRs) only a pod can answer there, so if no
live pod of the whole cluster holds it, the endpoint routes to nobody (SVA-EP-017). The
pods of the service's namespace alone prove nothing (a pod of another namespace may hold the
address), so the check needs every live pod IP of the cluster: `live_ips`, given by a caller
that sees every namespace, else the check is not made. Addresses outside the pod ranges
(external backends, node or service addresses, pods of a network plugin that ignores the
nodes' podCIDRs) are not judged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

from svcaudit.core.codes import Discrepancy, discrepancy, ref
from svcaudit.core.model import IPV4, IPV6, EndpointSlice, Node, Pod, Service

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def canonical_ip(text: str) -> str | None:
    """The one spelling of an IP address (ipaddress' compressed form), None if not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def live_ips(pod: Pod) -> frozenset[str]:
    """The addresses a pod holds: its status.podIPs, unless it is terminal (Succeeded or
    Failed: its sandbox is gone and the network plugin may give the address to a new pod)."""
    if pod.phase in ("Succeeded", "Failed"):
        return frozenset()
    return frozenset(ip for ip in (canonical_ip(a) for a in pod.pod_ips) if ip is not None)


def possible_ips(body: Mapping[str, Any]) -> frozenset[str]:
    """The addresses a pod the core cannot interpret may hold, read from its raw body: an IPv4
    address written with leading zeros ("010.244.001.005", which the API server accepts) is
    decimal to Go's parser and octal to inet_aton, so both readings count. Used so that an
    uninterpretable pod never lets another endpoint be called dead."""
    status = body.get("status")
    if not isinstance(status, Mapping) or status.get("phase") in ("Succeeded", "Failed"):
        return frozenset()
    raw: list[object] = [status.get("podIP")]
    items = status.get("podIPs")
    if isinstance(items, list):
        raw += [i.get("ip") for i in items if isinstance(i, Mapping)]
    out: set[str] = set()
    for text in raw:
        if isinstance(text, str) and text:
            out |= _readings(text)
    return frozenset(out)


def _readings(text: str) -> set[str]:
    exact = canonical_ip(text)
    if exact is not None:
        return {exact}
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return set()
    found = set()
    for base in (10, 8):
        try:
            octets = [int(p, base) for p in parts]
        except ValueError:
            continue
        if all(o < 256 for o in octets):
            found.add(".".join(map(str, octets)))
    return found


PodRange = tuple[str, IPNetwork]  # (node name, one of its podCIDRs)


def pod_ranges(nodes: Iterable[Node]) -> tuple[PodRange, ...]:
    """Every node's spec.podCIDRs that reads as a network (others are skipped: an address
    cannot be shown to lie in a range the auditor cannot read)."""
    out: list[PodRange] = []
    for node in nodes:
        for cidr in node.pod_cidrs:
            try:
                out.append((node.name, ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                continue
    return tuple(out)


def pod_assignable(address: IPAddress, ranges: Sequence[PodRange]) -> PodRange | None:
    """The pod range `address` lies in, if a pod can be given it there: not the range's
    network address, not its first address (the bridge's gateway under host-local IPAM, the
    default of kubenet-style plugins) and, for IPv4, not its broadcast address."""
    for node, net in ranges:
        if address.version != net.version or address not in net:
            continue
        tiny = net.num_addresses <= 2
        reserved = {net.network_address, net.network_address + 1}
        if net.version == 4:
            reserved.add(net.broadcast_address)
        if tiny or address not in reserved:
            return node, net
    return None


def dead_pod_addresses(
    service: Service,
    slices: Sequence[EndpointSlice],
    nodes: Mapping[str, Node],
    live: Container[str],
) -> list[Discrepancy]:
    """SVA-EP-017: endpoints without targetRef of a service the controller does not manage
    whose address lies in a node's pod range (pod_assignable) but is held by no live pod of
    the cluster (`live`: canonical IPs of every non-terminal pod of every namespace)."""
    ranges = pod_ranges(nodes.values())
    if not ranges:
        return []
    svc = ref("Service", service.namespace, service.name)
    out: list[Discrepancy] = []
    for s in sorted(slices, key=lambda x: (x.namespace, x.name)):
        if s.address_type not in (IPV4, IPV6):
            continue
        sref = ref("EndpointSlice", s.namespace, s.name)
        for ep in s.endpoints:
            if ep.target_ref is not None:
                continue  # a pod, judged by compare_foreign_targets, or not a pod at all
            for text in ep.addresses:
                address = ipaddress.ip_address(text)  # the model checked it reads as one
                where = pod_assignable(address, ranges)
                if where is None or str(address) in live:
                    continue
                out.append(
                    discrepancy(
                        "SVA-EP-017",
                        sref,
                        f"{text} held by a live pod (it is in node {where[0]}'s pod range"
                        f" {where[1]})",
                        f"{text}: no pod of the cluster holds it",
                        (svc,),
                    )
                )
    return out
