"""One Service's audit: expectations, comparisons and the per-aspect verdicts.

A verdict is True when nothing reportable was found, False when something was, and
Unknown when an input it needs is missing (never a False guessed from missing data).
settle() adds flap suppression: a discrepancy counts only once it has lasted.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, NamedTuple, cast

from svcaudit.core.codes import Aspect, Discrepancy, Severity, discrepancy
from svcaudit.core.compare import DnsObservation, compare_dns, compare_env, compare_slices
from svcaudit.core.dns import DEFAULT_ZONE, DnsRecord, ExpectedDns, expected_dns
from svcaudit.core.dns_replicas import compare_replicas
from svcaudit.core.endpoints import (
    DEFAULT_MAX_ENDPOINTS_PER_SLICE,
    ExpectedEndpoints,
    ExpectedSlice,
    expected_endpoints,
)
from svcaudit.core.envsize import (
    DEFAULT_EXEC_LIMIT,
    DEFAULT_WARNING_FRACTION,
    EnvLimits,
    env_size_finding,
)
from svcaudit.core.envvars import ServiceEnvIndex, service_variables
from svcaudit.core.findings import (
    endpoint_findings,
    env_findings,
    pod_ref,
    with_service,
)
from svcaudit.core.model import (
    SERVICE_NAME_LABEL,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    Node,
    Pod,
    Service,
    Unparsed,
)
from svcaudit.core.podindex import PodIndex
from svcaudit.core.podnet import dead_pod_addresses
from svcaudit.core.suggest import LabelIndex, with_suggestions

__all__ = [
    "Aspect",
    "AuditInputs",
    "AuditSettings",
    "Discrepancy",
    "DnsObservation",
    "NamespaceIndexes",
    "ServiceAudit",
    "SettleState",
    "Verdict",
    "audit_service",
    "audit_uninterpretable",
    "may_select",
    "settle",
    "unobservable",
    "verdicts_for",
]

Status = Literal["True", "False", "Unknown"]
ASPECTS = (Aspect.ENDPOINTS, Aspect.ENVIRONMENT, Aspect.DNS)
ObservedEnv = Mapping[tuple[str, str], Mapping[str, str]]  # (pod, container) -> env
UNINTERPRETABLE = "Uninterpretable"  # Unknown verdict reason: an input could not be parsed
# Endpoint findings that depend on knowing every selected pod (a pod the core could not
# interpret might be the one that is ready / declares the port).
_POD_SET_FINDINGS = frozenset(
    {"SVA-EP-101", "SVA-EP-102", "SVA-EP-103", "SVA-EP-105", "SVA-EP-107"}
)


@dataclass(frozen=True, slots=True)
class NamespaceIndexes:
    """What the audits of one namespace can share: its pods indexed (PodIndex) and its
    services' environment (ServiceEnvIndex of the services, default/kubernetes included)."""

    pods: PodIndex
    services: ServiceEnvIndex


@dataclass(frozen=True, slots=True)
class AuditInputs:
    """What the cluster holds about one Service: the objects its audit reads, in one value
    so that callers name them once and the audit's signature stays short.

    `pods`: every pod of the service's namespace (others are ignored); `slices`: its
    EndpointSlices (None = not observed: Endpoints Unknown); `nodes`: None = unknown (zones
    not checked, no pod dropped); `env_services`: the services of its namespace and
    default/kubernetes (their variables reach its pods).
    `unparsed`: objects the shell could not interpret (`model.interpret`): pods of the
    service's namespace and EndpointSlices labelled with its name (others are ignored).
    What they feed is Unknown ("Uninterpretable", naming object and field), never judged
    without them: a selected pod -> Endpoints (and DNS of a headless service); a slice ->
    Endpoints (and DNS of a headless selectorless service); any pod -> Environment when
    the service has variables (the pod's containers cannot be judged).
    `indexes`: prebuilt NamespaceIndexes of exactly these `pods` and
    `with_service(env_services, service)`, shared by the audits of one namespace (the
    results are the same; only the cost differs).
    `elsewhere`: the pods of other namespaces by label (suggest.LabelIndex), read only when
    the selector matches no pod here, to say where its pods are (SVA-EP-101's hint); None:
    other namespaces are not looked at.
    """

    service: Service
    pods: Sequence[Pod]
    slices: Sequence[EndpointSlice] | None
    nodes: Mapping[str, Node] | None
    env_services: Sequence[Service]
    unparsed: Sequence[Unparsed] = ()
    indexes: NamespaceIndexes | None = None
    elsewhere: LabelIndex | None = None
    # Canonical IPs (podnet.canonical_ip) of every live pod of EVERY namespace, uninterpretable
    # ones included (podnet.possible_ips); None when the caller does not see them all: hand-
    # written endpoints in a pod range are then not judged (SVA-EP-017, podnet.py).
    live_pod_ips: Container[str] | None = None


