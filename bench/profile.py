"""The operator under py-spy (issue 20): `python -m bench profile [--pods 10000] [--steady 120]`.

On the bench cluster (.cluster-bench, ports +100: never the test cluster), with the scenario
of `bench run`, the operator (settle 0, as `bench run` starts it) is sampled by `py-spy record`
in two windows:

- initial: from its start until every Service carries the four svcaudit.dev/ conditions and
  every ServiceAudit is written (measure.wait_initial_audit / wait_initial_reports);
- steady: `--steady` seconds with no change, after measure.wait_quiet.

Each window is recorded twice at once on the same pid: `--format raw` (collapsed stacks: the
numbers) and `--format flamegraph` (the picture), both `--nonblocking` and `--function` (a frame
is `function (file:first line)`), idle threads left out. Nonblocking because py-spy's default
mode (it pauses the process for each sample) judges a thread busy from its OS state read just
before the pause, and counted idle threads as busy: the event loop waiting in epoll, the thread
pool's workers waiting on their queue (half the steady-state samples at 1k pods, and 18 % on a
toy of one half-busy thread beside idle ones); without the pause it judges idleness from the
stack (a thread in a known wait), which counted the toy's busy half exactly. Without the pause
it also never slows the operator, and two recorders do not fight over ptrace. Writes
docs/img/profile-<window>-<size>.svg, the collapsed stacks, a summary and the hot-spot tables
under bench/results/profile-<stamp>/ (gzipped above 1 MB), and prints the top functions by
self and inclusive samples. See docs/benchmarks.md ("Profile (py-spy)").
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness, measure
from bench import scenario as scen
from bench.harness import REPO, log
from bench.kubeapi import Kube, Watch

RESULTS = REPO / "bench" / "results"
IMG = REPO / "docs" / "img"
PY_SPY = Path(sys.executable).parent / "py-spy"
GZIP_ABOVE = 1_000_000  # bytes: larger collapsed files are committed gzipped
_SAMPLES_RE = re.compile(r"Samples: (\d+) Errors: (\d+)")

Stacks = Counter[tuple[str, ...]]


# -- py-spy ------------------------------------------------------------------------------------


class Spy:
    """One `py-spy record` on a running pid; `stop()` sends SIGINT, on which py-spy writes its
    output and exits."""

    def __init__(self, pid: int, out: Path, fmt: str, rate: int, log_dir: Path) -> None:
        self.out = out
        self.log_path = log_dir / f"{out.name}.py-spy.log"
        self.argv = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(rate)]
        self.argv += ["--nonblocking", "--function", "--format", fmt, "--output", str(out)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 15) -> Spy:
        """Start and wait until py-spy samples; retried while the interpreter is not readable
        yet (py-spy exits at once with "Failed to find python version" on a pid that is still
        starting up)."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT)
            while self.proc.poll() is None and "Sampling process" not in self._log():
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.started_at = time.monotonic()
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"py-spy could not attach:\n{self._log()[-2000:]}")
            time.sleep(0.1)

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> dict[str, int]:
        """py-spy's own count of samples and errors (failed reads)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        m = _SAMPLES_RE.search(self._log())
        if m is None or not self.out.exists():
            raise RuntimeError(f"py-spy wrote nothing to {self.out}:\n{self._log()[-2000:]}")
        return {"samples": int(m.group(1)), "errors": int(m.group(2))}


@dataclass
class Recording:
    """The two recorders of one window: raw stacks (the numbers) and the flamegraph."""

    raw: Spy
    svg: Spy

    @classmethod
    def start(cls, pid: int, raw: Path, svg: Path, rate: int, log_dir: Path) -> Recording:
        return cls(
            Spy(pid, raw, "raw", rate, log_dir).start(),
            Spy(pid, svg, "flamegraph", rate, log_dir).start(),
        )

    def stop(self) -> dict[str, dict[str, int]]:
        return {"raw": self.raw.stop(), "flamegraph": self.svg.stop()}


# -- the collapsed stacks ---------------------------------------------------------------------


def read_collapsed(path: Path) -> Stacks:
    """`frame;frame;... count` lines (py-spy's raw format, plain or gzipped), root first."""
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode(errors="replace")
    stacks: Stacks = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


@dataclass
class HotSpots:
    """Samples by frame: self (the innermost frame of a sample) and inclusive (every frame on
    the stack, once per sample even when it recurses)."""

    total: int = 0
    self_: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, stacks: Stacks) -> HotSpots:
        hs = cls()
        for frames, n in stacks.items():
            hs.total += n
            hs.self_[frames[-1]] += n
            for frame in set(frames):
                hs.inclusive[frame] += n
        return hs

    def top(self, which: str, n: int) -> list[dict[str, Any]]:
        counts = self.self_ if which == "self" else self.inclusive
        return [
            {"frame": frame, "samples": c, "pct": round(100 * c / self.total, 1)}
            for frame, c in counts.most_common(n)
        ]


