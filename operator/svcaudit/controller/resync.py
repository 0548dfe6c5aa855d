"""The periodic re-audit of every service (DNS has no watch), spread over its period.

Each service is re-audited once per `period`, at a phase of its own within it (a stable hash
of its key, so the same moment every period and across restarts), released in batches at
most GRANULE_SECONDS apart. A pass over every service at once made the operator's CPU a
spike every minute (2,000 audits and their DNS questions at 10k pods) and held changes
behind it; spread, it is a steady trickle, and a DNS failure shows in the first services
re-audited within seconds instead of at the next pass.

Pure bookkeeping over an injected monotonic clock (tests drive it).
"""

from __future__ import annotations

import bisect
import time
import zlib
from collections.abc import Callable, Iterable

from svcaudit.controller.indexes import Key

GRANULE_SECONDS = 1.0  # at most this often a batch is released (and the loop woken for it)


def phase(key: Key) -> float:
    """Where in the period `key` is re-audited: a fraction in [0, 1), stable across runs."""
    return zlib.crc32(f"{key[0]}/{key[1]}".encode()) / 2**32


class RollingResync:
    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self.granule = min(GRANULE_SECONDS, period / 20)
        self._start = -float("inf")
        self._order: list[tuple[float, Key]] = []  # (offset in the period, key), sorted
        self._next = 0  # the first of _order not released yet

    def restart(self, keys: Iterable[Key], start: float | None = None) -> None:
        """A new period over `keys`, from `start` (default now: after a full pass, every
        service was just audited, so each is next due at its phase)."""
        self._start = self.clock() if start is None else start
        self._order = sorted((phase(k) * self.period, k) for k in keys)
        self._next = 0

    def due(self, keys: Callable[[], Iterable[Key]]) -> tuple[list[Key], bool]:
        """The services whose re-audit has come, and whether a new period began (the
        services of the cluster are then read again from `keys`)."""
        now = self.clock()
        out: list[Key] = []
        new_period = now >= self._start + self.period
        if new_period:
            out = [k for _, k in self._order[self._next :]]  # the end of the last period
            following = self._start + self.period
            self.restart(keys(), following if now < following + self.period else now)
        elapsed = now - self._start
        end = bisect.bisect_right(self._order, (elapsed, ("\uffff", "")), lo=self._next)
        out += [k for _, k in self._order[self._next : end]]
        self._next = end
        return out, new_period

    def next_at(self) -> float:
        """When `due` next has something to release (monotonic), in whole granules."""
        if self._next >= len(self._order):
            return self._start + self.period
        offset = self._order[self._next][0]
        return self._start + min(self.period, (offset // self.granule + 1) * self.granule)
