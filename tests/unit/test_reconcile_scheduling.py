"""The reconciler's loop: several services audited at once, never one service twice at once,
changes before timers, ServiceAudit reports after the audits waiting. The audit and the
publisher are replaced through the constructor by recorders (what they do is proven against
the real cluster in tests/integration); no API call is made here. The queue's policy alone,
on a fake clock, is in test_audit_queue.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from svcaudit.controller.indexes import Key, Store
from svcaudit.controller.reconcile import Reconciler
from svcaudit.controller.reports import PendingReport, ReportQueue
from svcaudit.controller.settings import ControllerSettings


class _NoApi:
    """Stands in for Kube where the scheduler never reaches it (readyz: always up)."""

    async def readyz(self) -> bool:
        return True


def _service(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}"}, "spec": {}}


class _Recorder:
    """An audit that takes `seconds`, recording concurrency and order; with `reports`, each
    audit queues a ServiceAudit report, and the writes are recorded in the same order."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.rec: Reconciler | None = None  # set: each audit queues a report
        self.publisher = _Publisher(self)
        self.running: set[Key] = set()
        self.writing = 0
        self.most = 0  # audits and writes at once
        self.order: list[Key] = []
        self.events: list[tuple[str, Key]] = []  # ("audit" | "report", key), as they start
        self.overlapped: list[Key] = []

    async def __call__(self, key: Key) -> None:
        if key in self.running:
            self.overlapped.append(key)
        self.running.add(key)
        self.most = max(self.most, len(self.running) + self.writing)
        self.order.append(key)
        self.events.append(("audit", key))
        try:
            await asyncio.sleep(self.seconds)
            if self.rec is not None:  # as Publisher.publish does
                urgent = self.rec.is_urgent(key)
                self.publisher.reports.put(
                    key, f"u-{key[1]}", b"{}", b"d", time.monotonic(), urgent=urgent
                )
        finally:
            self.running.discard(key)

    async def write_report(self, key: Key, pending: PendingReport) -> None:
        self.writing += 1
        self.most = max(self.most, len(self.running) + self.writing)
        self.events.append(("report", key))
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.writing -= 1

    def reports(self) -> list[int]:
        """Positions of the report writes among all starts."""
        return [i for i, (what, _) in enumerate(self.events) if what == "report"]

    def last_audit(self) -> int:
        return max(i for i, (what, _) in enumerate(self.events) if what == "audit")


class _Publisher:
    """The publisher's side the loop uses: its report queue and the report write."""

    def __init__(self, recorder: _Recorder) -> None:
        self.reports = ReportQueue()
        self.write_report = recorder.write_report

    def reset(self, also: Any = ()) -> None:
        self.reports.clear()

    def forget(self, key: Key) -> None:
        self.reports.drop(key)


def _reconciler(
    services: int, concurrency: int, seconds: float, reports: bool = False, **settings: Any
) -> tuple[Reconciler, _Recorder]:
    store = Store()
    for i in range(services):
        store.apply_service("ADDED", _service(f"s{i:03d}"))
    config = ControllerSettings(
        namespaces=("ns",),
        warmup_seconds=0.0,
        debounce_seconds=0.01,
        resync_seconds=3600.0,
        audit_concurrency=concurrency,
        dns_check=False,
        **settings,
    )
    recorder = _Recorder(seconds)
    rec = Reconciler(
        config,
        store,
        _NoApi(),  # type: ignore[arg-type]
        None,
        recorder.publisher,  # type: ignore[arg-type]
        audit=recorder,
    )
    if reports:
        recorder.rec = rec
    return rec, recorder