@dataclass(frozen=True, slots=True)
class AuditSettings:
    zone: str = DEFAULT_ZONE
    max_endpoints_per_slice: int = DEFAULT_MAX_ENDPOINTS_PER_SLICE
    # Container starts this close to a service's creation are not judged (clock skew,
    # kubelet informer lag): reported as SVA-ENV-002 (info) instead of SVA-ENV-001.
    env_start_grace_seconds: float = 5.0
    # execve's argv+envp budget (envsize.py: a quarter of the stack rlimit, 2 MiB under the
    # usual 8 MiB): a container's environment past it cannot start (SVA-ENV-012, error), from
    # this fraction of it on a warning.
    exec_args_limit: int = DEFAULT_EXEC_LIMIT
    env_size_warning_fraction: float = DEFAULT_WARNING_FRACTION


DEFAULT_SETTINGS = AuditSettings()


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True, slots=True)
class ServiceAudit:
    namespace: str
    name: str
    verdicts: Mapping[Aspect, Verdict]
    discrepancies: tuple[Discrepancy, ...]
    expected_slices: tuple[ExpectedSlice, ...]
    expected_dns: ExpectedDns
    env_findings: tuple[Discrepancy, ...]
    unknown: Mapping[Aspect, str] = field(default_factory=dict)  # aspect -> missing input
    # aspect -> verdict reason when it is not the aspect's default (e.g. "Uninterpretable")
    unknown_reasons: Mapping[Aspect, str] = field(default_factory=dict)
    pending: tuple[Discrepancy, ...] = ()  # reportable, but not yet settled (see settle)
    # aspects Unknown because an observation failed (a DNS query): asking again may answer,
    # and no cluster event would bring the audit back, so settle() schedules a retry
    transient: frozenset[Aspect] = frozenset()

    def to_status_detail(self) -> dict[str, object]:
        """JSON-ready detail for the ServiceAudit status (sorted, deterministic)."""
        return {
            "verdicts": {
                str(a): {"status": v.status, "reason": v.reason, "message": v.message}
                for a, v in self.verdicts.items()
            },
            "discrepancies": [d.to_dict() for d in self.discrepancies],
            "pending": [d.to_dict() for d in self.pending],
            "expectedEndpointSlices": [slice_to_dict(s) for s in self.expected_slices],
            "expectedDns": [record_to_dict(r) for r in sorted(self.expected_dns.records)],
            "expectedNxdomain": [
                {"name": q.name, "type": q.type} for q in sorted(self.expected_dns.nxdomain)
            ],
        }


def slice_to_dict(s: ExpectedSlice) -> dict[str, object]:
    """An expected slice as `svcaudit expect` and the ServiceAudit detail show it: ports with
    their appProtocol when set; per endpoint `hints` as predicted ({forZones, forNodes} or
    None), or "unpredicted" where the controller's choice is not predicted (hints_predicted);
    `hintsPolicy` says which rule the hints follow (endpoints.HintsPolicy)."""
    return {
        "addressType": s.address_type,
        "labels": dict(s.labels),
        "ports": [port_to_dict(p) for p in s.ports],
        "hintsPolicy": str(s.hints_policy),
        "endpoints": [
            {
                "addresses": list(ep.addresses),
                "conditions": {
                    "ready": ep.conditions.ready,
                    "serving": ep.conditions.serving,
                    "terminating": ep.conditions.terminating,
                },
                "hostname": ep.hostname,
                "nodeName": ep.node_name,
                "zone": ep.zone,
                "targetRef": (
                    {
                        "kind": ep.target_ref.kind,
                        "namespace": ep.target_ref.namespace,
                        "name": ep.target_ref.name,
                    }
                    if ep.target_ref
                    else None
                ),
                "hints": hints_to_dict(ep.hints) if s.hints_predicted(ep) else UNPREDICTED,
            }
            for ep in s.endpoints
        ],
    }