def table(rows: list[dict[str, Any]], rate: int) -> list[str]:
    """Markdown rows: % of the window's samples, samples, ~seconds on CPU, the frame."""
    out = ["| % | samples | ~s | function (file:line) |", "| ---: | ---: | ---: | --- |"]
    for r in rows:
        frame = r["frame"].replace("|", "\\|")
        out.append(f"| {r['pct']:.1f} | {r['samples']} | {r['samples'] / rate:.1f} | {frame} |")
    return out


def window_report(name: str, w: dict[str, Any], rate: int) -> list[str]:
    head = (
        f"## {name}: {w['wall_s']:.1f} s wall, {w['cpu_s']:.1f} CPU s "
        f"({w['user_s']:.1f} user, {w['sys_s']:.1f} system), "
        f"{w['stack_samples']} samples ({w['stack_samples'] / rate:.1f} s of busy threads)"
    )
    return [
        head,
        "",
        f"Top {len(w['top_self'])} by self samples:",
        "",
        *table(w["top_self"], rate),
        "",
        f"Top {len(w['top_inclusive'])} by inclusive samples:",
        "",
        *table(w["top_inclusive"], rate),
        "",
    ]


def shown(path: Path) -> str:
    """The path from the repository's root when it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def finish_window(raw: Path, top: int) -> dict[str, Any]:
    """Aggregate the raw file, then gzip it if it is larger than GZIP_ABOVE."""
    hs = HotSpots.of(read_collapsed(raw))
    final = raw
    if raw.stat().st_size > GZIP_ABOVE:
        final = raw.with_name(raw.name + ".gz")
        with open(raw, "rb") as src, gzip.open(final, "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
    return {
        "collapsed": shown(final),
        "stack_samples": hs.total,
        "top_self": hs.top("self", top),
        "top_inclusive": hs.top("inclusive", top),
    }


def cpu_split(pid: int) -> dict[str, float]:
    """User and system CPU seconds of a process (utime, stime of /proc/<pid>/stat): a send()
    on loopback runs the receiving side's network stack in the sender's system time."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    return {"user_s": int(parts[11]) / harness.CLK_TCK, "sys_s": int(parts[12]) / harness.CLK_TCK}


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Paths:
    """Where one run writes: the pictures, the results folder, the scratch folder."""

    size: str
    out: Path
    tmp: Path
    img: Path = IMG

    def raw(self, window: str) -> Path:
        return self.out / f"{window}-{self.size}.collapsed"

    def svg(self, window: str) -> Path:
        return self.img / f"profile-{window}-{self.size}.svg"


def size_label(pods: int) -> str:
    return f"{pods // 1000}k" if pods % 1000 == 0 else str(pods)


def setup(pods: int) -> tuple[Kube, str, dict[str, Any]]:
    """The bench cluster and the scenario, as bench/run.py's bench_size makes them."""
    info: dict[str, Any] = {"pods_requested": pods}
    nodes = harness.nodes_for(pods)
    log(f"=== {pods} pods: cluster with {nodes} kwok nodes")
    info["cluster_up_s"] = round(harness.cluster_up(nodes), 1)
    info["nodes"] = nodes
    kube = Kube(harness.admin_kubeconfig())
    harness.cap_node_pods(kube)  # added to bench_size after the first profile (4077a15)
    info["node_pod_cap"] = harness.NODE_POD_CAP
    op_kc = harness.install_operator_prereqs(kube)
    sc = scen.generate(pods)
    info["scenario"] = sc.summary()
    log(f"scenario: {json.dumps(info['scenario'])}")
    info["setup"] = measure.create_scenario(kube, sc)
    log(f"scenario created: {json.dumps(info['setup'])}")
    return kube, op_kc, info


def initial_window(
    op: harness.Operator, svc: Watch, sas: Watch, paths: Paths, args: argparse.Namespace
) -> dict[str, Any]:
    """Record from the operator's start until its initial pass is written in full."""
    rec = Recording.start(op.pid, paths.raw("initial"), paths.svg("initial"), args.rate, paths.tmp)
    attached = rec.raw.started_at - op.started_at
    log(f"initial pass: py-spy attached {attached:.2f}s after the operator's start")
    took = measure.wait_initial_audit(op, svc, args.timeout)
    if took is None:
        raise RuntimeError(f"initial audit not done after {args.timeout}s")
    reported = measure.wait_initial_reports(op, svc, sas, args.timeout)
    if reported is None:
        raise RuntimeError(f"ServiceAudits not all written after {args.timeout}s")
    st, split = op.stats(), cpu_split(op.pid)
    wall = time.monotonic() - op.started_at
    spy = rec.stop()
    m = op.metrics()
    log(f"initial pass: conditions {took:.1f}s, ServiceAudits {reported:.1f}s")
    log(f"initial pass: CPU {st['cpu_s']:.1f}s, peak RSS {st['hwm_mb']:.0f} MB")
    return {
        "initial_audit_s": round(took, 2),
        "initial_reports_s": round(reported, 2),
        "wall_s": round(wall, 2),  # from the operator's start to the recorders' stop
        "cpu_s": round(st["cpu_s"], 2),  # from the operator's start (imports included)
        **{k: round(v, 2) for k, v in split.items()},
        "spy_attached_after_s": round(attached, 2),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],  # samples count waits for a core
        "peak_rss_mb": round(st["hwm_mb"], 1),
        "audits": op.total("svcaudit_audits_total", m),
        "writes": op.total("svcaudit_writes_total", m),
        "py_spy": spy,
    }


