"""svcaudit at scale (issue 8): `make bench [BENCH_ARGS="--sizes 1000,5000,10000"]`, i.e.
`python -m bench run [--sizes ...]`.

For each size, on its own local cluster (.cluster-bench, ports +100: never the test cluster):
creates the scenario (bench/scenario.py), then measures the operator's initial audit,
detection latency (settle 0 and the default settle) against the control plane's own
EndpointSlice latency, RSS and CPU, API requests in steady state and under churn, and
`svcaudit check -A` against Popeye. Writes bench/results/<stamp>.json (+ a chart with
bench/chart.py). See docs/benchmarks.md.

`--soak 30m` instead runs the soak test (bench/soak.py, also `python -m bench soak 30m`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import floor, harness, measure, soak
from bench import scenario as scen
from bench.harness import REPO, log
from bench.kubeapi import Kube, Watch

RESULTS = REPO / "bench" / "results"


def bench_size(pods: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"pods_requested": pods, "load_avg_at_start": os.getloadavg()}
    nodes = harness.nodes_for(pods)
    log(f"=== {pods} pods: cluster with {nodes} kwok nodes")
    out["cluster_up_s"] = round(harness.cluster_up(nodes), 1)
    out["nodes"] = nodes
    kube = Kube(harness.admin_kubeconfig())
    harness.cap_node_pods(kube)
    out["node_pod_cap"] = harness.NODE_POD_CAP
    op_kc = harness.install_operator_prereqs(kube)
    sc = scen.generate(pods)
    out["scenario"] = sc.summary()
    out["setup"] = measure.create_scenario(kube, sc)
    footprint = out["cluster_footprint"] = {"after_setup": harness.cluster_footprint()}
    svc = Watch(kube, "/api/v1/services", "services")
    sas = Watch(kube, f"{measure.SA_API}/serviceaudits", "serviceaudits")
    slices = Watch(kube, f"{measure.SLICE_API}/endpointslices", "endpointslices")
    out["services_total"] = len(svc.objects)
    logs = tmp / f"logs-{pods}"

    op = initial_audits(out, kube, op_kc, sc, svc, sas, args, logs)
    footprint["after_initial_audits"] = harness.cluster_footprint()
    measure.wait_quiet(op)

    steady_and_churn(out, kube, op, sc, args)

    # -- detection latency, settle 0 --------------------------------------------------------
    trials = measure.Trials(kube, sc, svc, sas, slices, sc.targets())
    det: dict[str, Any] = {}
    for kind in measure.KINDS:
        rows = [trials.run(kind, 60) for _ in range(args.trials)]
        det[kind] = summarize(rows)
        log(f"settle 0, {kind}: operator {det[kind]['operator_s']} floor {det[kind]['floor_s']}")
    out["detection_settle0"] = det
    st = op.stop()
    out["operator_settle0"] = {
        "peak_rss_mb": round(st.get("hwm_mb", 0), 1),
        "rss_mb_at_stop": round(st.get("rss_mb", 0), 1),
        "cpu_s_total": round(st.get("cpu_s", 0), 1),
        "wall_s": round(time.monotonic() - op.started_at, 1),
        "error_log_lines": len(op.error_lines()),
    }

    # -- the API floor of the initial pass (no operator running) ----------------------------
    if not args.no_floor:
        log("API floor: the initial pass's requests alone (bench/floor.py)")
        out["api_floor"] = floor.measure(kube, svc, sas, op_kc, tmp / f"floor-{pods}")
        floor.compare(out)
        footprint["after_floor"] = harness.cluster_footprint()

    # -- one-shot: svcaudit check -A vs Popeye (no operator running) ------------------------
    log("one-shot: svcaudit check -A vs Popeye")
    skip = ""
    if pods > args.popeye_all_max_pods:
        skip = f"{pods} pods > --popeye-all-max-pods {args.popeye_all_max_pods} ({POPEYE_ALL_WHY})"
    out["one_shot"] = measure.one_shots(
        tmp / f"oneshot-{pods}", args.oneshot_trials, not args.no_popeye, skip
    )

    # -- detection latency, default settle --------------------------------------------------
    if args.settle_trials:
        settle_default(out, op_kc, trials, args, logs)
    footprint["at_end"] = harness.cluster_footprint()
    out["bench_process"] = {
        k: round(v, 1) for k, v in harness.proc_stats(os.getpid()).items()
    }  # the bench's own RSS (its watches) and CPU
    for w in (svc, sas, slices):
        w.stop()
    return out


# The all-linters Popeye run's memory grows with the cluster: beside the cluster on 24 GiB it
# would meet the OOM killer (at 10k pods it peaked at 12.4 GB RSS).
POPEYE_ALL_WHY = (
    "at 10k pods Popeye -A peaked at 12.4 GB RSS; beside the cluster it would risk the OOM killer"
)


def steady_and_churn(
    out: dict[str, Any],
    kube: Kube,
    op: harness.Operator,
    sc: scen.Scenario,
    args: argparse.Namespace,
) -> None:
    """API requests, writes and CPU in steady state, then under churn."""
    log(f"steady state: {args.steady}s with no change")
    out["steady"] = measure.api_window(kube, op, args.steady)
    log(f"  {json.dumps(out['steady'])}")
    log(f"churn: {args.churn}s of pod label flips at {args.churn_rate}/s")
    out["churn"] = measure.api_window(
        kube, op, args.churn, during=measure.churn(kube, sc, args.churn_rate)
    )
    out["churn"]["rate_per_s"] = args.churn_rate
    log(f"  {json.dumps(out['churn'])}")
    measure.wait_quiet(op)


def initial_audits(
    out: dict[str, Any],
    kube: Kube,
    op_kc: str,
    sc: scen.Scenario,
    svc: Watch,
    sas: Watch,
    args: argparse.Namespace,
    logs: Path,
) -> harness.Operator:
    """The initial audit, settle 0, repeated (state cleared in between); the last trial's
    operator is left running."""
    initial, reports, peaks, cpus = [], [], [], []
    op = None
    for i in range(args.initial_trials):
        if i:
            measure.clear_published(kube, svc, [*sc.namespaces, "default", "kube-system"])
        a0 = harness.operator_api_requests(kube)
        op = harness.Operator(op_kc, logs / f"operator-s0-{i}.log", settle=0).start()
        took = measure.wait_initial_audit(op, svc, args.timeout)
        a1 = harness.operator_api_requests(kube)
        api_initial = {k: a1[k] - a0[k] for k in a0}
        if took is None:
            raise RuntimeError(f"initial audit not done after {args.timeout}s")
        reported = measure.wait_initial_reports(op, svc, sas, args.timeout)
        if reported is None:
            raise RuntimeError(f"ServiceAudits not all written after {args.timeout}s")
        reports.append(reported)
        st = op.stats()
        initial.append(took)
        peaks.append(st["hwm_mb"])
        cpus.append(st["cpu_s"])
        log(
            f"initial audit #{i}: {took:.1f}s (ServiceAudits {reported:.1f}s), "
            f"RSS {st['rss_mb']:.0f} MB (peak {st['hwm_mb']:.0f}), CPU {st['cpu_s']:.1f}s"
        )
        if i < args.initial_trials - 1:
            op.stop()
    assert op is not None
    out["initial_audit_s"] = measure.stats(initial)
    out["initial_audit_trials_s"] = [round(x, 2) for x in initial]
    out["initial_reports_s"] = measure.stats(reports)  # every ServiceAudit written
    out["initial_audit_peak_rss_mb"] = measure.stats(peaks)
    # the operator's CPU seconds once every ServiceAudit was written: against the wall time
    # above, how much of its one core (the GIL) the initial pass took
    out["initial_reports_operator_cpu_s"] = measure.stats(cpus)
    out["initial_audit_api_requests"] = api_initial  # the last trial's, by the operator's identity
    return op


def settle_default(
    out: dict[str, Any],
    op_kc: str,
    trials: measure.Trials,
    args: argparse.Namespace,
    logs: Path,
) -> None:
    """Detection latency with the default settle, after a restart over published state (or
    over none, if the API floor could not restore it: a first pass either way)."""
    settle = args.settle
    op = harness.Operator(op_kc, logs / "operator-settle.log", settle=settle).start()
    # a restart over published state: wait for its first full pass
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        op.check_alive()
        try:
            if op.total("svcaudit_audits_total") >= out["services_total"]:
                break
        except OSError:
            pass
        time.sleep(0.5)
    out["restart_first_pass_s"] = round(time.monotonic() - op.started_at, 1)
    measure.wait_quiet(op)
    det = {}
    for kind in measure.KINDS:
        # the trials of one kind run at once, on different services (each lasts > settle)
        with ThreadPoolExecutor(args.settle_trials) as pool:
            rows = list(
                pool.map(lambda _, k=kind: trials.run(k, settle + 60), range(args.settle_trials))
            )
        det[kind] = summarize(
            rows, settle if kind in ("selector_changed", "service_recreated") else 0
        )
        log(f"settle {settle:g}, {kind}: operator {det[kind]['operator_s']}")
    out["detection_settle_default"] = {"settle_s": settle, **det}
    st = op.stop()
    out["operator_settle_default"] = {
        "peak_rss_mb": round(st.get("hwm_mb", 0), 1),
        "cpu_s_total": round(st.get("cpu_s", 0), 1),
        "error_log_lines": len(op.error_lines()),
    }


def summarize(rows: list[dict[str, Any]], settle: float = 0) -> dict[str, Any]:
    op_vals = [r["operator_s"] for r in rows if r["operator_s"] is not None]
    fl_vals = [r["floor_s"] for r in rows if r["floor_s"] is not None]
    out = {
        "operator_s": measure.stats(op_vals),
        "floor_s": measure.stats(fl_vals),
        "missed": sum(1 for r in rows if r["operator_s"] is None),
        "trials": rows,
    }
    if settle:
        out["operator_minus_settle_s"] = measure.stats([v - settle for v in op_vals])
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench run", description="svcaudit at scale (issue 8); make bench"
    )
    p.add_argument("--sizes", default="1000,5000,10000", help="pod counts, comma-separated")
    p.add_argument("--trials", type=int, default=15, help="detection trials per kind, settle 0")
    p.add_argument("--settle-trials", type=int, default=3, help="per kind, default settle; 0 skips")
    p.add_argument("--settle", type=float, default=45.0, help="the operator's default settle")
    p.add_argument("--initial-trials", type=int, default=3)
    p.add_argument("--oneshot-trials", type=int, default=3)
    p.add_argument("--steady", type=float, default=90.0, help="seconds of steady state")
    p.add_argument("--churn", type=float, default=60.0, help="seconds of churn")
    p.add_argument("--churn-rate", type=float, default=2.0, help="changes per second")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--no-popeye", action="store_true")
    p.add_argument(
        "--popeye-all-max-pods",
        type=int,
        default=10000,
        help="above this many pods Popeye's all-linters run is skipped (its memory); "
        "-s svc,po still runs",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the API floor (bench/floor.py)")
    p.add_argument("--keep-cluster", action="store_true", help="leave the last cluster up")
    p.add_argument("--out", type=Path, help="result file (default bench/results/<stamp>.json)")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument(
        "--soak",
        metavar="DURATION",
        help="run the soak test for this long instead (e.g. 30m; python -m bench soak)",
    )
    p.add_argument(
        "--soak-pods", type=int, default=soak.SoakConfig.pods, help="the soak's scenario size"
    )
    return p


def soak_config(args: argparse.Namespace) -> soak.SoakConfig:
    """The soak's own parameters, from the flags of `run --soak` that mean the same there."""
    return soak.SoakConfig(
        duration_s=soak.parse_duration(args.soak),
        pods=args.soak_pods,
        churn_rate=args.churn_rate,
        settle=args.settle,
        timeout=args.timeout,
        out=args.out,
        keep_cluster=args.keep_cluster,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.soak:
        return soak.soak(soak_config(args))

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = RESULTS / "tmp" / stamp
    tmp.mkdir(parents=True, exist_ok=True)
    if not args.no_popeye and not measure.popeye_binary().exists():
        log("building Popeye (once): e2e/cluster/build.sh popeye")
        subprocess.run(["bash", str(REPO / "e2e/cluster/build.sh"), "popeye"], check=True)
    result: dict[str, Any] = {
        "kind": "svcaudit-bench",
        "started": stamp,
        "machine": harness.machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [],
    }
    out_path = args.out or RESULTS / f"bench-{stamp}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    try:
        for pods in sizes:
            result["sizes"].append(bench_size(pods, args, tmp))
            out_path.write_text(json.dumps(result, indent=1))
            log(f"results so far in {out_path}")
    finally:
        if not args.keep_cluster:
            harness.cluster_down()
    result["finished"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_path.write_text(json.dumps(result, indent=1))
    log(f"wrote {out_path}")
    if not args.no_chart:
        from bench import chart  # matplotlib: the bench extra

        png = chart.render(out_path)
        log(f"chart {png}")
    return 0
