"""Expected service environment variables: the kubelet's rules.

Follows pkg/kubelet/envvars/envvars.go (FromServices) and pkg/kubelet/kubelet_pods.go
(getServiceEnvVarMap, makeEnvironmentVariables). The kubelet computes these at every
container start and never refreshes them, hence the freshness rule at the end.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

from svcaudit.core.model import Container, EnvFrom, Pod, Service, ServicePort

MASTER_SERVICE = ("default", "kubernetes")
# What one argv/envp string costs execve(2) besides its bytes and NUL: its pointer in the
# new process's stack (64-bit). fs/exec.c bprm_stack_limits counts both against the limit.
ARG_POINTER_BYTES = 8

ServiceKey = tuple[str, str]


def exec_bytes(name: str, value: str | None) -> int:
    """What `NAME=VALUE` costs in execve's argv+envp budget: UTF-8 bytes, '=', NUL and its
    pointer. A valueFrom variable (value None) is counted without its unknown value."""
    return len(name.encode()) + len((value or "").encode()) + 2 + ARG_POINTER_BYTES


def env_name(name: str) -> str:
    """makeEnvVariableName: upper-case, '-' to '_', nothing else."""
    return name.upper().replace("-", "_")


def _host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: brackets around IPv6 literals only."""
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def service_variables(service: Service) -> tuple[tuple[str, str], ...]:
    """FromServices for one service, in the kubelet's order; () without a cluster IP.

    Memoised on what the variables depend on (name, cluster IP, ports): an audit asks for
    the variables of every service of a namespace, again for every service audited."""
    if not service.has_cluster_ip or not service.ports:
        return ()
    return _variables_cached(service.name, service.cluster_ip, service.ports)


def _variables(name: str, ip: str, ports: tuple[ServicePort, ...]) -> tuple[tuple[str, str], ...]:
    prefix = env_name(name)
    out: list[tuple[str, str]] = [
        (f"{prefix}_SERVICE_HOST", ip),
        (f"{prefix}_SERVICE_PORT", str(ports[0].port)),
    ]
    out.extend((f"{prefix}_SERVICE_PORT_{env_name(p.name)}", str(p.port)) for p in ports if p.name)
    for i, p in enumerate(ports):
        proto = p.protocol.lower()
        url = f"{proto}://{_host_port(ip, p.port)}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))
        base = f"{prefix}_PORT_{p.port}_{p.protocol.upper()}"
        out.extend(
            [
                (base, url),
                (f"{base}_PROTO", proto),
                (f"{base}_PORT", str(p.port)),
                (f"{base}_ADDR", ip),
            ]
        )
    return tuple(out)


# Bounded: a few KB per entry; 8192 covers the 2k-service target several times over.
_variables_cached = lru_cache(maxsize=8192)(_variables)


def visible_services(
    namespace: str, enable_service_links: bool, services: Sequence[Service]
) -> tuple[Service, ...]:
    """getServiceEnvVarMap's choice: default/kubernetes always; the pod's namespace when links
    are enabled, where a local `kubernetes` replaces the default one. Sorted for determinism."""
    chosen: dict[str, Service] = {}
    for svc in sorted(services, key=lambda s: s.key):
        if not svc.has_cluster_ip:
            continue
        if svc.key == MASTER_SERVICE:
            chosen.setdefault(svc.name, svc)
        elif svc.namespace == namespace and enable_service_links:
            chosen[svc.name] = svc
    return tuple(sorted(chosen.values(), key=lambda s: s.key))


@dataclass(frozen=True, slots=True)
class Collision:
    """Several visible services produce one variable name with different values: the
    kubelet's result depends on Go map order, so it is undefined."""

    name: str
    sources: tuple[tuple[ServiceKey, str], ...]


@dataclass(frozen=True, slots=True)
class ServiceEnv:
    """The kubelet's service variable map for one (namespace, enableServiceLinks)."""

    values: Mapping[str, str]  # on collision: the value of the last service by (ns, name)
    sources: Mapping[str, tuple[tuple[ServiceKey, str], ...]]
    services: tuple[Service, ...]

    @property
    def collisions(self) -> tuple[Collision, ...]:
        return tuple(
            Collision(name, src)
            for name, src in sorted(self.sources.items())
            if len({value for _, value in src}) > 1
        )

    def possible_values(self, name: str) -> frozenset[str]:
        return frozenset(value for _, value in self.sources.get(name, ()))


def service_env(
    namespace: str, enable_service_links: bool, services: Sequence[Service]
) -> ServiceEnv:
    visible = visible_services(namespace, enable_service_links, services)
    values: dict[str, str] = {}
    sources: dict[str, list[tuple[ServiceKey, str]]] = {}
    for svc in visible:
        for name, value in service_variables(svc):
            values[name] = value
            sources.setdefault(name, []).append((svc.key, value))
    return ServiceEnv(
        values=dict(sorted(values.items())),
        sources={k: tuple(v) for k, v in sorted(sources.items())},
        services=visible,
    )


