"""`svcaudit check`: a one-shot live audit of the cluster, no operator needed.

Lists Services, Pods, EndpointSlices and Nodes (one paginated LIST per kind), asks the
cluster DNS, runs the same core audit as the operator, and prints the verdicts.

A single pass has no history: a finding may be a transient lag (the EndpointSlice controller
catching up, CoreDNS's cache). `--settle SECONDS` audits twice, SECONDS apart, and reports
only findings present in both passes (the core's settle(), as the operator does).

Exit codes: 0 no finding at or above --fail-on; 1 such findings exist; 2 bad usage;
3 the cluster could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_CLUSTER = 0, 1, 2, 3
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}
FAIL_ON = ("error", "warning", "info", "never")
ONE_SHOT_NOTE = (
    "one-shot check: no history, so a finding can be transient (controller or DNS-cache lag, "
    "up to ~35 s); re-run with --settle 45 to report only lasting ones"
)


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="audit the live cluster once and print the verdicts (CI-friendly)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="audit this namespace (repeatable; default: the context's)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="audit every namespace")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="warning",
        help="exit 1 when a finding of this severity or worse exists "
        "(default warning: any False verdict; 'never' always exits 0)",
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG)")
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.add_argument(
        "--as",
        dest="impersonate",
        default=None,
        metavar="USER",
        help="impersonate this user, e.g. system:serviceaccount:NS:NAME",
    )
    _add_dns(p)
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="audit twice, SECONDS apart; report only findings seen in both",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=500,
        metavar="N",
        help="items per LIST page (like kubectl's --chunk-size; default 500)",
    )
    p.add_argument(
        "--show-info",
        action="store_true",
        help="table: list info findings too (always in json/yaml)",
    )
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="table colours (auto: when stdout is a terminal and NO_COLOR unset)",
    )
    p.add_argument(
        "--metrics-file",
        default=None,
        metavar="PATH",
        help="also write the Prometheus metrics of this run (text format)",
    )
    p.set_defaults(func=run)


def _add_dns(p: argparse.ArgumentParser) -> None:
    """Which DNS servers to ask and how (controller/dns_server.py, dns_probe.py)."""
    p.add_argument(
        "--dns-server",
        default=None,
        metavar="HOST[:PORT]",
        help="the one DNS server to query (default: every replica of --dns-service, else its "
        "ClusterIP:53); unreachable DNS makes DNS verdicts Unknown, never False",
    )
    p.add_argument(
        "--dns-service",
        default="kube-system/kube-dns",
        metavar="NAMESPACE/NAME",
        help="the cluster DNS Service (default kube-system/kube-dns): the ready endpoints of "
        "its EndpointSlices are each asked every question, and compared",
    )
    p.add_argument(
        "--dns-replicas",
        type=int,
        default=3,
        metavar="N",
        help="replicas of --dns-service asked per service, the same ones for a service "
        "(default 3; 0: all)",
    )
    p.add_argument("--dns-timeout", type=float, default=2.0, help="seconds per DNS question")
    p.add_argument("--dns-concurrency", type=int, default=16)
    p.add_argument(
        "--dns-processes",
        type=int,
        default=2,
        choices=(1, 2),
        help="processes asking DNS: 2 (the default) forks a second one for half of the "
        f"services, on Linux with several cores and from {FORK_FROM} services; 1: never",
    )
    p.add_argument("--no-dns", action="store_true", help="do not query DNS (DNS Unknown)")
    p.add_argument("--cluster-domain", default="cluster.local", help="DNS zone of the cluster")


# ---- the audit ---------------------------------------------------------------------------


@dataclass
class Pass:
    """One audit pass: per-service results and what was read."""

    results: list[Any] = field(default_factory=list)  # core ServiceAudit, sorted (ns, name)
    types: dict[tuple[str, str], str] = field(default_factory=dict)
    # objects the core cannot interpret: audited all the same, what they feed is Unknown
    uninterpretable: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dns_server: str | None = None
    dns_error: str | None = None
    api_calls: int = 0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Progress:
    """A one-line progress indicator on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, text: str, force: bool = True) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write("\r\033[K" + text[:100])
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def audit_pass(
    args: argparse.Namespace,
    conn: Any,
    namespaces: list[str] | None,
    progress: Progress,
    metrics: Any,
) -> Pass:
    """List, fill the operator's store with the listing, and audit every Service from it
    exactly as the operator does (translate.prepare), DNS included."""
    from svcaudit.cli.listing import list_all
    from svcaudit.controller import translate
    from svcaudit.controller.dns_server import parse_service, resolve
    from svcaudit.controller.indexes import Store

    out = Pass()
    dns_service = parse_service(args.dns_service)
    listing = list_all(
        conn,
        namespaces,
        progress,
        on_error=metrics.api_error,
        page_size=args.chunk_size,
        dns_service=dns_service,
    )
    out.api_calls = listing.calls
    out.warnings += listing.warnings
    out.at = datetime.now(UTC)
    settings = _settings(args, namespaces)
    store = Store(
        on_uninterpretable=lambda u: out.uninterpretable.append(_described(u)),
        sees_all_pods=namespaces is None,  # -A: every pod IP is known (SVA-EP-017)
    )
    store.load("nodes", listing.nodes or ())
    store.load("services", listing.services)
    store.load("pods", listing.pods)
    store.load("endpointslices", listing.slices)
    servers = resolve(args.dns_server, listing.kube_dns, 53, listing.kube_dns_slices, dns_service)
    out.dns_server = ", ".join(t.address for t in servers) or None

    prepared = []
    for key in sorted(store.services):
        prep = translate.prepare(store, key, listing.default_kubernetes)
        if prep is not None:
            prepared.append(prep)
            out.types[key] = str((prep.body.get("spec") or {}).get("type") or "ClusterIP")

    observations = (
        {} if args.no_dns else _probe_dns(prepared, settings, servers, args, out, metrics, progress)
    )
    total = len(prepared)
    for i, prep in enumerate(prepared, 1):
        progress(f"auditing {i}/{total} services", force=i == total)
        started = time.perf_counter()
        result = translate.audit(prep, observations.get(prep.key), out.at, settings)
        out.results.append((result, time.perf_counter() - started))
    return out


