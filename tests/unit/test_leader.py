"""Leader election (operator/svcaudit/controller/leader.py): the pure decisions, and electors
sharing an in-memory Lease with fake clocks (never two leaders, whatever the interleaving)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svcaudit.controller.leader import (
    LeaderElector,
    LeaseRecord,
    check_timing,
    claimed,
    lease_free,
    micro_time,
    released,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


# ---- pure decisions --------------------------------------------------------------------------
def test_timing_must_stop_before_others_may_take_over() -> None:
    check_timing(15, 10, 2)
    check_timing(10.9, 9.9, 2)
    # 10.4 s is written as leaseDurationSeconds 10: not more than a 10.2 s renew deadline.
    for bad in ((15, 15, 2), (10, 15, 2), (15, 10, 10), (15, 10, 0), (15, 10, -1), (10.4, 10.2, 2)):
        with pytest.raises(ValueError):
            check_timing(*bad)


def test_record_from_spec() -> None:
    assert LeaseRecord.from_spec(None) == LeaseRecord()
    spec = {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "x",
        "renewTime": "y",
        "leaseTransitions": 3,
    }
    assert LeaseRecord.from_spec(spec) == LeaseRecord("a", 15.0, "x", "y", 3)


def test_a_lease_is_free_when_ours_released_or_unchanged_for_its_duration() -> None:
    held = LeaseRecord(holder="b", lease_seconds=15)
    assert lease_free(held, "b", observed_at=100, now=100)  # ours: renew
    assert lease_free(LeaseRecord(), "a", observed_at=100, now=100)  # absent / released
    assert lease_free(LeaseRecord(holder="", lease_seconds=1), "a", 100, 100)
    assert not lease_free(held, "a", observed_at=100, now=100)
    assert not lease_free(held, "a", observed_at=100, now=115)  # exactly the duration: not yet
    assert lease_free(held, "a", observed_at=100, now=115.01)
    # The record's own duration counts, not ours.
    assert not lease_free(LeaseRecord(holder="b", lease_seconds=60), "a", 100, 130)


def test_claim_renew_and_release_specs() -> None:
    first = claimed(LeaseRecord(), "a", 15, T0)
    assert first == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-22T10:00:00.000000Z",
        "renewTime": "2026-11-22T10:00:00.000000Z",
        "leaseTransitions": 0,
    }
    later = T0 + timedelta(seconds=2, microseconds=5)
    renewed = claimed(LeaseRecord.from_spec(first), "a", 15, later)
    assert renewed["acquireTime"] == first["acquireTime"]
    assert renewed["renewTime"] == "2026-11-22T10:00:02.000005Z"
    assert renewed["leaseTransitions"] == 0
    taken = claimed(LeaseRecord.from_spec(renewed), "b", 15, later)
    assert taken["holderIdentity"] == "b" and taken["leaseTransitions"] == 1
    assert taken["acquireTime"] == taken["renewTime"]
    gone = released(LeaseRecord.from_spec(taken), later)
    assert gone["holderIdentity"] == "" and gone["leaseDurationSeconds"] == 1
    assert gone["leaseTransitions"] == 1
    # A release then a take is a change of holder too.
    again = claimed(LeaseRecord.from_spec(gone), "a", 15, later)
    assert again["leaseTransitions"] == 2


def test_micro_time_is_utc() -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    assert micro_time(datetime(2026, 1, 1, 12, 0, tzinfo=plus2)) == "2026-01-01T10:00:00.000000Z"


# ---- electors on an in-memory Lease ----------------------------------------------------------
class Cluster:
    """One Lease with resourceVersion semantics (create: 409 if present; replace: 409 on a
    stale resourceVersion), and a shared fake clock."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.now = 1000.0
        self.down = False

    def api(self) -> FakeApi:
        return FakeApi(self)


class FakeApi:
    name = "svcaudit-leader"
    namespace = "test"

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.conflicts = 0  # writes answered 409

    async def _check(self) -> None:
        """A round trip: the other electors run meanwhile (as with a real API server)."""
        await asyncio.sleep(0)
        if self.c.down:
            raise ConnectionError("apiserver down")

    async def get(self) -> dict[str, Any] | None:
        await self._check()
        return copy.deepcopy(self.c.lease)

    async def create(self, spec: dict[str, Any]) -> bool:
        await self._check()
        if self.c.lease is not None:
            self.conflicts += 1
            return False
        self.c.rv += 1
        self.c.lease = {"metadata": {"resourceVersion": str(self.c.rv)}, "spec": dict(spec)}
        return True

    async def replace(self, resource_version: str, spec: dict[str, Any]) -> bool:
        await self._check()
        if self.c.lease is None or self.c.lease["metadata"]["resourceVersion"] != resource_version:
            self.conflicts += 1
            return False
        self.c.rv += 1
        self.c.lease = {"metadata": {"resourceVersion": str(self.c.rv)}, "spec": dict(spec)}
        return True


def elector(c: Cluster, name: str) -> LeaderElector:
    return LeaderElector(
        c.api(),
        name,
        lease_seconds=15,
        renew_deadline=10,
        retry_period=2,
        clock=lambda: c.now,
        wall_clock=lambda: T0 + timedelta(seconds=c.now),
    )


