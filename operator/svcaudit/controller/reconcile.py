"""The audit loop: each Service by one task at a time, up to `audit_concurrency` at once.

Keys come from the indexes (`mark`) into the work queue (controller/queue.py: debounce,
ranks, timers); each audit reads the store (translate.prepare), asks DNS, runs the core's
audit and settle, and hands the result to the publisher (controller/publish.py). The loop
owns the slots, the periodic resync (DNS has no watch; controller/resync.py spreads it over
its period), the pauses while the API server is
away and while another replica leads.

    informer event -> Store.apply_* -> keys -> AuditQueue.mark
    loop: AuditQueue.take -> audit(key): prepare -> DNS -> core audit -> settle
          -> Publisher.publish: conditions (apply), report queued, Events
    loop, when no audit waits: Publisher.write_report (the ServiceAudit, apply)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from svcaudit.controller import translate
from svcaudit.controller.apiview import ApiView
from svcaudit.controller.dns_probe import DnsProber
from svcaudit.controller.indexes import Key, Store
from svcaudit.controller.kube import ApiStatus, Kube, NotLeader
from svcaudit.controller.leader import AlwaysLeader, Leadership
from svcaudit.controller.publish import ASPECT_OF_TYPE, Publisher, RetryLater
from svcaudit.controller.queue import AuditQueue
from svcaudit.controller.reports import PendingReport
from svcaudit.controller.resync import RollingResync
from svcaudit.controller.settings import ControllerSettings
from svcaudit.core.audit import DnsObservation, SettleState, unobservable
from svcaudit.metrics import Metrics

log = structlog.get_logger("svcaudit.reconcile")

RETRY_SECONDS = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


class Reconciler:
    # shape: its collaborators, each injected (tests replace the clocks and the audit)
    def __init__(
        self,
        settings: ControllerSettings,
        store: Store,
        kube: Kube,
        prober: DnsProber | None,
        publisher: Publisher,
        *,
        metrics: Metrics | None = None,
        leader: Leadership | None = None,
        on_ready: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _now,
        monotonic: Callable[[], float] = time.monotonic,
        audit: Callable[[Key], Awaitable[None]] | None = None,
    ) -> None:
        """`on_ready`: called once the informers' first listings are in, before the first
        audit (cli/run.py: the garbage collector stops walking what was loaded); `audit`:
        replaces `self.audit` (tests)."""
        self.settings = settings
        self.leader: Leadership = leader if leader is not None else AlwaysLeader()
        self.store = store
        self.kube = kube
        self.prober = prober
        self.publisher = publisher
        self.metrics = metrics
        self.on_ready = on_ready
        self.clock = clock
        self.monotonic = monotonic
        self._audit = audit if audit is not None else self.audit
        self.queue = AuditQueue(settings.debounce_seconds, monotonic)
        self._settle: dict[Key, tuple[str, SettleState]] = {}  # key -> (service uid, state)
        self.started = monotonic()
        self.ready = False
        self.audits = 0
        self.default_kubernetes: Mapping[str, Any] | None = None
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._writing: dict[Key, asyncio.Task[None]] = {}  # reports being written
        self._urgent: set[Key] = set()  # audits in flight for a change or a timer
        self.view = ApiView(
            readyz=kube.readyz,
            interval=settings.api_check_seconds,
            unknown_after=settings.api_unknown_after_seconds,
            on_lost=self._view_lost,
            on_back=self._view_back,
            on_state=metrics.api_reachable if metrics is not None else None,
        )

    # ---- scheduling (controller/queue.py) ----------------------------------------------------
    def mark(
        self,
        keys: Iterable[Key],
        delay: float | None = None,
        *,
        background: bool = False,
        prompt: bool = False,
        ripple: bool = False,
    ) -> None:
        """Audit these services: after a change (no delay; `prompt`: an EndpointSlice's;
        `ripple`: a change of their namespace's environment only), at a timer, or in a
        background pass (controller/queue.py says who goes first)."""
        if not self._watched("default"):
            keys = [k for k in keys if k != ("default", "kubernetes")]
        self.queue.mark(keys, delay, background=background, prompt=prompt, ripple=ripple)

    def is_urgent(self, key: Key) -> bool:
        """Whether the audit of `key` in flight is for a change or a timer (its report then
        goes before a background pass's audits)."""
        return key in self._urgent

    def _watched(self, namespace: str) -> bool:
        return not self.settings.namespaces or namespace in self.settings.namespaces

    # ---- the API server lost and found -----------------------------------------------------
    async def _view_lost(self, since: float) -> None:
        """Blind: the published verdicts can no longer be vouched for (metrics say Unknown;
        the conditions cannot be rewritten until the API server answers again)."""
        if self.metrics is None or not self.leader.is_leader:
            return  # a standby publishes no per-service gauges
        seconds = self.monotonic() - since
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

    async def _warmup(self, synced: Callable[[], bool]) -> None:
        """Wait for the informers' first listings to fill the store before judging anything
        (a service judged against half its pods would get false verdicts)."""
        while self.monotonic() - self.started < self.settings.warmup_seconds or not synced():
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

    async def run(self, synced: Callable[[], bool] = lambda: True) -> None:
        """The loop, until cancelled. `synced`: whether every informer has delivered its
        first listing (no audit before: a service judged against half its pods would get
        false verdicts)."""
        try:
            await self._loop(synced)
        finally:  # shutdown: the audits and writes in flight stop with the loop
            for task in [*self._inflight.values(), *self._writing.values()]:
                task.cancel()
            await self._drain()

    async def _loop(self, synced: Callable[[], bool]) -> None:
        await self._warmup(synced)
        resync = RollingResync(self.settings.resync_seconds, self.monotonic)
        full_pass = True  # every service at once: at the start, and when leading again
        while True:
            if not self.view.reachable:
                await self.view.wait_reachable()  # nothing can be read or written meanwhile
                continue
            if not self.leader.is_leader:
                await self._stand_by()
                full_pass = True
                continue
            if full_pass:
                everyone = self.store.all_service_keys()
                self.mark(everyone, delay=0, background=True)
                resync.restart(everyone)
                full_pass = False
                await self._refresh_cluster_singletons()
                continue
            released, new_period = resync.due(self.store.all_service_keys)
            self.mark(released, delay=0, background=True)
            if new_period:
                await self._refresh_cluster_singletons()
            now = self.monotonic()
            free = self.settings.audit_concurrency - len(self._inflight) - len(self._writing)
            started = self._start_work(free, now)
            if self.metrics is not None:
                self.metrics.queue_length(len(self.queue))
                self.metrics.audits_in_flight(len(self._inflight))
                self.metrics.reports_waiting(len(self.publisher.reports))
            if started:
                await asyncio.sleep(0)  # let the new tasks start before choosing again
                continue
            next_due = self.queue.next_due(self._inflight)
            await self._sleep_until(min(next_due, resync.next_at()), free)

    def _start_work(self, free: int, now: float) -> int:
        """Fill the free slots: pressing reports, then due audits (changes, timers, then
        background passes), then, once no audit waits, the other reports. A Service's
        conditions go before any ServiceAudit (reports.py). How many tasks were started."""
        started = self._start_reports(free, now, pressing_only=True)
        for key, urgent in self.queue.take(free - started, self._inflight):
            if urgent:
                self._urgent.add(key)  # a change or a timer: its report is urgent too
            task = asyncio.create_task(self._guarded(key, self._audit))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._done, self._inflight, key))
            started += 1
        if not self.queue.pending() and started < free:
            started += self._start_reports(free - started, now, pressing_only=False)
        return started

    async def _sleep_until(self, when: float, free: int) -> None:
        """Until something is marked or finishes, or `when` (monotonic) comes; with no free
        slot, until an audit or a write finishes."""
        timeout = None if free <= 0 or when == math.inf else max(0.0, when - self.monotonic())
        self.queue.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.wake.wait(), timeout=timeout)

    def _start_reports(self, free: int, now: float, *, pressing_only: bool) -> int:
        """Start up to `free` report writes (while audits wait, only urgent or overdue ones,
        unless the reports are the only verdicts written); how many were started."""
        if pressing_only and not self.settings.write_service_conditions:
            pressing_only = False
        overdue_before = now - self.settings.report_max_delay_seconds
        started = 0
        while started < free and self.publisher.reports:
            item = self.publisher.reports.pop(self._writing, pressing_only, overdue_before)
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

    async def _write_report(self, key: Key, pending: PendingReport) -> None:
        await self.publisher.write_report(key, pending)

    def _done(self, tasks: dict[Key, asyncio.Task[None]], key: Key, _: asyncio.Task[None]) -> None:
        tasks.pop(key, None)
        if tasks is self._inflight:
            self._urgent.discard(key)
        self.queue.done(key)

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
        except RetryLater:
            self.mark([key], delay=RETRY_SECONDS)
        except ApiStatus as exc:
            log.error(
                "audit not published",
                namespace=key[0],
                service=key[1],
                status=exc.status,
                error=exc.reason or str(exc),
            )
            self.mark([key], delay=RETRY_SECONDS)
        except (OSError, aiohttp.ClientError) as exc:
            # No answer (TimeoutError is an OSError): most likely the API server is down.
            # The view monitor pauses the loop and re-audits everything when it is back.
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
        self.publisher.reset(also=list(self._settle))  # also drops the per-service gauges
        self._settle.clear()
        log.info("standing by: not the leader")
        await self.leader.wait_leading()
        log.info("leading: auditing every service", services=len(self.store.services))

    # ---- one audit -------------------------------------------------------------------------
    async def audit(self, key: Key) -> None:
        """prepare -> DNS -> the core's audit -> settle -> publish."""
        started = time.perf_counter()
        body = self.store.services.get(key)
        if body is None:
            self._settle.pop(key, None)
            self.publisher.forget(key)
            return
        prepared = translate.prepare(self.store, key, self.default_kubernetes)
        if prepared is None:
            return  # being deleted
        now = self.clock()
        self.audits += 1
        dns_obs, dns_server = await self._ask_dns(prepared)
        result = translate.audit(prepared, dns_obs, now, self.settings)
        reported, state = self._settled(key, body, result, now)
        seconds = time.perf_counter() - started  # the audit itself, DNS included
        outcome = translate.Outcome(
            prepared, result, reported, state, dns_obs, dns_server, now,
            self.settings.cluster_domain,
        )  # fmt: skip
        await self.publisher.publish(key, body, outcome, urgent=self.is_urgent(key))
        log.debug("audited", namespace=key[0], service=key[1], seconds=round(seconds, 4))
        if self.metrics is not None:  # after publishing: the gauges say what the cluster says
            self.metrics.service_audited(key[0], key[1], reported, seconds)

    async def _ask_dns(self, prepared: translate.Prepared) -> tuple[DnsObservation | None, str]:
        """What DNS answered to the questions the audit needs (None: DNS not checked), and
        the server asked."""
        if not self.settings.dns_check or self.prober is None:
            return None, ""
        key = "/".join(prepared.key)
        probe = await self.prober.probe(translate.dns_questions(prepared, self.settings), key)
        if probe.error and not probe.server and self.metrics is not None:
            self.metrics.dns_failed("unreachable")  # no server known: nothing was asked
        return translate.dns_observation(probe), probe.server

    def _settled(
        self, key: Key, body: Mapping[str, Any], result: Any, now: datetime
    ) -> tuple[Any, SettleState]:
        """The core's settle over this incarnation's state (resumed from what the cluster
        holds after a restart or a change of leader); schedules the next pending deadline."""
        uid = _uid(body)
        previous = self._settle.get(key)
        prev_state = previous[1] if previous and previous[0] == uid else None
        published = {ASPECT_OF_TYPE[t]: s for t, s in self.publisher.published(key, body).items()}
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
        return reported, state
