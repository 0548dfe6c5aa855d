"""A Markdown table of a bench result (for the README): python -m bench report
bench/results/bench-<stamp>.json"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

KINDS = ("pod_deleted", "pod_label_changed", "selector_changed", "service_recreated")
LABELS = {
    "pod_deleted": "pod deleted",
    "pod_label_changed": "pod label changed",
    "selector_changed": "selector changed",
    "service_recreated": "service recreated",
}


def g(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def s(st: dict[str, Any] | None, unit: str = "s", digits: int = 2) -> str:
    """median (p99) from a stats dict."""
    if not st or not st.get("n"):
        return "-"
    return f"{st['median']:.{digits}f} ({st['p99']:.{digits}f}){unit}"


def num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def one_shot(size: dict[str, Any], name: str) -> str:
    """Wall time and peak RSS of a one-shot, or why it did not run."""
    if g(size, "one_shot", name) is None:
        note = g(size, "one_shot", "notes", name.split("_")[0]) or ""
        limit = re.search(r"--popeye-all-max-pods (\d+)", note)
        return f"skipped (memory: > {limit[1]} pods)" if limit else "-"
    return "{} s, {} MB".format(
        num(g(size, "one_shot", name, "wall_s", "median"), "{:.1f}"),
        num(g(size, "one_shot", name, "peak_rss_mb", "max"), "{:.0f}"),
    )


def over(size: dict[str, Any], floor_key: str, ratio_key: str) -> str:
    """An API floor, and the operator's median over it."""
    fl = g(size, "api_floor", floor_key)
    if fl is None:
        return "-"
    ratio = g(size, "api_floor", ratio_key)
    return f"{fl:.1f} s" + (f" (operator {ratio:.1f}x)" if ratio else "")


def floor_rows(add: Any) -> None:
    """The API floor (bench/floor.py): what the API server alone takes for the same requests."""

    def row(label: str, fn: Any) -> None:
        add(label, lambda x: fn(x) if g(x, "api_floor", "list_s") is not None else "-")

    row(
        "API floor: initial audit (list + conditions, 8 in flight)",
        lambda x: over(x, "initial_audit_floor_s", "initial_audit_over_floor"),
    )
    row(
        "API floor: every ServiceAudit (+ ServiceAudits, 8 in flight)",
        lambda x: over(x, "initial_reports_floor_s", "initial_reports_over_floor"),
    )
    row(
        "API floor: list / conditions / ServiceAudits",
        lambda x: "{} / {} / {} s".format(
            num(g(x, "api_floor", "list_s"), "{:.1f}"),
            num(g(x, "api_floor", "conditions_apply_s"), "{:.1f}"),
            num(g(x, "api_floor", "serviceaudits_apply_s"), "{:.1f}"),
        ),
    )
    row(
        "API floor: conditions applied/s at 8 / 16 / 32 in flight (best)",
        lambda x: " / ".join(
            num(
                g(x, "api_floor", "conditions_apply_by_concurrency", c, "best_per_s")
                or g(x, "api_floor", "conditions_apply_by_concurrency", c, "per_s")
            )
            for c in ("8", "16", "32")
        ),
    )
    row(
        "API floor by CPU alone (API server + etcd over the cores): audit / ServiceAudits",
        lambda x: "{} / {} s".format(
            num(g(x, "api_floor", "initial_audit_cpu_floor_s"), "{:.1f}"),
            num(g(x, "api_floor", "initial_reports_cpu_floor_s"), "{:.1f}"),
        ),
    )
    row(
        "API floor: `check -A`'s listing, one by one (4 at once)",
        lambda x: "{} s ({} s)".format(
            num(g(x, "api_floor", "check_list_s"), "{:.1f}"),
            num(g(x, "api_floor", "check_list_parallel_s"), "{:.1f}"),
        ),
    )


def table(data: dict[str, Any]) -> str:
    sizes = sorted(data["sizes"], key=lambda x: x["scenario"]["pods"])
    head = ["", *(f"{x['scenario']['pods']} pods / {x['scenario']['services']} svc" for x in sizes)]
    rows: list[list[str]] = []

    def row(label: str, fn: Any) -> None:
        rows.append([label, *(fn(x) for x in sizes)])

    row(
        "initial audit, median (max)",
        lambda x: (
            f"{g(x, 'initial_audit_s', 'median'):.1f} s ({g(x, 'initial_audit_s', 'max'):.1f})"
        ),
    )
    row(
        "initial audit: every ServiceAudit written, median (max)",
        lambda x: (
            f"{g(x, 'initial_reports_s', 'median'):.1f} s ({g(x, 'initial_reports_s', 'max'):.1f})"
            if g(x, "initial_reports_s", "median") is not None
            else "-"
        ),
    )
    for k in KINDS:
        row(
            f"detect: {LABELS[k]}, settle 0, median (p99)",
            lambda x, k=k: s(g(x, "detection_settle0", k, "operator_s")),
        )
    for k in KINDS:
        row(
            f"floor (EndpointSlice): {LABELS[k]}",
            lambda x, k=k: s(g(x, "detection_settle0", k, "floor_s"), digits=3),
        )
    for k in ("selector_changed", "service_recreated"):
        row(
            f"detect: {LABELS[k]}, settle 45 s, minus settle",
            lambda x, k=k: s(g(x, "detection_settle_default", k, "operator_minus_settle_s")),
        )
    row(
        "operator peak RSS (settle 0 run)",
        lambda x: num(g(x, "operator_settle0", "peak_rss_mb"), "{:.0f} MB"),
    )
    row("operator RSS in steady state", lambda x: num(g(x, "steady", "rss_mb_end"), "{:.0f} MB"))
    row(
        "operator CPU, steady / churn",
        lambda x: (
            f"{g(x, 'steady', 'cpu_s_per_min'):.1f} / {g(x, 'churn', 'cpu_s_per_min'):.1f} s/min"
        ),
    )
    row(
        "writes/min steady (operator metric)",
        lambda x: num(g(x, "steady", "operator_writes_per_min"), "{:.0f}"),
    )
    row(
        "requests/min steady, read / write (apiserver)",
        lambda x: "{:.0f} / {:.0f}".format(
            g(x, "steady", "apiserver_requests_per_min", "read"),
            g(x, "steady", "apiserver_requests_per_min", "write"),
        ),
    )
    row(
        "requests/min churn 2/s, read / write",
        lambda x: "{:.0f} / {:.0f}".format(
            g(x, "churn", "apiserver_requests_per_min", "read"),
            g(x, "churn", "apiserver_requests_per_min", "write"),
        ),
    )
    row(
        "initial audit requests, read / write",
        lambda x: "{:.0f} / {:.0f}".format(
            g(x, "initial_audit_api_requests", "read") or 0,
            g(x, "initial_audit_api_requests", "write") or 0,
        ),
    )
    row(
        "operator CPU by every ServiceAudit written (one core at most)",
        lambda x: num(g(x, "initial_reports_operator_cpu_s", "median"), "{:.1f} s"),
    )
    floor_rows(row)
    for name, label in (
        ("svcaudit_check", "`svcaudit check -A`"),
        ("svcaudit_check_no_dns", "`svcaudit check -A --no-dns`"),
        ("popeye", "Popeye -A (all linters)"),
        ("popeye_svc_po", "Popeye -A -s svc,po"),
    ):
        row(f"{label}: wall, peak RSS", lambda x, n=name: one_shot(x, n))
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(json.loads(Path(argv[0]).read_text())))
    return 0
