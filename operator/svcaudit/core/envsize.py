"""How big a container's environment will be, and whether it still fits execve(2).

The kubelet gives every container of a pod with `enableServiceLinks` (the default) about
seven variables per port of every service of its namespace (envvars.py). The container
runtime passes that environment to execve(2) when it starts the container's process, and
Linux caps argv+envp (fs/exec.c, bprm_stack_limits): every string with its NUL, plus one
8-byte pointer per string, must fit in a quarter of the process's stack rlimit (at most 6 MiB,
at least 128 KiB). Under the usual 8 MiB stack rlimit that is 2 MiB; past it execve fails with
E2BIG and the container never starts ("exec /app: argument list too long", Kubernetes issue
84539). Measured on Linux 6.18 with os.execve and a growing environment: 2 097 134 bytes
counted this way passed, 2 097 172 failed; with a 4 MiB rlimit 1 048 562 passed, 1 048 600
failed; with an unlimited one 6 291 422 passed, 6 291 460 failed.

What the core knows of a container's environment is the kubelet's part: the service
variables (after env/envFrom precedence) and the explicit `env` entries (valueFrom values
unknown, counted empty). The image's ENV, the command line, HOSTNAME and envFrom keys come
on top, so every size here is a lower bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from svcaudit.core.codes import Discrepancy, Severity, discrepancy, ref
from svcaudit.core.endpoints import is_candidate_phase
from svcaudit.core.envvars import ServiceEnv, ServiceEnvIndex, exec_bytes, service_variables
from svcaudit.core.model import Container, Pod, Service
from svcaudit.core.podindex import PodIndex

__all__ = [
    "DEFAULT_EXEC_LIMIT",
    "DEFAULT_WARNING_FRACTION",
    "ContainerEnvSize",
    "EnvLimits",
    "container_env_size",
    "env_size_finding",
]

MIB = 1024 * 1024
# execve's argv+envp budget under the default 8 MiB stack rlimit (the runtime does not change
# it: containerd and runc pass theirs on): RLIMIT_STACK / 4.
DEFAULT_EXEC_LIMIT = 8 * MIB // 4
# From this share of the limit on, a warning: envFrom, the command line and the image's ENV
# are not counted, and a namespace that doubles its services crosses the limit.
DEFAULT_WARNING_FRACTION = 0.5


class EnvLimits(NamedTuple):
    """Bytes of environment (execve's way of counting, envvars.exec_bytes) from which a
    container gets a warning, and from which it cannot start (an error)."""

    warning: int
    error: int

    @classmethod
    def of(
        cls, limit: int = DEFAULT_EXEC_LIMIT, fraction: float = DEFAULT_WARNING_FRACTION
    ) -> EnvLimits:
        return cls(int(limit * fraction), limit)


@dataclass(frozen=True, slots=True)
class ContainerEnvSize:
    """A container's predicted environment: its service variables after precedence, and
    its explicit `env` entries (count, execve bytes)."""

    pod: Pod
    container: Container
    service_variables: int
    service_bytes: int
    explicit_variables: int
    explicit_bytes: int

    @property
    def variables(self) -> int:
        return self.service_variables + self.explicit_variables

    @property
    def bytes(self) -> int:
        return self.service_bytes + self.explicit_bytes


def container_env_size(
    pod: Pod, container: Container, senv: ServiceEnv, whole: tuple[int, int]
) -> ContainerEnvSize:
    """The kubelet's precedence (envvars.container_env) counted rather than copied: `whole`
    is (variables, bytes) of `senv` (ServiceEnvIndex.exec_size); an explicit name hides the
    service variable of that name; a repeated explicit name counts once (the kubelet's map)."""
    explicit = {e.name: e.value for e in container.env}
    hidden = [n for n in explicit if n in senv.values]
    hidden_bytes = sum(exec_bytes(n, senv.values[n]) for n in hidden)
    return ContainerEnvSize(
        pod,
        container,
        whole[0] - len(hidden),
        whole[1] - hidden_bytes,
        len(explicit),
        sum(exec_bytes(n, v) for n, v in explicit.items()),
    )


def _largest(
    namespace: str, envs: ServiceEnvIndex, pods: PodIndex, limits: EnvLimits
) -> tuple[ContainerEnvSize | None, int, int]:
    """(the largest predicted environment among the containers that will get the namespace's
    service variables, how many reach limits.warning, how many limits.error). Pods with
    service links disabled and terminal pods never (re)start a container with them."""
    senv = envs.env(namespace, True)
    whole = envs.exec_size(namespace, True)
    best: ContainerEnvSize | None = None
    warned = failed = 0
    for slot in pods.containers:
        pod = slot.pod
        if pod.namespace != namespace or not pod.enable_service_links:
            continue
        if not is_candidate_phase(pod):
            continue
        size = container_env_size(pod, slot.container, senv, whole)
        warned += size.bytes >= limits.warning
        failed += size.bytes >= limits.error
        if best is None or size.bytes > best.bytes:
            best = size
    return best, warned, failed


def env_size_finding(
    service: Service, envs: ServiceEnvIndex, pods: PodIndex, limits: EnvLimits
) -> Discrepancy | None:
    """SVA-ENV-012 for the audit of `service`: the namespace's pods would start with too big
    an environment, and this service's variables are part of it. One finding per audit,
    about the Service, naming the largest container: a warning from limits.warning, an error
    from limits.error (execve fails: the container cannot start). `envs`: a ServiceEnvIndex
    of the namespace's services with `service` among them; `pods`: the namespace's PodIndex.

    Cost: O(1) while the namespace's variables and the largest explicit env stay under the
    warning level (ServiceEnvIndex caches the size), else one pass over its containers.
    """
    if not service_variables(service):
        return None  # headless or ExternalName: none of its variables in anyone's environment
    whole = envs.exec_size(service.namespace, True)
    if whole[1] + pods.max_explicit_env_bytes < limits.warning:
        return None
    best, warned, failed = _largest(service.namespace, envs, pods, limits)
    if best is None or best.bytes < limits.warning:
        return None
    found = discrepancy(
        "SVA-ENV-012",
        ref("Service", service.namespace, service.name),
        f"under {_mib(limits.warning)} of environment per container (execve's limit for "
        f"argv+envp: {_mib(limits.error)}, a quarter of the stack rlimit)",
        _observed(best, warned, failed, limits),
        (ref("Pod", best.pod.namespace, best.pod.name),),
    )
    if best.bytes >= limits.error:
        return replace(found, severity=Severity.ERROR)
    return found


def _observed(best: ContainerEnvSize, warned: int, failed: int, limits: EnvLimits) -> str:
    """Rounded down to 0.01 MiB, not exact: the text must not change with every service
    created in the namespace, or every audit of it would rewrite its status."""
    where = f"pod {best.pod.name} container {best.container.name}"
    if failed:
        return (
            f"about {_mib(best.bytes)} for {where}: it cannot start (argument list too long); "
            f"{failed} container(s) over {_mib(limits.error)}"
        )
    return (
        f"about {_mib(best.bytes)} for {where}, the largest; "
        f"{warned} container(s) over {_mib(limits.warning)}"
    )


def _mib(size: int) -> str:
    return f"{math.floor(size / MIB * 100) / 100:.2f} MiB"
