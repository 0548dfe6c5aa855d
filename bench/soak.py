"""Soak (issue 9 item 5): `python -m bench soak 30m [--pods 3000]` (or `make bench
BENCH_ARGS="--soak 30m --soak-pods 3000"`). Not run in CI.

One mid-size scenario, the operator with its default settle and resync, and continuous churn
(pod labels flipped out of and back into selectors, pods deleted and recreated, selectors
broken and fixed, services recreated) for the given time. Reports the operator's RSS growth
from the end of the warm-up (initial audit + 2 minutes of churn) to the end (must be < 10 %),
its error-level log lines (must be 0), API errors and writes. Writes
bench/results/soak-<stamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness, measure
from bench import scenario as scen
from bench.harness import REPO, log
from bench.kubeapi import ApiError, Kube, Watch

WARMUP_S = 120


@dataclass(frozen=True)
class SoakConfig:
    """What one soak runs: for how long, how big, how much churn, and the operator's settle."""

    duration_s: float
    pods: int = 3000
    churn_rate: float = 2.0  # changes per second
    settle: float = 45.0  # the operator's --settle-seconds (its default)
    timeout: float = 600.0  # for the initial audit
    out: Path | None = None  # default bench/results/soak-<stamp>.json
    keep_cluster: bool = False


def parse_duration(text: str) -> float:
    text = text.strip().lower()
    for suffix, mult in (("h", 3600), ("m", 60), ("s", 1)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * mult
    return float(text)


def churn_driver(kube: Kube, sc: scen.Scenario, rate: float) -> measure.ChurnDriver:
    plain = [s for s in sc.services if s.kind == "plain"]
    rng = random.Random(9)
    pods_by_key = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in sc.pod_objects}
    svc_by_key = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in sc.service_objects
    }

    def run(stop: threading.Event, changes: list[int]) -> None:
        undo: list[tuple[float, Any]] = []
        while not stop.is_set():
            t = time.monotonic()
            due = [u for u in undo if u[0] <= t]
            undo = [u for u in undo if u[0] > t]
            for _, fn in due:
                with contextlib.suppress(ApiError):
                    fn()
                    changes[0] += 1
            s = rng.choice(plain)
            ns, name = s.namespace, s.name
            pod = rng.choice(s.pods)
            pod_path = f"/api/v1/namespaces/{ns}/pods/{pod}"
            svc_path = f"/api/v1/namespaces/{ns}/services/{name}"
            r = rng.random()
            try:
                if r < 0.5:
                    kube.merge_patch(pod_path, {"metadata": {"labels": {"app": name + "-off"}}})
                    undo.append(
                        (
                            t + rng.uniform(1, 60),
                            lambda p=pod_path, a=name: kube.merge_patch(
                                p, {"metadata": {"labels": {"app": a}}}
                            ),
                        )
                    )
                elif r < 0.8:
                    kube.delete(pod_path + "?gracePeriodSeconds=0")
                    body = pods_by_key[(ns, pod)]
                    undo.append(
                        (
                            t + rng.uniform(1, 30),
                            lambda n=ns, b=body: kube.request(
                                "POST", f"/api/v1/namespaces/{n}/pods", b, ok=(409,)
                            ),
                        )
                    )
                elif r < 0.95:
                    kube.strategic_patch(svc_path, {"spec": {"selector": {"app": name + "-x"}}})
                    undo.append(
                        (
                            t + rng.uniform(5, 90),
                            lambda p=svc_path, a=name: kube.strategic_patch(
                                p, {"spec": {"selector": {"app": a}}}
                            ),
                        )
                    )
                else:
                    kube.delete(svc_path)
                    body = svc_by_key[(ns, name)]
                    undo.append(
                        (
                            t + rng.uniform(1, 10),
                            lambda n=ns, b=body: kube.request(
                                "POST", f"/api/v1/namespaces/{n}/services", b, ok=(409,)
                            ),
                        )
                    )
                changes[0] += 1
            except ApiError:
                pass
            stop.wait(max(0.0, 1 / rate - (time.monotonic() - t)))
        for _, fn in undo:
            with contextlib.suppress(ApiError):
                fn()

    return run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench soak",
        description="the operator under continuous churn: RSS growth and error lines",
    )
    p.add_argument("duration", type=parse_duration, help="e.g. 30m, 2h, 90s")
    p.add_argument("--pods", type=int, default=SoakConfig.pods, help="scenario size")
    p.add_argument(
        "--churn-rate", type=float, default=SoakConfig.churn_rate, help="changes per second"
    )
    p.add_argument("--settle", type=float, default=SoakConfig.settle, help="operator's settle")
    p.add_argument("--timeout", type=float, default=SoakConfig.timeout, help="initial audit")
    p.add_argument("--out", type=Path, help="result file (default bench/results/soak-<stamp>.json)")
    p.add_argument("--keep-cluster", action="store_true", help="leave the cluster up")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    return soak(
        SoakConfig(
            duration_s=a.duration,
            pods=a.pods,
            churn_rate=a.churn_rate,
            settle=a.settle,
            timeout=a.timeout,
            out=a.out,
            keep_cluster=a.keep_cluster,
        )
    )