def steady_window(op: harness.Operator, paths: Paths, args: argparse.Namespace) -> dict[str, Any]:
    """Record `--steady` seconds with no change, once the operator is quiet."""
    measure.wait_quiet(op)
    log(f"steady state: {args.steady:g}s with no change")
    m0 = op.metrics()
    rec = Recording.start(op.pid, paths.raw("steady"), paths.svg("steady"), args.rate, paths.tmp)
    c0, s0, t0 = op.stats()["cpu_s"], cpu_split(op.pid), time.monotonic()
    time.sleep(args.steady)
    c1, s1, t1 = op.stats()["cpu_s"], cpu_split(op.pid), time.monotonic()
    spy = rec.stop()
    m1 = op.metrics()
    log(f"steady state: CPU {c1 - c0:.1f}s in {t1 - t0:.1f}s")
    return {
        "wall_s": round(t1 - t0, 2),
        "cpu_s": round(c1 - c0, 2),
        **{k: round(s1[k] - s0[k], 2) for k in s0},
        "audits": op.total("svcaudit_audits_total", m1) - op.total("svcaudit_audits_total", m0),
        "writes": op.total("svcaudit_writes_total", m1) - op.total("svcaudit_writes_total", m0),
        "rss_mb_end": round(op.stats()["rss_mb"], 1),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "py_spy": spy,
    }


def profile(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    kube, op_kc, info = setup(args.pods)
    svc = Watch(kube, "/api/v1/services", "services")
    sas = Watch(kube, f"{measure.SA_API}/serviceaudits", "serviceaudits")
    info["services_total"] = len(svc.objects)
    windows: dict[str, Any] = {}
    op = harness.Operator(op_kc, paths.tmp / "operator.log", settle=0).start()
    try:
        windows["initial"] = initial_window(op, svc, sas, paths, args)
        windows["steady"] = steady_window(op, paths, args)
        info["operator_error_log_lines"] = len(op.error_lines())
    finally:
        op.stop()
        svc.stop()
        sas.stop()
    for name, w in windows.items():
        w.update(finish_window(paths.raw(name), args.top))
        w["svg"] = shown(paths.svg(name))
    return {**info, "windows": windows}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench profile",
        description="py-spy profile of the operator's initial pass and steady state (issue 20)",
    )
    p.add_argument("--pods", type=int, default=10000, help="scenario size")
    p.add_argument("--steady", type=float, default=120.0, help="seconds of steady state")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25, help="rows of each hot-spot table")
    p.add_argument("--timeout", type=float, default=900.0, help="for the initial pass")
    p.add_argument("--keep-cluster", action="store_true", help="leave the bench cluster up")
    p.add_argument(
        "--out", type=Path, help="results folder (default bench/results/profile-<stamp>)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not PY_SPY.exists():
        print(f"{PY_SPY} is missing: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS / f"profile-{stamp}"
    paths = Paths(size_label(args.pods), out, RESULTS / "tmp" / f"profile-{stamp}")
    for d in (paths.out, paths.tmp, paths.img):
        d.mkdir(parents=True, exist_ok=True)
    # the lead may have uncommitted operator changes in the tree: say what was profiled
    (paths.out / "operator-status.txt").write_text(
        f"HEAD {git('rev-parse', '--short', 'HEAD').strip()}\n"
        f"git status --short operator/:\n{git('status', '--short', 'operator/')}"
    )
    result: dict[str, Any] = {
        "kind": "svcaudit-profile",
        "started": stamp,
        "machine": harness.machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        result.update(profile(args, paths))
    finally:
        if not args.keep_cluster:
            harness.cluster_down()
    result["finished"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (paths.out / "summary.json").write_text(json.dumps(result, indent=1))
    lines = [f"# py-spy profile, {args.pods} pods, {stamp} ({result['machine']['git']})", ""]
    for name, w in result["windows"].items():
        lines += window_report(name, w, args.rate)
    report = "\n".join(lines)
    (paths.out / "hotspots.md").write_text(report)
    print(report)
    log(f"wrote {paths.out} and {paths.svg('initial')}, {paths.svg('steady')}")
    return 0