def _settings(args: argparse.Namespace, namespaces: list[str] | None) -> Any:
    from svcaudit.controller.settings import ControllerSettings

    return ControllerSettings(
        namespaces=tuple(namespaces or ()),
        dns_check=not args.no_dns,
        dns_timeout_seconds=args.dns_timeout,
        dns_concurrency=args.dns_concurrency,
        cluster_domain=args.cluster_domain.strip("."),
    )


def _described(unparsed: Any) -> dict[str, str]:
    return {
        "kind": unparsed.kind,
        "namespace": unparsed.namespace or "",
        "name": unparsed.name or "",
        "field": unparsed.field,
        "reason": unparsed.reason,
    }


FORK_FROM = 200  # services: from this many, DNS is asked from two processes (cli/halves.py)


def _probe_dns(  # shape: _probe_all's parameters, passed through
    prepared: Sequence[Any],
    settings: Any,
    servers: Sequence[Any],
    args: argparse.Namespace,
    out: Pass,
    metrics: Any,
    progress: Progress,
) -> dict[Any, Any]:
    """DNS observations per service key, asked by this process and, with enough services
    and cores, a forked one (each half of the services)."""
    from svcaudit.cli.halves import Recorder, can_fork, in_two, replay
    from svcaudit.cli.listing import run_returning

    if args.dns_processes < 2 or len(prepared) < FORK_FROM or not can_fork():
        return run_returning(_probe_all(prepared, settings, servers, args, out, metrics, progress))

    def half(items: Sequence[Any], in_child: bool) -> tuple[dict[Any, Any], str | None, Any]:
        part, recorder = Pass(), Recorder()
        shown = _silent if in_child else progress
        found = run_returning(_probe_all(items, settings, servers, args, part, recorder, shown))
        return found, part.dns_error, recorder.calls

    (mine, my_error, my_calls), (theirs, their_error, their_calls) = in_two(half, prepared)
    replay([*my_calls, *their_calls], metrics)
    out.dns_error = my_error or their_error
    return {**mine, **theirs}


