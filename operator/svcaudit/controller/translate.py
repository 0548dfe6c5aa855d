"""The seam between the shell and the core: store contents -> core inputs, core results ->
the ServiceAudit status document. It reshapes; every judgement is the core's."""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Mapping, Sequence
from datetime import datetime
from typing import Any

from svcaudit.controller.conditions import aspect_name, rfc3339
from svcaudit.controller.dns_probe import ProbeResult
from svcaudit.controller.indexes import Body, Key, Store
from svcaudit.controller.settings import ControllerSettings
from svcaudit.core.audit import (
    UNPREDICTED,
    AuditInputs,
    AuditSettings,
    Discrepancy,
    DnsObservation,
    NamespaceIndexes,
    ServiceAudit,
    SettleState,
    Verdict,
    audit_service,
    audit_uninterpretable,
    hints_to_dict,
    settle,
)
from svcaudit.core.codes import Aspect
from svcaudit.core.compare import records_about
from svcaudit.core.dns import DnsQuestion, expected_dns_questions, record_from_answer
from svcaudit.core.dns_replicas import ReplicaAnswers, observe_replicas
from svcaudit.core.endpoints import (
    DEFAULT_MAX_ENDPOINTS_PER_SLICE,
    expected_endpoints,
    is_managed,
)
from svcaudit.core.envvars import MASTER_SERVICE
from svcaudit.core.model import (
    Endpoint,
    EndpointSlice,
    MalformedObjectError,
    Node,
    Pod,
    Service,
    Unparsed,
)
from svcaudit.core.suggest import LabelIndex

AUDIT_LABELS = {"app.kubernetes.io/managed-by": "svcaudit"}