UNPREDICTED = "unpredicted"  # an expected endpoint's hints the auditor does not predict


def port_to_dict(p: EndpointPort) -> dict[str, object]:
    out: dict[str, object] = {"name": p.name, "port": p.port, "protocol": p.protocol}
    if p.app_protocol is not None:
        out["appProtocol"] = p.app_protocol
    return out


def hints_to_dict(hints: EndpointHints | None) -> dict[str, list[dict[str, str]]] | None:
    """As the API writes them: {"forZones": [{"name": z}], "forNodes": [{"name": n}]}."""
    if hints is None:
        return None
    out: dict[str, list[dict[str, str]]] = {}
    if hints.for_zones:
        out["forZones"] = [{"name": z} for z in hints.for_zones]
    if hints.for_nodes:
        out["forNodes"] = [{"name": n} for n in hints.for_nodes]
    return out


def record_to_dict(r: DnsRecord) -> dict[str, str]:
    return {"name": r.name, "type": r.type, "data": r.data}


def _dedupe(items: Sequence[Discrepancy]) -> tuple[Discrepancy, ...]:
    return tuple(dict.fromkeys(items))


def verdicts_for(
    discrepancies: Sequence[Discrepancy],
    unknown: Mapping[Aspect, str],
    pending: Sequence[Discrepancy] = (),
    published: Mapping[Aspect, str] | None = None,
    reasons: Mapping[Aspect, str] | None = None,
) -> dict[Aspect, Verdict]:
    """Per aspect: False on any reportable discrepancy, else Unknown on a missing input (or
    an unsettled discrepancy), else True; HEALTHY summarises the three. `reasons`: the
    Unknown reason of an aspect when not its default (e.g. "Uninterpretable").

    Hysteresis: an aspect whose only reportable findings are `pending` keeps the status it
    was last `published` with (True stays True, False stays False) instead of turning
    Unknown("Settling"); with no published True/False it is Unknown("Settling").
    """
    out: dict[Aspect, Verdict] = {}
    before = published or {}
    for aspect in ASPECTS:
        bad = [d for d in discrepancies if d.aspect is aspect and d.severity.reportable]
        waiting = [d for d in pending if d.aspect is aspect]
        if bad:
            out[aspect] = _failing(bad)
        elif aspect in unknown:
            reason = (reasons or {}).get(aspect) or _unknown_reason(aspect)
            out[aspect] = Verdict("Unknown", reason, unknown[aspect])
        elif waiting and before.get(aspect) == "True":
            out[aspect] = CONSISTENT  # churn younger than the settle time: no flap
        elif waiting and before.get(aspect) == "False":
            kept = _failing(waiting)
            out[aspect] = replace(
                kept, message=kept.message + " (not yet lasting; the published False is kept)"
            )
        elif waiting:
            out[aspect] = Verdict(
                "Unknown",
                "Settling",
                f"{len(waiting)} discrepancy(ies) not yet lasting: "
                + ", ".join(sorted({d.reason for d in waiting})),
            )
        else:
            out[aspect] = CONSISTENT
    statuses = [v.status for v in out.values()]
    if "False" in statuses:
        failing = [str(a) for a, v in out.items() if v.status == "False"]
        out[Aspect.HEALTHY] = Verdict(
            "False", "DiscrepanciesFound", "failing: " + ", ".join(failing)
        )
    elif "Unknown" in statuses:
        missing = [str(a) for a, v in out.items() if v.status == "Unknown"]
        blind = [v for v in out.values() if v.status == "Unknown"]
        if all(v.reason == UNINTERPRETABLE for v in blind):
            # Nothing but unparseable input: say which object and field, as the aspects do.
            out[Aspect.HEALTHY] = Verdict(
                "Unknown",
                UNINTERPRETABLE,
                "unknown: " + ", ".join(missing) + "; " + blind[0].message,
            )
        else:
            out[Aspect.HEALTHY] = Verdict(
                "Unknown", "IncompleteAudit", "unknown: " + ", ".join(missing)
            )
    else:
        out[Aspect.HEALTHY] = Verdict("True", "Healthy", "endpoints, environment and DNS agree")
    return out


