"""ServiceAudit reports waiting to be written, oldest first.

Why they wait: a Service's conditions are the verdict people and tools read first; its
ServiceAudit is the detailed report, and it costs the API server about twice as much to
write (bench/, a first pass over 2,000 services: 27 of the API server's ~40 CPU-seconds).
So the reconciler writes a report only when no audit is waiting for a slot, or once the
report has waited `max_delay` seconds (under a long pass or constant churn). A report
queued again before it was written replaces the waiting one and keeps its place.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Container

from svcaudit.controller.indexes import Key


@dataclasses.dataclass(frozen=True)
class PendingReport:
    uid: str  # the Service incarnation the report is about (its owner)
    status: bytes  # the status, serialised once (JSON): smaller than the dict while it waits
    digest: bytes  # status_digest of that status
    queued_at: float  # monotonic seconds


class ReportQueue:
    def __init__(self) -> None:
        self._pending: OrderedDict[Key, PendingReport] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def put(self, key: Key, uid: str, status: bytes, digest: bytes, now: float) -> None:
        """Queue a report; one already waiting for this Service is replaced in place."""
        waiting = self._pending.get(key)
        queued_at = waiting.queued_at if waiting is not None else now
        self._pending[key] = PendingReport(uid, status, digest, queued_at)

    def drop(self, key: Key) -> None:
        """No write needed any more (the cluster already holds the report)."""
        self._pending.pop(key, None)

    def clear(self) -> None:
        self._pending.clear()

    def overdue_at(self, max_delay: float) -> float | None:
        """When the oldest report becomes overdue (None: nothing waits)."""
        for pending in self._pending.values():
            return pending.queued_at + max_delay
        return None

    def pop(self, busy: Container[Key]) -> tuple[Key, PendingReport] | None:
        """The oldest report whose Service is not in `busy` (a report being written)."""
        for key in self._pending:
            if key not in busy:
                return key, self._pending.pop(key)
        return None
