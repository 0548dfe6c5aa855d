"""User mistakes visible in the objects alone (no observation needed).

These explain *why* a service routes nowhere or a pod sees the wrong variables, as opposed
to compare.py, which reports where the cluster disagrees with the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import timedelta

from svcaudit.core.access import missing_node_ports
from svcaudit.core.codes import Discrepancy, discrepancy, ref
from svcaudit.core.endpoints import (
    ExpectedEndpoints,
    is_candidate_phase,
    port_containers,
    resolve_target_port,
    selects,
)
from svcaudit.core.envvars import (
    Freshness,
    ServiceEnv,
    ServiceEnvIndex,
    freshness,
    service_variables,
    visible_services,
)
from svcaudit.core.model import Container, Pod, Service
from svcaudit.core.podindex import PodIndex


def service_ref(service: Service) -> str:
    return ref("Service", service.namespace, service.name)


def pod_ref(pod: Pod) -> str:
    return ref("Pod", pod.namespace, pod.name)


def endpoint_findings(
    service: Service, pods: Sequence[Pod], expected: ExpectedEndpoints
) -> list[Discrepancy]:
    """Selector, targetPort and readiness mistakes of a managed service."""
    svc = service_ref(service)
    out: list[Discrepancy] = []
    if not service.is_external_name and not service.cluster_ip:
        out.append(discrepancy("SVA-EP-111", svc, "spec.clusterIP allocated", "empty"))
    unallocated = missing_node_ports(service)
    if unallocated:
        ports = ", ".join(f"{sp.name or sp.port}/{sp.protocol}" for sp in unallocated)
        out.append(
            discrepancy(
                "SVA-EP-112",
                svc,
                f"spec.ports[].nodePort allocated ({service.type})",
                f"none for {ports}",
            )
        )
    if not expected.managed:
        return out
    selector = ",".join(f"{k}={v}" for k, v in sorted(service.selector.items()))
    if not expected.selected_pods:
        out.append(discrepancy("SVA-EP-101", svc, f"pods matching {selector}", "none"))
        return out
    if not any(ep.conditions.ready for ep in expected.endpoints):
        out.append(
            discrepancy(
                "SVA-EP-107",
                svc,
                "at least one ready endpoint",
                f"0 ready of {len(expected.selected_pods)} selected pod(s)",
            )
        )
    live = sorted(
        (p for p in pods if selects(service, p) and is_candidate_phase(p)), key=lambda p: p.name
    )
    if live:
        out.extend(_target_port_findings(service, live))
    out.extend(
        discrepancy(
            "SVA-EP-109",
            ref("Pod", service.namespace, name),
            "status.podIPs",
            "none",
            (svc,),
            pod=name,
        )
        for name in expected.pods_without_ip
    )
    out.extend(
        discrepancy(
            "SVA-EP-110",
            ref("Pod", service.namespace, name),
            "node exists",
            "node not found",
            (svc,),
            pod=name,
        )
        for name in expected.pods_node_missing
    )
    return out


def _target_port_findings(service: Service, pods: Sequence[Pod]) -> list[Discrepancy]:
    svc = service_ref(service)
    out: list[Discrepancy] = []
    for sp in service.ports:
        label = f"port {sp.name or sp.port}/{sp.protocol}"
        if isinstance(sp.target_port, str):
            missing = [p for p in pods if resolve_target_port(p, sp) is None]
            if len(missing) == len(pods):
                other = sorted(
                    {
                        cp.protocol
                        for p in pods
                        for c in port_containers(p)
                        for cp in c.ports
                        if cp.name == sp.target_port
                    }
                )
                want = f"containerPort named {sp.target_port!r} {sp.protocol} ({label})"
                if other:
                    out.append(discrepancy("SVA-EP-103", svc, want, "/".join(other)))
                else:
                    out.append(discrepancy("SVA-EP-102", svc, want, "not declared by any pod"))
            elif missing:
                out.append(
                    discrepancy(
                        "SVA-EP-104",
                        svc,
                        f"containerPort named {sp.target_port!r} {sp.protocol} in every pod",
                        f"missing in {len(missing)} of {len(pods)} pod(s)",
                        tuple(pod_ref(p) for p in missing),
                    )
                )
        else:
            declared = {
                (cp.container_port, cp.protocol)
                for p in pods
                for c in p.all_containers
                for cp in c.ports
            }
            want = f"containerPort {sp.target_port}/{sp.protocol} ({label})"
            if not declared:
                out.append(discrepancy("SVA-EP-106", svc, want, "no container ports declared"))
            elif (sp.target_port, sp.protocol) not in declared:
                seen = ", ".join(f"{n}/{pr}" for n, pr in sorted(declared))
                out.append(discrepancy("SVA-EP-105", svc, want, f"declared: {seen}"))
    return out


def with_service(services: Sequence[Service], service: Service) -> list[Service]:
    """env_services with `service` itself in it (replacing any copy with the same key)."""
    return [s for s in services if s.key != service.key] + [service]


def sees(pod: Pod, service: Service, services: Sequence[Service]) -> bool:
    """Whether the kubelet gives `pod` the variables of `service`."""
    visible = visible_services(pod.namespace, pod.enable_service_links, services)
    return any(s.key == service.key for s in visible)


def env_findings(
    service: Service,
    pods: Sequence[Pod],
    env_services: Sequence[Service],
    grace: timedelta,
    observed_containers: frozenset[tuple[str, str]] = frozenset(),
    index: ServiceEnvIndex | None = None,
    pod_index: PodIndex | None = None,
) -> tuple[list[Discrepancy], list[str]]:
    """Predicted environment problems involving `service`'s variables.

    Returns (findings, unknown_reasons). Containers in `observed_containers` (pod, container)
    are judged by compare.compare_env instead of by the start-time prediction. Possibly
    stale containers (SVA-ENV-002) are summarised in one finding per service and cause
    (see summarise_possibly_stale). `index`: a ServiceEnvIndex of
    `with_service(env_services, service)` to reuse (built here when None); `pod_index`: a
    PodIndex of `pods` to reuse (likewise).

    Cost: the namespace's service environment is built once (per enableServiceLinks value
    met); then only the containers PodIndex.env_candidates names are visited, each costing
    O(its explicit env + the service's variables).
    """
    per_container, unknown = env_container_findings(
        service, pods, env_services, grace, observed_containers, index, pod_index
    )
    return summarise_possibly_stale(service, per_container, grace), unknown


def env_container_findings(
    service: Service,
    pods: Sequence[Pod],
    env_services: Sequence[Service],
    grace: timedelta,
    observed_containers: frozenset[tuple[str, str]] = frozenset(),
    index: ServiceEnvIndex | None = None,
    pod_index: PodIndex | None = None,
) -> tuple[list[Discrepancy], list[str]]:
    """env_findings before the SVA-ENV-002 summary: one finding per pod x container."""
    names = {n for n, _ in service_variables(service)}
    if not names:
        return [], []
    envs = index if index is not None else ServiceEnvIndex(with_service(env_services, service))
    rules = _EnvRules.of(service, names, grace)
    out = _collision_findings(service, envs, rules.svc)
    unknown: list[str] = []
    containers = (pod_index or PodIndex(pods)).env_candidates(
        names, service.creation_timestamp, grace, service.env_spec_touched_at
    )
    for slot in containers:
        pod, container = slot.pod, slot.container
        if not envs.sees(pod, service.key):
            continue
        senv = envs.for_pod(pod)
        explicit = {e.name: e.value for e in container.env}
        out += rules.explicit_findings(pod, container, senv, explicit)
        if container.env_from:
            out.append(rules.env_from_finding(pod, container))
        if (pod.name, container.name) in observed_containers:
            continue  # judged against its real environment (compare.compare_env)
        if not any(n in senv.values and n not in explicit for n in names):
            continue  # every variable of the service is explicitly set
        found, why = rules.start_finding(pod, container)
        if found is not None:
            out.append(found)
        if why is not None:
            unknown.append(why)
    return out, unknown


def _collision_findings(service: Service, envs: ServiceEnvIndex, svc: str) -> list[Discrepancy]:
    """Variables `service` shares with another service of different value (SVA-ENV-003):
    the kubelet keeps one, so some pod sees the other's."""
    out: list[Discrepancy] = []
    for col in envs.collisions(service.namespace):
        keys = [k for k, _ in col.sources]
        if service.key in keys:
            detail = "; ".join(f"{ns}/{n}={v}" for (ns, n), v in col.sources)
            others = tuple(ref("Service", ns, n) for ns, n in keys if (ns, n) != service.key)
            out.append(
                discrepancy("SVA-ENV-003", svc, f"{col.name} from one service", detail, others)
            )
    return out


@dataclass(frozen=True, slots=True)
class _EnvRules:
    """One service's environment rules, prepared once per audit and applied to each
    candidate container."""

    service: Service
    svc: str  # its reference
    names: Set[str]  # its variables
    grace: timedelta
    # the `expected` of SVA-ENV-001, and of SVA-ENV-002 by cause, formatted once per audit
    expect_stale: str
    expect_created: str
    expect_touched: str

    @classmethod
    def of(cls, service: Service, names: Set[str], grace: timedelta) -> _EnvRules:
        svc = service_ref(service)
        created = _t(service.creation_timestamp)
        return cls(
            service,
            svc,
            names,
            grace,
            f"started after {svc} was created ({created})",
            f"started after {svc} created ({created})",
            f"started after {svc} spec last touched ({_t(service.env_spec_touched_at)})",
        )

    def explicit_findings(
        self, pod: Pod, container: Container, senv: ServiceEnv, explicit: Mapping[str, str | None]
    ) -> list[Discrepancy]:
        """Explicit variables hiding the service's (SVA-ENV-004 another value, SVA-ENV-005 the
        same or valueFrom): container_env(container, senv) restricted to the service's names,
        the kubelet's precedence without copying the whole map."""
        out: list[Discrepancy] = []
        for name in sorted(explicit):
            if name not in self.names or name not in senv.values:
                continue
            if senv.sources[name][-1][0] != self.service.key:
                continue  # hidden value is another (colliding) service's
            value, explicit_value = senv.values[name], explicit[name]
            shown = "<valueFrom>" if explicit_value is None else explicit_value
            code = "SVA-ENV-004" if explicit_value not in (None, value) else "SVA-ENV-005"
            out.append(
                _container_finding(
                    code, pod, container, self.svc, f"{name}={value}", f"{name}={shown}"
                )
            )
        return out

    def env_from_finding(self, pod: Pod, container: Container) -> Discrepancy:
        """envFrom keys the core cannot see may shadow the service's variables (SVA-ENV-006)."""
        srcs = ", ".join(f"{e.kind}/{e.name}" for e in container.env_from)
        shadows = f"no envFrom key shadows {self.service.name}'s variables"
        return _container_finding(
            "SVA-ENV-006", pod, container, self.svc, shadows, f"envFrom {srcs}"
        )

    def start_finding(
        self, pod: Pod, container: Container
    ) -> tuple[Discrepancy | None, str | None]:
        """(finding, why unknown) from the container's start time: the kubelet sets the
        variables at start, so a container started before the service lacks them (SVA-ENV-001),
        one started near its creation or before a spec change may (SVA-ENV-002), and one
        without a start time cannot be judged."""
        svc = self.svc
        fresh = freshness(pod, container.name, self.service, self.grace)
        started = (
            pod.container_states[container.name].started_at
            if fresh not in (Freshness.NOT_RUNNING,)
            else None
        )
        if fresh is Freshness.STALE:
            return _container_finding(
                "SVA-ENV-001", pod, container, svc, self.expect_stale, f"started {_t(started)}"
            ), None
        if fresh in (Freshness.UNCERTAIN, Freshness.SPEC_CHANGED):
            expected = self.expect_created if fresh is Freshness.UNCERTAIN else self.expect_touched
            return _container_finding(
                "SVA-ENV-002", pod, container, svc, expected, f"started {_t(started)}"
            ), None
        if fresh is Freshness.UNKNOWN:
            return None, (
                f"{pod_ref(pod)} container {container.name}: running without startedAt"
                if started is None
                else f"{svc}: no creationTimestamp"
            )
        return None, None


def _container_finding(
    code: str, pod: Pod, container: Container, svc: str, expected: str, observed: str
) -> Discrepancy:
    """A per-container environment finding about the service `svc` (its reference)."""
    return discrepancy(
        code,
        f"{pod_ref(pod)} container {container.name}",
        expected,
        observed,
        (svc,),
        pod=pod.name,
        container=container.name,
    )


POSSIBLY_STALE_EXAMPLES = 5  # containers named in a SVA-ENV-002 summary


def summarise_possibly_stale(
    service: Service, findings: Sequence[Discrepancy], grace: timedelta
) -> list[Discrepancy]:
    """Replace the per-container SVA-ENV-002 findings by one per cause (the `expected` text:
    created within the grace window, or spec touched after the start), about the Service,
    listing the container and pod counts and the first POSSIBLY_STALE_EXAMPLES containers
    (pod order) with their start times; `related` names those pods. Other findings keep
    their order; the summaries follow them."""
    svc = service_ref(service)
    kept: list[Discrepancy] = []
    groups: dict[str, list[Discrepancy]] = {}
    for d in findings:
        if d.code == "SVA-ENV-002" and d.pod is not None:
            groups.setdefault(d.expected, []).append(d)
        else:
            kept.append(d)
    window = f"{grace.total_seconds():g}s"
    for expected, group in groups.items():
        pods = list(dict.fromkeys(d.pod for d in group if d.pod is not None))
        shown = group[:POSSIBLY_STALE_EXAMPLES]
        examples = ", ".join(f"{d.pod}/{d.container} {d.observed}" for d in shown)
        more = len(group) - len(shown)
        cause = (
            f"within the {window} grace window of its creation"
            if "created (" in expected
            else "before its last possible spec change"
        )
        observed = (
            f"{len(group)} container(s) in {len(pods)} pod(s) started {cause}: {examples}"
            + (f" and {more} more" if more else "")
        )
        related = tuple(dict.fromkeys(ref("Pod", service.namespace, d.pod) for d in shown if d.pod))
        kept.append(
            discrepancy(
                "SVA-ENV-002",
                svc,
                f"running containers {expected}",
                observed,
                related,
            )
        )
    return kept


def _t(value: object) -> str:
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else "unknown"
