"""Expected vs observed: EndpointSlices, DNS answers and container environments.

Slices compare as sets of endpoints (identity = addresses + targetRef); slice names,
counts and order are ignored, but each endpoint's port set (the controller's grouping)
is checked. DNS compares record sets per question. Env compares exact values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from svcaudit.core.codes import Discrepancy, discrepancy, ref
from svcaudit.core.dns import DnsQuestion, DnsRecord, ExpectedDns
from svcaudit.core.endpoints import CONTROLLER_NAME, ExpectedEndpoints, address_types
from svcaudit.core.envvars import ServiceEnv, container_env, service_variables
from svcaudit.core.model import (
    IPV4,
    IPV6,
    Container,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Service,
)


@dataclass(frozen=True, slots=True)
class DnsObservation:
    """Answers the shell got for `expected_dns_questions` (canonical records, see dns.py).

    `nxdomain` lists questions answered NXDOMAIN; `error` set means the observation failed
    (timeouts, SERVFAIL) and the DNS verdict is Unknown.
    """

    queried: frozenset[DnsRecord]
    error: str | None = None
    nxdomain: frozenset[DnsQuestion] = field(default=frozenset())


def _ports(ports: frozenset[EndpointPort] | tuple[EndpointPort, ...]) -> str:
    items = sorted(f"{p.name or '-'}:{p.port}/{p.protocol}" for p in ports)
    return "[" + ", ".join(items) + "]"


def _ep(endpoint: Endpoint) -> str:
    target = (
        f" ({endpoint.target_ref.kind} {endpoint.target_ref.name})" if endpoint.target_ref else ""
    )
    return ",".join(endpoint.addresses) + target


def _cond(endpoint: Endpoint) -> str:
    c = endpoint.conditions
    return f"ready={c.ready} serving={c.serving} terminating={c.terminating}"


Key = tuple[str, tuple[tuple[str, ...], object]]


def compare_slices(
    service: Service,
    expected: ExpectedEndpoints,
    observed: Sequence[EndpointSlice],
    max_endpoints_per_slice: int,
    zones_known: bool = True,
) -> list[Discrepancy]:
    """Differences between the controller's expected output and the observed slices."""
    svc = ref("Service", service.namespace, service.name)
    out: list[Discrepancy] = []
    ip_slices = [s for s in observed if s.address_type in (IPV4, IPV6)]
    if not expected.managed:
        for s in ip_slices:
            if s.managed_by == CONTROLLER_NAME:
                out.append(
                    discrepancy(
                        "SVA-EP-013",
                        ref("EndpointSlice", s.namespace, s.name),
                        "no controller-managed slice",
                        f"managed-by {s.managed_by}",
                        (svc,),
                    )
                )
        return out
    exp: dict[Key, tuple[Endpoint, frozenset[EndpointPort]]] = {}
    for es in expected.slices:
        for ep in es.endpoints:
            exp[(es.address_type, ep.identity)] = (ep, es.port_set)
    obs: dict[Key, list[tuple[Endpoint, frozenset[EndpointPort], str]]] = {}
    families = set(address_types(service))
    for s in ip_slices:
        sref = ref("EndpointSlice", s.namespace, s.name)
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
        if s.address_type not in families and s.managed_by == CONTROLLER_NAME:
            out.append(
                discrepancy("SVA-EP-011", sref, "/".join(sorted(families)), s.address_type, (svc,))
            )
        ports = frozenset(s.ports)
        for ep in s.endpoints:
            obs.setdefault((s.address_type, ep.identity), []).append((ep, ports, sref))
    for key in sorted(exp.keys() - obs.keys(), key=str):
        ep, ports = exp[key]
        out.append(
            discrepancy(
                "SVA-EP-001",
                _target(ep, svc),
                f"{key[0]} {_ep(ep)} {_ports(ports)}",
                "absent",
                (svc,),
            )
        )
    for key in sorted(obs.keys() - exp.keys(), key=str):
        ep, ports, sref = obs[key][0]
        out.append(
            discrepancy("SVA-EP-002", sref, "absent", f"{key[0]} {_ep(ep)} {_ports(ports)}", (svc,))
        )
    for key in sorted(exp.keys() & obs.keys(), key=str):
        want, want_ports = exp[key]
        seen = obs[key]
        got, got_ports, sref = seen[0]
        subject = _target(want, svc)
        related = (svc, sref)
        if len(seen) > 1:
            out.append(
                discrepancy(
                    "SVA-EP-009",
                    subject,
                    "in one slice",
                    ", ".join(sorted(r for _, _, r in seen)),
                    (svc,),
                )
            )
        if want.conditions.ready != got.conditions.ready:
            out.append(discrepancy("SVA-EP-003", subject, _cond(want), _cond(got), related))
        elif want.conditions != got.conditions:
            out.append(discrepancy("SVA-EP-004", subject, _cond(want), _cond(got), related))
        if want_ports != got_ports:
            out.append(
                discrepancy("SVA-EP-005", subject, _ports(want_ports), _ports(got_ports), related)
            )
        if want.hostname != got.hostname:
            out.append(
                discrepancy("SVA-EP-006", subject, str(want.hostname), str(got.hostname), related)
            )
        if want.node_name != got.node_name:
            out.append(
                discrepancy("SVA-EP-007", subject, str(want.node_name), str(got.node_name), related)
            )
        if zones_known and want.zone != got.zone:
            out.append(discrepancy("SVA-EP-008", subject, str(want.zone), str(got.zone), related))
    for family in sorted(families):
        has_expected = any(k[0] == family for k in exp)
        if not has_expected and not any(s.address_type == family for s in ip_slices):
            out.append(discrepancy("SVA-EP-012", svc, f"placeholder {family} slice", "none"))
    return out