async def _run_until(rec: Reconciler, done: Any, limit: float = 10.0) -> None:
    task = asyncio.create_task(rec.run())
    try:
        for _ in range(int(limit / 0.01)):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the reconciler did not get there in time")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_audits_run_concurrently_up_to_the_limit_and_every_service_once() -> None:
    rec, recorder = _reconciler(services=40, concurrency=8, seconds=0.05)

    async def main() -> None:
        await _run_until(rec, lambda: len(recorder.order) >= 40 and not recorder.running)

    asyncio.run(main())
    assert sorted(recorder.order) == sorted(("ns", f"s{i:03d}") for i in range(40))
    assert recorder.most == 8
    assert recorder.overlapped == []


def test_one_at_a_time_when_the_limit_is_one() -> None:
    rec, recorder = _reconciler(services=5, concurrency=1, seconds=0.01)

    async def main() -> None:
        await _run_until(rec, lambda: len(recorder.order) >= 5 and not recorder.running)

    asyncio.run(main())
    assert recorder.most == 1


def test_a_service_changed_while_its_audit_runs_is_audited_again_after_it() -> None:
    rec, recorder = _reconciler(services=1, concurrency=4, seconds=0.2)
    key = ("ns", "s000")

    async def main() -> None:
        async def change_midway() -> None:
            while not recorder.running:
                await asyncio.sleep(0.005)
            rec.mark([key])  # a change lands while the first audit is in flight
            rec.mark([key])

        changer = asyncio.create_task(change_midway())
        await _run_until(rec, lambda: len(recorder.order) >= 2 and not recorder.running)
        await changer

    asyncio.run(main())
    assert recorder.order == [key, key]
    assert recorder.overlapped == []


def test_a_change_goes_before_the_rest_of_a_resync_pass() -> None:
    rec, recorder = _reconciler(services=60, concurrency=2, seconds=0.02)
    late = ("ns", "s059")  # last in the pass's order

    async def main() -> None:
        async def change_early() -> None:
            while len(recorder.order) < 4:
                await asyncio.sleep(0.002)
            rec.mark([late])

        changer = asyncio.create_task(change_early())
        await _run_until(rec, lambda: late in recorder.order)
        await changer

    asyncio.run(main())
    # The pass had 56 services left when the change came; it went within a few slots.
    assert recorder.order.index(late) < 16


def test_a_timer_goes_before_the_rest_of_a_background_pass() -> None:
    rec, recorder = _reconciler(services=60, concurrency=2, seconds=0.02)
    deadline = ("ns", "s059")

    async def main() -> None:
        async def pass_then_deadline() -> None:
            while len(recorder.order) < 60:  # the first pass
                await asyncio.sleep(0.002)
            rec.mark([("ns", f"s{i:03d}") for i in range(59)], delay=0, background=True)
            rec.mark([deadline], delay=0.05)  # e.g. a settle deadline, due during the pass

        changer = asyncio.create_task(pass_then_deadline())
        await _run_until(rec, lambda: recorder.order.count(deadline) >= 2)
        await changer

    asyncio.run(main())
    second = len(recorder.order) - 1 - recorder.order[::-1].index(deadline)
    assert second - 60 < 20  # not after the 59 services of the pass


def test_reports_are_written_once_no_audit_waits_sharing_the_slots() -> None:
    rec, recorder = _reconciler(services=30, concurrency=3, seconds=0.01, reports=True)

    async def main() -> None:
        await _run_until(rec, lambda: len(recorder.reports()) >= 30 and not recorder.writing)

    asyncio.run(main())
    # Every Service's conditions before any ServiceAudit: no report during the pass.
    assert min(recorder.reports()) > recorder.last_audit()
    assert sorted(k for what, k in recorder.events if what == "report") == sorted(recorder.order)
    assert recorder.most == 3  # audits and report writes share the slots


def test_an_overdue_report_is_written_during_a_long_pass() -> None:
    rec, recorder = _reconciler(
        services=60, concurrency=2, seconds=0.02, reports=True, report_max_delay_seconds=0.1
    )

    async def main() -> None:
        await _run_until(rec, lambda: len(recorder.reports()) >= 60 and not recorder.writing)

    asyncio.run(main())
    # The pass lasts ~0.6 s: reports queued at its start were written before its end.
    assert min(recorder.reports()) < recorder.last_audit()
    assert len(recorder.reports()) == 60


