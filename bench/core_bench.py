"""Micro-benchmark of the pure core (not a test): audit_service for every service.

Builds plain API dicts (services, pods, their EndpointSlices, nodes) in memory, turns them
into views once, then times `audit_service` for every service of every namespace the way
the operator calls it: `pods` = the pods of the service's namespace, `env_services` = the
services of that namespace plus default/kubernetes, and the namespace's indexes (PodIndex,
ServiceEnvIndex) built once per namespace and shared; their build time is counted.

    .venv/bin/python -m bench core                 # the three standard sizes
    .venv/bin/python -m bench core --size 100x100  # one size (services x pods[/ns])
    .venv/bin/python -m bench core --sample 5      # time 5 services per namespace
                                                   # and extrapolate (slow cores)

It times the svcaudit the interpreter imports: the virtualenv's (installed from operator/),
or another tree's with PYTHONPATH=<tree>/operator.

Pod containers start 2 s after the services are created (inside the default 5 s grace
window), like a script that creates services and pods together: the worst case for the
environment audit (every container is "possibly stale" for every service). With
`--started-after 60` they start a minute later, the usual case (every container current).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from svcaudit.core.audit import AuditInputs, NamespaceIndexes, audit_service
from svcaudit.core.envvars import ServiceEnvIndex
from svcaudit.core.model import EndpointSlice, Node, Pod, Service
from svcaudit.core.podindex import PodIndex

CREATED = "2025-01-01T10:00:00Z"
CREATED_AT = datetime(2025, 1, 1, 10, tzinfo=UTC)
NOW = datetime(2025, 1, 2, tzinfo=UTC)
NODES = 10
# (label, services, pods, namespaces)
SIZES = {
    "100x100": (100, 100, 1),
    "200x1000": (200, 1000, 1),
    "2000x10000/50ns": (2000, 10000, 50),
}


def _ip(base: str, i: int) -> str:
    return f"{base}.{i // 250}.{i % 250 + 1}"


def build(
    services: int, pods: int, namespaces: int, started_after: float = 2.0
) -> tuple[dict[str, list[Service]], dict[str, list[Pod]], list[EndpointSlice], dict[str, Node]]:
    svc_dicts: list[dict[str, Any]] = []
    pod_dicts: list[dict[str, Any]] = []
    slice_dicts: list[dict[str, Any]] = []
    per_ns_s = services // namespaces
    started = (CREATED_AT + timedelta(seconds=started_after)).isoformat().replace("+00:00", "Z")
    per_ns_p = pods // namespaces
    gi = 0
    for n in range(namespaces):
        ns = f"ns-{n}"
        for j in range(per_ns_s):
            svc_dicts.append(
                {
                    "metadata": {
                        "name": f"svc-{j}",
                        "namespace": ns,
                        "uid": f"u-{ns}-{j}",
                        "creationTimestamp": CREATED,
                    },
                    "spec": {
                        "type": "ClusterIP",
                        "selector": {"app": f"app-{j}"},
                        "clusterIP": _ip("10.96", n * per_ns_s + j),
                        "ports": [
                            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                            {"name": "metrics", "port": 9090, "protocol": "TCP"},
                        ],
                    },
                }
            )
        members: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
        for i in range(per_ns_p):
            j = i % per_ns_s
            ip = _ip("10.244", gi)
            gi += 1
            node = f"node-{i % NODES}"
            members[j].append((f"pod-{i}", ip, node))
            pod_dicts.append(
                {
                    "metadata": {
                        "name": f"pod-{i}",
                        "namespace": ns,
                        "labels": {"app": f"app-{j}"},
                    },
                    "spec": {
                        "nodeName": node,
                        "containers": [
                            {
                                "name": "app",
                                "ports": [
                                    {"containerPort": 8080, "protocol": "TCP"},
                                    {"containerPort": 9090, "protocol": "TCP"},
                                ],
                                "env": [{"name": "MODE", "value": "bench"}],
                            }
                        ],
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": ip,
                        "podIPs": [{"ip": ip}],
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [
                            {"name": "app", "state": {"running": {"startedAt": started}}}
                        ],
                    },
                }
            )
        for j, eps in members.items():
            slice_dicts.append(
                {
                    "metadata": {
                        "name": f"svc-{j}-abcde",
                        "namespace": ns,
                        "labels": {
                            "kubernetes.io/service-name": f"svc-{j}",
                            "endpointslice.kubernetes.io/managed-by": (
                                "endpointslice-controller.k8s.io"
                            ),
                        },
                    },
                    "addressType": "IPv4",
                    "ports": [
                        {"name": "http", "port": 8080, "protocol": "TCP"},
                        {"name": "metrics", "port": 9090, "protocol": "TCP"},
                    ],
                    "endpoints": [
                        {
                            "addresses": [ip],
                            "conditions": {"ready": True, "serving": True, "terminating": False},
                            "nodeName": node,
                            "targetRef": {"kind": "Pod", "namespace": ns, "name": name},
                        }
                        for name, ip, node in eps
                    ],
                }
            )
    master = Service.from_api(
        {
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "creationTimestamp": CREATED,
            },
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
        }
    )
    by_ns: dict[str, list[Service]] = defaultdict(list)
    for s in (Service.from_api(d) for d in svc_dicts):
        by_ns[s.namespace].append(s)
    for ns_services in by_ns.values():
        ns_services.append(master)
    pods_by_ns: dict[str, list[Pod]] = defaultdict(list)
    for p in (Pod.from_api(d) for d in pod_dicts):
        pods_by_ns[p.namespace].append(p)
    nodes = {f"node-{k}": Node.from_api({"metadata": {"name": f"node-{k}"}}) for k in range(NODES)}
    return by_ns, pods_by_ns, [EndpointSlice.from_api(d) for d in slice_dicts], nodes


def run(
    label: str, services: int, pods: int, namespaces: int, sample: int | None, started: float
) -> None:
    t0 = time.perf_counter()
    by_ns, pods_by_ns, slices, nodes = build(services, pods, namespaces, started)
    slices_of: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
    for s in slices:
        slices_of[(s.namespace, s.service_name)].append(s)
    built = time.perf_counter() - t0
    times: list[float] = []
    index_time = 0.0
    findings = 0
    total_audits = 0
    for ns, env_services in sorted(by_ns.items()):
        own = [s for s in env_services if s.namespace == ns]
        total_audits += len(own)
        t = time.perf_counter()
        shared = NamespaceIndexes(PodIndex(pods_by_ns[ns]), ServiceEnvIndex(env_services))
        index_time += time.perf_counter() - t  # once per namespace, as the operator does
        for svc in own[:sample] if sample else own:
            t = time.perf_counter()
            inputs = AuditInputs(
                svc, pods_by_ns[ns], slices_of[svc.key], nodes, env_services, indexes=shared
            )
            r = audit_service(inputs, None, NOW)
            times.append(time.perf_counter() - t)
            findings += len(r.discrepancies)
    total = sum(times) + index_time
    per = total / len(times)
    extra = ""
    if sample and len(times) < total_audits:
        extra = f", extrapolated to all {total_audits}: {per * total_audits:.2f} s"
    print(
        f"{label:>16}: {len(times)} audits in {total:.2f} s ({per * 1000:.2f} ms/audit, "
        f"max {max(times) * 1000:.2f} ms{extra}); {findings} findings; views built in "
        f"{built:.2f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench core", description="micro-benchmark of the pure core (not a test)"
    )
    ap.add_argument("--size", action="append", choices=sorted(SIZES), help="default: all")
    ap.add_argument("--sample", type=int, help="audit only N services per namespace")
    ap.add_argument(
        "--started-after",
        type=float,
        default=2.0,
        help="seconds from the services' creation to the containers' start (default 2)",
    )
    args = ap.parse_args(argv)
    for label in args.size or list(SIZES):
        run(label, *SIZES[label], args.sample, args.started_after)
    return 0
