"""Leader election on a coordination.k8s.io/v1 Lease: one replica writes, the others stand by.

Every replica keeps its informers watching (a warm store); only the leader's reconciler audits and
publishes. The elector is an asyncio task: every `retry_period` it reads the Lease and either
renews it (ours), takes it (free: absent, released or expired) or leaves it (someone else's).
Writes use optimistic concurrency: create on 404, replace with the resourceVersion just read;
a 409 means another replica won the race.

Safety (never two writers) rests on two clocks that never need to agree:
- the holder believes it leads only until `renew_deadline` after it *sent* its last successful
  renewal (`is_leader` is computed from the monotonic clock, so it lapses by itself even if
  the elector loop were stuck);
- a contender takes the Lease only after it has seen the same record, unchanged, for the
  record's whole `leaseDurationSeconds` on its own monotonic clock (the writer's `renewTime`
  is for humans; comparing it with our wall clock would make safety depend on clock skew).
Since renew_deadline < lease_duration, the old holder has stopped before anyone takes over.

The decisions are pure functions at the top (unit-tested); the shell below reads the clocks
and calls the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from svcaudit.controller.settings import (  # defined there: the CLI prints them
    DEFAULT_LEASE_SECONDS,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
)
from svcaudit.controller.transport import ApiStatus, Transport

log = structlog.get_logger("svcaudit.leader")

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


# ---- pure decisions --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The Lease spec fields the election uses."""

    holder: str = ""
    lease_seconds: float = 0.0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_seconds=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def lease_record_seconds(lease_seconds: float) -> int:
    """leaseDurationSeconds is an integer: rounded down, so it never exceeds the setting."""
    return max(1, math.floor(lease_seconds))


def check_timing(lease_seconds: float, renew_deadline: float, retry_period: float) -> None:
    """The holder must give up (renew deadline) strictly before others may take over (the
    lease duration, as written in whole seconds), and must get several renewal attempts
    within the deadline."""
    if not 0 < retry_period < renew_deadline < lease_record_seconds(lease_seconds):
        raise ValueError(
            "leader election needs 0 < retry period < renew deadline < lease duration, got "
            f"{retry_period:g} / {renew_deadline:g} / {lease_seconds:g}"
        )


def lease_free(record: LeaseRecord, me: str, observed_at: float, now: float) -> bool:
    """May `me` write this Lease record now?

    Yes when it is ours (a renewal), when nobody holds it (released), or when it has not
    changed for its whole lease duration as seen on our clock: `observed_at` is when we first
    saw this record (monotonic seconds), `now` is now on the same clock."""
    if record.holder == me or not record.holder:
        return True
    return now - observed_at > record.lease_seconds


def claimed(
    record: LeaseRecord, me: str, lease_seconds: float, wall_now: datetime
) -> dict[str, Any]:
    """The spec that renews (ours) or takes over (free) `record`."""
    stamp = micro_time(wall_now)
    taking = record.holder != me
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": lease_record_seconds(lease_seconds),
        "acquireTime": stamp if taking or not record.acquire_time else record.acquire_time,
        "renewTime": stamp,
        # A change of holder counts, a release in between or not; creating the Lease does not.
        "leaseTransitions": record.transitions + (1 if taking and record.renew_time else 0),
    }


def released(record: LeaseRecord, wall_now: datetime) -> dict[str, Any]:
    """The spec a leader leaves behind on a clean shutdown: free at once for the others."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": record.acquire_time,
        "renewTime": micro_time(wall_now),
        "leaseTransitions": record.transitions,
    }


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- what the reconciler sees ----------------------------------------------------------------
class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    async def wait_leading(self) -> None: ...


class AlwaysLeader:
    """Leader election off: this replica always writes."""

    identity = ""
    is_leader = True

    async def wait_leading(self) -> None:
        return None


def default_namespace() -> str:
    """The pod's namespace (from its ServiceAccount), else `default`."""
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def default_identity(instance: str) -> str:
    """Unique per process: two processes with one hostname (or a restarted container with
    the same pod name) never share an identity."""
    return f"{instance}_{uuid.uuid4().hex[:8]}"


# ---- the shell -------------------------------------------------------------------------------
class LeaseApi(Protocol):
    """Lease calls as dicts; `get` returns None on 404; `create`/`replace` return False on
    409 (someone else wrote first)."""

    async def get(self) -> dict[str, Any] | None: ...
    async def create(self, spec: dict[str, Any]) -> bool: ...
    async def replace(self, resource_version: str, spec: dict[str, Any]) -> bool: ...