class ServiceEnvIndex:
    """service_env() of one services list for each (namespace, enableServiceLinks) asked,
    each built once: what every pod of a namespace sees without re-deriving it per pod.

    Holds no clock and does no I/O; it only memoises pure functions of its input for the
    length of one call (build one per audit, or per snapshot of the services: the shell
    keeps one per namespace until one of its services changes).
    """

    __slots__ = ("_collisions", "_envs", "_keys", "_services", "_sizes")

    def __init__(self, services: Sequence[Service]) -> None:
        self._services = tuple(services)
        self._envs: dict[tuple[str, bool], ServiceEnv] = {}
        self._keys: dict[tuple[str, bool], frozenset[ServiceKey]] = {}
        self._collisions: dict[str, tuple[Collision, ...]] = {}
        self._sizes: dict[tuple[str, bool], tuple[int, int]] = {}

    def env(self, namespace: str, enable_service_links: bool) -> ServiceEnv:
        key = (namespace, enable_service_links)
        senv = self._envs.get(key)
        if senv is None:
            senv = service_env(namespace, enable_service_links, self._services)
            self._envs[key] = senv
            self._keys[key] = frozenset(s.key for s in senv.services)
        return senv

    def for_pod(self, pod: Pod) -> ServiceEnv:
        return self.env(pod.namespace, pod.enable_service_links)

    def collisions(self, namespace: str) -> tuple[Collision, ...]:
        """The collisions of the namespace's environment with service links enabled."""
        found = self._collisions.get(namespace)
        if found is None:
            found = self._collisions[namespace] = self.env(namespace, True).collisions
        return found

    def exec_size(self, namespace: str, enable_service_links: bool) -> tuple[int, int]:
        """(variables, execve bytes) of env(namespace, enable_service_links), computed once:
        every audit of a namespace asks for it (envsize.py)."""
        key = (namespace, enable_service_links)
        found = self._sizes.get(key)
        if found is None:
            values = self.env(namespace, enable_service_links).values
            found = (len(values), sum(exec_bytes(k, v) for k, v in values.items()))
            self._sizes[key] = found
        return found

    def sees(self, pod: Pod, service: ServiceKey) -> bool:
        """Whether the kubelet gives `pod` the variables of the service keyed `service`."""
        self.for_pod(pod)
        return service in self._keys[(pod.namespace, pod.enable_service_links)]


@dataclass(frozen=True, slots=True)
class Shadowing:
    """An explicit `env` entry that hides a service variable (explicit always wins)."""

    name: str
    service: ServiceKey
    service_value: str
    explicit_value: str | None  # None: from valueFrom, value unknown here


@dataclass(frozen=True, slots=True)
class ContainerEnv:
    """Service variables one container gets after precedence, and what hid the rest."""

    container: str
    env: Mapping[str, str]
    shadowed: tuple[Shadowing, ...] = ()
    unresolved_env_from: tuple[EnvFrom, ...] = field(default=())


def container_env(container: Container, senv: ServiceEnv) -> ContainerEnv:
    """makeEnvironmentVariables: envFrom, then env override it; a service variable is
    added only where neither set the name. envFrom keys are unknown to the core, so an
    envFrom source is reported as a possible (unresolved) shadow instead of guessed."""
    explicit = {e.name: e.value for e in container.env}
    env = {k: v for k, v in senv.values.items() if k not in explicit}
    shadowed = tuple(
        Shadowing(name, senv.sources[name][-1][0], senv.values[name], explicit[name])
        for name in sorted(explicit)
        if name in senv.values
    )
    return ContainerEnv(container.name, env, shadowed, container.env_from)


def pod_env(pod: Pod, services: Sequence[Service]) -> tuple[ContainerEnv, ...]:
    """Every container's (init containers included) expected service variables."""
    senv = service_env(pod.namespace, pod.enable_service_links, services)
    return tuple(container_env(c, senv) for c in pod.all_containers)


class Freshness(StrEnum):
    """Whether a running container's environment can hold a service's current variables."""

    CURRENT = "Current"  # started after the service existed with its current spec
    STALE = "Stale"  # started before the service was created (or recreated)
    UNCERTAIN = "Uncertain"  # started within the grace window around creation
    SPEC_CHANGED = "SpecChanged"  # ports/IP/type possibly changed after the start
    NOT_RUNNING = "NotRunning"  # no running instance: the next start gets current values
    UNKNOWN = "Unknown"  # running but without startedAt, or service without timestamp


def freshness(
    pod: Pod, container: str, service: Service, grace: timedelta = timedelta(seconds=5)
) -> Freshness:
    """Compare containerStatuses[].state.running.startedAt with the service's times.

    creationTimestamp is authoritative (a recreated service has a new one). The managedFields
    time is only an upper bound of the last spec change, hence SPEC_CHANGED, never STALE.
    The grace window absorbs node/apiserver clock skew and the kubelet's informer lag.
    """
    state = pod.container_states.get(container)
    if state is None or not state.running:
        return Freshness.NOT_RUNNING
    started = state.started_at
    created = service.creation_timestamp
    if started is None or created is None:
        return Freshness.UNKNOWN
    if created > started + grace:
        return Freshness.STALE
    if created >= started - grace:
        return Freshness.UNCERTAIN
    touched = service.env_spec_touched_at
    if touched is not None and touched > started:
        return Freshness.SPEC_CHANGED
    return Freshness.CURRENT


def started_at(pod: Pod, container: str) -> datetime | None:
    state = pod.container_states.get(container)
    return state.started_at if state is not None and state.running else None