def test_one_leader_failover_after_the_lease_duration_and_release() -> None:
    async def scenario() -> None:
        c = Cluster()
        a, b = elector(c, "a"), elector(c, "b")
        assert await a.try_once() and a.is_leader
        assert not await b.try_once() and not b.is_leader
        for _ in range(5):  # a renews every 2 s; b keeps seeing fresh records
            c.now += 2
            assert await a.try_once() and a.is_leader
            assert not await b.try_once()
        # a dies (stops renewing). Its own view of leadership ends renew_deadline after its
        # last renewal; b may take over only once the record has been unchanged for 15 s.
        died = c.now
        taken_at = None
        while taken_at is None:
            c.now += 2
            if await b.try_once():
                taken_at = c.now
            assert not (a.is_leader and b.is_leader)
            assert a.is_leader == (c.now < died + 10)
        assert died + 15 < taken_at <= died + 15 + 2 + 2
        assert c.lease is not None and c.lease["spec"]["leaseTransitions"] == 1
        # a comes back: it sees b's record and stands by.
        assert not await a.try_once() and not a.is_leader
        # b shuts down cleanly: a takes over at its next try, no waiting.
        await b.release()
        assert not b.is_leader
        assert c.lease["spec"]["holderIdentity"] == ""
        c.now += 2
        assert await a.try_once() and a.is_leader

    asyncio.run(scenario())


def test_a_contender_wakes_when_the_record_it_waits_on_expires() -> None:
    async def scenario() -> None:
        c = Cluster()
        a, b = elector(c, "a"), elector(c, "b")
        assert await a.try_once()
        assert a.next_try_in(c.now) == 2  # the leader: every retry period
        c.now += 1
        assert not await b.try_once()  # b first sees a's record now
        assert b.next_try_in(c.now) == 2
        c.now += 14  # 1 s before the record expires
        assert b.next_try_in(c.now - 1.5) == pytest.approx(0.5)  # the retry period first
        assert b.next_try_in(c.now) == pytest.approx(1.05)
        c.now += 1.05
        assert await b.try_once()  # a never renewed: taken right away

    asyncio.run(scenario())


def test_racing_creators_one_wins() -> None:
    async def scenario() -> None:
        c = Cluster()
        a, b = elector(c, "a"), elector(c, "b")
        # Both read "absent" before either writes (each call yields, as a round trip does):
        # both create, and the second create gets a conflict.
        won = await asyncio.gather(a.try_once(), b.try_once())
        assert sorted(won) == [False, True]
        assert a.is_leader != b.is_leader
        conflicts = [e.api.conflicts for e in (a, b)]  # type: ignore[attr-defined]
        assert sorted(conflicts) == [0, 1], "the 409 path was taken once"
        assert c.rv == 1  # one create only

    asyncio.run(scenario())


def test_a_leader_that_cannot_renew_stops_at_the_renew_deadline() -> None:
    async def scenario() -> None:
        c = Cluster()
        a = elector(c, "a")
        assert await a.try_once()
        c.down = True
        c.now += 9.9
        assert a.is_leader  # still within the deadline: renewals are retried
        with pytest.raises(ConnectionError):
            await a.try_once()
        c.now += 0.2
        assert not a.is_leader  # lapses by the clock alone, even with no loop iteration
        c.down = False
        assert await a.try_once() and a.is_leader  # still ours: renewed (same holder)

    asyncio.run(scenario())


def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    async def scenario() -> None:
        c = Cluster()
        a = elector(c, "a")
        assert await a.try_once()
        assert c.lease is not None
        c.lease["spec"]["holderIdentity"] = "intruder"  # e.g. an operator's manual edit
        c.rv += 1
        c.lease["metadata"]["resourceVersion"] = str(c.rv)
        assert not await a.try_once()
        assert not a.is_leader

    asyncio.run(scenario())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["try", "tick", "pause", "resume", "release", "down", "up"]),
            st.integers(0, 2),
            st.floats(0.1, 6.0),
        ),
        min_size=1,
        max_size=120,
    )
)
def test_never_two_leaders(steps: list[tuple[str, int, float]]) -> None:
    """Any interleaving of tries, clock ticks, paused (frozen) replicas, clean releases and
    API outages: at no instant do two electors both consider themselves leader."""

    async def scenario() -> None:
        c = Cluster()
        electors = [elector(c, f"r{i}") for i in range(3)]
        paused = [False] * 3
        for op, i, dt in steps:
            e = electors[i]
            if op == "try" and not paused[i]:
                with contextlib.suppress(ConnectionError):
                    await e.try_once()
            elif op == "tick":
                c.now += dt
            elif op == "pause":
                paused[i] = True
            elif op == "resume":
                paused[i] = False
            elif op == "release" and not paused[i]:
                with contextlib.suppress(ConnectionError):
                    await e.release()
                electors[i] = elector(c, f"r{i}-{c.rv}")  # a new process
            elif op == "down":
                c.down = True
            elif op == "up":
                c.down = False
            assert sum(x.is_leader for x in electors) <= 1

    asyncio.run(scenario())
