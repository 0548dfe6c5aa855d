"""`python -m bench COMMAND [ARGS...]`, from the repository's root. Commands:

run: the benchmark at scale, with Popeye (make bench; `run --help` lists every knob;
     `run --soak 30m` runs the soak below)
soak: the soak test: `soak DURATION [--pods N] [--churn-rate R] ...`
chart: redraw the chart of a result: `chart bench/results/bench-<stamp>.json [out.png]`
report: the Markdown table of a result: `report bench/results/bench-<stamp>.json`
core: micro-benchmark of the pure core (`core --help`)
profile: py-spy profile of the operator's initial pass and steady state (`profile --help`)
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _run(argv: list[str]) -> int:
    from bench import run

    return run.main(argv)


def _soak(argv: list[str]) -> int:
    from bench import soak

    return soak.main(argv)


def _chart(argv: list[str]) -> int:
    from bench import chart  # matplotlib: the bench extra

    return chart.main(argv)


def _report(argv: list[str]) -> int:
    from bench import report

    return report.main(argv)


def _core(argv: list[str]) -> int:
    from bench import core_bench  # svcaudit itself

    return core_bench.main(argv)


def _profile(argv: list[str]) -> int:
    from bench import profile  # py-spy: the bench extra

    return profile.main(argv)


# Imported on demand: each command needs only its own dependencies.
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "soak": _soak,
    "chart": _chart,
    "report": _report,
    "core": _core,
    "profile": _profile,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"unknown command {argv[0]!r}\n{__doc__}", file=sys.stderr)
        return 2
    return command(argv[1:])


sys.exit(main(sys.argv[1:]))