CONSISTENT = Verdict("True", "Consistent", "matches the Kubernetes rules")
_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _failing(found: Sequence[Discrepancy]) -> Verdict:
    """The False verdict of an aspect: the most severe finding first, counts by reason."""
    bad = sorted(found, key=lambda d: (_ORDER[d.severity], d.code))
    counts: dict[str, int] = {}
    for d in bad:
        counts[d.reason] = counts.get(d.reason, 0) + 1
    summary = ", ".join(f"{r} x{n}" for r, n in counts.items())
    return Verdict(
        "False",
        bad[0].reason,
        f"{bad[0].subject}: {bad[0].observed} (expected {bad[0].expected}); all: {summary}",
    )


def _unknown_reason(aspect: Aspect) -> str:
    return {
        Aspect.ENDPOINTS: "EndpointSlicesNotObserved",
        Aspect.ENVIRONMENT: "ContainerStartUnknown",
        Aspect.DNS: "DnsNotObserved",
    }.get(aspect, "InputMissing")


def audit_service(
    inputs: AuditInputs,
    dns: DnsObservation | None,
    now: datetime,
    settings: AuditSettings = DEFAULT_SETTINGS,
    observed_env: ObservedEnv | None = None,
) -> ServiceAudit:
    """Audit one Service (`inputs`: what the cluster holds about it, see AuditInputs).

    `dns`: the answers to `expected_dns_questions` (None = not queried: DNS Unknown).
    `observed_env`: optional real container environments keyed (pod name, container name);
    they override the start-time prediction for those containers.
    `now` is accepted for the contract (and future time rules); the rules use object times.
    Phases: each aspect's findings and missing inputs, then the aspects blinded by
    unparsed objects, then the verdicts.
    """
    del now
    service = inputs.service
    ns_pods = [p for p in inputs.pods if p.namespace == service.namespace]
    indexes = inputs.indexes
    if indexes is None:
        envs = ServiceEnvIndex(with_service(inputs.env_services, service))
        indexes = NamespaceIndexes(PodIndex(ns_pods), envs)
    selected = indexes.pods.selected(service)  # what endpoints.selects picks, found once
    exp = expected_endpoints(service, selected, inputs.nodes, settings.max_endpoints_per_slice)
    blind = _blind_spots(service, inputs.slices, inputs.unparsed)
    culprits = _culprits(service, blind, exp.managed)
    dns_slices = _dns_slices(exp, service, inputs.slices)
    exp_dns = expected_dns(service, dns_slices if dns_slices is not None else (), settings.zone)
    phases = {
        Aspect.ENDPOINTS: _endpoints_phase(inputs, ns_pods, selected, exp, blind, settings),
        Aspect.DNS: _dns_phase(
            service, dns_slices, exp_dns, dns, bool(culprits[Aspect.DNS]), settings.zone
        ),
        Aspect.ENVIRONMENT: _env_phase(inputs, ns_pods, indexes, settings, observed_env),
    }
    missing = {a: phase.unknown for a, phase in phases.items() if phase.unknown is not None}
    unknown, reasons = _with_blind_spots(missing, culprits)
    all_found = _dedupe([d for phase in phases.values() for d in phase.found])
    return ServiceAudit(
        namespace=service.namespace,
        name=service.name,
        verdicts=verdicts_for(all_found, unknown, reasons=reasons),
        discrepancies=all_found,
        expected_slices=exp.slices,
        expected_dns=exp_dns,
        env_findings=tuple(d for d in all_found if d.aspect is Aspect.ENVIRONMENT),
        unknown=unknown,
        unknown_reasons=reasons,
        transient=frozenset(a for a, phase in phases.items() if phase.transient),
    )


