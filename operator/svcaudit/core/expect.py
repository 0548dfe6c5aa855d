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
from svcaudit.core.envsize import EnvLimits, container_env_size, env_size_finding
from svcaudit.core.envvars import ServiceEnvIndex, container_env
from svcaudit.core.errors import MalformedObjectError
from svcaudit.core.findings import endpoint_findings, env_findings, pod_ref, service_ref
from svcaudit.core.model import EndpointSlice, Node, Pod, Service
from svcaudit.core.podindex import PodIndex
from svcaudit.core.suggest import LabelIndex, with_suggestions

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


class _Indexes:
    """What the expectations of one document share: every service's environment, the pods
    of every namespace by label, and each namespace's PodIndex (built when first asked)."""

    def __init__(self, inv: Inventory, settings: AuditSettings) -> None:
        self.envs = ServiceEnvIndex(inv.services)
        self.labels = LabelIndex.of(inv.pods)
        self.limits = EnvLimits.of(settings.exec_args_limit, settings.env_size_warning_fraction)
        self._pods = inv.pods
        self._by_ns: dict[str, PodIndex] = {}

    def pods(self, namespace: str) -> PodIndex:
        found = self._by_ns.get(namespace)
        if found is None:
            mine = [p for p in self._pods if p.namespace == namespace]
            found = self._by_ns[namespace] = PodIndex(mine)
        return found


def expect_document(inv: Inventory, settings: AuditSettings = DEFAULT_SETTINGS) -> dict[str, Any]:
    """The document printed by `svcaudit expect` (see docs/expect.md for its shape)."""
    grace = timedelta(seconds=settings.env_start_grace_seconds)
    container_findings: dict[tuple[str, str], list[Discrepancy]] = {}
    services_out: list[dict[str, Any]] = []
    shared = _Indexes(inv, settings)
    for svc in inv.services:
        ns_pods = [p for p in inv.pods if p.namespace == svc.namespace]
        exp = expected_endpoints(svc, ns_pods, inv.nodes, settings.max_endpoints_per_slice)
        found = with_suggestions(
            endpoint_findings(svc, ns_pods, exp), svc, shared.pods(svc.namespace), shared.labels
        )
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
        too_large = env_size_finding(svc, shared.envs, shared.pods(svc.namespace), shared.limits)
        env_found += [too_large] if too_large is not None else []
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
    pods_out = [_pod_entry(pod, shared, container_findings, settings) for pod in inv.pods]
    return {"services": services_out, "pods": pods_out, "notes": _notes(inv)}


def _pod_entry(
    pod: Pod,
    shared: _Indexes,
    container_findings: Mapping[tuple[str, str], list[Discrepancy]],
    settings: AuditSettings,
) -> dict[str, Any]:
    """A pod of the document: its DNS records and, per container, the service variables it
    gets at its next start, the size of its predicted environment (execve bytes, envsize.py)
    and its findings."""
    containers = []
    senv = shared.envs.for_pod(pod)
    whole = shared.envs.exec_size(pod.namespace, pod.enable_service_links)
    for c in pod.all_containers:
        cenv = container_env(c, senv)
        size = container_env_size(pod, c, senv, whole)
        fnd = container_findings.get((pod_ref(pod), cenv.container), [])
        containers.append(
            {
                "name": cenv.container,
                "env": dict(sorted(cenv.env.items())),
                "envSize": {"variables": size.variables, "bytes": size.bytes},
                "findings": [d.to_dict() for d in sorted(dict.fromkeys(fnd), key=_order)],
            }
        )
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "dns": [record_to_dict(r) for r in pod_dns(pod, settings.zone)],
        "containers": containers,
    }


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
