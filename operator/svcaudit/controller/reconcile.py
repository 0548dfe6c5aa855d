"""Each Service by one task at a time: debounce, audit (core), settle (core), publish.

The reconciler owns the clock and the per-service settle state; the core owns every rule.
Changes arrive as keys from the indexes (`mark`); a key marked several times before its
due time is audited once. A periodic resync re-audits everything (DNS has no watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import structlog
import urllib3
from kubernetes.client.exceptions import ApiException

from svcaudit.controller import translate
from svcaudit.controller.apiview import ApiView
from svcaudit.controller.conditions import (
    CONDITION_TYPES,
    by_type,
    ours_differ,
    render_conditions,
    statuses,
)
from svcaudit.controller.dns_probe import DnsProber
from svcaudit.controller.events import build_event, event_kind
from svcaudit.controller.indexes import AUDIT_DIGEST, Key, Store, rv_of, status_digest
from svcaudit.controller.kube import Kube, NotLeader, object_not_found
from svcaudit.controller.leader import AlwaysLeader, Leadership
from svcaudit.controller.reports import PendingReport, ReportQueue
from svcaudit.controller.settings import ControllerSettings
from svcaudit.core.audit import DnsObservation, ServiceAudit, unobservable
from svcaudit.metrics import Metrics

log = structlog.get_logger("svcaudit.reconcile")

ASPECT_OF_TYPE = {v: k for k, v in CONDITION_TYPES.items()}
RETRY_SECONDS = 5.0
MAX_WAIT_FACTOR = 5.0


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        settings: ControllerSettings,
        store: Store,
        kube: Kube,
        prober: DnsProber | None,
        instance: str,
        clock: Callable[[], datetime] = _now,
        metrics: Metrics | None = None,
        leader: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.leader: Leadership = leader if leader is not None else AlwaysLeader()
        self.store = store
        self.kube = kube
        self.prober = prober
        self.instance = instance
        self.clock = clock
        self.metrics = metrics
        self._due: dict[Key, float] = {}
        self._burst_start: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self._settle: dict[Key, tuple[str, Any]] = {}  # key -> (service uid, SettleState)
        self._reported: dict[Key, tuple[str, dict[str, str]]] = {}  # key -> (uid, statuses)
        # (what, key) -> (resourceVersions before and after our write, digest of what we wrote)
        self._written: dict[tuple[str, Key], tuple[tuple[str, str], bytes]] = {}
        self.started = time.monotonic()
        # Whether every informer has delivered its first listing (set by the wiring).
        self.synced: Callable[[], bool] = lambda: True
        # Called once the first listings are in, before the first audit (cli/run.py: the
        # garbage collector stops walking what was loaded).
        self.on_ready: Callable[[], None] = lambda: None
        self.ready = False
        self.audits = 0
        self.default_kubernetes: Mapping[str, Any] | None = None
        self._crd_missing_logged = False
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._reports = ReportQueue()  # ServiceAudits to write, after the audits waiting
        self._writing: dict[Key, asyncio.Task[None]] = {}  # reports being written
        self._urgent: set[Key] = set()  # audits in flight for a change or a timer
        self._fresh: set[Key] = set()  # marked since the plan was made: to slot into it
        self._background: set[Key] = set()  # due only for a resync pass
        self.view = ApiView(
            readyz=kube.readyz,
            interval=settings.api_check_seconds,
            unknown_after=settings.api_unknown_after_seconds,
            on_lost=self._view_lost,
            on_back=self._view_back,
            on_state=metrics.api_reachable if metrics is not None else None,
        )

    # ---- scheduling ------------------------------------------------------------------------
    def mark(
        self, keys: Iterable[Key], delay: float | None = None, *, background: bool = False
    ) -> None:
        """Schedule audits. Changes (delay None) are debounced on the trailing edge: each
        change of a burst pushes the audit back by the debounce time, but never beyond
        MAX_WAIT_FACTOR debounce times after the burst's first change. Timers (an explicit
        delay: settle deadlines, retries) only ever bring an audit forward. Background
        passes (every service: resync, after an outage) go after changes and timers."""
        now = time.monotonic()
        debounce = self.settings.debounce_seconds
        for key in keys:
            if key[0] == "default" and key[1] == "kubernetes" and not self._watched("default"):
                continue
            current = self._due.get(key)
            if delay is None:
                first = self._burst_start.setdefault(key, now)
                self._due[key] = min(now + debounce, first + MAX_WAIT_FACTOR * debounce)
                self._background.discard(key)
            elif current is None or now + delay < current:
                self._due[key] = now + delay
                if background:
                    self._background.add(key)
                else:
                    self._background.discard(key)
            self._fresh.add(key)
        if self._fresh:
            self._wake.set()

    def _rank(self, key: Key) -> int:
        """Who goes first among due audits: changes, then timers, then background passes."""
        if key in self._burst_start:
            return 0
        return 2 if key in self._background else 1

    def _watched(self, namespace: str) -> bool:
        return not self.settings.namespaces or namespace in self.settings.namespaces

    # ---- the API server lost and found -----------------------------------------------------
    async def _view_lost(self, since: float) -> None:
        """Blind: the published verdicts can no longer be vouched for (metrics say Unknown;
        the conditions cannot be rewritten until the API server answers again)."""
        if self.metrics is None or not self.leader.is_leader:
            return  # a standby publishes no per-service gauges
        seconds = time.monotonic() - since
        message = (
            f"the API server has not answered for {seconds:.0f}s: "
            "the last verdict is not vouched for"
        )
        for ns, name in self.store.all_service_keys():
            blind = unobservable(ns, name, "ApiServerUnreachable", message)
            self.metrics.service_unobservable(ns, name, blind)

    async def _view_back(self, down_for: float) -> None:
        """The informers resume their watches (or list again, forgetting what was deleted
        meanwhile); the verdicts are renewed from a fresh look at everything."""
        await self._refresh_cluster_singletons()
        self.mark(self.store.all_service_keys(), delay=0, background=True)

    async def _warmup(self) -> None:
        """Wait for the informers' first listings to fill the store before judging anything
        (a service judged against half its pods would get false verdicts)."""
        while time.monotonic() - self.started < self.settings.warmup_seconds or not self.synced():
            await asyncio.sleep(0.05)
        await self._refresh_cluster_singletons()
        self.on_ready()
        self.ready = True
        log.info(
            "audits starting",
            services=len(self.store.services),
            pods=sum(len(p) for p in self.store.pods.values()),
            nodes=len(self.store.nodes),
        )

    async def _refresh_cluster_singletons(self) -> None:
        if not self._watched("default"):
            try:
                self.default_kubernetes = await self.kube.get_service("default", "kubernetes")
            except Exception as exc:  # keep the last one; env audit degrades gracefully
                log.warning("cannot read default/kubernetes", error=str(exc))

    async def run(self) -> None:
        try:
            await self._loop()
        finally:  # shutdown: the audits and writes in flight stop with the loop
            for task in [*self._inflight.values(), *self._writing.values()]:
                task.cancel()
            await self._drain()

    async def _loop(self) -> None:
        await self._warmup()
        resync_at = time.monotonic()
        plan: list[tuple[int, float, Key]] = []  # due audits, a heap of (rank, due, key)
        replan_at = math.inf
        while True:
            if not self.view.reachable:
                await self.view.wait_reachable()  # nothing can be read or written meanwhile
                continue
            now = time.monotonic()
            if not self.leader.is_leader:
                await self._stand_by()
                resync_at = time.monotonic()  # leading now: every service at once
                continue
            if now >= resync_at:
                self.mark(self.store.all_service_keys(), delay=0, background=True)
                resync_at = now + self.settings.resync_seconds
                await self._refresh_cluster_singletons()
                continue
            # Changes first, then timers (settle deadlines, retries), then background passes
            # (a resync marks every service at once; a change or deadline queued behind a
            # whole pass would be seen a pass late: 12 s at 2,000 services in bench/).
            # Within each rank, by due time. A service is audited by one task at a time, and
            # up to `audit_concurrency` services at once, so that the API round trips of one
            # publication overlap the work of others (bench/, initial audit at 2,000
            # services: 96 s one at a time).
            if not plan or now >= replan_at:
                plan = [
                    (self._rank(k), t, k)
                    for k, t in self._due.items()
                    if t <= now and k not in self._inflight
                ]
                heapq.heapify(plan)
                self._fresh.clear()
                # A change or timer not yet due jumps the queue once due: plan again then.
                replan_at = min(
                    (t for k, t in self._due.items() if t > now and k not in self._background),
                    default=math.inf,
                )
            elif self._fresh:
                # Slot what was marked since into the plan, rather than sort all again: a
                # pass over 2,000 services re-sorted per mark was 5 % of the operator's CPU.
                for key in self._fresh:
                    t = self._due.get(key)
                    if t is None or key in self._inflight:
                        continue
                    if t <= now:
                        heapq.heappush(plan, (self._rank(key), t, key))
                    elif key not in self._background:
                        replan_at = min(replan_at, t)
                self._fresh.clear()
            # A slot each for an audit or a report write. Reports go when no audit waits (or
            # once overdue): a Service's conditions before any ServiceAudit (reports.py).
            free = self.settings.audit_concurrency - len(self._inflight) - len(self._writing)
            started = self._start_reports(free, now, pressing_only=True)
            free -= started
            while plan and free > 0:
                _, _, key = heapq.heappop(plan)
                if key in self._inflight or self._due.get(key, math.inf) > now:
                    continue  # audited meanwhile, or pushed back by a new change
                if self._rank(key) < 2:
                    self._urgent.add(key)  # a change or a timer: its report is urgent too
                self._due.pop(key, None)
                self._burst_start.pop(key, None)
                self._background.discard(key)
                task = asyncio.create_task(self._guarded(key, self.audit))
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._done, self._inflight, key))
                free -= 1
                started += 1
            if not plan and free > 0:
                started += self._start_reports(free, now, pressing_only=False)
            if self.metrics is not None:
                self.metrics.queue_length(len(self._due))
                self.metrics.reports_waiting(len(self._reports))
            if started:
                await asyncio.sleep(0)  # let the new tasks start before choosing again
                continue
            timeout: float | None = None  # slots full: until an audit or a write finishes
            if free > 0:
                waiting = [t for k, t in self._due.items() if k not in self._inflight]
                timeout = max(0.0, min([*waiting, resync_at]) - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    def _start_reports(self, free: int, now: float, *, pressing_only: bool) -> int:
        """Start up to `free` report writes (while audits wait, only urgent or overdue ones,
        unless the reports are the only verdicts written); how many were started."""
        if pressing_only and not self.settings.write_service_conditions:
            pressing_only = False
        overdue_before = now - self.settings.report_max_delay_seconds
        started = 0
        while started < free and self._reports:
            item = self._reports.pop(self._writing, pressing_only, overdue_before)
            if item is None:
                break  # none pressing, or those waiting are being written already
            key, pending = item
            task = asyncio.create_task(
                self._guarded(key, functools.partial(self._write_report, pending=pending))
            )
            self._writing[key] = task
            task.add_done_callback(functools.partial(self._done, self._writing, key))
            started += 1
        return started

    def _done(self, tasks: dict[Key, asyncio.Task[None]], key: Key, _: asyncio.Task[None]) -> None:
        tasks.pop(key, None)
        if tasks is self._inflight:
            self._urgent.discard(key)
        if key in self._due:
            self._fresh.add(key)  # marked again while in flight: into the plan now
        self._wake.set()

    async def _drain(self) -> None:
        """Wait for the audits and writes in flight (before standing by, or on shutdown)."""
        running = [*self._inflight.values(), *self._writing.values()]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _guarded(self, key: Key, action: Callable[[Key], Awaitable[None]]) -> None:
        """An audit (or a report write), its failures logged and the service audited again
        later; never raises (but cancellation)."""
        try:
            await action(key)
        except asyncio.CancelledError:
            raise
        except NotLeader:
            self.mark([key], delay=0)  # leadership lapsed mid-audit: nothing was sent
        except ApiException as exc:
            log.error(
                "audit not published",
                namespace=key[0],
                service=key[1],
                status=exc.status,
                error=str(exc.reason),
            )
            self.mark([key], delay=RETRY_SECONDS)
        except (OSError, aiohttp.ClientError, urllib3.exceptions.HTTPError) as exc:
            # No answer: most likely the API server is down. The view monitor
            # pauses the loop and re-audits everything when it is back.
            log.warning(
                "API server did not answer",
                namespace=key[0],
                service=key[1],
                error=str(exc),
            )
            self.view.suspect()
            self.mark([key], delay=RETRY_SECONDS)
        except Exception as exc:
            log.exception("audit failed", namespace=key[0], service=key[1], error=str(exc))
            self.mark([key], delay=RETRY_SECONDS)

    # ---- leader election (controller/leader.py) ---------------------------------------------
    async def _stand_by(self) -> None:
        """Not the leader: write nothing and wait. The store stays warm (the informers keep
        watching); what this replica remembers of its own publishing is dropped, since
        another leader may publish meanwhile: a new leader resumes from what the cluster
        holds, exactly like a restarted operator (no flapping, no repeated events, no
        rewrites)."""
        await self._drain()  # their writes fail with NotLeader: they are rescheduled
        self._reports.clear()  # the next leader audits (and reports) afresh
        for key in {*self._settle, *self._reported}:
            self._forget(key)  # also drops this replica's per-service gauges
        self._written.clear()
        log.info("standing by: not the leader")
        await self.leader.wait_leading()
        log.info("leading: auditing every service", services=len(self.store.services))

    # ---- one audit -------------------------------------------------------------------------
    async def audit(self, key: Key) -> None:
        started = time.perf_counter()
        body = self.store.services.get(key)
        if body is None:
            self._forget(key)
            return
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return
        uid = str(meta.get("uid") or "")
        now = self.clock()
        self.audits += 1

        prepared = translate.prepare(self.store, key, self.default_kubernetes)
        if prepared is None:
            return
        dns_obs = None
        dns_server = ""
        if self.settings.dns_check and self.prober is not None:
            questions = translate.dns_questions(prepared, self.settings)
            probe = await self.prober.probe(questions)
            dns_server = probe.server
            dns_obs = translate.dns_observation(probe)
            if probe.error and not probe.server and self.metrics is not None:
                self.metrics.dns_failed("unreachable")  # no server known: nothing was asked
        result = translate.audit(prepared, dns_obs, now, self.settings)

        previous = self._settle.get(key)
        prev_state = previous[1] if previous and previous[0] == uid else None
        published = {ASPECT_OF_TYPE[t]: s for t, s in self._published(key, body).items()}
        audit_body = self.store.audits.get(key) or {}
        published_audit = (
            (audit_body.get("status") or {}) if translate.owned_by(audit_body, uid) else {}
        )
        reported, state, pending_until = translate.settle_result(
            result, prev_state, now, self.settings.settle_seconds, published, published_audit
        )
        self._settle[key] = (uid, state)
        if pending_until is not None:
            wait = max(0.2, (pending_until - now).total_seconds() + 0.05)
            self.mark([key], delay=wait)
        seconds = time.perf_counter() - started  # the audit itself, DNS included

        await self._publish(key, body, prepared, result, reported, dns_obs, dns_server, now)
        log.debug("audited", namespace=key[0], service=key[1], seconds=round(seconds, 4))
        if self.metrics is not None:  # after publishing: the gauges say what the cluster says
            self.metrics.service_audited(key[0], key[1], reported, seconds)

    def _published(self, key: Key, body: Mapping[str, Any]) -> dict[str, str]:
        """Statuses (by condition type) last published for this incarnation of the service.

        Remembered from our own writes; after a restart, read back from the cluster, so that
        restarts neither flap conditions nor repeat events.
        """
        uid = str((body.get("metadata") or {}).get("uid") or "")
        remembered = self._reported.get(key)
        if remembered is not None and remembered[0] == uid:
            return remembered[1]
        if self.settings.write_service_conditions:
            basis = (body.get("status") or {}).get("conditions")
        else:
            audit_body = self.store.audits.get(key) or {}
            basis = (
                (audit_body.get("status") or {}).get("conditions")
                if translate.owned_by(audit_body, uid)
                else None
            )
        found = statuses(basis)
        self._reported[key] = (uid, found)
        return found

    def _forget(self, key: Key) -> None:
        self._settle.pop(key, None)
        self._reports.drop(key)
        self._reported.pop(key, None)
        if self.metrics is not None:
            self.metrics.service_forgotten(*key)
        for what in ("service", "audit"):
            self._written.pop((what, key), None)

    # ---- publishing ------------------------------------------------------------------------
    def _unchanged(
        self, what: str, key: Key, rv: str, rendered: Any, digest: bytes, existing: Any
    ) -> bool:
        """`existing`: what the store holds (for a ServiceAudit status, its digest);
        `digest`: status_digest(rendered)."""
        if existing in (rendered, digest):
            return True
        written = self._written.get((what, key))
        # We wrote exactly this, and the store holds the version before or after our write
        # (the watch has not caught up, or the API server normalised what we sent).
        return written is not None and rv in written[0] and written[1] == digest

    def _remember_write(
        self, what: str, key: Key, before: str, answer: Mapping[str, Any] | None, digest: bytes
    ) -> None:
        """What `_unchanged` recognises later: this content, over either version."""
        after = rv_of(answer) if answer is not None else ""
        self._written[(what, key)] = ((before, after), digest)

    async def _publish(
        self,
        key: Key,
        body: Mapping[str, Any],
        prepared: translate.Prepared,
        result: ServiceAudit,
        reported: ServiceAudit,
        dns_obs: DnsObservation | None,
        dns_server: str,
        now: datetime,
    ) -> None:
        ns, name = key
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        generation = meta.get("generation")
        svc_conditions = list((body.get("status") or {}).get("conditions") or [])
        audit_body = self.store.audits.get(key)
        audit_owned = audit_body is not None and translate.owned_by(audit_body, uid)
        audit_status = dict((audit_body or {}).get("status") or {}) if audit_owned else {}
        audit_conditions = list(audit_status.get("conditions") or [])

        basis = svc_conditions if self.settings.write_service_conditions else audit_conditions
        conditions = render_conditions(reported.verdicts, generation, basis, now)

        if self.settings.write_service_conditions:
            ours = [c for c in svc_conditions if c.get("type") in ASPECT_OF_TYPE]
            rv = rv_of(body)
            if ours_differ(conditions, svc_conditions) and not self._unchanged(
                "service", key, rv, conditions, digest := status_digest(conditions), ours
            ):
                self.store.writing("services", key, digest)
                try:
                    new = await self.kube.apply_service_status(ns, name, conditions)
                finally:
                    self.store.writing("services", key, None)
                self._remember_write("service", key, rv, new, digest)
                current = self.store.services.get(key)
                if new is not None and current is not None and _uid(current) == _uid(new):
                    self.store.wrote("services", new)  # the watch will bring the same body

        if self.settings.write_serviceaudits:
            status = translate.audit_status(
                prepared,
                result,
                reported,
                dns_obs,
                dns_server,
                conditions,
                generation,
                self._settle[key][1],
                audit_status,
            )
            self._queue_report(key, uid, status)

        await self._announce(key, body, conditions, reported, now)

    def _queue_report(self, key: Key, uid: str, status: dict[str, Any]) -> None:
        """The ServiceAudit report, queued for writing unless the cluster holds it already."""
        digest = status_digest(status)
        if self._report_held(key, uid, digest):
            self._reports.drop(key)  # a report still waiting is outdated: nothing to write
            return
        self._reports.put(
            key, uid, orjson.dumps(status), digest, time.monotonic(), urgent=key in self._urgent
        )

    def _report_held(self, key: Key, uid: str, digest: bytes) -> bool:
        """Whether the cluster holds this report (by digest) for this Service incarnation."""
        audit_body = self.store.audits.get(key)
        return (
            audit_body is not None
            and translate.owned_by(audit_body, uid)
            and self._unchanged(
                "audit", key, rv_of(audit_body), digest, digest, audit_body.get(AUDIT_DIGEST)
            )
        )

    async def _write_report(self, key: Key, pending: PendingReport) -> None:
        """Created, re-owned (its Service was recreated) or updated: one apply of the whole."""
        ns, name = key
        service = self.store.services.get(key)
        if service is None or _uid(service) != pending.uid:
            return  # gone, or recreated: the new incarnation is audited (and reported) anew
        if self._report_held(key, pending.uid, pending.digest):
            return  # written meanwhile
        rv = rv_of(self.store.audits.get(key) or {})
        self.store.writing("serviceaudits", key, pending.digest)
        try:
            new_audit = await self.kube.apply_audit(
                ns, name, pending.uid, translate.AUDIT_LABELS, pending.status
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            if object_not_found(exc):
                # The ServiceAudit went (its Service was recreated and the garbage
                # collector took the old one) between our read and our write.
                self.store.audits.pop(key, None)
                self._written.pop(("audit", key), None)
                self.mark([key], delay=RETRY_SECONDS)
            elif not self._crd_missing_logged:
                log.warning(
                    "ServiceAudit CRD not installed: only conditions and events "
                    "are written (kubectl apply -f deploy/crd-serviceaudits.yaml)"
                )
                self._crd_missing_logged = True
            return
        finally:
            self.store.writing("serviceaudits", key, None)
        self._remember_write("audit", key, rv, new_audit, pending.digest)
        if new_audit is not None:
            self.store.wrote("serviceaudits", new_audit)

    async def _announce(
        self,
        key: Key,
        body: Mapping[str, Any],
        conditions: list[dict[str, Any]],
        reported: ServiceAudit,
        now: datetime,
    ) -> None:
        """structlog line + Event per verdict change (per aspect, not the summary's event)."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        old = self._published(key, body)
        new = statuses(conditions)
        self._reported[key] = (uid, new)
        by = by_type(conditions)
        for ctype, status in new.items():
            before = old.get(ctype)
            if before == status:
                continue
            cond = by[ctype]
            aspect = ASPECT_OF_TYPE[ctype]
            log.info(
                "verdict changed",
                namespace=key[0],
                service=key[1],
                condition=ctype,
                status=status,
                previous=before,
                reason=cond["reason"],
                code=translate.codes_for(reported.discrepancies, aspect),
                pending=translate.codes_for(reported.pending, aspect),
                message=cond["message"],
            )
            if self.metrics is not None:
                self.metrics.verdict_changed(ctype, status)
            kind = event_kind(ctype, before, status)
            if kind is not None and self.settings.write_events:
                event = build_event(
                    body, ctype, kind, str(cond["reason"]), str(cond["message"]), now, self.instance
                )
                try:
                    await self.kube.create_event(event)
                except NotLeader:
                    raise
                except Exception as exc:  # an event is best effort; the condition is the record
                    log.warning(
                        "event not recorded", namespace=key[0], service=key[1], error=str(exc)
                    )