def soak(cfg: SoakConfig) -> int:
    """Run one soak; 0 when it passed (RSS growth < 10 %, no error line)."""
    duration = cfg.duration_s
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = REPO / "bench" / "results" / "tmp" / f"soak-{stamp}"
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "kind": "svcaudit-soak",
        "started": stamp,
        "machine": harness.machine(),
        "duration_s": duration,
        "pods": cfg.pods,
        "churn_rate_per_s": cfg.churn_rate,
    }
    out_path = cfg.out or REPO / "bench" / "results" / f"soak-{stamp}.json"
    try:
        nodes = harness.nodes_for(cfg.pods)
        log(f"soak: {cfg.pods} pods, {duration:.0f}s, churn {cfg.churn_rate}/s")
        harness.cluster_up(nodes)
        kube = Kube(harness.admin_kubeconfig())
        op_kc = harness.install_operator_prereqs(kube)
        sc = scen.generate(cfg.pods)
        result["scenario"] = sc.summary()
        result["setup"] = measure.create_scenario(kube, sc)
        svc = Watch(kube, "/api/v1/services", "services")
        op = harness.Operator(op_kc, tmp / "operator.log", settle=cfg.settle).start()
        took = measure.wait_initial_audit(op, svc, cfg.timeout)
        if took is None:
            raise RuntimeError(f"initial audit not done after {cfg.timeout}s")
        result["initial_audit_s"] = took
        log(f"initial audit {took:.1f}s; churn for {duration:.0f}s")
        stop = threading.Event()
        changes = [0]
        th = threading.Thread(
            target=churn_driver(kube, sc, cfg.churn_rate), args=(stop, changes), daemon=True
        )
        m0 = op.metrics()
        t0 = time.monotonic()
        th.start()
        samples = []
        baseline = None
        while time.monotonic() - t0 < duration:
            op.check_alive()
            st = op.stats()
            el = time.monotonic() - t0
            samples.append({"t": round(el, 1), **{k: round(v, 2) for k, v in st.items()}})
            if baseline is None and el >= WARMUP_S:
                baseline = st["rss_mb"]
                log(f"  warm-up over: RSS {baseline:.1f} MB")
            if len(samples) % 30 == 0:
                log(
                    f"  {el:.0f}s: RSS {st['rss_mb']:.1f} MB, CPU {st['cpu_s']:.0f}s, "
                    f"changes {changes[0]}"
                )
            time.sleep(10)
        stop.set()
        th.join(120)
        measure.wait_quiet(op, timeout=180)
        m1 = op.metrics()
        st = op.stats()
        end_rss = st["rss_mb"]
        errors = op.error_lines()
        op.stop()
        svc.stop()
        growth = (end_rss - baseline) / baseline * 100 if baseline else None
        result.update(
            {
                "changes_made": changes[0],
                "rss_mb_after_warmup": baseline,
                "rss_mb_end": round(end_rss, 1),
                "rss_growth_pct": None if growth is None else round(growth, 2),
                "peak_rss_mb": round(st["hwm_mb"], 1),
                "cpu_s": round(st["cpu_s"], 1),
                "error_log_lines": len(errors),
                "error_log_examples": errors[:5],
                "operator_writes": op.total("svcaudit_writes_total", m1)
                - op.total("svcaudit_writes_total", m0),
                "operator_api_errors": op.total("svcaudit_api_errors_total", m1)
                - op.total("svcaudit_api_errors_total", m0),
                "samples": samples,
                "pass": bool(growth is not None and growth < 10 and not errors),
            }
        )
        log(
            f"soak done: RSS {baseline} -> {end_rss:.1f} MB ({growth}%), "
            f"{len(errors)} error lines, pass={result['pass']}"
        )
    finally:
        if not cfg.keep_cluster:
            harness.cluster_down()
        result["finished"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out_path.write_text(json.dumps(result, indent=1))
        log(f"wrote {out_path}")
    return 0 if result.get("pass") else 1
