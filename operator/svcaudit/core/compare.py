"""Expected vs observed: EndpointSlices, DNS answers and container environments.

Slices compare as sets of endpoints (identity = addresses + targetRef); slice names,
counts and order are ignored, but each endpoint's port set (the controller's grouping)
is checked, and so is the headless label of controller-managed slices. DNS compares
record sets per question. Env compares exact values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from svcaudit.core.codes import Discrepancy, discrepancy, ref
from svcaudit.core.dns import (
    DEFAULT_ZONE,
    DnsQuestion,
    DnsRecord,
    ExpectedDns,
    is_service_name,
    names_service,
)
from svcaudit.core.endpoints import (
    CONTROLLER_NAME,
    HEADLESS_LABEL,
    ExpectedEndpoints,
    HintsPolicy,
    address_types,
    endpoint_hints,
    hints_judged,
)
from svcaudit.core.envvars import ServiceEnv, container_env, service_variables
from svcaudit.core.model import (
    IPV4,
    IPV6,
    Container,
    Endpoint,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    Pod,
    Service,
)


@dataclass(frozen=True, slots=True)
class DnsObservation:
    """Answers the shell got for `expected_dns_questions` (canonical records, see dns.py).

    `nxdomain` lists questions answered NXDOMAIN; `error` set means the observation failed
    (timeouts, SERVFAIL) and the DNS verdict is Unknown.
    `replicas`: when each replica of the cluster DNS was asked the same questions, their
    answers one by one (they are then what is judged; `dns_replicas.observe_replicas` sums
    them up in the other fields).
    """

    queried: frozenset[DnsRecord]
    error: str | None = None
    nxdomain: frozenset[DnsQuestion] = field(default=frozenset())
    replicas: tuple[ReplicaAnswers, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicaAnswers:
    """One DNS replica's answers (see DnsObservation.replicas); `error`: it did not answer."""

    replica: str  # how findings name it, e.g. "10.244.0.7:53 (pod kube-system/coredns-abc)"
    queried: frozenset[DnsRecord] = frozenset()
    nxdomain: frozenset[DnsQuestion] = frozenset()
    error: str | None = None


def _ports(ports: frozenset[EndpointPort] | tuple[EndpointPort, ...]) -> str:
    """E.g. "[http:8080/TCP appProtocol=http, -:53/UDP]": every field the controller copies,
    so two port sets that differ never read the same."""
    items = sorted(
        f"{p.name or '-'}:{p.port}/{p.protocol}"
        + (f" appProtocol={p.app_protocol}" if p.app_protocol is not None else "")
        for p in ports
    )
    return "[" + ", ".join(items) + "]"


def _hints(hints: EndpointHints | None) -> str:
    if hints is None:
        return "no hints"
    parts = []
    if hints.for_zones:
        parts.append("forZones=" + ",".join(hints.for_zones))
    if hints.for_nodes:
        parts.append("forNodes=" + ",".join(hints.for_nodes))
    return " ".join(parts)


def _hints_why(service: Service, policy: HintsPolicy) -> str:
    """Why those hints are expected, for the finding's expected text."""
    if policy is HintsPolicy.NONE:
        if service.traffic_distribution:
            return f"trafficDistribution {service.traffic_distribution} makes none"
        return "no trafficDistribution"
    return f"trafficDistribution {service.traffic_distribution}"


def _ep(endpoint: Endpoint) -> str:
    target = (
        f" ({endpoint.target_ref.kind} {endpoint.target_ref.name})" if endpoint.target_ref else ""
    )
    return ",".join(endpoint.addresses) + target


def _cond(endpoint: Endpoint) -> str:
    c = endpoint.conditions
    return f"ready={c.ready} serving={c.serving} terminating={c.terminating}"


Key = tuple[str, tuple[tuple[str, ...], object]]
_Wanted = tuple[Endpoint, frozenset[EndpointPort]]  # an expected endpoint and its slice's ports
_Seen = tuple[Endpoint, frozenset[EndpointPort], str]  # an observed one, its ports, its slice