def _silent(text: str, force: bool = True) -> None:
    """Progress of the forked half: not shown (the parent's line stands for both)."""


async def _probe_all(
    prepared: Sequence[Any],
    settings: Any,
    servers: Sequence[Any],
    args: argparse.Namespace,
    out: Pass,
    metrics: Any,
    progress: Callable[[str, bool], None],
) -> dict[Any, Any]:
    """DNS observations per service key. One reachability question first, so that an
    unreachable server costs one timeout, not one per question."""
    from svcaudit.controller.dns_probe import DnsProber

    async def server() -> Sequence[Any]:
        return servers

    prober = DnsProber(
        server,
        timeout=args.dns_timeout,
        concurrency=args.dns_concurrency,
        on_query=metrics.dns_query,
        max_replicas=max(0, args.dns_replicas),
    )
    try:
        return await _probe_each(prepared, settings, prober, out, metrics, progress)
    finally:
        await prober.aclose()


async def _probe_each(
    prepared: Sequence[Any],
    settings: Any,
    prober: Any,
    out: Pass,
    metrics: Any,
    progress: Callable[[str, bool], None],
) -> dict[Any, Any]:
    from svcaudit.controller import translate
    from svcaudit.controller.dns_probe import ProbeResult

    first = await prober.probe([(f"kubernetes.default.svc.{settings.cluster_domain}.", "A")])
    if first.error:
        out.dns_error = first.error
        metrics.dns_failed("unreachable")
        failed = ProbeResult(frozenset(), first.error, first.server)
        return {p.key: translate.dns_observation(failed) for p in prepared}
    done = 0

    async def one(prep: Any) -> tuple[Any, Any]:
        nonlocal done
        questions = translate.dns_questions(prep, settings)
        result = (
            await prober.probe(questions, "/".join(prep.key))
            if questions
            else ProbeResult(frozenset(), None, first.server)
        )
        done += 1
        progress(f"querying DNS {done}/{len(prepared)} services", False)
        return prep.key, translate.dns_observation(result)

    pairs = await asyncio.gather(*(one(p) for p in prepared))
    return dict(pairs)


def settle_passes(first: Pass, second: Pass, seconds: float) -> list[Any]:
    """The core's settle(): findings of the second pass that were already in the first."""
    from svcaudit.core.audit import settle

    state = {(r.namespace, r.name): settle(r, None, first.at, seconds)[1] for r, _ in first.results}
    return [
        (settle(r, state.get((r.namespace, r.name)), second.at, seconds)[0], d)
        for r, d in second.results
    ]


# ---- rendering -----------------------------------------------------------------------------


def _verdicts(result: Any) -> dict[str, dict[str, str]]:
    return {
        str(a): {"status": v.status, "reason": v.reason, "message": v.message}
        for a, v in result.verdicts.items()
    }


def build_document(
    p: Pass,
    results: list[Any],
    args: argparse.Namespace,
    namespaces: list[str] | None,
    conn: Any,
    elapsed: float,
    passes: int,
) -> dict[str, Any]:
    services = []
    healthy = {"True": 0, "False": 0, "Unknown": 0}
    severities = {"error": 0, "warning": 0, "info": 0}
    for result, _ in results:
        verdicts = _verdicts(result)
        status = verdicts.get("Healthy", {}).get("status", "Unknown")
        healthy[status] = healthy.get(status, 0) + 1
        for d in result.discrepancies:
            severities[str(d.severity)] += 1
        services.append(
            {
                "namespace": result.namespace,
                "name": result.name,
                "type": p.types.get((result.namespace, result.name), ""),
                "verdicts": verdicts,
                "discrepancies": [d.to_dict() for d in result.discrepancies],
                "pending": [d.to_dict() for d in result.pending],
                "unknown": {str(a): why for a, why in result.unknown.items()},
            }
        )
    note = (
        ONE_SHOT_NOTE
        if passes == 1
        else (
            f"two passes {args.settle:g}s apart: only findings seen in both are reported; "
            "newer ones are listed as pending"
        )
    )
    return {
        "apiVersion": "svcaudit.dev/v1alpha1",
        "kind": "CheckReport",
        "generatedAt": p.at.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "cluster": {"server": conn.server, "context": conn.context},
        "scope": {"namespaces": namespaces if namespaces is not None else "all"},
        "dns": {
            "server": p.dns_server,
            "clusterDomain": args.cluster_domain.strip("."),
            "checked": not args.no_dns,
            "error": p.dns_error,
        },
        "settle": {"passes": passes, "seconds": args.settle, "note": note},
        "summary": {
            "services": len(services),
            "namespaces": len({s["namespace"] for s in services}),
            "healthy": healthy,
            "discrepancies": severities,
            "apiCalls": p.api_calls,
            "durationSeconds": round(elapsed, 3),
        },
        "warnings": p.warnings,
        "uninterpretable": p.uninterpretable,
        "services": services,
    }


