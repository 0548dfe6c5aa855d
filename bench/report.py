"""A Markdown table of a bench result (for the README): python -m bench report
bench/results/bench-<stamp>.json"""

from __future__ import annotations

import json
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
    for name, label in (
        ("svcaudit_check", "`svcaudit check -A`"),
        ("svcaudit_check_no_dns", "`svcaudit check -A --no-dns`"),
        ("popeye", "Popeye -A (all linters)"),
        ("popeye_svc_po", "Popeye -A -s svc,po"),
    ):
        row(
            f"{label}: wall, peak RSS",
            lambda x, n=name: "{} s, {} MB".format(
                num(g(x, "one_shot", n, "wall_s", "median"), "{:.1f}"),
                num(g(x, "one_shot", n, "peak_rss_mb", "max"), "{:.0f}"),
            ),
        )
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(json.loads(Path(argv[0]).read_text())))
    return 0