class _Phase(NamedTuple):
    """One aspect's part of an audit: its findings and, when an input it needs is missing,
    why (the Unknown message): a missing input never turns into a guessed False."""

    found: list[Discrepancy]
    unknown: str | None = None
    transient: bool = False  # unknown because an observation failed: worth asking again


def _endpoints_phase(
    inputs: AuditInputs,
    ns_pods: Sequence[Pod],
    selected: Sequence[Pod],
    exp: ExpectedEndpoints,
    blind: _Blind,
    settings: AuditSettings,
) -> _Phase:
    """Endpoints: mistakes visible in the objects alone (a selector that matches nothing
    says what it probably meant), then the observed slices against the expected ones.
    Findings that need every selected pod, and the slice comparison, are dropped while an
    object they depend on is unparsed (the aspect is then Uninterpretable)."""
    service, slices = inputs.service, inputs.slices
    found = endpoint_findings(service, selected, exp)
    if blind.selected_pods:
        found = [d for d in found if d.code not in _POD_SET_FINDINGS]
    elif not selected:
        pods = inputs.indexes.pods if inputs.indexes is not None else PodIndex(ns_pods)
        found = with_suggestions(found, service, pods, inputs.elsewhere)
    if slices is None:
        if exp.managed or not service.is_external_name:
            return _Phase(found, "EndpointSlices of the service were not provided")
        return _Phase(found)
    if blind.endpoints:
        return _Phase(found)
    mine = [
        s for s in slices if s.namespace == service.namespace and s.service_name == service.name
    ]
    found += compare_slices(
        service,
        exp,
        mine,
        settings.max_endpoints_per_slice,
        zones_known=inputs.nodes is not None,
        pods=ns_pods,
    )
    if not exp.managed and not service.is_external_name and not mine:
        found.append(_selectorless(service))
    if not exp.managed and inputs.live_pod_ips is not None and inputs.nodes is not None:
        found += dead_pod_addresses(service, mine, inputs.nodes, inputs.live_pod_ips)
    return _Phase(found)


def _dns_phase(
    service: Service,
    dns_slices: Sequence[ExpectedSlice] | Sequence[EndpointSlice] | None,
    exp_dns: ExpectedDns,
    dns: DnsObservation | None,
    blind: bool,
    zone: str,
) -> _Phase:
    """DNS: a headless name that cannot resolve (SVA-DNS-101), then the answers against the
    expected records. `blind`: an unparsed object feeds the records, nothing is judged."""
    found: list[Discrepancy] = []
    if service.is_headless and dns_slices is not None and exp_dns.nxdomain and not blind:
        found.append(discrepancy("SVA-DNS-101", _svc(service), "a ready endpoint", "none"))
    if dns_slices is None:
        return _Phase(found, "headless selectorless service: its EndpointSlices were not provided")
    if dns is None:
        return _Phase(found, "DNS was not queried")
    if dns.error:
        return _Phase(found, f"DNS query failed: {dns.error}", transient=True)
    if not blind and dns.replicas:
        found += compare_replicas(service, exp_dns, dns.replicas, zone)
    elif not blind:
        found += compare_dns(service, exp_dns, dns, zone)
    return _Phase(found)


def _env_phase(
    inputs: AuditInputs,
    ns_pods: Sequence[Pod],
    indexes: NamespaceIndexes,
    settings: AuditSettings,
    observed_env: ObservedEnv | None,
) -> _Phase:
    """Environment: what each container got at its start, predicted from start times
    (env_findings), and compared with the real environment where it was observed."""
    service = inputs.service
    found, unknown = env_findings(
        service,
        ns_pods,
        inputs.env_services,
        timedelta(seconds=settings.env_start_grace_seconds),
        frozenset(observed_env or {}),
        indexes.services,
        indexes.pods,
    )
    if observed_env:
        found += _observed_env(service, ns_pods, indexes.services, observed_env)
    limits = EnvLimits.of(settings.exec_args_limit, settings.env_size_warning_fraction)
    too_large = env_size_finding(service, indexes.services, indexes.pods, limits)
    if too_large is not None:
        found.append(too_large)
    return _Phase(found, "; ".join(unknown) if unknown else None)