def test_reports_do_not_wait_when_they_are_the_only_verdicts() -> None:
    rec, recorder = _reconciler(
        services=30, concurrency=2, seconds=0.01, reports=True, write_service_conditions=False
    )

    async def main() -> None:
        await _run_until(rec, lambda: len(recorder.reports()) >= 30 and not recorder.writing)

    asyncio.run(main())
    assert min(recorder.reports()) < recorder.last_audit()


def test_a_changed_service_s_report_goes_before_the_rest_of_a_resync_pass() -> None:
    rec, recorder = _reconciler(services=60, concurrency=2, seconds=0.02, reports=True)
    changed = ("ns", "s059")  # last in the pass's order

    async def main() -> None:
        async def pass_then_change() -> None:
            while len(recorder.reports()) < 60:  # the first pass, and its reports
                await asyncio.sleep(0.002)
            rec.mark([("ns", f"s{i:03d}") for i in range(59)], delay=0, background=True)
            while len(recorder.order) < 64:
                await asyncio.sleep(0.002)
            rec.mark([changed])  # e.g. a pod deleted, during the resync pass

        changer = asyncio.create_task(pass_then_change())
        await _run_until(rec, lambda: recorder.events.count(("report", changed)) >= 2)
        await changer

    asyncio.run(main())
    second = len(recorder.events) - 1 - recorder.events[::-1].index(("report", changed))
    # Its report was written within a few slots, not after the 59 audits of the pass.
    assert second < recorder.last_audit()
    # ... and it was the only one: the pass's own reports wait for the pass to end.
    audits = [i for i, (what, _) in enumerate(recorder.events) if what == "audit"]
    resync = audits[60]  # the pass's first audit
    assert [k for what, k in recorder.events[resync:] if what == "report"] == [changed]


def _seen(item: tuple[Key, PendingReport] | None) -> tuple[Key, str, bytes, bytes, float] | None:
    """A popped report as (key, uid, status JSON, digest, queued at): the status waits
    compressed (reports.py), and comes back as queued."""
    if item is None:
        return None
    key, pending = item
    return key, pending.uid, pending.status, pending.digest, pending.queued_at


def test_a_report_queued_again_replaces_the_waiting_one_in_its_place() -> None:
    queue = ReportQueue()
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    queue.put(a, "u1", b"1", b"d1", now=1.0)
    queue.put(b, "u2", b"2", b"d2", now=2.0)
    queue.put(a, "u1", b"3", b"d3", now=5.0)
    assert len(queue) == 2
    # While audits wait, only what is overdue goes: the first report's wait counts.
    assert queue.pop(busy=set(), pressing_only=True, overdue_before=0.5) is None
    assert _seen(queue.pop(busy={a})) == (b, "u2", b"2", b"d2", 2.0)
    assert _seen(queue.pop(busy=set(), pressing_only=True, overdue_before=1.0)) == (
        a,
        "u1",
        b"3",
        b"d3",
        1.0,
    )
    assert queue.pop(busy=set()) is None
    # An urgent report (of a change) goes first, pressing or not; requeued, it stays urgent.
    queue.put(b, "u2", b"4", b"d4", now=6.0)
    queue.put(c, "u3", b"5", b"d5", now=7.0, urgent=True)
    queue.put(b, "u2", b"6", b"d6", now=8.0, urgent=True)  # keeps its age
    queue.put(c, "u3", b"7", b"d7", now=9.0)
    assert _seen(queue.pop(busy=set(), pressing_only=True)) == (c, "u3", b"7", b"d7", 7.0)
    assert _seen(queue.pop(busy=set(), pressing_only=True)) == (b, "u2", b"6", b"d6", 6.0)
    assert len(queue) == 0