def compare_slices(
    service: Service,
    expected: ExpectedEndpoints,
    observed: Sequence[EndpointSlice],
    max_endpoints_per_slice: int,
    zones_known: bool = True,
    pods: Sequence[Pod] | None = None,
) -> list[Discrepancy]:
    """Differences between the controller's expected output and the observed slices.

    For a service the controller does not manage, the slices are someone else's: only the
    managed-by label is checked, and, when `pods` (of the service's namespace) are given,
    that each endpoint whose targetRef is a Pod names an existing pod and only its IPs.
    """
    svc = ref("Service", service.namespace, service.name)
    ip_slices = [s for s in observed if s.address_type in (IPV4, IPV6)]
    if not expected.managed:
        return _compare_unmanaged(service, svc, ip_slices, pods)
    families = frozenset(address_types(service))
    out: list[Discrepancy] = []
    for s in ip_slices:
        out += _slice_shape(service, svc, s, max_endpoints_per_slice, families)
    exp = _expected_by_key(expected)
    obs = _observed_by_key(ip_slices)
    out += _missing_endpoints(exp, obs, svc)
    out += _unexpected_endpoints(exp, obs, svc)
    hints = (expected.hints_policy, _hints_why(service, expected.hints_policy))
    for key in sorted(exp.keys() & obs.keys(), key=str):
        out += _endpoint_differences(exp[key], obs[key], svc, zones_known, hints)
    out += _missing_placeholders(families, exp, ip_slices, svc)
    return out


def _compare_unmanaged(
    service: Service, svc: str, ip_slices: Sequence[EndpointSlice], pods: Sequence[Pod] | None
) -> list[Discrepancy]:
    """Slices of a service the controller ignores (selectorless, ExternalName) are someone
    else's: the controller must not claim them (SVA-EP-013), and their Pod targetRefs must
    be true (compare_foreign_targets)."""
    out = [
        discrepancy(
            "SVA-EP-013",
            ref("EndpointSlice", s.namespace, s.name),
            "no controller-managed slice",
            f"managed-by {s.managed_by}",
            (svc,),
        )
        for s in ip_slices
        if s.managed_by == CONTROLLER_NAME
    ]
    if pods is not None:
        out += compare_foreign_targets(service, ip_slices, pods)
    return out


def _slice_shape(
    service: Service,
    svc: str,
    s: EndpointSlice,
    max_endpoints_per_slice: int,
    families: frozenset[str],
) -> list[Discrepancy]:
    """What one slice gets wrong as a whole, whatever its endpoints: too many endpoints, an
    address family the service does not have, a headless label that disagrees with the
    service (the last two only on slices the controller claims to manage)."""
    sref = ref("EndpointSlice", s.namespace, s.name)
    out: list[Discrepancy] = []
    if len(s.endpoints) > max_endpoints_per_slice:
        out.append(
            discrepancy(
                "SVA-EP-010",
                sref,
                f"<= {max_endpoints_per_slice} endpoints",
                f"{len(s.endpoints)} endpoints",
                (svc,),
            )
        )
    if s.managed_by != CONTROLLER_NAME:
        return out
    if s.address_type not in families:
        out.append(
            discrepancy("SVA-EP-011", sref, "/".join(sorted(families)), s.address_type, (svc,))
        )
    labelled = HEADLESS_LABEL in s.labels
    if labelled != service.is_headless:
        should = "labelled" if service.is_headless else "not labelled"
        has = "labelled" if labelled else "not labelled"
        out.append(
            discrepancy(
                "SVA-EP-016", sref, f"{should} {HEADLESS_LABEL}", f"{has} {HEADLESS_LABEL}", (svc,)
            )
        )
    return out


def _expected_by_key(expected: ExpectedEndpoints) -> dict[Key, _Wanted]:
    """Expected endpoints by identity: slice names and boundaries are the controller's
    choice, so endpoints are matched across slices, never slice to slice."""
    return {
        (es.address_type, ep.identity): (ep, es.port_set)
        for es in expected.slices
        for ep in es.endpoints
    }


def _observed_by_key(ip_slices: Sequence[EndpointSlice]) -> dict[Key, list[_Seen]]:
    """Observed endpoints by identity, every copy kept (one endpoint in two slices is
    itself a finding, SVA-EP-009)."""
    obs: dict[Key, list[_Seen]] = {}
    for s in ip_slices:
        sref = ref("EndpointSlice", s.namespace, s.name)
        ports = frozenset(s.ports)
        for ep in s.endpoints:
            obs.setdefault((s.address_type, ep.identity), []).append((ep, ports, sref))
    return obs