def _culprits(service: Service, blind: _Blind, managed: bool) -> dict[Aspect, tuple[Unparsed, ...]]:
    """Per aspect, the unparsed objects it cannot be judged without: Endpoints, its slices
    and the pods it may select; DNS only of a headless service (its records list
    endpoints), through the pods if the controller manages it, else through the slices;
    Environment, any pod of the namespace when the service has variables."""
    dns = (blind.selected_pods if managed else blind.slices) if service.is_headless else ()
    env = blind.pods if service_variables(service) else ()
    return {Aspect.ENDPOINTS: blind.endpoints, Aspect.DNS: dns, Aspect.ENVIRONMENT: env}


def _with_blind_spots(
    missing: Mapping[Aspect, str], culprits: Mapping[Aspect, tuple[Unparsed, ...]]
) -> tuple[dict[Aspect, str], dict[Aspect, str]]:
    """(Unknown messages, Unknown reasons): an aspect with culprits is Uninterpretable, its
    message naming them first, then any missing input."""
    unknown = dict(missing)
    reasons: dict[Aspect, str] = {}
    for aspect, objs in culprits.items():
        if objs:
            why = _uninterpretable_message(objs)
            unknown[aspect] = why + (f"; {unknown[aspect]}" if aspect in unknown else "")
            reasons[aspect] = UNINTERPRETABLE
    return unknown, reasons


@dataclass(frozen=True, slots=True)
class _Blind:
    """Unparsed objects one audit depends on, by what they feed."""

    pods: tuple[Unparsed, ...] = ()  # pods of the namespace (their environment)
    selected_pods: tuple[Unparsed, ...] = ()  # pods the service may select or target
    slices: tuple[Unparsed, ...] = ()  # the service's own EndpointSlices

    @property
    def endpoints(self) -> tuple[Unparsed, ...]:
        return self.slices + self.selected_pods


def _blind_spots(
    service: Service, slices: Sequence[EndpointSlice] | None, unparsed: Sequence[Unparsed]
) -> _Blind:
    """Which unparsed objects concern `service`. A pod's labels decide whether the selector
    may match it (unreadable labels: it may); a selectorless service depends on the pods its
    slices' endpoints name in targetRef; a slice counts when labelled with the service's name
    (unreadable labels: the shell attributed it, trust that)."""
    mine = [u for u in unparsed if u.namespace == service.namespace]
    pods = tuple(u for u in mine if u.kind == "Pod")
    if service.is_external_name:
        return _Blind(pods=pods)
    if service.has_selector:
        selected = tuple(u for u in pods if may_select(service, u))
    else:
        targets = {
            ep.target_ref.name
            for s in slices or ()
            if s.namespace == service.namespace and s.service_name == service.name
            for ep in s.endpoints
            if ep.target_ref is not None
            and ep.target_ref.kind == "Pod"
            and ep.target_ref.namespace in ("", service.namespace)
        }
        selected = tuple(u for u in pods if u.name in targets)
    own = tuple(
        u
        for u in mine
        if u.kind == "EndpointSlice"
        and (u.labels is None or u.labels.get(SERVICE_NAME_LABEL) == service.name)
    )
    return _Blind(pods=pods, selected_pods=selected, slices=own)


def may_select(service: Service, pod: Unparsed) -> bool:
    """Whether `service`'s selector may match an uninterpretable pod: its labels match (as
    `endpoints.selects`), or they are themselves unreadable."""
    if pod.kind != "Pod" or pod.namespace != service.namespace or not service.has_selector:
        return False
    labels = pod.labels
    return labels is None or all(labels.get(k) == v for k, v in service.selector.items())