COLOURS = {
    "True": "32",
    "False": "31",
    "Unknown": "33",
    "error": "31",
    "warning": "33",
    "info": "36",
    "dim": "2",
    "bold": "1",
}


HEADERS = ["SERVICE", "TYPE", "ENDPOINTS", "ENV", "DNS", "HEALTHY", "FINDINGS"]
ASPECTS = ("Endpoints", "Environment", "DNS", "Healthy")
Paint = Callable[[str, str], str]


def render_table(doc: dict[str, Any], colour: bool, show_info: bool) -> str:
    def c(text: str, key: str) -> str:
        return f"\033[{COLOURS[key]}m{text}\033[0m" if colour and key in COLOURS else text

    by_ns: dict[str, list[dict[str, Any]]] = {}
    for s in doc["services"]:
        by_ns.setdefault(s["namespace"], []).append(s)
    lines: list[str] = []
    for ns in sorted(by_ns):
        lines += _namespace_table(ns, by_ns[ns], c, show_info, dns_failed=bool(doc["dns"]["error"]))
    return "\n".join(lines + _footer(doc, c)) + "\n"


def _row(s: dict[str, Any]) -> list[str]:
    counts = {"error": 0, "warning": 0, "info": 0}
    for d in s["discrepancies"]:
        counts[d["severity"]] += 1
    found = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "-"
    if s["pending"]:
        found += f" (+{len(s['pending'])} pending)"
    statuses = [s["verdicts"].get(a, {}).get("status", "Unknown") for a in ASPECTS]
    return [s["name"], s["type"], *statuses, found]