def _missing_endpoints(
    exp: Mapping[Key, _Wanted], obs: Mapping[Key, list[_Seen]], svc: str
) -> list[Discrepancy]:
    """Expected endpoints no slice publishes (SVA-EP-001), about the pod they stand for."""
    out: list[Discrepancy] = []
    for key in sorted(exp.keys() - obs.keys(), key=str):
        ep, ports = exp[key]
        out.append(
            discrepancy(
                "SVA-EP-001",
                _target(ep, svc),
                f"{key[0]} {_ep(ep)} {_ports(ports)}",
                "absent",
                (svc,),
                pod=_pod(ep),
            )
        )
    return out


def _unexpected_endpoints(
    exp: Mapping[Key, _Wanted], obs: Mapping[Key, list[_Seen]], svc: str
) -> list[Discrepancy]:
    """Published endpoints the controller would not write (SVA-EP-002), about their slice."""
    out: list[Discrepancy] = []
    for key in sorted(obs.keys() - exp.keys(), key=str):
        ep, ports, sref = obs[key][0]
        out.append(
            discrepancy(
                "SVA-EP-002",
                sref,
                "absent",
                f"{key[0]} {_ep(ep)} {_ports(ports)}",
                (svc,),
                pod=_pod(ep),
            )
        )
    return out


def _endpoint_differences(
    wanted: _Wanted,
    seen: Sequence[_Seen],
    svc: str,
    zones_known: bool,
    hints: tuple[HintsPolicy, str],
) -> list[Discrepancy]:
    """How one endpoint present on both sides differs: published twice, conditions, ports,
    hostname, node, zone (only when nodes are known: the zone comes from the node), hints."""
    want, want_ports = wanted
    got, got_ports, sref = seen[0]
    subject = _target(want, svc)
    related = (svc, sref)
    pod = _pod(want)
    out: list[Discrepancy] = []
    if len(seen) > 1:
        where = ", ".join(sorted(r for _, _, r in seen))
        out.append(discrepancy("SVA-EP-009", subject, "in one slice", where, (svc,), pod=pod))
    if want.conditions.ready != got.conditions.ready:
        out.append(discrepancy("SVA-EP-003", subject, _cond(want), _cond(got), related, pod=pod))
    elif want.conditions != got.conditions:
        out.append(discrepancy("SVA-EP-004", subject, _cond(want), _cond(got), related, pod=pod))
    if want_ports != got_ports:
        out.append(
            discrepancy(
                "SVA-EP-005", subject, _ports(want_ports), _ports(got_ports), related, pod=pod
            )
        )
    if want.hostname != got.hostname:
        out.append(
            discrepancy(
                "SVA-EP-006", subject, str(want.hostname), str(got.hostname), related, pod=pod
            )
        )
    if want.node_name != got.node_name:
        out.append(
            discrepancy(
                "SVA-EP-007", subject, str(want.node_name), str(got.node_name), related, pod=pod
            )
        )
    if zones_known and want.zone != got.zone:
        out.append(
            discrepancy("SVA-EP-008", subject, str(want.zone), str(got.zone), related, pod=pod)
        )
    out += _hint_difference(got, hints, subject, related, pod)
    return out


def _hint_difference(
    got: Endpoint, hints: tuple[HintsPolicy, str], subject: str, related: tuple[str, ...],
    pod: str | None,
) -> list[Discrepancy]:  # fmt: skip
    """SVA-EP-018: the published endpoint's hints are not those the controller gives it.
    The rule is applied to the endpoint as published (its ready, zone and nodeName), as the
    controller's heuristic does: a stale zone is SVA-EP-008 alone, not a hint finding too.
    Endpoints whose hints the controller does not decide (hints_judged) are not judged."""
    policy, why = hints
    if not hints_judged(policy, got):
        return []
    want = endpoint_hints(policy, got)
    if got.hints == want:
        return []
    return [
        discrepancy(
            "SVA-EP-018", subject, f"{_hints(want)} ({why})", _hints(got.hints), related, pod=pod
        )
    ]


def _missing_placeholders(
    families: frozenset[str],
    exp: Mapping[Key, _Wanted],
    ip_slices: Sequence[EndpointSlice],
    svc: str,
) -> list[Discrepancy]:
    """A family with no expected endpoint still gets a slice (the controller's empty
    placeholder): with no slice at all of that family, clients cannot tell "no endpoints"
    from "not reconciled" (SVA-EP-012)."""
    return [
        discrepancy("SVA-EP-012", svc, f"placeholder {family} slice", "none")
        for family in sorted(families)
        if not any(k[0] == family for k in exp)
        and not any(s.address_type == family for s in ip_slices)
    ]


