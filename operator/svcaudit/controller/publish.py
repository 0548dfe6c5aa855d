"""Publishing one audit: conditions on the Service, the ServiceAudit report, Events.

Writes only what changed (what the store holds, or what we wrote over the version the store
holds), by server-side apply. Remembers, per Service incarnation, the statuses it last
published, so that verdict changes are announced once; a replica that stops leading forgets
it all (`reset`), and resumes from what the cluster holds, like a restarted operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
import structlog

from svcaudit.controller import translate
from svcaudit.controller.conditions import (
    CONDITION_TYPES,
    by_type,
    ours_differ,
    render_conditions,
    statuses,
)
from svcaudit.controller.events import build_event, event_kind
from svcaudit.controller.indexes import AUDIT_DIGEST, Key, Store, rv_of, status_digest
from svcaudit.controller.kube import ApiStatus, Kube, NotLeader, object_not_found
from svcaudit.controller.reports import PendingReport, ReportQueue
from svcaudit.controller.settings import ControllerSettings
from svcaudit.core.audit import ServiceAudit
from svcaudit.metrics import Metrics

log = structlog.get_logger("svcaudit.publish")

ASPECT_OF_TYPE = {v: k for k, v in CONDITION_TYPES.items()}


class RetryLater(Exception):
    """Nothing was written; audit the service again a little later."""


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


class Publisher:
    def __init__(
        self,
        settings: ControllerSettings,
        store: Store,
        kube: Kube,
        instance: str,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.kube = kube
        self.instance = instance
        self.metrics = metrics
        self.monotonic = monotonic
        self.reports = ReportQueue()  # ServiceAudits to write, after the audits waiting
        self._reported: dict[Key, tuple[str, dict[str, str]]] = {}  # key -> (uid, statuses)
        # (what, key) -> (resourceVersions before and after our write, digest of what we wrote)
        self._written: dict[tuple[str, Key], tuple[tuple[str, str], bytes]] = {}
        self._crd_missing_logged = False

    def forget(self, key: Key) -> None:
        """The service is gone (or this replica stops leading): drop what we remember."""
        self.reports.drop(key)
        self._reported.pop(key, None)
        if self.metrics is not None:
            self.metrics.service_forgotten(*key)
        for what in ("service", "audit"):
            self._written.pop((what, key), None)

    def reset(self, also: Iterable[Key] = ()) -> None:
        """Not the leader any more: another leader may publish meanwhile. Every service
        remembered (and those in `also`) is forgotten, its gauges dropped."""
        self.reports.clear()
        for key in {*self._reported, *also}:
            self.forget(key)
        self._written.clear()

    def published(self, key: Key, body: Mapping[str, Any]) -> dict[str, str]:
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

    async def publish(
        self, key: Key, body: Mapping[str, Any], outcome: translate.Outcome, urgent: bool
    ) -> None:
        """The verdicts onto the Service's conditions (one apply, only if they changed), the
        ServiceAudit report queued (only if it changed), an Event per verdict change.
        `urgent`: the audit was for a change or a timer (its report goes first)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        generation = meta.get("generation")
        svc_conditions = list((body.get("status") or {}).get("conditions") or [])
        audit_body = self.store.audits.get(key)
        audit_owned = audit_body is not None and translate.owned_by(audit_body, uid)
        audit_status = dict((audit_body or {}).get("status") or {}) if audit_owned else {}
        audit_conditions = list(audit_status.get("conditions") or [])

        basis = svc_conditions if self.settings.write_service_conditions else audit_conditions
        conditions = render_conditions(outcome.reported.verdicts, generation, basis, outcome.now)
        if self.settings.write_service_conditions:
            await self._write_conditions(key, body, svc_conditions, conditions)
        if self.settings.write_serviceaudits:
            status = translate.audit_status(outcome, conditions, generation, audit_status)
            self._queue_report(key, uid, status, urgent)
        await self._announce(key, body, conditions, outcome.reported, outcome.now)

    async def _write_conditions(
        self,
        key: Key,
        body: Mapping[str, Any],
        current: list[dict[str, Any]],
        conditions: list[dict[str, Any]],
    ) -> None:
        """Our conditions onto the Service's status, unless it holds them already."""
        if not ours_differ(conditions, current):
            return  # the common case: nothing to digest or write
        ours = [c for c in current if c.get("type") in ASPECT_OF_TYPE]
        rv = rv_of(body)
        digest = status_digest(conditions)
        if self._unchanged("service", key, rv, conditions, digest, ours):
            return
        self.store.writing("services", key, digest)
        try:
            new = await self.kube.apply_service_status(key[0], key[1], conditions)
        finally:
            self.store.writing("services", key, None)
        self._remember_write("service", key, rv, new, digest)
        stored = self.store.services.get(key)
        if new is not None and stored is not None and _uid(stored) == _uid(new):
            self.store.wrote("services", new)  # the watch will bring the same body

    def _queue_report(self, key: Key, uid: str, status: dict[str, Any], urgent: bool) -> None:
        """The ServiceAudit report, queued for writing unless the cluster holds it already."""
        digest = status_digest(status)
        if self._report_held(key, uid, digest):
            self.reports.drop(key)  # a report still waiting is outdated: nothing to write
            return
        self.reports.put(key, uid, orjson.dumps(status), digest, self.monotonic(), urgent=urgent)

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

    async def write_report(self, key: Key, pending: PendingReport) -> None:
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
        except ApiStatus as exc:
            if exc.status != 404:
                raise
            if object_not_found(exc):
                # The ServiceAudit went (its Service was recreated and the garbage
                # collector took the old one) between our read and our write.
                self.store.audits.pop(key, None)
                self._written.pop(("audit", key), None)
                raise RetryLater("its ServiceAudit went meanwhile") from exc
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
        old = self.published(key, body)
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