def _namespace_table(
    ns: str, services: list[dict[str, Any]], c: Paint, show_info: bool, dns_failed: bool
) -> list[str]:
    """One namespace: a row per service, its findings and unknowns under it."""
    rows = [_row(s) for s in services]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = [
        c(f"NAMESPACE {ns}", "bold"),
        "  " + "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip(),
    ]
    for row, s in zip(rows, services, strict=True):
        cells = [
            c(text.ljust(w), text) if 2 <= i <= 5 else text.ljust(w)
            for i, (text, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
        for d in s["discrepancies"]:
            if d["severity"] == "info" and not show_info:
                continue
            lines.append(
                f"      {c(d['severity'].upper().ljust(7), d['severity'])} "
                f"{d['code']} {d['reason']}: {d['subject']}"
            )
            lines.append(
                c(f"              expected {d['expected']}; observed {d['observed']}", "dim")
            )
            if d.get("hint"):
                lines.append(c(f"              fix: {d['hint']}", "dim"))
        for aspect, why in s["unknown"].items():
            if aspect == "DNS" and dns_failed:
                continue  # said once in the footer
            lines.append(c(f"      unknown {aspect}: {why}", "dim"))
    lines.append("")
    return lines


def _footer(doc: dict[str, Any], c: Paint) -> list[str]:
    sm = doc["summary"]
    h, d = sm["healthy"], sm["discrepancies"]
    lines = [
        f"{sm['services']} services in {sm['namespaces']} namespaces: "
        f"{c(str(h['True']) + ' healthy', 'True')}, {c(str(h['False']) + ' failing', 'False')}, "
        f"{c(str(h['Unknown']) + ' unknown', 'Unknown')}; findings: {d['error']} error, "
        f"{d['warning']} warning, {d['info']} info ({sm['durationSeconds']:.2f}s, "
        f"{sm['apiCalls']} API calls)"
    ]
    dns = doc["dns"]
    if not dns["checked"]:
        lines.append("DNS: not checked (--no-dns)")
    elif dns["error"]:
        lines.append(c(f"DNS: Unknown: {dns['error']}", "Unknown"))
    else:
        lines.append(f"DNS: {dns['server']} (zone {dns['clusterDomain']})")
    lines += [c(f"warning: {w}", "warning") for w in doc["warnings"]]
    lines += [
        c(
            f"uninterpretable {u['kind']} {u['namespace']}/{u['name']}: "
            f"{u['field']}: {u['reason']} (what it feeds is Unknown)",
            "warning",
        )
        for u in doc["uninterpretable"]
    ]
    lines.append(c("note: " + doc["settle"]["note"], "dim"))
    return lines


def exit_code(doc: dict[str, Any], fail_on: str) -> int:
    if fail_on == "never":
        return EXIT_OK
    threshold = SEVERITY_RANK[fail_on]
    for s in doc["services"]:
        for d in s["discrepancies"]:
            if SEVERITY_RANK[d["severity"]] >= threshold:
                return EXIT_FINDINGS
    return EXIT_OK


def _use_colour(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from svcaudit.cli.memory import collector_tuned

    with collector_tuned():
        return _run(args, out, err)


def _run(args: argparse.Namespace, out: TextIO | None, err: TextIO | None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.settle < 0 or args.dns_timeout <= 0 or args.dns_concurrency < 1 or args.chunk_size < 1:
        print(
            "error: --settle must be >= 0, --dns-timeout > 0, --dns-concurrency and "
            "--chunk-size >= 1",
            file=err,
        )
        return EXIT_USAGE
    if args.dns_server:
        from svcaudit.controller.dns_server import parse_server

        try:
            parse_server(args.dns_server)
        except ValueError:
            print(f"error: --dns-server {args.dns_server!r}: expected HOST[:PORT]", file=err)
            return EXIT_USAGE
    from svcaudit.controller.dns_server import parse_service

    try:
        parse_service(args.dns_service)
    except ValueError as exc:
        print(f"error: --dns-service: {exc}", file=err)
        return EXIT_USAGE

    from svcaudit.cli.listing import ClusterError, connect
    from svcaudit.metrics import Metrics

    metrics = Metrics()
    progress = Progress(err)
    started = time.perf_counter()
    try:
        conn = connect(args.kubeconfig, args.context, args.impersonate)
        namespaces: list[str] | None = (
            None if args.all_namespaces else (args.namespaces or [conn.namespace])
        )
        first = audit_pass(args, conn, namespaces, progress, metrics)
        results, last, passes = first.results, first, 1
        if args.settle > 0:
            progress.done()
            print(  # on stderr (the report is on stdout): the findings' clocks start now
                f"first pass: {len(first.results)} services audited; "
                f"second pass in {args.settle:g}s",
                file=err,
                flush=True,
            )
            wait_until = time.monotonic() + args.settle
            while (left := wait_until - time.monotonic()) > 0:
                progress(f"settling: second pass in {left:.0f}s")
                time.sleep(min(1.0, left))
            last = audit_pass(args, conn, namespaces, progress, metrics)
            last.api_calls += first.api_calls
            results, passes = settle_passes(first, last, args.settle), 2
    except ClusterError as exc:
        progress.done()
        print(f"error: {exc}", file=err)
        return EXIT_CLUSTER
    progress.done()
    for result, seconds in results:
        metrics.service_audited(result.namespace, result.name, result, seconds)
    doc = build_document(
        last, results, args, namespaces, conn, time.perf_counter() - started, passes
    )
    try:
        if args.output == "json":
            out.write(json.dumps(doc, indent=2) + "\n")
        elif args.output == "yaml":
            import yaml

            out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        else:
            out.write(render_table(doc, _use_colour(args.color, out), args.show_info))
        out.flush()
    except BrokenPipeError:  # `svcaudit check | head`: the reader left; still exit properly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    if args.metrics_file:
        metrics.write_textfile(args.metrics_file)
    return exit_code(doc, args.fail_on)