@dataclasses.dataclass(frozen=True)
class Prepared:
    key: Key
    body: Body
    service: Service
    pods: Sequence[Pod]
    slices: Sequence[EndpointSlice]
    nodes: Mapping[str, Node]
    env_services: Sequence[Service]
    unparsed: Sequence[Unparsed] = ()  # pods/slices the core could not interpret
    service_error: Unparsed | None = None  # the Service's own body is uninterpretable
    # the core's indexes of exactly `pods` and `env_services`, shared by the audits of the
    # namespace (None: each audit builds its own)
    indexes: NamespaceIndexes | None = None
    # the IPs of every live pod of the cluster (the store's own, live count), None when the
    # store is not fed every namespace's pods (AuditInputs.live_pod_ips)
    live_pod_ips: Container[str] | None = None
    # the pods of every namespace the store holds, by label (the store's own, live index)
    elsewhere: LabelIndex | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One audit, as the publisher needs it: what was read, what the core found (`result`)
    and what it reports after settle (`reported`, `state`), and what DNS said."""

    prepared: Prepared
    result: ServiceAudit
    reported: ServiceAudit
    state: SettleState
    dns: DnsObservation | None
    dns_server: str
    now: datetime
    zone: str = "cluster.local"


def prepare(store: Store, key: Key, default_kubernetes: Body | None) -> Prepared | None:
    """What an audit of `key` reads, from the store: the one assembly of the core's inputs,
    for the operator (one service per audit) and `svcaudit check` (every listed service).
    None: nothing to audit (unknown key, or a Service being deleted)."""
    body = store.services.get(key)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    service = store.service_views.get(key)
    if service is None:
        error = store.service_errors.get(key)
        if error is None:
            return None
        # Audited all the same: every verdict Unknown, naming the field (core's rule).
        return Prepared(
            key=key,
            body=store.services[key],
            service=Service(namespace=key[0], name=key[1], uid=error.uid),
            pods=(),
            slices=(),
            nodes={},
            env_services=(),
            service_error=error,
        )
    env_services = list(store.service_views_in(key[0]))
    master: Service | None = None
    if key[0] != "default":
        master = store.service_views.get(MASTER_SERVICE)
        if master is None and default_kubernetes is not None:
            try:
                master = Service.from_api(default_kubernetes)
            except MalformedObjectError:
                master = None
        if master is not None:
            env_services.append(master)
    pod_index = store.pod_index(key[0])
    return Prepared(
        key=key,
        body=store.services[key],
        service=service,
        pods=pod_index.pods,
        slices=store.slice_views_of(key),
        nodes=store.node_views_by_name(),
        env_services=env_services,
        unparsed=store.unparsed_for(key),
        indexes=NamespaceIndexes(pod_index, store.env_index(key[0], master)),
        live_pod_ips=store.pod_addresses.live if store.sees_all_pods else None,
        elsewhere=store.pod_labels,
    )


def dns_questions(prepared: Prepared, settings: ControllerSettings) -> list[tuple[str, str]]:
    """The questions to ask: from the expected slices when the controller manages the
    service, from the observed ones otherwise (the core's contract)."""
    if prepared.service_error is not None:
        return []  # nothing can be expected of a service whose spec cannot be read
    slices: Sequence[Any] = prepared.slices
    if is_managed(prepared.service):
        pods = (
            prepared.indexes.pods.selected(prepared.service)
            if prepared.indexes is not None
            else prepared.pods
        )
        slices = expected_endpoints(
            prepared.service, pods, prepared.nodes, DEFAULT_MAX_ENDPOINTS_PER_SLICE
        ).slices
    questions = expected_dns_questions(prepared.service, slices, settings.cluster_domain)
    return [(q.name, q.type) for q in questions]


def dns_observation(probe: ProbeResult) -> DnsObservation:
    """The core's view of what DNS answered: one server's answers, or each replica's."""
    if probe.replicas:
        return observe_replicas([_replica_answers(r) for r in probe.replicas])
    records = frozenset(record_from_answer(a.name, a.rtype, a.text) for a in probe.answers)
    nxdomain = frozenset(DnsQuestion(n, t) for n, t in probe.nxdomain)
    return DnsObservation(queried=records, error=probe.error, nxdomain=nxdomain)


def _replica_answers(probe: ProbeResult) -> ReplicaAnswers:
    return ReplicaAnswers(
        probe.replica or probe.server,
        frozenset(record_from_answer(a.name, a.rtype, a.text) for a in probe.answers),
        frozenset(DnsQuestion(n, t) for n, t in probe.nxdomain),
        probe.error,
    )


def audit(
    prepared: Prepared, dns: DnsObservation | None, now: datetime, settings: ControllerSettings
) -> ServiceAudit:
    if prepared.service_error is not None:
        return audit_uninterpretable(prepared.service_error)
    inputs = AuditInputs(
        service=prepared.service,
        pods=prepared.pods,
        slices=prepared.slices,
        nodes=prepared.nodes,
        env_services=prepared.env_services,
        unparsed=prepared.unparsed,
        indexes=prepared.indexes,
        live_pod_ips=prepared.live_pod_ips,
        elsewhere=prepared.elsewhere,
    )
    return audit_service(inputs, dns, now, AuditSettings(zone=settings.cluster_domain))


def settle_result(
    result: ServiceAudit,
    previous: SettleState | None,
    now: datetime,
    settle_seconds: float,
    published: Mapping[str, str],
    published_audit: Mapping[str, Any],
) -> tuple[ServiceAudit, SettleState, datetime | None]:
    """(reported, new state, when to audit again for a pending discrepancy).

    `previous` is this process's state for the service incarnation; without one (first
    audit, restart) the state resumes from what is already published: the statuses
    (`published`, by aspect name) and the discrepancies' `since` in the ServiceAudit
    (`published_audit`), so a restarted operator neither flaps nor rewrites anything.
    """
    state_in = previous
    if state_in is None:
        resumed = SettleState.resume(published)
        since = _published_since(published_audit)
        first_seen = {}
        for d in result.discrepancies:
            when = since.get((d.code, d.subject, d.expected, d.observed))
            if when is not None:
                first_seen[d.key] = when
        state_in = dataclasses.replace(resumed, first_seen=first_seen)
    reported, state = settle(result, state_in, now, settle_seconds)
    return reported, state, state.next_due


def _published_since(status: Mapping[str, Any]) -> dict[tuple[Any, ...], datetime]:
    out: dict[tuple[Any, ...], datetime] = {}
    for e in status.get("discrepancies") or ():
        if not isinstance(e, Mapping) or not isinstance(e.get("since"), str):
            continue
        try:
            when = datetime.fromisoformat(e["since"].replace("Z", "+00:00"))
        except ValueError:
            continue
        out[(e.get("code"), e.get("subject"), e.get("expected"), e.get("observed"))] = when
    return out


def codes_for(discrepancies: Sequence[Discrepancy], aspect: str) -> list[str]:
    """Reportable (not info) codes of one aspect (HEALTHY: all aspects), for log lines."""
    return sorted(
        {
            d.code
            for d in discrepancies
            if d.severity.reportable and aspect in ("HEALTHY", aspect_name(d.aspect))
        }
    )


def owned_by(audit_body: Body, uid: str) -> bool:
    refs = (audit_body.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs if isinstance(r, Mapping))


# ---- the ServiceAudit status document (schema: deploy/crd-serviceaudits.yaml) -----------------


def _prune(d: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None/empty-string fields: the API server would not echo them back the same way."""
    return {k: v for k, v in d.items() if v is not None and v != ""}


def _endpoint(
    ep: Endpoint,
    address_type: str,
    ports: Sequence[dict[str, Any]],
    slice_name: str | None,
    hints: Any = None,
) -> dict[str, Any]:
    """`hints`: as core.audit.slice_to_dict renders them ({forZones, forNodes}, None, or
    "unpredicted" for an expected endpoint whose hints the core does not predict)."""
    ref = ep.target_ref
    return _prune(
        {
            "slice": slice_name,
            "addressType": address_type,
            "addresses": list(ep.addresses),
            "ready": ep.conditions.ready,
            "serving": ep.conditions.serving,
            "terminating": ep.conditions.terminating,
            "nodeName": ep.node_name,
            "zone": ep.zone,
            "hostname": ep.hostname,
            "targetRef": _prune({"kind": ref.kind, "namespace": ref.namespace, "name": ref.name})
            if ref
            else None,
            "ports": list(ports),
            "hints": hints,
        }
    )


def _ports(ports: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        _prune(
            {
                "name": p.name,
                "port": p.port,
                "protocol": p.protocol,
                "appProtocol": getattr(p, "app_protocol", None),
            }
        )
        for p in ports
    ]


def _sort_endpoints(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        items, key=lambda e: (e.get("addressType", ""), e.get("addresses", []), e.get("slice", ""))
    )


def _discrepancy(d: Discrepancy, since: datetime | None) -> dict[str, Any]:
    return _prune(
        {
            "code": d.code,
            "aspect": str(d.aspect),
            "severity": str(d.severity),
            "subject": d.subject,
            "expected": d.expected,
            "observed": d.observed,
            "hint": d.hint,
            "since": rfc3339(since) if since else None,
        }
    )


def _env_pods(prepared: Prepared, findings: Sequence[Discrepancy]) -> list[dict[str, Any]]:
    pods = {p.name: p for p in prepared.pods}
    out: list[dict[str, Any]] = []
    for d in findings:
        if d.pod is None:
            continue  # service-level finding (e.g. a collision): in `discrepancies` only
        pod = pods.get(d.pod)
        state = pod.container_states.get(d.container) if pod and d.container else None
        out.append(
            _prune(
                {
                    "pod": d.pod,
                    "container": d.container,
                    "startedAt": rfc3339(state.started_at) if state and state.started_at else None,
                    "problem": d.reason,
                    "message": f"{d.observed} (expected {d.expected})",
                }
            )
        )
    return sorted(out, key=lambda e: (e["pod"], e.get("container", ""), e.get("problem", "")))


def audit_status(
    outcome: Outcome,
    conditions: list[dict[str, Any]],
    generation: int | None,
    existing: Mapping[str, Any],
) -> dict[str, Any]:
    """The ServiceAudit status of one audit. `existing`: the status already published for
    this incarnation ({} if none); a discrepancy's `since` is kept from it, like a
    condition's lastTransitionTime, so that a restart of the operator (whose settle clocks
    restart) rewrites nothing."""
    prepared = outcome.prepared
    endpoints = _endpoints_section(outcome)
    discrepancies = _discrepancies_section(outcome, existing)
    status: dict[str, Any] = {
        "serviceUID": prepared.service.uid,
        "clusterIP": prepared.service.cluster_ip,
        "summary": _summary(outcome, endpoints, discrepancies, conditions),
        "conditions": conditions,
        "endpoints": endpoints,
        "dns": _dns_section(outcome),
        "environment": _prune(
            {
                "serviceCreated": rfc3339(prepared.service.creation_timestamp)
                if prepared.service.creation_timestamp
                else None,
                "pods": _env_pods(prepared, outcome.reported.env_findings),
            }
        ),
        "discrepancies": discrepancies,
    }
    if generation:
        status["observedGeneration"] = int(generation)
    return status


def _endpoints_section(outcome: Outcome) -> dict[str, Any]:
    expected = [
        _endpoint(
            ep,
            s.address_type,
            _ports(s.ports),
            None,
            hints_to_dict(ep.hints) if s.hints_predicted(ep) else UNPREDICTED,
        )
        for s in outcome.result.expected_slices
        for ep in s.endpoints
    ]
    observed = [
        _endpoint(ep, s.address_type, _ports(s.ports), s.name, hints_to_dict(ep.hints))
        for s in outcome.prepared.slices
        for ep in s.endpoints
    ]
    return {
        "managed": is_managed(outcome.prepared.service),
        "expected": _sort_endpoints(expected),
        "observed": _sort_endpoints(observed),
    }


def _discrepancies_section(outcome: Outcome, existing: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The reported discrepancies, each `since` its first sighting (the earlier of this
    process's and the one already published)."""
    published_since = {
        (e.get("code"), e.get("subject"), e.get("expected"), e.get("observed")): e.get("since")
        for e in existing.get("discrepancies") or ()
        if isinstance(e, Mapping)
    }
    out = []
    for d in outcome.reported.discrepancies:
        entry = _discrepancy(d, outcome.state.first_seen.get(d.key))
        before = published_since.get((d.code, d.subject, d.expected, d.observed))
        if isinstance(before, str) and before < entry.get("since", "~"):
            entry["since"] = before
        out.append(entry)
    return out


def _summary(
    outcome: Outcome,
    endpoints: Mapping[str, Any],
    discrepancies: Sequence[Any],
    conditions: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    named = {aspect_name(a): v.status for a, v in outcome.reported.verdicts.items()}
    healthy = next((c for c in conditions if aspect_name_of_type(c["type"]) == "HEALTHY"), None)
    return _prune(
        {
            "endpointsExpected": len(endpoints["expected"]),
            "endpointsObserved": len(endpoints["observed"]),
            "endpoints": named.get("ENDPOINTS", "Unknown"),
            "environment": named.get("ENVIRONMENT", "Unknown"),
            "dns": named.get("DNS", "Unknown"),
            "healthy": named.get("HEALTHY", "Unknown"),
            "discrepancies": len(discrepancies),
            "reason": healthy["reason"] if healthy else None,
        }
    )


def _dns_section(outcome: Outcome) -> dict[str, Any]:
    dns = outcome.dns
    return _prune(
        {
            "server": outcome.dns_server or None,
            "error": (dns.error if dns is not None else "DNS not checked (--no-dns)") or None,
            "expected": [
                {"name": r.name, "type": r.type, "value": r.data}
                for r in sorted(outcome.result.expected_dns.records)
            ],
            "observed": [
                {"name": r.name, "type": r.type, "value": r.data}
                for r in sorted(
                    records_about(
                        outcome.prepared.service,
                        outcome.result.expected_dns,
                        dns.queried,
                        outcome.zone,
                    )
                )
            ]
            if dns is not None
            else [],
            "absent": sorted({q.name for q in outcome.result.expected_dns.nxdomain}),
        }
    )


def aspect_name_of_type(ctype: str) -> str:
    from svcaudit.controller.conditions import CONDITION_TYPES

    for aspect, t in CONDITION_TYPES.items():
        if t == ctype:
            return aspect
    return ""


__all__ = ["Aspect", "Prepared", "Verdict"]