def _target(ep: Endpoint, fallback: str) -> str:
    t = ep.target_ref
    return ref(t.kind, t.namespace, t.name) if t else fallback


def compare_dns(
    service: Service, expected: ExpectedDns, observation: DnsObservation
) -> list[Discrepancy]:
    """Per question: missing records, unexpected records, and NXDOMAIN violations."""
    svc = ref("Service", service.namespace, service.name)
    out: list[Discrepancy] = []
    for q in expected.questions:
        want = {r for r in expected.records if r.question == q}
        got = {r for r in observation.queried if r.question == q}
        shown = (
            "NXDOMAIN"
            if q in observation.nxdomain
            else (", ".join(sorted(r.data for r in got)) or "no records")
        )
        for r in sorted(want - got):
            out.append(
                discrepancy(
                    "SVA-DNS-001", svc, f"{r.name} {r.type} {r.data}", f"{q.name} {q.type}: {shown}"
                )
            )
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
            continue
        for r in sorted(got - want):
            out.append(
                discrepancy(
                    "SVA-DNS-002",
                    svc,
                    f"{q.name} {q.type}: no {r.data}",
                    f"{r.name} {r.type} {r.data}",
                )
            )
    return out


def compare_env(
    service: Service,
    pod_ref: str,
    container: Container,
    senv: ServiceEnv,
    observed: Mapping[str, str],
) -> list[Discrepancy]:
    """The service's variables in one container's observed environment.

    A value mismatch in a container with envFrom may come from a ConfigMap/Secret key the
    core does not see, so it is reported as SVA-ENV-006 (info), never as a failure.
    """
    svc = ref("Service", service.namespace, service.name)
    subject = f"{pod_ref} container {container.name}"
    wanted = container_env(container, senv).env
    out: list[Discrepancy] = []
    for name, _ in service_variables(service):
        if name not in wanted:
            continue  # shadowed by an explicit variable: not the kubelet's to set
        if name not in observed:
            out.append(
                discrepancy("SVA-ENV-010", subject, f"{name}={wanted[name]}", "unset", (svc,))
            )
        elif observed[name] not in senv.possible_values(name):
            code = "SVA-ENV-006" if container.env_from else "SVA-ENV-011"
            out.append(
                discrepancy(
                    code, subject, f"{name}={wanted[name]}", f"{name}={observed[name]}", (svc,)
                )
            )
    return out
