"""The `svcaudit expect` document: what Kubernetes should publish for a set of objects.

Offline and pure: takes the already-loaded YAML/JSON documents, returns a JSON-ready dict.
When EndpointSlices are part of the input they are compared too; when Nodes are absent,
zones are left out and no pod is dropped for a missing node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from svcaudit.core.access import AccessPoint, expected_access_points
from svcaudit.core.audit import DEFAULT_SETTINGS, AuditSettings, record_to_dict, slice_to_dict
from svcaudit.core.codes import Discrepancy, discrepancy
from svcaudit.core.compare import compare_slices
from svcaudit.core.dns import expected_dns, pod_dns
from svcaudit.core.endpoints import expected_endpoints
from svcaudit.core.envvars import pod_env
from svcaudit.core.errors import MalformedObjectError
from svcaudit.core.findings import endpoint_findings, env_findings, pod_ref, service_ref
from svcaudit.core.model import EndpointSlice, Node, Pod, Service

KINDS = ("Service", "Pod", "EndpointSlice", "Node")


@dataclass(frozen=True, slots=True)
class Inventory:
    """The parsed input; `nodes`/`slices` are None when the input held none of that kind."""

    services: tuple[Service, ...] = ()
    pods: tuple[Pod, ...] = ()
    slices: tuple[EndpointSlice, ...] | None = None
    nodes: Mapping[str, Node] | None = None
    ignored: tuple[str, ...] = field(default=())  # kinds the audit does not read


def flatten(documents: Iterable[object]) -> list[tuple[str, object]]:
    """Objects with their location ("document 3", "document 3 item 2"); `kind: List`
    documents are expanded, empty documents skipped."""
    out: list[tuple[str, object]] = []
    for i, doc in enumerate(documents, 1):
        if doc is None:
            continue
        if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List"):
            items = doc.get("items") or []
            if not isinstance(items, list):
                out.append((f"document {i}", doc))  # reported as malformed below
                continue
            out.extend((f"document {i} item {j}", item) for j, item in enumerate(items, 1))
        else:
            out.append((f"document {i}", doc))
    return out


@dataclass(frozen=True, slots=True)
class ParseError:
    location: str
    message: str


def parse_inventory(documents: Iterable[object]) -> tuple[Inventory, tuple[ParseError, ...]]:
    """Parse every object, collecting all errors instead of stopping at the first."""
    services: list[Service] = []
    pods: list[Pod] = []
    slices: list[EndpointSlice] = []
    nodes: dict[str, Node] = {}
    ignored: set[str] = set()
    errors: list[ParseError] = []
    seen_slices = seen_nodes = False
    for where, obj in flatten(documents):
        kind = obj.get("kind") if isinstance(obj, Mapping) else None
        if not isinstance(kind, str) or not kind:
            errors.append(ParseError(where, "not a Kubernetes object (no kind)"))
            continue
        try:
            if kind == "Service":
                services.append(Service.from_api(_m(obj)))
            elif kind == "Pod":
                pods.append(Pod.from_api(_m(obj)))
            elif kind == "EndpointSlice":
                seen_slices = True
                slices.append(EndpointSlice.from_api(_m(obj)))
            elif kind == "Node":
                seen_nodes = True
                node = Node.from_api(_m(obj))
                nodes[node.name] = node
            else:
                ignored.add(kind)
        except MalformedObjectError as exc:
            errors.append(ParseError(where, str(exc)))
    inventory = Inventory(
        services=tuple(sorted(services, key=lambda s: s.key)),
        pods=tuple(sorted(pods, key=lambda p: p.key)),
        slices=tuple(slices) if seen_slices else None,
        nodes=nodes if seen_nodes else None,
        ignored=tuple(sorted(ignored)),
    )
    return inventory, tuple(errors)


def _m(obj: object) -> Mapping[str, Any]:
    assert isinstance(obj, Mapping)
    return obj


def expect_document(inv: Inventory, settings: AuditSettings = DEFAULT_SETTINGS) -> dict[str, Any]:
    """The document printed by `svcaudit expect` (see docs/expect.md for its shape)."""
    grace = timedelta(seconds=settings.env_start_grace_seconds)
    container_findings: dict[tuple[str, str], list[Discrepancy]] = {}
    services_out: list[dict[str, Any]] = []
    for svc in inv.services:
        ns_pods = [p for p in inv.pods if p.namespace == svc.namespace]
        exp = expected_endpoints(svc, ns_pods, inv.nodes, settings.max_endpoints_per_slice)
        found = endpoint_findings(svc, ns_pods, exp)
        mine = None
        if inv.slices is not None:
            mine = [
                s for s in inv.slices if s.namespace == svc.namespace and s.service_name == svc.name
            ]
            found += compare_slices(
                svc, exp, mine, settings.max_endpoints_per_slice, zones_known=inv.nodes is not None
            )
            if not exp.managed and not svc.is_external_name and not mine:
                found.append(
                    discrepancy(
                        "SVA-EP-108",
                        service_ref(svc),
                        f"an EndpointSlice labelled kubernetes.io/service-name={svc.name}",
                        "none",
                    )
                )
        dns_slices: Sequence[Any] = exp.slices if exp.managed else (mine or ())
        dns = expected_dns(svc, dns_slices, settings.zone)
        if svc.is_headless and dns.nxdomain and (exp.managed or mine is not None):
            found.append(discrepancy("SVA-DNS-101", service_ref(svc), "a ready endpoint", "none"))
        env_found, _ = env_findings(svc, ns_pods, inv.services, grace)
        for d in env_found:
            if d.subject.startswith("Pod "):
                pod_part, _, cname = d.subject.partition(" container ")
                container_findings.setdefault((pod_part, cname), []).append(d)
            else:
                found.append(d)
        services_out.append(
            {
                "namespace": svc.namespace,
                "name": svc.name,
                "type": svc.type,
                "clusterIPs": list(svc.cluster_ips),
                "managedByController": exp.managed,
                "endpointSlices": [slice_to_dict(s) for s in exp.slices],
                "dns": [record_to_dict(r) for r in sorted(dns.records)],
                "dnsNxdomain": [{"name": q.name, "type": q.type} for q in sorted(dns.nxdomain)],
                "accessPoints": [
                    _access_point(a)
                    for a in expected_access_points(svc, (inv.nodes or {}).values())
                ],
                "findings": [d.to_dict() for d in sorted(dict.fromkeys(found), key=_order)],
            }
        )
    pods_out = []
    for pod in inv.pods:
        containers = []
        for cenv in pod_env(pod, inv.services):
            fnd = container_findings.get((pod_ref(pod), cenv.container), [])
            containers.append(
                {
                    "name": cenv.container,
                    "env": dict(sorted(cenv.env.items())),
                    "findings": [d.to_dict() for d in sorted(dict.fromkeys(fnd), key=_order)],
                }
            )
        pods_out.append(
            {
                "namespace": pod.namespace,
                "name": pod.name,
                "dns": [record_to_dict(r) for r in pod_dns(pod, settings.zone)],
                "containers": containers,
            }
        )
    return {"services": services_out, "pods": pods_out, "notes": _notes(inv)}


def _access_point(a: AccessPoint) -> dict[str, Any]:
    return {"address": a.address, "port": a.port, "protocol": a.protocol, "scope": a.scope}


def _order(d: Discrepancy) -> tuple[str, str, tuple[str, ...]]:
    return (d.code, d.subject, d.related)


def _notes(inv: Inventory) -> list[str]:
    notes: list[str] = []
    if not any(s.key == ("default", "kubernetes") for s in inv.services):
        notes.append("default/kubernetes is not in the input: KUBERNETES_* variables omitted")
    if inv.nodes is None:
        notes.append(
            "no Node in the input: zones and node access points omitted,"
            " pods never dropped for a missing node"
        )
    if inv.slices is None:
        notes.append(
            "no EndpointSlice in the input: nothing compared, selectorless services not checked"
        )
    if inv.ignored:
        notes.append("ignored kinds: " + ", ".join(inv.ignored))
    return notes
