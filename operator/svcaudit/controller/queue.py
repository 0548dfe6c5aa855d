"""Which Service to audit next, and when: the reconciler's work queue.

Keys come in by `mark`; the reconciler takes the due ones as it has free slots. The policy:

- a change (no delay) is debounced on the trailing edge: each change of a burst pushes the
  audit back by `debounce`, but never beyond MAX_WAIT_FACTOR debounces after the burst's
  first change;
- a prompt change (an EndpointSlice written: the control plane's own answer to a pod or
  service change, which the audit waits for) is audited PROMPT_SECONDS later (coalescing
  the slices written together), not a debounce: a single change is then seen within tens of
  milliseconds of the control plane (bench/: the debounce was ~0.5 s of the detection
  latency). Throttled: at most PROMPT_BURST prompt audits of a service per `debounce` (the
  controller may write a change's slices in two steps; a plain or background audit just
  before does not count), so a burst still costs few audits per window. Once prompt, a
  later plain change of the burst does not push it back; and a plain change within
  ECHO_SECONDS after a prompt audit (the pod or Service event of the same change, whose
  watch lagged the slice's) is prompt too, once;
- a ripple (a service whose namespace's environment changed, a Service or pod added or
  gone, while nothing of its own did) is debounced like a change but goes after changes
  and timers: a Service created among 40 is audited before the 40 re-audits it causes
  (bench/: a recreated Service's detection waited behind earlier trials' ripples, 0.96 s);
  a change of its own makes it a change again;
- a timer (an explicit delay: a settle deadline, a retry) only ever brings an audit forward;
- a background pass (every service: a resync, the API server back) goes after changes and
  timers, so that a change queued behind a whole pass is not seen a pass late (bench/: 12 s
  at 2,000 services);
- within a rank, the earliest due first.

Pure bookkeeping over an injected monotonic clock: no task, no sleep (tests drive the clock).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Container, Iterable

from svcaudit.controller.indexes import Key

MAX_WAIT_FACTOR = 5.0
PROMPT_SECONDS = 0.02  # a prompt change's wait (at most the debounce)
PROMPT_BURST = 2  # prompt audits of a service within one debounce before it is throttled
ECHO_SECONDS = 0.3  # a plain change this soon after a prompt audit is its other half
CHANGE, TIMER, RIPPLE, BACKGROUND = 0, 1, 2, 3  # ranks: who goes first among due audits


class AuditQueue:
    def __init__(self, debounce: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.debounce = debounce
        self.clock = clock
        self.wake = asyncio.Event()  # set when something was marked or finished
        self._due: dict[Key, float] = {}
        self._burst_start: dict[Key, float] = {}
        self._background: set[Key] = set()
        self._prompt: set[Key] = set()  # due for a prompt change: never pushed back
        # when each service's last PROMPT_BURST prompt audits were taken, oldest first
        self._taken_at: dict[Key, tuple[float, ...]] = {}
        self._prompt_taken: dict[Key, float] = {}  # ... if it was a prompt one, not yet echoed
        self._echoes: set[Key] = set()  # due promptly as the echo of a prompt audit
        self._ripple: set[Key] = set()  # due for a ripple only (no change of its own)
        self._prune_above = 4096  # entries of _taken_at before the old ones are dropped
        self._fresh: set[Key] = set()  # marked since the plan was made: to slot into it
        self._plan: list[tuple[int, float, Key]] = []  # due audits, a heap of (rank, due, key)
        # Every due time set, a heap: next_due reads its top (stale entries dropped there)
        # instead of scanning every waiting service (3 % of the initial pass at 10k pods).
        self._timeline: list[tuple[float, Key]] = []
        self._replan_at = math.inf

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def mark(
        self,
        keys: Iterable[Key],
        delay: float | None = None,
        *,
        background: bool = False,
        prompt: bool = False,
        ripple: bool = False,
    ) -> None:
        """A change (delay None; `prompt`: an EndpointSlice's; `ripple`: its namespace's
        environment's only), a timer (delay seconds), or a background pass."""
        now = self.clock()
        for key in keys:
            current = self._due.get(key)
            if delay is None and ripple:
                self._ripple_change(key, now, current)
            elif delay is None:
                self._ripple.discard(key)  # a change of its own: ranked as one
                self._change(key, now, current, prompt)
            elif current is None or now + delay < current:
                self._set_due(key, now + delay)
                if background:
                    self._background.add(key)
                else:
                    self._background.discard(key)
            self._fresh.add(key)
        if self._fresh:
            self.wake.set()

    def _debounced(self, key: Key, now: float) -> float:
        """The trailing debounce of a burst: `debounce` after this change, but no later than
        MAX_WAIT_FACTOR debounces after the burst's first one (which this may be)."""
        first = self._burst_start.setdefault(key, now)
        return min(now + self.debounce, first + MAX_WAIT_FACTOR * self.debounce)

    def _change(self, key: Key, now: float, current: float | None, prompt: bool) -> None:
        due = self._debounced(key, now)
        if current is not None and key in self._prompt:
            due = current  # prompt already: a plain change of the burst rides along
        lead = now + min(PROMPT_SECONDS, self.debounce)
        if prompt:
            recent = self._taken_at.get(key, ())
            soonest = recent[0] + self.debounce if len(recent) >= PROMPT_BURST else -math.inf
            due = min(due, max(lead, soonest))
            self._prompt.add(key)
        elif now - self._prompt_taken.pop(key, -math.inf) <= ECHO_SECONDS:
            # The other half of the change that made the slice: the pod or Service event
            # came after the slice's (their watches race), and the prompt audit saw only the
            # slice. Once per prompt audit, so a burst still costs few audits.
            due = min(due, lead)
            self._prompt.add(key)
            self._echoes.add(key)  # its audit arms no further echo
        self._set_due(key, due)
        self._background.discard(key)

    def _ripple_change(self, key: Key, now: float, current: float | None) -> None:
        if key in self._burst_start and key not in self._ripple:
            return  # a change of its own is due: the ripple rides along
        timer = current if key not in self._burst_start else None  # a deadline, a pass
        due = self._debounced(key, now)
        if timer is not None:
            due = min(due, timer)  # a ripple never postpones an audit already due
        self._ripple.add(key)
        self._set_due(key, due)
        self._background.discard(key)

    def rank(self, key: Key) -> int:
        if key in self._burst_start:
            return RIPPLE if key in self._ripple else CHANGE
        return BACKGROUND if key in self._background else TIMER

    def take(self, free: int, busy: Container[Key]) -> list[tuple[Key, bool]]:
        """Up to `free` due keys not in `busy` (being audited), best first, each with
        whether it is urgent (a change or a timer, not a background pass). Taken keys
        leave the queue; a busy one stays for when its audit is done."""
        now = self.clock()
        self._update_plan(now, busy)
        out: list[tuple[Key, bool]] = []
        while self._plan and len(out) < free:
            _, _, key = heapq.heappop(self._plan)
            if key in busy or self._due.get(key, math.inf) > now:
                continue  # audited meanwhile, or pushed back by a new change
            out.append((key, self.rank(key) != BACKGROUND))
            self._due.pop(key, None)
            self._burst_start.pop(key, None)
            self._background.discard(key)
            if key in self._prompt:  # the throttle counts prompt audits only
                self._taken_at[key] = (*self._taken_at.get(key, ())[-(PROMPT_BURST - 1) :], now)
                if key not in self._echoes:
                    self._prompt_taken[key] = now
            self._prompt.discard(key)
            self._echoes.discard(key)
            self._ripple.discard(key)
        if len(self._taken_at) > self._prune_above:  # services deleted long ago
            self._taken_at = {
                k: t for k, t in self._taken_at.items() if t[-1] > now - self.debounce
            }
            self._prompt_taken = {
                k: t for k, t in self._prompt_taken.items() if t > now - ECHO_SECONDS
            }
            self._prune_above = max(4096, 2 * len(self._taken_at))
        return out

    def _update_plan(self, now: float, busy: Container[Key]) -> None:
        """Sort what is due once; afterwards slot in only what was marked since (a pass over
        2,000 services re-sorted per mark was 5 % of the operator's CPU). A change or timer
        not yet due jumps the queue once due: plan again then."""
        if not self._plan or now >= self._replan_at:
            self._plan = [
                (self.rank(k), t, k) for k, t in self._due.items() if t <= now and k not in busy
            ]
            heapq.heapify(self._plan)
            self._fresh.clear()
            self._replan_at = min(
                (t for k, t in self._due.items() if t > now and k not in self._background),
                default=math.inf,
            )
            return
        for key in self._fresh:
            t = self._due.get(key)
            if t is None or key in busy:
                continue
            if t <= now:
                heapq.heappush(self._plan, (self.rank(key), t, key))
            elif key not in self._background:
                self._replan_at = min(self._replan_at, t)
        self._fresh.clear()

    def done(self, key: Key) -> None:
        """An audit of `key` finished: if it was marked again meanwhile, it is due now."""
        if key in self._due:
            self._fresh.add(key)
        self.wake.set()

    def _set_due(self, key: Key, due: float) -> None:
        self._due[key] = due
        heapq.heappush(self._timeline, (due, key))
        if len(self._timeline) > 4 * len(self._due) + 1024:  # mostly stale: start afresh
            self._timeline = [(t, k) for k, t in self._due.items()]
            heapq.heapify(self._timeline)

    def next_due(self, busy: Container[Key]) -> float:
        """When the earliest waiting audit is due (monotonic; inf: none waits)."""
        aside: list[tuple[float, Key]] = []
        found = math.inf
        while self._timeline:
            due, key = self._timeline[0]
            if self._due.get(key) != due:
                heapq.heappop(self._timeline)  # taken, or due at another time since
            elif key in busy:
                aside.append(heapq.heappop(self._timeline))  # waits for its audit to end
            else:
                found = due
                break
        for entry in aside:
            heapq.heappush(self._timeline, entry)
        return found

    def pending(self) -> bool:
        """Whether due audits wait in the plan (reports then wait for them)."""
        return bool(self._plan)
