"""The work queue's policy (controller/queue.py) on a fake monotonic clock: debounce on the
trailing edge with a cap, timers that only bring an audit forward, changes before timers before
background passes, one audit per service at a time. No task, no sleep."""

from __future__ import annotations

from svcaudit.controller.queue import ECHO_SECONDS, MAX_WAIT_FACTOR, PROMPT_SECONDS, AuditQueue

A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queue(debounce: float = 0.5) -> tuple[AuditQueue, Clock]:
    clock = Clock()
    return AuditQueue(debounce, clock), clock


def keys(taken: list[tuple[tuple[str, str], bool]]) -> list[tuple[str, str]]:
    return [k for k, _ in taken]


def test_a_change_waits_for_the_debounce_then_goes() -> None:
    q, clock = queue()
    q.mark([A])
    assert q.take(10, busy=set()) == []
    clock.now += 0.49
    assert q.take(10, busy=set()) == []
    clock.now += 0.02
    assert q.take(10, busy=set()) == [(A, True)]
    assert len(q) == 0 and q.take(10, busy=set()) == []


def test_a_burst_is_one_audit_pushed_back_but_never_beyond_the_cap() -> None:
    q, clock = queue(debounce=0.5)
    start = clock.now
    while clock.now < start + 10:  # a change every 0.3 s, for 10 s
        q.mark([A])
        clock.now += 0.3
        if q.take(10, busy=set()):
            break
    # pushed back by each change, but due MAX_WAIT_FACTOR debounces after the first one
    assert clock.now - start <= MAX_WAIT_FACTOR * 0.5 + 0.3
    assert clock.now - start >= MAX_WAIT_FACTOR * 0.5


def test_a_timer_only_brings_an_audit_forward() -> None:
    q, clock = queue()
    q.mark([A], delay=5)
    q.mark([A], delay=10)  # later: ignored
    assert q.next_due(set()) == clock.now + 5
    q.mark([A], delay=1)  # sooner: taken
    assert q.next_due(set()) == clock.now + 1
    clock.now += 1
    assert q.take(1, busy=set()) == [(A, True)]


def test_changes_then_timers_then_background_each_by_due_time() -> None:
    q, clock = queue(debounce=0.1)
    q.mark([C], delay=0, background=True)  # a resync pass: due first, goes last
    q.mark([B], delay=0.05)  # a timer
    clock.now += 0.05
    q.mark([A])  # a change, the latest of all
    clock.now += 0.2
    assert q.take(10, busy=set()) == [(A, True), (B, True), (C, False)]


def test_a_change_during_a_background_pass_jumps_the_rest_of_it() -> None:
    q, clock = queue(debounce=0.1)
    pass_keys = [("ns", f"s{i:03d}") for i in range(50)]
    q.mark(pass_keys, delay=0, background=True)
    first = keys(q.take(2, busy=set()))
    assert first == pass_keys[:2]
    q.mark([pass_keys[-1]])  # a change to the last of the pass
    clock.now += 0.05
    assert keys(q.take(2, busy=set())) == pass_keys[2:4]  # not due yet: the pass goes on
    clock.now += 0.06  # due now: the plan is made again and the change goes first
    assert q.take(1, busy=set()) == [(pass_keys[-1], True)]


def test_a_busy_service_waits_for_its_audit_to_finish() -> None:
    q, _ = queue(debounce=0.1)
    q.mark([A, B], delay=0)
    assert keys(q.take(1, busy=set())) == [A]
    q.mark([A], delay=0)  # changed while its audit runs
    assert keys(q.take(5, busy={A})) == [B]  # never two audits of A at once
    assert q.take(5, busy={A}) == []
    assert q.next_due(busy={A}) == float("inf")
    q.done(A)
    assert q.wake.is_set()
    assert keys(q.take(5, busy=set())) == [A]


def test_pending_says_whether_due_audits_still_wait() -> None:
    q, _ = queue()
    q.mark([A, B, C], delay=0, background=True)
    assert len(q.take(2, busy=set())) == 2
    assert q.pending()  # reports wait for C
    assert len(q.take(2, busy=set())) == 1
    assert not q.pending()


def test_mark_wakes_the_loop() -> None:
    q, _ = queue()
    q.wake.clear()
    q.mark([])
    assert not q.wake.is_set()
    q.mark([A])
    assert q.wake.is_set()


def test_a_slice_change_is_audited_promptly_not_after_the_debounce() -> None:
    q, clock = queue(debounce=0.5)
    q.mark([A])  # the pod changed: trailing debounce
    clock.now += 0.015
    q.mark([A], prompt=True)  # its EndpointSlice followed: audited PROMPT_SECONDS later
    assert q.next_due(set()) == clock.now + PROMPT_SECONDS
    clock.now += PROMPT_SECONDS
    assert q.take(10, busy=set()) == [(A, True)]


def test_a_plain_change_does_not_push_a_prompt_audit_back() -> None:
    q, clock = queue(debounce=0.5)
    q.mark([A], prompt=True)
    due = q.next_due(set())
    clock.now += 0.01
    q.mark([A])  # another pod of the same burst
    assert q.next_due(set()) == due


def test_prompt_audits_are_throttled_to_one_per_debounce() -> None:
    q, clock = queue(debounce=0.5)
    taken = 0
    start = clock.now
    while clock.now < start + 5:  # a slice written every 0.05 s for 5 s
        q.mark([A], prompt=True)
        clock.now += 0.05
        taken += len(q.take(10, busy=set()))
    assert 18 <= taken <= 22  # PROMPT_BURST (2) per 0.5 s window


