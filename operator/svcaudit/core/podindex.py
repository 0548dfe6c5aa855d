"""An index of a namespace's pods for the per-service questions an audit asks of all of them.

Every audit of a service looked at every pod of its namespace twice: which pods its selector
picks, and which containers could hold stale, shadowed or unknown variables of it. With S
services and P pods per namespace that is S x P work per pass. Built once per snapshot of the
pods (the shell keeps it until a pod changes), this index answers both from label and
start-time lookups, and the audits visit only the pods and containers that can matter.

Pure and clock-free; it only reorganises its input. Answers equal the straightforward scans
(tests/unit/test_core_env_scale.py and test_core_podindex.py check it with hypothesis).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from svcaudit.core.endpoints import selects
from svcaudit.core.envvars import exec_bytes
from svcaudit.core.model import Container, Pod, Service

__all__ = ["ContainerSlot", "PodIndex"]


@dataclass(frozen=True, slots=True)
class ContainerSlot:
    """One container of one pod, in (pod key, container order) position."""

    pod: Pod
    container: Container


class PodIndex:
    """Pods (any namespaces) indexed by label, explicit env name, envFrom and start time."""

    __slots__ = (
        "_by_label",
        "_by_name",
        "_env_from",
        "_keys",
        "_max_explicit",
        "_no_start",
        "_pods",
        "_running",
        "_slots",
        "_start_pos",
        "_starts",
    )

    def __init__(self, pods: Iterable[Pod]) -> None:
        self._pods = tuple(pods)
        self._by_label: dict[tuple[str, str], list[int]] = {}
        self._keys: dict[str, list[str]] = {}  # label key -> its values, in first-seen order
        for i, pod in enumerate(self._pods):
            for item in pod.labels.items():
                hits = self._by_label.setdefault(item, [])
                if not hits:
                    self._keys.setdefault(item[0], []).append(item[1])
                hits.append(i)
        self._max_explicit = 0  # the largest explicit env of a container, in execve bytes
        self._slots: list[ContainerSlot] = []
        self._by_name: dict[str, list[int]] = {}
        self._env_from: list[int] = []
        self._running: list[int] = []
        self._no_start: list[int] = []
        timed: list[tuple[datetime, int]] = []
        for pod in sorted(self._pods, key=lambda p: p.key):
            for container in pod.all_containers:
                at = len(self._slots)
                self._slots.append(ContainerSlot(pod, container))
                explicit = {e.name: e.value for e in container.env}
                for name in explicit:
                    self._by_name.setdefault(name, []).append(at)
                own = sum(exec_bytes(k, v) for k, v in explicit.items())
                self._max_explicit = max(self._max_explicit, own)
                if container.env_from:
                    self._env_from.append(at)
                state = pod.container_states.get(container.name)
                if state is None or not state.running:
                    continue
                self._running.append(at)
                if state.started_at is None:
                    self._no_start.append(at)
                else:
                    timed.append((state.started_at, at))
        timed.sort()
        self._starts = [t for t, _ in timed]
        self._start_pos = [at for _, at in timed]

    @property
    def pods(self) -> tuple[Pod, ...]:
        return self._pods

    @property
    def containers(self) -> Sequence[ContainerSlot]:
        """Every container (init containers included), in pod-key then container order."""
        return self._slots

    @property
    def max_explicit_env_bytes(self) -> int:
        """The largest explicit `env` of one container, in execve bytes (envvars.exec_bytes):
        with the namespace's service variables, a bound on any container's environment."""
        return self._max_explicit

    def having(self, items: Iterable[tuple[str, str]]) -> list[Pod]:
        """The pods carrying every (label, value) of `items` (every pod when it is empty),
        in input order."""
        found: set[int] | None = None
        for item in items:
            hits = self._by_label.get(item)
            if not hits:
                return []
            found = set(hits) if found is None else found.intersection(hits)
        if found is None:
            return list(self._pods)
        return [self._pods[i] for i in sorted(found)]

    def label_values(self, key: str) -> dict[str, list[Pod]]:
        """The values the pods give label `key`, each with its pods (input order)."""
        return {
            value: [self._pods[i] for i in self._by_label[(key, value)]]
            for value in self._keys.get(key, ())
        }

    @property
    def label_keys(self) -> Sequence[str]:
        """Every label key some pod carries, in first-seen order."""
        return list(self._keys)

    def selected(self, service: Service) -> list[Pod]:
        """The pods `endpoints.selects(service, pod)` picks, in input order."""
        if not service.has_selector:
            return []
        found: set[int] | None = None
        for item in service.selector.items():
            hits = self._by_label.get(item)
            if not hits:
                return []
            found = set(hits) if found is None else found.intersection(hits)
        return [self._pods[i] for i in sorted(found or ()) if selects(service, self._pods[i])]

    def env_candidates(
        self,
        names: Iterable[str],
        created: datetime | None,
        grace: timedelta,
        touched: datetime | None,
    ) -> Sequence[ContainerSlot]:
        """The containers, in pod-key then container order, that may yield an environment
        finding for a service with variable `names`, `created` and spec `touched` times:
        those setting one of the names explicitly or having envFrom (shadowing), and running
        ones whose start is unknown or not clearly after both times (envvars.freshness other
        than CURRENT). Every other container is current for the service: nothing to report.
        """
        positions: set[int] = set(self._env_from)
        for name in names:
            positions.update(self._by_name.get(name, ()))
        if created is None:
            positions.update(self._running)  # every running container: Freshness.UNKNOWN
        else:
            last = bisect_right(self._starts, created + grace)
            if touched is not None:
                last = max(last, bisect_left(self._starts, touched))
            positions.update(self._start_pos[:last])
            positions.update(self._no_start)
        return [self._slots[i] for i in sorted(positions)]
