"""User mistakes visible in the objects alone (no observation needed).

These explain *why* a service routes nowhere or a pod sees the wrong variables, as opposed
to compare.py, which reports where the cluster disagrees with the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

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
    container_env,
    freshness,
    service_env,
    service_variables,
    visible_services,
)
from svcaudit.core.model import Pod, Service


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
) -> tuple[list[Discrepancy], list[str]]:
    """Predicted environment problems involving `service`'s variables.

    Returns (findings, unknown_reasons). Containers in `observed_containers` (pod, container)
    are judged by compare.compare_env instead of by the start-time prediction.
    """
    names = {n for n, _ in service_variables(service)}
    if not names:
        return [], []
    services = with_service(env_services, service)
    svc = service_ref(service)
    out: list[Discrepancy] = []
    unknown: list[str] = []
    ns_env = service_env(service.namespace, True, services)
    for col in ns_env.collisions:
        keys = [k for k, _ in col.sources]
        if service.key in keys:
            detail = "; ".join(f"{ns}/{n}={v}" for (ns, n), v in col.sources)
            others = tuple(ref("Service", ns, n) for ns, n in keys if (ns, n) != service.key)
            out.append(
                discrepancy("SVA-ENV-003", svc, f"{col.name} from one service", detail, others)
            )
    for pod in sorted(pods, key=lambda p: p.key):
        if not sees(pod, service, services):
            continue
        senv = service_env(pod.namespace, pod.enable_service_links, services)
        for container in pod.all_containers:
            subject = f"{pod_ref(pod)} container {container.name}"
            cenv = container_env(container, senv)
            for sh in cenv.shadowed:
                if sh.name not in names or sh.service != service.key:
                    continue
                shown = "<valueFrom>" if sh.explicit_value is None else sh.explicit_value
                code = (
                    "SVA-ENV-004"
                    if sh.explicit_value not in (None, sh.service_value)
                    else ("SVA-ENV-005")
                )
                out.append(
                    discrepancy(
                        code,
                        subject,
                        f"{sh.name}={sh.service_value}",
                        f"{sh.name}={shown}",
                        (svc,),
                        pod=pod.name,
                        container=container.name,
                    )
                )
            if cenv.unresolved_env_from:
                srcs = ", ".join(f"{e.kind}/{e.name}" for e in cenv.unresolved_env_from)
                out.append(
                    discrepancy(
                        "SVA-ENV-006",
                        subject,
                        f"no envFrom key shadows {service.name}'s variables",
                        f"envFrom {srcs}",
                        (svc,),
                        pod=pod.name,
                        container=container.name,
                    )
                )
            if (pod.name, container.name) in observed_containers:
                continue
            if not any(n in cenv.env for n in names):
                continue  # every variable of the service is explicitly set
            fresh = freshness(pod, container.name, service, grace)
            started = (
                pod.container_states[container.name].started_at
                if fresh not in (Freshness.NOT_RUNNING,)
                else None
            )
            created = service.creation_timestamp
            if fresh is Freshness.STALE:
                out.append(
                    discrepancy(
                        "SVA-ENV-001",
                        subject,
                        f"started after {svc} was created ({_t(created)})",
                        f"started {_t(started)}",
                        (svc,),
                        pod=pod.name,
                        container=container.name,
                    )
                )
            elif fresh in (Freshness.UNCERTAIN, Freshness.SPEC_CHANGED):
                when = created if fresh is Freshness.UNCERTAIN else service.env_spec_touched_at
                what = "created" if fresh is Freshness.UNCERTAIN else "spec last touched"
                out.append(
                    discrepancy(
                        "SVA-ENV-002",
                        subject,
                        f"started after {svc} {what} ({_t(when)})",
                        f"started {_t(started)}",
                        (svc,),
                        pod=pod.name,
                        container=container.name,
                    )
                )
            elif fresh is Freshness.UNKNOWN:
                unknown.append(
                    f"{subject}: running without startedAt"
                    if started is None
                    else f"{svc}: no creationTimestamp"
                )
    return out, unknown


def _t(value: object) -> str:
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else "unknown"
