"""The periodic re-audit spread over its period (controller/resync.py), on a fake clock: every
service once per period, in batches, at the same phase every period."""

from __future__ import annotations

from collections import Counter

from svcaudit.controller.resync import RollingResync, phase

KEYS = [("ns", f"svc-{i}") for i in range(1000)]


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_every_service_once_per_period_spread_over_it() -> None:
    clock = Clock()
    r = RollingResync(100.0, clock)
    r.restart(KEYS)
    per_second: list[int] = []
    seen: Counter[tuple[str, str]] = Counter()
    for _ in range(100):
        clock.now += 1.0
        released, new_period = r.due(lambda: KEYS)
        per_second.append(len(released))
        seen.update(released)
    assert set(seen) == set(KEYS) and set(seen.values()) == {1}
    assert max(per_second) < 30  # ~10 a second, never the whole pass at once
    assert new_period  # the last tick began the next period


def test_the_same_phase_every_period() -> None:
    clock = Clock()
    r = RollingResync(10.0, clock)
    r.restart(KEYS)
    when: dict[int, dict[tuple[str, str], int]] = {0: {}, 1: {}}
    for step in range(1, 161):  # two periods of 0.125 s steps
        clock.now += 0.125
        released, _ = r.due(lambda: KEYS)
        for k in released:
            when[(step - 1) // 80][k] = (step - 1) % 80
    assert when[0] == when[1]
    assert 0 <= phase(KEYS[0]) < 1


def test_next_at_says_when_the_next_batch_is_due_in_granules() -> None:
    clock = Clock()
    r = RollingResync(100.0, clock)
    r.restart([KEYS[0]])
    at = r.next_at()
    assert clock.now < at <= clock.now + 100
    assert (at - clock.now) >= phase(KEYS[0]) * 100
    clock.now = at
    released, _ = r.due(lambda: [KEYS[0]])
    assert released == [KEYS[0]]
    assert r.next_at() == 150.0  # nothing else this period: its end


def test_services_added_meanwhile_join_the_next_period() -> None:
    clock = Clock()
    r = RollingResync(10.0, clock)
    r.restart(KEYS[:10])
    clock.now += 10.0
    released, new_period = r.due(lambda: KEYS[:20])
    assert new_period
    clock.now += 9.99
    more, _ = r.due(lambda: KEYS[:20])
    assert set(released) | set(more) == set(KEYS[:20])