def _uninterpretable_message(culprits: Sequence[Unparsed], shown: int = 3) -> str:
    first = "; ".join(u.message for u in culprits[:shown])
    more = len(culprits) - shown
    return first + (f" (and {more} more uninterpretable object(s))" if more > 0 else "")


def audit_uninterpretable(service: Unparsed) -> ServiceAudit:
    """The audit of a Service whose own body the core cannot interpret: every aspect Unknown
    ("Uninterpretable"), the message naming the object and field, e.g.
    "Service ns/x: spec.clusterIPs[0]: not an IP address: '10.96.010.7'". No discrepancy:
    nothing can be judged about a service whose spec cannot be read."""
    unknown = dict.fromkeys(ASPECTS, service.message)
    reasons = dict.fromkeys(ASPECTS, UNINTERPRETABLE)
    return ServiceAudit(
        namespace=service.namespace,
        name=service.name,
        verdicts=verdicts_for((), unknown, reasons=reasons),
        discrepancies=(),
        expected_slices=(),
        expected_dns=ExpectedDns(frozenset(), frozenset()),
        env_findings=(),
        unknown=unknown,
        unknown_reasons=reasons,
    )


def _svc(service: Service) -> str:
    return f"Service {service.namespace}/{service.name}"


def _selectorless(service: Service) -> Discrepancy:
    return discrepancy(
        "SVA-EP-108",
        _svc(service),
        f"an EndpointSlice labelled kubernetes.io/service-name={service.name}",
        "none",
    )


def _dns_slices(
    exp: ExpectedEndpoints, service: Service, slices: Sequence[EndpointSlice] | None
) -> Sequence[ExpectedSlice] | Sequence[EndpointSlice] | None:
    """Endpoints DNS is derived from: expected ones when the controller manages the service,
    the observed ones otherwise (someone else writes them); None when a headless service
    needs them and they are missing. Without them, a non-headless service's endpoint PTRs are
    simply not asked (nothing is expected, nothing judged)."""
    if exp.managed:
        return exp.slices
    if slices is None:
        return None if service.is_headless else ()
    return [
        s for s in slices if s.namespace == service.namespace and s.service_name == service.name
    ]


def _observed_env(
    service: Service, pods: Sequence[Pod], envs: ServiceEnvIndex, observed: ObservedEnv
) -> list[Discrepancy]:
    """`envs`: a ServiceEnvIndex of with_service(env_services, service)."""
    out: list[Discrepancy] = []
    for pod in sorted(pods, key=lambda p: p.key):
        if not envs.sees(pod, service.key):
            continue
        senv = envs.for_pod(pod)
        for container in pod.all_containers:
            env = observed.get((pod.name, container.name))
            if env is not None:
                out += compare_env(service, pod_ref(pod), container, senv, env, pod=pod.name)
    return out


@dataclass(frozen=True, slots=True)
class SettleState:
    """What settle() carries from one audit of a service to the next.

    `first_seen`: when each discrepancy (Discrepancy.key) was first seen.
    `published`: the verdict status per aspect that the last settle() returned (what the
    caller published); an aspect whose only findings are pending keeps it (hysteresis).
    `next_due`: when to audit again: the earliest pending discrepancy becomes reportable, or
    a failed observation is retried; None when nothing waits.
    `failing_since`: since when each aspect in ServiceAudit.transient has been failing (the
    retry backs off with it).
    """

    first_seen: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    published: Mapping[Aspect, Status] = field(default_factory=dict)
    next_due: datetime | None = None
    failing_since: Mapping[Aspect, datetime] = field(default_factory=dict)

    @classmethod
    def resume(cls, published: Mapping[Aspect, str] | Mapping[str, str]) -> SettleState:
        """A state for a caller that lost its SettleState (e.g. a restart) but can read the
        statuses it last published: keys are aspects (Aspect, its value "Endpoints" or its
        name "ENDPOINTS"), values "True"/"False"/"Unknown"; anything else is ignored.
        Discrepancy clocks restart, but published verdicts are kept while they settle."""
        by_key = {k: a for a in ASPECTS for k in (a.value, a.name)}
        kept: dict[Aspect, Status] = {}
        for key, status in published.items():
            aspect = by_key.get(str(key))
            if aspect is not None and status in ("True", "False", "Unknown"):
                kept[aspect] = cast(Status, status)
        return cls(published=kept)