def _pod(ep: Endpoint) -> str | None:
    """The pod an endpoint points at (Discrepancy.pod), if its targetRef is a Pod."""
    t = ep.target_ref
    return t.name if t is not None and t.kind == "Pod" else None


def _target(ep: Endpoint, fallback: str) -> str:
    t = ep.target_ref
    return ref(t.kind, t.namespace, t.name) if t else fallback


def compare_foreign_targets(
    service: Service, slices: Sequence[EndpointSlice], pods: Sequence[Pod]
) -> list[Discrepancy]:
    """Endpoints of hand-written slices that point at a pod (targetRef kind Pod): the pod
    must exist (SVA-EP-015) and every address must be one of its status.podIPs (SVA-EP-014).

    Endpoints without a targetRef (outside the cluster) and targetRefs of other kinds are not
    judged; a targetRef without namespace means the slice's namespace; pods of namespaces other
    than the service's are not known here and not judged.
    """
    svc = ref("Service", service.namespace, service.name)
    by_name = {p.name: p for p in pods if p.namespace == service.namespace}
    out: list[Discrepancy] = []
    for s in sorted(slices, key=lambda x: (x.namespace, x.name)):
        if s.address_type not in (IPV4, IPV6):
            continue
        sref = ref("EndpointSlice", s.namespace, s.name)
        for ep in s.endpoints:
            t = ep.target_ref
            if t is None or t.kind != "Pod":
                continue
            namespace = t.namespace or s.namespace
            if namespace != service.namespace:
                continue
            subject = ref("Pod", namespace, t.name)
            pod = by_name.get(t.name)
            if pod is None:
                out.append(
                    discrepancy(
                        "SVA-EP-015",
                        subject,
                        "the targetRef pod exists",
                        f"no pod {t.name} (endpoint {', '.join(ep.addresses)})",
                        (svc, sref),
                        pod=t.name,
                    )
                )
                continue
            wrong = [a for a in ep.addresses if not _same_ip(a, pod.pod_ips)]
            if wrong:
                ips = ", ".join(pod.pod_ips) or "none"
                out.append(
                    discrepancy(
                        "SVA-EP-014",
                        subject,
                        f"addresses among the pod's status.podIPs ({ips})",
                        ", ".join(wrong),
                        (svc, sref),
                        pod=t.name,
                    )
                )
    return out


def _same_ip(address: str, pod_ips: Sequence[str]) -> bool:
    """Whether `address` is one of `pod_ips`, comparing IPs (not spellings: ::1 == 0::1)."""
    try:
        want = ipaddress.ip_address(address)
        return any(want == ipaddress.ip_address(ip) for ip in pod_ips)
    except ValueError:
        return address in pod_ips


def compare_dns(
    service: Service,
    expected: ExpectedDns,
    observation: DnsObservation,
    zone: str = DEFAULT_ZONE,
) -> list[Discrepancy]:
    """Per question: missing records, unexpected records, and NXDOMAIN violations.

    A shared question (the PTR of an endpoint address) is judged on the records naming this
    service's endpoints only: the others name other services with a ready endpoint at the
    same address, each the business of its own audit. When it answers a Service's own name
    instead, the address is some Service's ClusterIP, which CoreDNS answers before (and
    instead of) any endpoint (reverse.go serviceRecordForIP): nothing to judge there."""
    found = dns_findings_by_question(service, expected, observation, zone)
    return [d for q in expected.questions for d in found.get(q, ())]


def dns_findings_by_question(
    service: Service,
    expected: ExpectedDns,
    observation: DnsObservation,
    zone: str = DEFAULT_ZONE,
) -> dict[DnsQuestion, list[Discrepancy]]:
    """compare_dns's findings, by the question they are about (none: not in the mapping)."""
    svc = ref("Service", service.namespace, service.name)
    want_by = by_question(expected.records)
    got_by = by_question(observation.queried)
    out: dict[DnsQuestion, list[Discrepancy]] = {}
    for q in expected.questions:
        want, got = want_by.get(q, set()), got_by.get(q, set())
        shown = answer_text(q, got, observation.nxdomain)
        if q in expected.shared:
            about = _shared_answer_about(got, service, zone)
            if about is None:
                continue
            got = about
        found = _question_findings(svc, q, want, got, shown, expected, observation)
        if found:
            out[q] = found
    return out


