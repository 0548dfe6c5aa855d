"""Chart of a bench result: latency and memory vs cluster size, svcaudit vs Popeye vs the
control plane's floor. Usage: python -m bench chart bench/results/bench-<stamp>.json [out.png]"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KINDS = ("pod_deleted", "pod_label_changed", "selector_changed", "service_recreated")


def _get(d: dict[str, Any], *path: str) -> float | None:
    node: object = d
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return float(node) if isinstance(node, int | float) else None


def _series(
    sizes: list[dict[str, Any]], path: tuple[str, ...], per_pod: bool = False
) -> list[float]:
    """One value per size (NaN where a size lacks it: a gap in the line, e.g. Popeye's
    all-linters run skipped above --popeye-all-max-pods); per_pod: in ms per pod."""
    out = []
    for s in sizes:
        v = _get(s, *path)
        if v is not None and per_pod:
            v = 1000 * v / s["scenario"]["pods"]
        out.append(math.nan if v is None else v)
    return out


# Whole-cluster audit time and its floors (bench/floor.py: the API server's time alone for the
# same requests), each floor in its measurement's colour: (label, path in a size, style, colour)
AUDIT_TIMES: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("operator initial audit (median)", ("initial_audit_s", "median"), "o-", "C0"),
    ("  its API floor (list + conditions)", ("api_floor", "initial_audit_floor_s"), "o:", "C0"),
    ("operator: every ServiceAudit (median)", ("initial_reports_s", "median"), "D-", "C1"),
    ("  its API floor (+ ServiceAudits)", ("api_floor", "initial_reports_floor_s"), "D:", "C1"),
    ("svcaudit check -A (median)", ("one_shot", "svcaudit_check", "wall_s", "median"), "s-", "C2"),
    ("  its listing, 4 at once (API floor)", ("api_floor", "check_list_parallel_s"), "s:", "C2"),
    ("Popeye -A, all linters (median)", ("one_shot", "popeye", "wall_s", "median"), "^-", "C3"),
    (
        "Popeye -A -s svc,po (median)",
        ("one_shot", "popeye_svc_po", "wall_s", "median"),
        "^--",
        "C4",
    ),
)


def pooled(size: dict[str, Any], field: str, stat: str) -> float | None:
    """A statistic over every settle-0 detection trial of every kind pooled together."""
    vals: list[float] = sorted(
        t[field]
        for k in KINDS
        for t in size.get("detection_settle0", {}).get(k, {}).get("trials", [])
        if t.get(field) is not None
    )
    if not vals:
        return None
    if stat == "median":
        n = len(vals)
        return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    idx = min(len(vals) - 1, -(-99 * len(vals) // 100) - 1)
    return vals[idx]


def render(result_path: Path, out: Path | None = None) -> Path:
    data = json.loads(Path(result_path).read_text())
    sizes = sorted(data["sizes"], key=lambda s: s["scenario"]["pods"])
    x = [s["scenario"]["pods"] for s in sizes]
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))

    ax = axes[0]
    for field, stat, label, style in (
        ("operator_s", "p99", "svcaudit operator p99", "o-"),
        ("operator_s", "median", "svcaudit operator median", "o--"),
        ("floor_s", "p99", "control plane (EndpointSlice) p99", "s-"),
        ("floor_s", "median", "control plane (EndpointSlice) median", "s--"),
    ):
        ax.plot(x, [pooled(s, field, stat) for s in sizes], style, label=label)
    ax.axhline(2.0, color="grey", lw=0.8, ls=":", label="target p99 2 s")
    ax.set_title("Detection latency, settle 0 (4 kinds of change)")
    ax.set_ylabel("seconds")

    ax = axes[1]
    for label, path, style, colour in AUDIT_TIMES:
        ax.plot(x, _series(sizes, path), style, color=colour, label=label)
    ax.axhline(10.0, color="grey", lw=0.8, ls=":", label="target initial audit 10 s at 10k")
    ax.set_title("Whole-cluster audit time")
    ax.set_ylabel("seconds")

    ax = axes[2]
    for label, path, style, colour in AUDIT_TIMES:
        ax.plot(x, _series(sizes, path, per_pod=True), style, color=colour, label=label)
    ax.set_title("Cost per pod (flat: linear in the cluster's size)")
    ax.set_ylabel("ms per pod")

    ax = axes[3]
    series = (
        ("operator peak RSS", ("operator_settle0", "peak_rss_mb"), "o-"),
        ("svcaudit check -A peak RSS", ("one_shot", "svcaudit_check", "peak_rss_mb", "max"), "o--"),
        ("Popeye -A peak RSS", ("one_shot", "popeye", "peak_rss_mb", "max"), "^-"),
        (
            "Popeye -A -s svc,po peak RSS",
            ("one_shot", "popeye_svc_po", "peak_rss_mb", "max"),
            "^--",
        ),
    )
    for label, path, style in series:
        ax.plot(x, _series(sizes, path), style, label=label)
    ax.axhline(250.0, color="grey", lw=0.8, ls=":", label="target operator 250 MB")
    ax.set_title("Peak memory (log scale)")
    ax.set_ylabel("MB")
    ax.set_yscale("log")

    for ax in axes:
        ax.set_xlabel("pods (services = pods / 5)")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        if ax.get_yscale() == "linear":
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    m = data["machine"]
    fig.suptitle(
        f"svcaudit bench {data['started']} ({m['cores']} cores, {m['ram_gib']} GiB, "
        f"kernel {m['kernel']}, Python {m['python']}, Kubernetes {m['versions']['KUBE_VERSION']}, "
        f"Popeye {m['versions'].get('POPEYE_VERSION', '-')})",
        fontsize=9,
    )
    fig.tight_layout()
    out = out or Path(result_path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None))
    return 0