def test_a_prompt_change_after_a_quiet_spell_goes_at_once_again() -> None:
    q, clock = queue(debounce=0.5)
    q.mark([A], prompt=True)
    clock.now += PROMPT_SECONDS
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += 0.05
    q.mark([A], prompt=True)  # the change's second slice write: prompt too (PROMPT_BURST)
    assert q.next_due(set()) == clock.now + PROMPT_SECONDS
    clock.now += PROMPT_SECONDS
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += 0.1
    q.mark([A], prompt=True)  # a third within the window: waits it out
    assert q.next_due(set()) > clock.now + 0.2
    clock.now += 1.0
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += 1.0
    q.mark([A], prompt=True)  # quiet for a second: prompt again
    assert q.next_due(set()) == clock.now + PROMPT_SECONDS


def test_with_no_debounce_a_prompt_change_waits_for_nothing() -> None:
    q, clock = queue(debounce=0.0)
    q.mark([A], prompt=True)
    assert q.next_due(set()) == clock.now


def test_next_due_is_the_earliest_waiting_audit_whatever_the_history() -> None:
    import random

    rng = random.Random(20)
    q, clock = queue(debounce=0.3)
    names = [("ns", f"s{i}") for i in range(30)]
    busy: set[tuple[str, str]] = set()
    for _ in range(3000):
        action = rng.random()
        key = rng.choice(names)
        if action < 0.4:
            q.mark([key], prompt=rng.random() < 0.3)
        elif action < 0.6:
            q.mark([key], delay=rng.uniform(0, 2), background=rng.random() < 0.5)
        elif action < 0.8:
            for k, _ in q.take(rng.randint(1, 3), busy):
                if rng.random() < 0.5:
                    busy.add(k)
        elif busy:
            done = rng.choice(sorted(busy))
            busy.discard(done)
            q.done(done)
        clock.now += rng.uniform(0, 0.2)
        expected = min((t for k, t in q._due.items() if k not in busy), default=float("inf"))
        assert q.next_due(busy) == expected


def test_the_pod_event_after_its_slice_is_audited_promptly_once() -> None:
    """Watches race: the slice's event may come before the pod's. The prompt audit then saw
    only the slice; the pod's event, just after, is audited promptly too, but only once."""
    q, clock = queue(debounce=0.5)
    q.mark([A], prompt=True)  # the slice first
    clock.now += PROMPT_SECONDS
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += 0.03
    q.mark([A])  # the pod's own event, late
    assert q.next_due(set()) == clock.now + PROMPT_SECONDS
    clock.now += PROMPT_SECONDS
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += 0.01
    q.mark([A])  # a third change: the ordinary debounce again
    assert q.next_due(set()) == clock.now + 0.5


def test_a_plain_change_long_after_a_prompt_audit_is_debounced() -> None:
    q, clock = queue(debounce=0.5)
    q.mark([A], prompt=True)
    clock.now += PROMPT_SECONDS
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += ECHO_SECONDS + 0.01
    q.mark([A])
    assert q.next_due(set()) == clock.now + 0.5


def test_a_plain_audit_just_before_does_not_hold_a_slice_change_back() -> None:
    q, clock = queue(debounce=0.5)
    q.mark([A])  # a pod of the namespace came and went: the trailing debounce
    clock.now += 0.5
    assert keys(q.take(1, busy=set())) == [A]
    clock.now += 0.1
    q.mark([A], prompt=True)  # 0.1 s after that audit, this service's own slice changes
    assert q.next_due(set()) == clock.now + PROMPT_SECONDS


def test_a_ripple_is_debounced_like_a_change_but_goes_after_changes_and_timers() -> None:
    """A Service created among many: its siblings' re-audits (their namespace's environment
    changed) come after its own audit and after due timers, whatever was marked first."""
    q, clock = queue(debounce=0.5)
    q.mark([B, C], ripple=True)
    clock.now += 0.1
    q.mark([A], prompt=True)  # the new Service's slice
    clock.now += PROMPT_SECONDS
    assert q.take(10, busy=set()) == [(A, True)]
    assert q.take(10, busy=set()) == []  # the ripple waits for its debounce
    clock.now += 0.5
    assert keys(q.take(10, busy=set())) == [B, C]  # urgent: their verdicts may change
    q.mark([B], ripple=True)  # marked first...
    clock.now += 0.1
    q.mark([C], delay=0.4)  # ... then a timer
    q.mark([A])  # ... then a change
    clock.now += 0.5
    assert q.take(10, busy=set()) == [(A, True), (C, True), (B, True)]


def test_a_change_of_its_own_makes_a_ripple_a_change_and_a_ripple_never_delays_one() -> None:
    q, clock = queue(debounce=0.5)
    q.mark([A], ripple=True)
    assert q.rank(A) == 2
    q.mark([A])  # its own change: a change again
    assert q.rank(A) == 0
    q.mark([B], prompt=True)
    q.mark([B], ripple=True)  # rides along the prompt audit
    assert q.rank(B) == 0 and q.next_due(set()) == clock.now + PROMPT_SECONDS
    q.mark([C], delay=0.1)  # a settle deadline
    q.mark([C], ripple=True)
    clock.now += 0.1
    assert C in keys(q.take(10, busy=set()))  # not pushed back to the debounce
