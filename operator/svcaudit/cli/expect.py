"""`svcaudit expect`: print what Kubernetes should publish for objects in a YAML file.

Offline: no cluster access. Reads Services, Pods (with status), Nodes and optionally
EndpointSlices (multi-document YAML, `kind: List` accepted; `-f -` reads stdin).
Exit codes: 0 ok, 2 unreadable input or malformed objects (each one reported).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import yaml

from svcaudit.core.audit import AuditSettings
from svcaudit.core.expect import expect_document, parse_inventory

EXIT_INPUT = 2


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "expect",
        help="print the EndpointSlices, env vars, DNS records and access points Kubernetes"
        " should publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-f", "--filename", required=True, help="YAML/JSON file, '-' for stdin")
    p.add_argument("-o", "--output", choices=("json", "yaml", "table"), default="table")
    p.add_argument("--zone", default="cluster.local", help="cluster DNS zone")
    p.add_argument("--max-endpoints-per-slice", type=int, default=100)
    p.set_defaults(func=run)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    source = "stdin" if args.filename == "-" else args.filename
    if args.max_endpoints_per_slice < 1:
        print("error: --max-endpoints-per-slice must be >= 1", file=err)
        return EXIT_INPUT
    try:
        documents = list(yaml.safe_load_all(_read(args.filename)))
    except OSError as exc:
        print(f"error: cannot read {source}: {exc.strerror or exc}", file=err)
        return EXIT_INPUT
    except yaml.YAMLError as exc:
        print(f"error: {source}: invalid YAML: {exc}", file=err)
        return EXIT_INPUT
    inventory, errors = parse_inventory(documents)
    if errors:
        for e in errors:
            print(f"error: {source}: {e.location}: {e.message}", file=err)
        print(f"error: {len(errors)} malformed object(s); nothing printed", file=err)
        return EXIT_INPUT
    settings = AuditSettings(zone=args.zone, max_endpoints_per_slice=args.max_endpoints_per_slice)
    doc = expect_document(inventory, settings)
    if args.output == "json":
        json.dump(doc, out, indent=2)
        out.write("\n")
    elif args.output == "yaml":
        yaml.safe_dump(doc, out, sort_keys=False, default_flow_style=False)
    else:
        out.write(render_table(doc))
    return 0


def _rows(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = indent + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def render_table(doc: dict[str, Any]) -> str:
    """A person-readable rendering of the expect document."""
    lines: list[str] = []
    for svc in doc["services"]:
        kind = svc["type"] + (", headless" if svc["clusterIPs"] == ["None"] else "")
        lines.append(f"SERVICE {svc['namespace']}/{svc['name']} ({kind})")
        rows = []
        policy = next((s["hintsPolicy"] for s in svc["endpointSlices"]), "None")
        for n, s in enumerate(svc["endpointSlices"], 1):
            ports = ",".join(_port(p) for p in s["ports"])
            if not s["endpoints"]:
                rows.append(
                    [str(n), s["addressType"], ports or "-", "(placeholder)", "", "", "", "", ""]
                )
            for ep in s["endpoints"]:
                c = ep["conditions"]
                rows.append(
                    [
                        str(n),
                        s["addressType"],
                        ports or "-",
                        ",".join(ep["addresses"]),
                        "/".join(
                            k[0].upper() if c[k] else "-"
                            for k in ("ready", "serving", "terminating")
                        ),
                        (ep["targetRef"] or {}).get("name", ""),
                        ep["nodeName"] or "",
                        ep["hostname"] or "",
                        _hints(ep["hints"]),
                    ]
                )
        if rows:
            lines.append(" endpoint slices (R/S/T = ready/serving/terminating):")
            headers = ["SLICE", "FAMILY", "PORTS", "ADDRESSES", "R/S/T", "POD", "NODE", "HOSTNAME"]
            if policy == "None":  # no hint anywhere: no column
                rows = [r[:-1] for r in rows]
            else:
                headers.append("HINTS")
            lines += _rows(headers, rows)
            labels = svc["endpointSlices"][0]["labels"]
            lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in labels.items()))
            if policy != "None":
                lines.append(
                    f"  hints: {policy}: {HINTS_POLICIES.get(policy, '')} (? = not predicted)"
                )
        else:
            lines.append(" endpoint slices: not managed by the EndpointSlice controller")
        dns_rows = [[r["name"], r["type"], r["data"]] for r in svc["dns"]]
        dns_rows += [[q["name"], q["type"], "NXDOMAIN"] for q in svc["dnsNxdomain"]]
        if dns_rows:
            lines.append(" dns:")
            lines += _rows(["NAME", "TYPE", "DATA"], dns_rows)
        access_rows = [
            [a["scope"], _hostport(a["address"], a["port"]), a["protocol"]]
            for a in svc.get("accessPoints", [])
        ]
        if access_rows:
            lines.append(" access points (cluster: ClusterIP:port, node: InternalIP:nodePort):")
            lines += _rows(["SCOPE", "ADDRESS", "PROTOCOL"], access_rows)
        lines += _findings(svc["findings"], " ")
        lines.append("")
    for pod in doc["pods"]:
        lines.append(f"POD {pod['namespace']}/{pod['name']}")
        lines += [f" dns: {r['name']} {r['type']} {r['data']}" for r in pod.get("dns", [])]
        for c in pod["containers"]:
            size = c["envSize"]
            lines.append(
                f" container {c['name']}: {len(c['env'])} service variable(s); environment"
                f" at least {size['bytes']} bytes in {size['variables']} variable(s)"
            )
            lines += [f"   {k}={v}" for k, v in c["env"].items()]
            lines += _findings(c["findings"], "   ")
        lines.append("")
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


HINTS_POLICIES = {
    "PreferSameZone": "each ready endpoint hinted for its zone",
    "PreferSameNode": "each ready endpoint hinted for its zone and node",
    "TopologyModeAuto": "topology-mode Auto spreads hints by CPU per zone",
}


def _port(p: dict[str, Any]) -> str:
    text = f"{p['name'] or '-'}:{p['port']}/{p['protocol']}"
    return text + (f" appProtocol={p['appProtocol']}" if p.get("appProtocol") else "")


def _hints(hints: Any) -> str:
    """zones=a nodes=n; "-" for none; "?" for hints the auditor does not predict."""
    if not isinstance(hints, dict):
        return "-" if hints is None else "?"
    parts = [
        f"{key}={','.join(h['name'] for h in hints[field])}"
        for key, field in (("zones", "forZones"), ("nodes", "forNodes"))
        if hints.get(field)
    ]
    return " ".join(parts) or "-"


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _findings(findings: list[dict[str, Any]], indent: str) -> list[str]:
    out = []
    for f in findings:
        out.append(
            f"{indent}{f['severity'].upper()} {f['code']} {f['reason']}: {f['subject']}:"
            f" expected {f['expected']}, observed {f['observed']}"
        )
        out.append(f"{indent}  hint: {f['hint']}")
    return out
