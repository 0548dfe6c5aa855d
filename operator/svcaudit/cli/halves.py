"""Work split over two processes: half of the items in a forked child, half here.

`check` asks thousands of DNS questions (14k at 10k pods), and asking one costs this
process ~0.2 ms of CPU (building, sending, receiving and parsing it): the DNS part was half of
`check -A`'s time, on one core of two. Forked after the listing, the child already holds
every prepared service (copy-on-write): it gets only the indexes of its half, and sends back
its results, pickled through a pipe. Linux only (fork after SSL and threads is not safe on
macOS); anywhere else, or for small work, or if the child fails, everything runs here.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def can_fork() -> bool:
    return sys.platform == "linux" and (os.cpu_count() or 1) > 1


def in_two(
    work: Callable[[Sequence[Item], bool], Result], items: Sequence[Item]
) -> tuple[Result, Result]:
    """work(items[0::2], False) here and work(items[1::2], True) in a forked child (the flag:
    "in the child": no progress on the terminal). Either result is whatever `work` returns."""
    mine, theirs = items[0::2], items[1::2]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its half, pickled to the parent, and out without cleanup
        code = 1
        try:
            os.close(read_end)
            payload = pickle.dumps(work(theirs, True), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    here = work(mine, False)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not payload:
        return here, work(theirs, False)  # the child failed: its half is done here
    there: Result = pickle.loads(payload)
    return here, there


class Recorder:
    """Stands in for an object whose method calls must happen in another process: records
    them (name, args) to be replayed there by `replay`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def replay(calls: Sequence[tuple[str, tuple[Any, ...]]], target: Any) -> None:
    for name, args in calls:
        getattr(target, name)(*args)
