"""Work split over two processes (cli/halves.py), with a real fork: each half done once, the
child's result back through the pipe, and a failed child's half done here instead."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from svcaudit.cli.halves import Recorder, can_fork, in_two, replay

pytestmark = pytest.mark.skipif(not can_fork(), reason="fork on Linux with 2+ cores only")


def test_each_half_once_and_the_child_really_forked() -> None:
    parent = os.getpid()

    def work(items: Sequence[int], in_child: bool) -> tuple[list[int], bool, bool]:
        return [i * i for i in items], in_child, os.getpid() != parent

    (mine, here_flag, here_forked), (theirs, child_flag, child_forked) = in_two(
        work, list(range(1001))
    )
    assert sorted(mine + theirs) == [i * i for i in range(1001)]
    assert (here_flag, here_forked) == (False, False)
    assert (child_flag, child_forked) == (True, True)


def test_a_failing_child_leaves_its_half_to_the_parent() -> None:
    def work(items: Sequence[int], in_child: bool) -> list[int]:
        if in_child:
            raise RuntimeError("the child breaks")
        return list(items)

    mine, theirs = in_two(work, list(range(10)))
    assert sorted(mine + theirs) == list(range(10))


def test_a_large_result_comes_back_whole() -> None:
    def work(items: Sequence[int], in_child: bool) -> dict[int, str]:
        return {i: "x" * 1000 for i in items}  # megabytes: more than a pipe holds

    mine, theirs = in_two(work, list(range(4000)))
    assert len(mine) + len(theirs) == 4000


def test_recorded_calls_are_replayed_in_order() -> None:
    recorder = Recorder()
    recorder.dns_query(0.1, "answer")
    recorder.dns_failed("unreachable")
    seen: list[tuple[str, tuple[object, ...]]] = []

    class Target:
        def dns_query(self, *args: object) -> None:
            seen.append(("dns_query", args))

        def dns_failed(self, *args: object) -> None:
            seen.append(("dns_failed", args))

    replay(recorder.calls, Target())
    assert seen == [("dns_query", (0.1, "answer")), ("dns_failed", ("unreachable",))]