def records_about(
    service: Service,
    expected: ExpectedDns,
    queried: frozenset[DnsRecord],
    zone: str = DEFAULT_ZONE,
) -> frozenset[DnsRecord]:
    """The answers that are about this service, as compare_dns judges them: an answer to a
    shared question (an endpoint address's PTR) counts only for the records naming this
    service, and not at all when it names a Service (the address is a ClusterIP). What a
    report shows as observed: another service sharing the address changes nothing here."""
    out: set[DnsRecord] = set()
    for q, got in by_question(queried).items():
        if q in expected.shared:
            got = _shared_answer_about(got, service, zone) or set()
        out |= got
    return frozenset(out)


def _shared_answer_about(got: set[DnsRecord], service: Service, zone: str) -> set[DnsRecord] | None:
    """The records of a shared answer (an endpoint address's PTR) naming `service`'s
    endpoints; None when the answer names a Service itself (the address is a ClusterIP,
    which CoreDNS answers instead of any endpoint): nothing there to judge."""
    if any(is_service_name(r.data, zone) for r in got):
        return None
    return {r for r in got if names_service(r.data, service, zone)}


def by_question(records: frozenset[DnsRecord]) -> dict[DnsQuestion, set[DnsRecord]]:
    """Records grouped by the question (name, type) they answer."""
    out: dict[DnsQuestion, set[DnsRecord]] = {}
    for r in records:
        out.setdefault(r.question, set()).add(r)
    return out


def answer_text(q: DnsQuestion, got: set[DnsRecord], nxdomain: frozenset[DnsQuestion]) -> str:
    """How an answer reads in a finding: NXDOMAIN, its records' data, or `no records`."""
    if q in nxdomain:
        return "NXDOMAIN"
    return ", ".join(sorted(r.data for r in got)) or "no records"


def _question_findings(
    svc: str,
    q: DnsQuestion,
    want: set[DnsRecord],
    got: set[DnsRecord],
    shown: str,
    expected: ExpectedDns,
    observation: DnsObservation,
) -> list[Discrepancy]:
    """Missing records (001), then NXDOMAIN violated (003) or unexpected records (002)."""
    out = [
        discrepancy(
            "SVA-DNS-001", svc, f"{r.name} {r.type} {r.data}", f"{q.name} {q.type}: {shown}"
        )
        for r in sorted(want - got)
    ]
    if q in expected.nxdomain:
        if got or q not in observation.nxdomain:
            out.append(
                discrepancy(
                    "SVA-DNS-003",
                    svc,
                    f"{q.name} {q.type}: NXDOMAIN",
                    f"{q.name} {q.type}: {shown}",
                )
            )
        return out
    out += [
        discrepancy(
            "SVA-DNS-002", svc, f"{q.name} {q.type}: no {r.data}", f"{r.name} {r.type} {r.data}"
        )
        for r in sorted(got - want)
    ]
    return out


def compare_env(
    service: Service,
    pod_ref: str,
    container: Container,
    senv: ServiceEnv,
    observed: Mapping[str, str],
    pod: str | None = None,
) -> list[Discrepancy]:
    """The service's variables in one container's observed environment.

    A value mismatch in a container with envFrom may come from a ConfigMap/Secret key the
    core does not see, so it is reported as SVA-ENV-006 (info), never as a failure.
    """
    svc = ref("Service", service.namespace, service.name)
    subject = f"{pod_ref} container {container.name}"
    pod_name = pod if pod is not None else pod_ref.rsplit("/", 1)[-1]
    wanted = container_env(container, senv).env
    out: list[Discrepancy] = []
    for name, _ in service_variables(service):
        if name not in wanted:
            continue  # shadowed by an explicit variable: not the kubelet's to set
        if name not in observed:
            out.append(
                discrepancy(
                    "SVA-ENV-010",
                    subject,
                    f"{name}={wanted[name]}",
                    "unset",
                    (svc,),
                    pod=pod_name,
                    container=container.name,
                )
            )
        elif observed[name] not in senv.possible_values(name):
            code = "SVA-ENV-006" if container.env_from else "SVA-ENV-011"
            out.append(
                discrepancy(
                    code,
                    subject,
                    f"{name}={wanted[name]}",
                    f"{name}={observed[name]}",
                    (svc,),
                    pod=pod_name,
                    container=container.name,
                )
            )
    return out