class KubeLeaseApi:
    """LeaseApi over the operator's one aiohttp transport (controller/transport.py), from the
    event loop like every other call of ours: no worker thread, so a renewal is never queued
    behind other threads' work when the process is busy. Never gated on leadership (kube.py's
    writes are): this is how leadership is won."""

    def __init__(
        self,
        transport: Transport,
        namespace: str,
        name: str,
        timeout: float,
        on_error: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.transport = transport
        self.namespace = namespace
        self.name = name
        self._timeout = timeout
        self._on_error = on_error
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def _body(self, spec: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def _call(
        self, verb: str, method: str, path: str, body: dict[str, Any] | None, answered: int
    ) -> tuple[int, bytes]:
        """(status, answer) when the status is < 300 or `answered` (404 for a read, 409 for
        a write: both are answers here); otherwise ApiStatus. Failures go to `on_error`."""
        try:
            status, reason, data = await self.transport.send(
                method, path, {}, body, "application/json", self._timeout
            )
        except Exception:
            if self._on_error is not None:
                self._on_error("leases", verb, 0)
            raise
        if status >= 300 and status != answered:
            if self._on_error is not None:
                self._on_error("leases", verb, status)
            raise ApiStatus(status, data.decode(errors="replace"), reason)
        return status, data

    async def get(self) -> dict[str, Any] | None:
        path = f"{self._collection}/{self.name}"
        status, data = await self._call("get", "GET", path, None, answered=404)
        if status == 404:
            return None
        lease = json.loads(data)
        return lease if isinstance(lease, dict) else None

    async def create(self, spec: dict[str, Any]) -> bool:
        status, _ = await self._call(
            "create", "POST", self._collection, self._body(spec), answered=409
        )
        return status != 409

    async def replace(self, resource_version: str, spec: dict[str, Any]) -> bool:
        path = f"{self._collection}/{self.name}"
        body = self._body(spec, resource_version)
        status, _ = await self._call("update", "PUT", path, body, answered=409)
        return status != 409


def _now_wall() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """One participant in the election. `run()` forever; `release()` on a clean shutdown."""

    def __init__(
        self,
        api: LeaseApi,
        identity: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _now_wall,
    ) -> None:
        check_timing(lease_seconds, renew_deadline, retry_period)
        self.api = api
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.wall_clock = wall_clock
        self._leading_until = -1.0  # monotonic
        self._observed: tuple[str, LeaseRecord, float] | None = None  # (rv, record, seen at)
        self._changed = asyncio.Event()
        self._was_leader = False
        self._stopped = False

    @property
    def is_leader(self) -> bool:
        return not self._stopped and self.clock() < self._leading_until

    async def wait_leading(self) -> None:
        while not self.is_leader:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.retry_period)

    async def try_once(self) -> bool:
        """One round: read the Lease, then renew or take it if we may. True when we now hold
        it (and `is_leader` holds until renew_deadline after this round started)."""
        sent = self.clock()
        lease = await self.api.get()
        if lease is None:
            won = await self.api.create(
                claimed(LeaseRecord(), self.identity, self.lease_seconds, self.wall_clock())
            )
        else:
            rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
            record = LeaseRecord.from_spec(lease.get("spec"))
            seen = self.clock()
            if self._observed is None or self._observed[:2] != (rv, record):
                self._observed = (rv, record, seen)
            if not lease_free(record, self.identity, self._observed[2], seen):
                self._leading_until = -1.0  # someone else holds it: certainly not us
                return False
            spec = claimed(record, self.identity, self.lease_seconds, self.wall_clock())
            won = await self.api.replace(rv, spec)
        # A conflict means another replica wrote the Lease first: stop at once.
        self._leading_until = sent + self.renew_deadline if won else -1.0
        return won

    def _note_role(self) -> None:
        leading = self.is_leader
        if leading != self._was_leader:
            self._was_leader = leading
            log.info(
                "became leader" if leading else "leadership lost",
                identity=self.identity,
                lease=getattr(self.api, "name", ""),
                namespace=getattr(self.api, "namespace", ""),
            )
            self._changed.set()

    async def run(self) -> None:
        log.info(
            "leader election",
            identity=self.identity,
            lease=getattr(self.api, "name", ""),
            namespace=getattr(self.api, "namespace", ""),
            lease_seconds=self.lease_seconds,
            renew_deadline=self.renew_deadline,
            retry_period=self.retry_period,
        )
        while not self._stopped:
            started = self.clock()
            try:
                await self.try_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API away: keep leading until the deadline, retry
                log.warning("lease not renewed", identity=self.identity, error=str(exc))
            self._note_role()
            await asyncio.sleep(self.next_try_in(started))

    def next_try_in(self, started: float) -> float:
        """Seconds until the next round: one retry period after this round started, or, for a
        contender, just after the record it waits on would expire (a takeover then comes
        15 s after the holder's last renewal was seen, not up to a retry period later)."""
        now = self.clock()
        wait = started + self.retry_period - now
        if not self.is_leader and self._observed is not None:
            _, record, seen = self._observed
            if record.holder and record.holder != self.identity:
                wait = min(wait, seen + record.lease_seconds + 0.05 - now)
        return max(0.05, wait)

    async def release(self) -> None:
        """Stop leading now and, if the Lease is still ours, hand it over at once."""
        was = self.is_leader
        self._stopped = True
        self._note_role()
        if not was:
            return
        try:
            lease = await self.api.get()
            if lease is None:
                return
            record = LeaseRecord.from_spec(lease.get("spec"))
            if record.holder != self.identity:
                return
            rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
            if await self.api.replace(rv, released(record, self.wall_clock())):
                log.info("lease released", identity=self.identity)
        except Exception as exc:  # the others take over when it expires
            log.warning("lease not released", identity=self.identity, error=str(exc))
