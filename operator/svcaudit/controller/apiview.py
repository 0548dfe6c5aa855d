"""Is the API server reachable? The reconciler pauses while it is not, and says so.

The informers reconnect their watches by themselves, but a watch that is down delivers
nothing, so the store silently ages. This monitor asks `/readyz` (which includes the API
server's etcd check) every few seconds. After `unknown_after` seconds of failures the
operator stops vouching for its last verdicts (`on_lost`); when the server answers again,
`on_back` re-audits everything (the informers have resumed, or listed again and forgotten
what was deleted during the gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("svcaudit.apiview")


class ApiView:
    def __init__(
        self,
        readyz: Callable[[], Awaitable[bool]],
        interval: float,
        unknown_after: float,
        on_lost: Callable[[float], Awaitable[None]],
        on_back: Callable[[float], Awaitable[None]],
        on_state: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._readyz = readyz
        self.interval = interval
        self.unknown_after = unknown_after
        self._on_lost = on_lost
        self._on_back = on_back
        self._on_state = on_state
        self._clock = clock
        self.down_since: float | None = None
        self.lost = False  # down for at least `unknown_after`: verdicts are Unknown
        self._up = asyncio.Event()
        self._up.set()
        self._poke = asyncio.Event()

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    async def wait_reachable(self) -> None:
        await self._up.wait()

    def suspect(self) -> None:
        """A call just failed without an answer: check now instead of at the next tick."""
        self._poke.set()

    def describe(self) -> str:
        if self.down_since is None:
            return "reachable"
        return f"unreachable for {self._clock() - self.down_since:.0f}s"

    async def check_once(self) -> None:
        ok = await self._readyz()
        now = self._clock()
        if ok and self.down_since is not None:
            down_for = now - self.down_since
            self.down_since = None
            self.lost = False
            self._up.set()
            self._state(True)
            log.info("API server reachable again", down_seconds=round(down_for, 1))
            await self._on_back(down_for)
        elif not ok:
            if self.down_since is None:
                self.down_since = now
                self._up.clear()
                self._state(False)
                log.warning("API server unreachable: audits paused")
            if not self.lost and now - self.down_since >= self.unknown_after:
                self.lost = True
                log.warning(
                    "API server unreachable: verdicts are Unknown until it is back",
                    down_seconds=round(now - self.down_since, 1),
                )
                await self._on_lost(self.down_since)

    def _state(self, reachable: bool) -> None:
        if self._on_state is not None:
            self._on_state(reachable)

    async def run(self) -> None:
        while True:
            await self.check_once()
            self._poke.clear()
            wait = self.interval if self.down_since is None else min(self.interval, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=wait)