def settle(
    result: ServiceAudit,
    previous: SettleState | None,
    now: datetime,
    settle_seconds: float,
) -> tuple[ServiceAudit, SettleState]:
    """Keep only reportable discrepancies that have lasted `settle_seconds`; younger ones go to
    `pending`. Info findings pass through at once. Discrepancies that vanished are forgotten
    (their clock restarts).

    An aspect whose only reportable findings are pending keeps the status `previous` says was
    last published (True stays True, False stays False: churn never flaps a condition); with
    no previous verdict (first audit) it is Unknown("Settling"). Missing inputs still make an
    aspect Unknown and lasting findings False. The returned state records the returned
    verdicts as published, and `next_due`: a pending discrepancy's deadline, or the retry of
    an aspect Unknown because its observation failed (`result.transient`, retry_delay).
    Pure: `now` is passed in.
    """
    before = previous.first_seen if previous is not None else {}
    first_seen: dict[tuple[str, str], datetime] = {}
    kept: list[Discrepancy] = []
    pending: list[Discrepancy] = []
    wait = timedelta(seconds=settle_seconds)
    next_due: datetime | None = None
    for d in result.discrepancies:
        seen = before.get(d.key, now)
        first_seen[d.key] = min(seen, first_seen.get(d.key, seen))
        if not d.severity.reportable or now - seen >= wait:
            kept.append(d)
        else:
            pending.append(d)
            due = first_seen[d.key] + wait
            next_due = due if next_due is None else min(next_due, due)
    verdicts = verdicts_for(
        kept,
        result.unknown,
        pending,
        previous.published if previous is not None else None,
        result.unknown_reasons,
    )
    reported = replace(
        result,
        discrepancies=tuple(kept),
        env_findings=tuple(d for d in kept if d.aspect is Aspect.ENVIRONMENT),
        verdicts=verdicts,
        pending=tuple(pending),
    )
    published = {a: verdicts[a].status for a in ASPECTS}
    failing_since = {
        a: (previous.failing_since.get(a, now) if previous is not None else now)
        for a in result.transient
    }
    for since in failing_since.values():
        due = now + retry_delay(now - since)
        next_due = due if next_due is None else min(next_due, due)
    return reported, SettleState(first_seen, published, next_due, failing_since)


RETRY_FIRST = timedelta(seconds=2)
RETRY_MAX = timedelta(seconds=60)


def retry_delay(failing_for: timedelta) -> timedelta:
    """How long to wait before asking again an observation that has failed for
    `failing_for`: 2 s at first, then as long as it has failed (doubling), at most 60 s.
    A DNS answer that comes late (a CoreDNS that has not yet seen a new endpoint forwards
    its PTR upstream) recovers within seconds; a DNS outage costs one retry a minute."""
    return min(RETRY_MAX, max(RETRY_FIRST, failing_for))


def unobservable(namespace: str, name: str, reason: str, message: str) -> ServiceAudit:
    """The audit of a service nobody can currently observe (the API server is unreachable):
    every aspect Unknown with `reason`, no discrepancies. A blind auditor must not keep
    vouching for the last verdict it saw, nor invent failures."""
    verdicts = {aspect: Verdict("Unknown", reason, message) for aspect in ASPECTS}
    verdicts[Aspect.HEALTHY] = Verdict("Unknown", reason, message)
    return ServiceAudit(
        namespace=namespace,
        name=name,
        verdicts=verdicts,
        discrepancies=(),
        expected_slices=(),
        expected_dns=ExpectedDns(frozenset(), frozenset()),
        env_findings=(),
        unknown=dict.fromkeys(ASPECTS, message),
        unknown_reasons=dict.fromkeys(ASPECTS, reason),
    )
