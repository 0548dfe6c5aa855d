"""ServiceAudit reports waiting to be written, oldest first.

Why they wait: a Service's conditions are the verdict people and tools read first; its
ServiceAudit is the detailed report, and it costs the API server about twice as much to
write (bench/, a first pass over 2,000 services: 27 of the API server's ~40 CPU-seconds).
So in a pass over every service the reconciler writes a report only when no audit is
waiting for a slot, or once the report has waited `max_delay` seconds.

A report of an audit that a change (or a timer) asked for is *urgent*: it goes before the
audits of a background pass (a resync), as its audit did. Otherwise a pod deleted during a
resync would show in the ServiceAudit only after the whole pass (bench/: 2.8 s at 5k pods).
A report queued again before it was written replaces the waiting one and keeps its place
(and its urgency).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import OrderedDict
from collections.abc import Container

from svcaudit.controller.indexes import Key


@dataclasses.dataclass(frozen=True)
class PendingReport:
    uid: str  # the Service incarnation the report is about (its owner)
    # The status, serialised once (JSON) and compressed while it waits: after the first pass
    # at 10k pods every Service's report waits at once (behind the conditions), and as
    # plain JSON they were ~10 MB of the operator's peak memory; zlib level 1 is ~30 us each.
    packed: bytes
    digest: bytes  # status_digest of that status
    queued_at: float  # monotonic seconds

    @property
    def status(self) -> bytes:
        """The status as JSON."""
        return zlib.decompress(self.packed)


class ReportQueue:
    def __init__(self) -> None:
        self._urgent: OrderedDict[Key, PendingReport] = OrderedDict()
        self._waiting: OrderedDict[Key, PendingReport] = OrderedDict()

    def __len__(self) -> int:
        return len(self._urgent) + len(self._waiting)

    def __contains__(self, key: object) -> bool:
        return key in self._urgent or key in self._waiting

    def put(
        self, key: Key, uid: str, status: bytes, digest: bytes, now: float, urgent: bool = False
    ) -> None:
        """Queue a report; one already waiting for this Service is replaced in place."""
        queue = self._urgent if urgent or key in self._urgent else self._waiting
        before = queue.get(key)
        if queue is self._urgent and before is None:
            before = self._waiting.pop(key, None)  # now urgent: it keeps its age
        queued_at = before.queued_at if before is not None else now
        queue[key] = PendingReport(uid, zlib.compress(status, 1), digest, queued_at)

    def drop(self, key: Key) -> None:
        """No write needed any more (the cluster already holds the report)."""
        self._urgent.pop(key, None)
        self._waiting.pop(key, None)

    def clear(self) -> None:
        self._urgent.clear()
        self._waiting.clear()

    def pop(
        self, busy: Container[Key], pressing_only: bool = False, overdue_before: float = 0.0
    ) -> tuple[Key, PendingReport] | None:
        """The next report whose Service is not in `busy` (a report being written): urgent
        ones first, then the oldest. With `pressing_only`, only an urgent one or one queued
        at or before `overdue_before`."""
        for key in self._urgent:
            if key not in busy:
                return key, self._urgent.pop(key)
        for key, pending in self._waiting.items():
            if pressing_only and pending.queued_at > overdue_before:
                return None  # oldest first: the rest is younger still
            if key not in busy:
                return key, self._waiting.pop(key)
        return None
