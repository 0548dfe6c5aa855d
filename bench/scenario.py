"""The scale scenario: S services and P pods (about 1 Service per 5 pods) over N namespaces of
40 services each, with a realistic mix and a few deliberate mistakes. Deterministic: the same
size always gives the same objects.

Per 40 services of a namespace:
  22 plain      ClusterIP, port 80 -> targetPort 8080
   6 multiport  ports web->targetPort "http", metrics->"metrics", grpc 9000->9000
   3 headless   clusterIP None, named port
   3 nodeport   NodePort 80 -> 8080
   2 external   ExternalName (no selector, no pods)
   2 notready   plain, one of its pods reports Ready=False
   1 typo       MISTAKE: the selector has a typo, matches no pod
   1 badport    MISTAKE: targetPort "web", a name no container declares
Pods are bare pods (no controller: a deleted pod stays deleted), pinned to the kwok nodes with
nodeSelector type=kwok; kwok makes them Running with an IP from their node's podCIDR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

SERVICES_PER_NAMESPACE = 40
PODS_PER_SERVICE = 5
PATTERN = (
    ["plain"] * 22
    + ["multiport"] * 6
    + ["headless"] * 3
    + ["nodeport"] * 3
    + ["external"] * 2
    + ["notready"] * 2
    + ["typo"]
    + ["badport"]
)
# Interleave the kinds so that a namespace cut short still has a mix.
PATTERN = [PATTERN[(i * 17) % len(PATTERN)] for i in range(len(PATTERN))]
assert sorted(PATTERN) == sorted(
    ["plain"] * 22
    + ["multiport"] * 6
    + ["headless"] * 3
    + ["nodeport"] * 3
    + ["external"] * 2
    + ["notready"] * 2
    + ["typo"]
    + ["badport"]
)
IMAGE = "svcaudit.local/simpleservice:0.5.0"


@dataclass
class ServiceSpec:
    namespace: str
    name: str
    kind: str
    pods: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Scenario:
    pods_wanted: int
    namespaces: list[str]
    services: list[ServiceSpec]
    service_objects: list[Obj]
    pod_objects: list[Obj]
    not_ready: list[tuple[str, str]]  # (namespace, pod)

    @property
    def pod_count(self) -> int:
        return len(self.pod_objects)

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for s in self.services:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        return {
            "pods": self.pod_count,
            "services": len(self.services),
            "namespaces": len(self.namespaces),
            "serviceKinds": kinds,
            "notReadyPods": len(self.not_ready),
            "mistakes": kinds.get("typo", 0) + kinds.get("badport", 0),
        }

    def targets(self) -> list[ServiceSpec]:
        """Healthy plain services with at least 3 pods, spread over the namespaces: the
        subjects of the detection-latency trials (round-robin over namespaces)."""
        by_ns: dict[str, list[ServiceSpec]] = {}
        for s in self.services:
            if s.kind == "plain" and len(s.pods) >= 3:
                by_ns.setdefault(s.namespace, []).append(s)
        out: list[ServiceSpec] = []
        lists = list(by_ns.values())
        i = 0
        while any(lists):
            lst = lists[i % len(lists)]
            if lst:
                out.append(lst.pop(0))
            i += 1
        return out


def pods_per_service(index: int) -> int:
    return 3 + (index * 7) % 5  # 3..7, mean 5


def service_object(spec: ServiceSpec) -> Obj:
    meta = {"name": spec.name, "namespace": spec.namespace, "labels": {"bench": "svcaudit"}}
    selector = {"app": spec.name}
    body: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": meta}
    port = {"name": "web", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    k = spec.kind
    if k in ("plain", "notready"):
        body["spec"] = {"selector": selector, "ports": [port]}
    elif k == "multiport":
        body["spec"] = {
            "selector": selector,
            "ports": [
                {"name": "web", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": "metrics"},
                {"name": "grpc", "port": 9000, "targetPort": 9000},
            ],
        }
    elif k == "headless":
        body["spec"] = {
            "clusterIP": "None",
            "selector": selector,
            "ports": [{"name": "web", "port": 8080, "targetPort": "http"}],
        }
    elif k == "nodeport":
        body["spec"] = {"type": "NodePort", "selector": selector, "ports": [port]}
    elif k == "external":
        body["spec"] = {"type": "ExternalName", "externalName": f"{spec.name}.example.invalid"}
    elif k == "typo":
        body["spec"] = {"selector": {"app": spec.name + "x"}, "ports": [port]}
    elif k == "badport":
        body["spec"] = {
            "selector": selector,
            "ports": [{"name": "web", "port": 80, "targetPort": "web"}],
        }
    else:
        raise ValueError(k)
    return body


def pod_object(namespace: str, name: str, app: str, kind: str) -> Obj:
    ports = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    if kind == "multiport":
        ports += [
            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
            {"containerPort": 9000, "protocol": "TCP"},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app, "bench": "svcaudit"},
        },
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "containers": [
                {
                    "name": "app",
                    "image": IMAGE,
                    "ports": ports,
                    "env": [{"name": "ROLE", "value": kind}],
                }
            ],
            "enableServiceLinks": True,
        },
    }


def generate(pods: int) -> Scenario:
    n_services = max(1, round(pods / PODS_PER_SERVICE))
    n_ns = -(-n_services // SERVICES_PER_NAMESPACE)
    namespaces = [f"bench-{i:03d}" for i in range(n_ns)]
    specs: list[ServiceSpec] = []
    for i in range(n_services):
        ns = namespaces[i // SERVICES_PER_NAMESPACE]
        j = i % SERVICES_PER_NAMESPACE
        kind = PATTERN[j]
        specs.append(ServiceSpec(ns, f"svc-{j:02d}-{kind}", kind))
    # pods: a pattern of 3..7 per selector-bearing service, then trimmed/padded to exactly P
    with_pods = [s for s in specs if s.kind != "external"]
    counts = [pods_per_service(i) for i in range(len(with_pods))]
    diff = pods - sum(counts)
    i = 0
    while diff != 0 and with_pods:
        idx = i % len(with_pods)
        if diff > 0:
            counts[idx] += 1
            diff -= 1
        elif counts[idx] > 3:
            counts[idx] -= 1
            diff += 1
        i += 1
        if i > 100 * len(with_pods):
            break
    pod_objects: list[Obj] = []
    not_ready: list[tuple[str, str]] = []
    for spec, count in zip(with_pods, counts, strict=True):
        for k in range(count):
            name = f"{spec.name}-{k}"
            spec.pods.append(name)
            pod_objects.append(pod_object(spec.namespace, name, spec.name, spec.kind))
        if spec.kind == "notready":
            not_ready.append((spec.namespace, spec.pods[0]))
    return Scenario(
        pods_wanted=pods,
        namespaces=namespaces,
        services=specs,
        service_objects=[service_object(s) for s in specs],
        pod_objects=pod_objects,
        not_ready=not_ready,
    )
