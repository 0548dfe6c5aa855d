"""The API floor of the operator's initial pass (issue 20): what the API server alone needs for
the requests that pass makes, with no operator work in between.

`measure()` runs in the bench (bench/run.py, after the settle-0 operator has stopped): it
snapshots what that operator published (the svcaudit.dev/ conditions of every Service, every
ServiceAudit) from the bench's watches, clears it (measure.clear_published), and replays it in
a fresh child, `python -m bench.floor` (its own GIL: the bench's watch threads keep theirs),
a minimal aiohttp client with the operator's ServiceAccount token:

  list                  the operator's start-up listing: pods, services, endpointslices, nodes
                        and serviceaudits cluster-wide, each paginated like its informers (500
                        a page, the five at once), every page decoded (orjson);
  conditions_apply      each Service's conditions onto /status by server-side apply
                        (fieldManager=svcaudit, force), 8 requests in flight (the operator's
                        audit concurrency);
  serviceaudits_apply   each ServiceAudit, whole (the CRD has no status subresource), same
                        content, ownerReferences included, 8 in flight;
  conditions_apply_cN_R the conditions again at 8, 16 and 32 in flight (stripped before,
                        untimed), in 2 interleaved rounds: whether the API server gets more
                        done with more requests in flight, and how much a run varies;
  check_list            `svcaudit check -A`'s listing alone (admin token, services, pods,
                        endpointslices, nodes one after the other, 500 a page), and
  check_list_parallel   the same four at once.

Each phase records its wall time, requests and requests/s, the API server's own time for them
(apiserver_request_duration_seconds, by verb and resource), the CPU seconds the cluster's
components, this client and the bench spent meanwhile, what else kept the machine busy
(other_cpu_s: another cluster, a build), and the floor the API server's and etcd's CPU alone
set (their CPU seconds over every core). The last apply of each kind writes the snapshot back,
so the cluster ends as the operator left it (checked on the watches).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench import harness
from bench import measure as bm
from bench.harness import REPO, log
from bench.kubeapi import Kube, Obj, Watch

PAGE_SIZE = 500  # operator/svcaudit/controller/informer.py (Informer.page_size), check's default
CONCURRENCY = 8  # the operator's audit concurrency (ControllerSettings.audit_concurrency)
# The conditions again at each, after the rest, in ROUNDS interleaved rounds: on a shared
# machine one run of each varies by a third or more.
SWEEP = (8, 16, 32)
ROUNDS = 2
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
APPLY_PARAMS = {"fieldManager": "svcaudit", "force": "true"}  # as controller/kube.py applies
SA_API = bm.SA_API
# The operator's informers (controller/handlers.py), cluster-wide.
OPERATOR_LISTS = {
    "pods": "/api/v1/pods",
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "nodes": "/api/v1/nodes",
    "serviceaudits": f"{SA_API}/serviceaudits",
}
# `svcaudit check -A` (operator/svcaudit/cli/listing.py), in its order.
CHECK_LISTS = {k: OPERATOR_LISTS[k] for k in ("services", "pods", "endpointslices", "nodes")}
# (verb, resources, subresource) of apiserver_request_duration_seconds for each phase
SELECT: dict[str, tuple[str, frozenset[str], str]] = {
    "list": ("LIST", frozenset(OPERATOR_LISTS), ""),
    "conditions_apply": ("APPLY", frozenset({"services"}), "status"),
    "serviceaudits_apply": ("APPLY", frozenset({"serviceaudits"}), ""),
    "check_list": ("LIST", frozenset(CHECK_LISTS), ""),
}
_DURATION = re.compile(
    r"^apiserver_request_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$", re.MULTILINE
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


# ---------------------------------------------------------------------------------------------
# In the bench: snapshot, clear, replay in a child, check the cluster is back


def snapshot(svc: Watch, sas: Watch) -> dict[str, Any]:
    """What the operator published, from the bench's watches: each Service's svcaudit.dev/
    conditions (and the others it has, to strip ours only) and each ServiceAudit owned by the
    Service's current incarnation."""
    with svc.cond:
        services = dict(svc.objects)
    with sas.cond:
        audits = dict(sas.objects)
    out: dict[str, Any] = {"services": [], "serviceaudits": [], "services_without_conditions": 0}
    for key, obj in sorted(services.items()):
        meta = obj["metadata"]
        conds = (obj.get("status") or {}).get("conditions") or []
        mine = ours(obj)
        if not mine:
            out["services_without_conditions"] += 1
            continue
        ident = {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}
        others = [c for c in conds if c not in mine]
        out["services"].append({**ident, "conditions": mine, "others": others})
        report = audits.get(key)
        if report and (report.get("status") or {}).get("serviceUID") == meta["uid"]:
            labels = (report.get("metadata") or {}).get("labels") or {}
            out["serviceaudits"].append({**ident, "labels": labels, "status": report["status"]})
    return out


def poll(watch: Watch, predicate: Callable[[dict[str, Obj]], bool], timeout: float) -> bool:
    """Whether predicate(a copy of the watch's objects) became true within timeout: checked
    every 0.5 s, outside the watch's lock (Watch.wait checks under it, on every event, which
    with thousands of objects and events costs the bench seconds of CPU)."""
    deadline = time.monotonic() + timeout
    while True:
        with watch.cond:
            objs = dict(watch.objects)
        if predicate(objs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def ours(obj: Obj | None) -> list[dict[str, Any]]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return [c for c in conds if str(c.get("type", "")).startswith(bm.PREFIX)]


def restored(svc: Watch, sas: Watch, snap: dict[str, Any], timeout: float) -> bool:
    """Whether the watches show the snapshot back: every Service's conditions, every
    ServiceAudit's status."""
    want_c = {f"{s['namespace']}/{s['name']}": s["conditions"] for s in snap["services"]}
    want_a = {f"{a['namespace']}/{a['name']}": a["status"] for a in snap["serviceaudits"]}
    deadline = time.monotonic() + timeout
    ok = poll(svc, lambda objs: all(ours(objs.get(k)) == v for k, v in want_c.items()), timeout)
    return ok and poll(
        sas,
        lambda objs: all((objs.get(k) or {}).get("status") == v for k, v in want_a.items()),
        max(1.0, deadline - time.monotonic()),
    )


def measure(
    kube: Kube, svc: Watch, sas: Watch, op_kubeconfig: str, work: Path, timeout: float = 1800
) -> dict[str, Any]:
    """The floor of one cluster size (the operator must be stopped); see the module's doc."""
    # the operator just stopped: its last writes may still be on their way to the watches
    poll(svc, lambda objs: all(bm.has_all(o) for o in objs.values()), 30)
    snap = snapshot(svc, sas)
    work.mkdir(parents=True, exist_ok=True)
    snap_path, out_path = work / "snapshot.json", work / "floor.json"
    snap_path.write_bytes(orjson.dumps(snap))
    with sas.cond:
        namespaces = {k.split("/", 1)[0] for k in sas.objects}
    namespaces |= {s["namespace"] for s in snap["services"]}
    bm.clear_published(kube, svc, sorted(namespaces))
    poll(sas, lambda objs: not objs, 60)
    time.sleep(2)  # the watchers' echoes of the clearing done
    argv = [
        sys.executable,
        "-m",
        "bench.floor",
        "--snapshot",
        str(snap_path),
        "--out",
        str(out_path),
        "--kubeconfig",
        op_kubeconfig,
        "--admin-kubeconfig",
        harness.admin_kubeconfig(),
    ]
    log(f"API floor: replaying {len(snap['services'])} services' conditions in a child")
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    (work / "floor.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        log(f"API floor failed (exit {proc.returncode}):\n{tail}")
        return {"error": f"exit {proc.returncode}: {tail[-600:]}", "restored": False}
    phases: dict[str, Any] = json.loads(out_path.read_text())
    back = restored(svc, sas, snap, 120)
    log(f"API floor done in {time.monotonic() - t0:.0f}s; published state restored: {back}")
    return summarize(phases, snap, back)


def summarize(phases: dict[str, Any], snap: dict[str, Any], back: bool) -> dict[str, Any]:
    """bench_size's out["api_floor"]: the headline numbers, then every phase in detail."""

    def wall(name: str) -> float:
        return float(phases[name]["wall_s"])

    def cpu(name: str) -> float:
        return float(phases[name]["api_cpu_floor_s"])

    by_conc: dict[str, Any] = {}
    for name, ph in phases.items():
        if name.startswith("conditions_apply_c"):
            c = name.removeprefix("conditions_apply_c").split("_")[0]
            row = by_conc.setdefault(c, {"per_s": [], "wall_s": [], "errors": 0})
            row["per_s"].append(ph["per_s"])
            row["wall_s"].append(ph["wall_s"])
            row["errors"] += ph["errors"]
    for row in by_conc.values():
        row["best_per_s"] = max(row["per_s"])
        row["median_per_s"] = round(statistics.median(row["per_s"]), 1)
    main = ("list", "conditions_apply", "serviceaudits_apply")
    return {
        "list_s": wall("list"),
        "conditions_apply_s": wall("conditions_apply"),
        "serviceaudits_apply_s": wall("serviceaudits_apply"),
        "requests": {n: phases[n]["requests"] for n in main},
        "requests_per_s": {n: phases[n]["per_s"] for n in main},
        "concurrency": CONCURRENCY,
        "page_size": PAGE_SIZE,
        "initial_audit_floor_s": round(wall("list") + wall("conditions_apply"), 3),
        "initial_reports_floor_s": round(
            wall("list") + wall("conditions_apply") + wall("serviceaudits_apply"), 3
        ),
        # the same by the API server's and etcd's CPU alone, over every core: the floor on an
        # otherwise idle machine (the walls above include whatever else ran: other_cpu_s)
        "initial_audit_cpu_floor_s": round(cpu("list") + cpu("conditions_apply"), 3),
        "initial_reports_cpu_floor_s": round(
            cpu("list") + cpu("conditions_apply") + cpu("serviceaudits_apply"), 3
        ),
        "other_cpu_s": {n: phases[n]["other_cpu_s"] for n in main},
        "check_list_s": wall("check_list"),
        "check_list_parallel_s": wall("check_list_parallel"),
        "conditions_apply_by_concurrency": by_conc,
        "services": len(snap["services"]),
        "serviceaudits": len(snap["serviceaudits"]),
        "services_without_conditions": snap["services_without_conditions"],
        "restored": back,
        "phases": phases,
    }


def compare(size: dict[str, Any]) -> None:
    """The operator's initial audit and reports over their floors (medians), into api_floor."""
    fl = size.get("api_floor") or {}
    for ours, floor_key in (
        ("initial_audit_s", "initial_audit_floor_s"),
        ("initial_reports_s", "initial_reports_floor_s"),
    ):
        median = (size.get(ours) or {}).get("median")
        if median and fl.get(floor_key):
            fl[f"{ours.removesuffix('_s')}_over_floor"] = round(median / fl[floor_key], 2)


# ---------------------------------------------------------------------------------------------
# In the child: the minimal client and the phases


@dataclass(frozen=True)
class Creds:
    server: str
    token: str
    ca_pem: str


def read_kubeconfig(path: str) -> Creds:
    """Server, bearer token and CA of the current context (as bench/kubeapi.py reads them)."""
    cfg = yaml.safe_load(Path(path).read_text())
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg.get("current-context"))
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return Creds(cluster["server"].rstrip("/"), user["token"], ca)


class Client:
    """One aiohttp session (keep-alive connections, like the operator's transport.py)."""

    def __init__(self, creds: Creds) -> None:
        self.base = creds.server
        ctx = ssl.create_default_context(cadata=creds.ca_pem)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=64),
            headers={"Authorization": f"Bearer {creds.token}", "Accept": "application/json"},
            trust_env=False,
        )
        self.timeout = aiohttp.ClientTimeout(total=120)

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        async with self.session.get(
            self.base + path, params=params or {}, timeout=self.timeout
        ) as r:
            return r.status, await r.read()

    async def patch(self, path: str, body: bytes, ctype: str, params: dict[str, str]) -> bool:
        """One PATCH, its answer decoded (as the operator does); whether it succeeded."""
        async with self.session.patch(
            self.base + path,
            params=params,
            data=body,
            headers={"Content-Type": ctype},
            timeout=self.timeout,
        ) as r:
            data = await r.read()
            if r.status < 300:
                orjson.loads(data)
            return r.status < 300

    async def list_all(self, path: str) -> tuple[int, int]:
        """Every page of a collection, decoded: (requests, objects)."""
        token, pages, objects = "", 0, 0
        while True:
            params = {"limit": str(PAGE_SIZE), **({"continue": token} if token else {})}
            status, data = await self.get(path, params)
            pages += 1
            if status >= 300:
                raise RuntimeError(f"GET {path}: HTTP {status}: {data[:300]!r}")
            page = orjson.loads(data)
            objects += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return pages, objects


async def in_flight(concurrency: int, jobs: Iterable[Callable[[], Awaitable[bool]]]) -> int:
    """Run the jobs with `concurrency` at once; how many failed."""
    it: Iterator[Callable[[], Awaitable[bool]]] = iter(jobs)
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for job in it:
            if not await job():
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


def server_times(text: str, verb: str, resources: frozenset[str], sub: str) -> tuple[float, float]:
    """(seconds, requests) the API server's request-duration histogram holds for these."""
    total = {"sum": 0.0, "count": 0.0}
    for which, labels, value in _DURATION.findall(text):
        lab = dict(_LABEL.findall(labels))
        if (
            lab.get("verb") == verb
            and lab.get("resource") in resources
            and lab.get("subresource", "") == sub
        ):
            total[which] += float(value)
    return total["sum"], total["count"]


def cpu_now() -> dict[str, float]:
    """CPU seconds so far of the cluster's components, the bench (our parent) and us."""
    out = {}
    for name, pid in harness.cluster_pids().items():
        try:
            out[name] = harness.proc_stats(pid)["cpu_s"]
        except (OSError, KeyError, ValueError, IndexError):
            continue
    with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
        out["bench"] = harness.proc_stats(os.getppid())["cpu_s"]
    out["floor_client"] = time.process_time()
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core: /proc/stat, idle and iowait
    excluded): against the processes above, what else ran meanwhile."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / harness.CLK_TCK


def cpu_breakdown(c0: dict[str, float], c1: dict[str, float], busy: float, wall: float) -> Any:
    """A phase's CPU: by process, what else ran on the machine, and the floor the API server
    and etcd set by CPU alone (their CPU seconds spread over every core)."""
    cpu = {k: round(c1[k] - c0[k], 2) for k in c1 if k in c0}
    api = cpu.get("apiserver", 0.0) + cpu.get("etcd", 0.0)
    return {
        "cpu_s": cpu,
        "other_cpu_s": round(max(0.0, busy - sum(cpu.values())), 2),
        "machine_busy_cores": round(busy / wall, 2) if wall else None,
        "api_cpu_floor_s": round(api / (os.cpu_count() or 1), 3),
    }


class Phases:
    """Times each phase, with the API server's own time and every component's CPU."""

    def __init__(self, admin: Client) -> None:
        self.admin = admin
        self.results: dict[str, dict[str, Any]] = {}

    async def metrics(self) -> str:
        status, data = await self.admin.get("/metrics")
        return data.decode() if status < 300 else ""

    async def run(
        self, name: str, select: str, body: Callable[[], Awaitable[tuple[int, int]]]
    ) -> dict[str, Any]:
        """`body` returns (requests, failed)."""
        verb, resources, sub = SELECT[select]
        s0 = server_times(await self.metrics(), verb, resources, sub)
        c0, m0, t0 = cpu_now(), machine_busy(), time.monotonic()
        requests, failed = await body()
        wall = time.monotonic() - t0
        c1, m1 = cpu_now(), machine_busy()
        s1 = server_times(await self.metrics(), verb, resources, sub)
        served = s1[1] - s0[1]
        res = {
            "wall_s": round(wall, 3),
            "requests": requests,
            "errors": failed,
            "per_s": round(requests / wall, 1) if wall else None,
            "server_s_sum": round(s1[0] - s0[0], 3),
            "server_mean_ms": round(1000 * (s1[0] - s0[0]) / served, 2) if served else None,
            "server_requests": int(served),
            **cpu_breakdown(c0, c1, m1 - m0, wall),
        }
        api_cpu = res["cpu_s"].get("apiserver")
        if api_cpu is not None and requests:
            res["apiserver_cpu_ms_per_request"] = round(1000 * api_cpu / requests, 2)
        self.results[name] = res
        print(f"{name}: {json.dumps(res)}", flush=True)
        return res


def _service_bodies(snap: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(path, apply body) of each Service's conditions, as controller/kube.py sends them."""
    return [
        (
            f"/api/v1/namespaces/{s['namespace']}/services/{s['name']}/status",
            orjson.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": s["name"], "namespace": s["namespace"]},
                    "status": {"conditions": s["conditions"]},
                }
            ),
        )
        for s in snap["services"]
    ]


def _audit_bodies(snap: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(path, apply body) of each ServiceAudit, whole, as controller/kube.py sends it."""
    out = []
    for a in snap["serviceaudits"]:
        ns, name = a["namespace"], a["name"]
        owner = {"apiVersion": "v1", "kind": "Service", "name": name, "uid": a["uid"]}
        body = {
            "apiVersion": SA_API.removeprefix("/apis/"),
            "kind": "ServiceAudit",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": a["labels"],
                "ownerReferences": [{**owner, "controller": True}],
            },
            "spec": {},
            "status": a["status"],
        }
        out.append((f"{SA_API}/namespaces/{ns}/serviceaudits/{name}", orjson.dumps(body)))
    return out


async def replay(args: argparse.Namespace) -> dict[str, Any]:
    snap = orjson.loads(Path(args.snapshot).read_bytes())
    op, admin = Client(read_kubeconfig(args.kubeconfig)), Client(read_kubeconfig(args.admin))
    phases = Phases(admin)
    try:
        await phases.run("list", "list", lambda: _lists(op, OPERATOR_LISTS, together=True))
        services = _service_bodies(snap)
        await phases.run("conditions_apply", "conditions_apply", _applier(op, services))
        audits = _audit_bodies(snap)
        await phases.run("serviceaudits_apply", "serviceaudits_apply", _applier(op, audits))
        for r, c in ((r, c) for r in range(args.rounds) for c in args.sweep):
            await _strip(op, snap)
            await phases.run(
                f"conditions_apply_c{c}_{r}", "conditions_apply", _applier(op, services, c)
            )
        await phases.run(
            "check_list", "check_list", lambda: _lists(admin, CHECK_LISTS, together=False)
        )
        await phases.run("check_list_parallel", "check_list", lambda: _lists(admin, CHECK_LISTS))
    finally:
        await op.session.close()
        await admin.session.close()
    return phases.results


def _applier(
    client: Client, bodies: list[tuple[str, bytes]], concurrency: int = CONCURRENCY
) -> Callable[[], Awaitable[tuple[int, int]]]:
    return lambda: _apply(client, bodies, concurrency)


async def _apply(
    client: Client, bodies: list[tuple[str, bytes]], concurrency: int
) -> tuple[int, int]:
    jobs = (lambda p=path, b=body: client.patch(p, b, APPLY, APPLY_PARAMS) for path, body in bodies)
    return len(bodies), await in_flight(concurrency, jobs)


async def _lists(client: Client, paths: dict[str, str], together: bool = True) -> tuple[int, int]:
    """Every collection listed in full: all at once (the informers), or one after another
    (check)."""
    if together:
        counts = await asyncio.gather(*(client.list_all(p) for p in paths.values()))
    else:
        counts = [await client.list_all(p) for p in paths.values()]
    return sum(pages for pages, _ in counts), 0


async def _strip(client: Client, snap: dict[str, Any]) -> None:
    """Our conditions off every Service again (untimed), as measure.clear_published does."""
    jobs = (
        lambda s=s: client.patch(
            f"/api/v1/namespaces/{s['namespace']}/services/{s['name']}/status",
            orjson.dumps({"status": {"conditions": s["others"] or None}}),
            MERGE,
            {},
        )
        for s in snap["services"]
    )
    failed = await in_flight(CONCURRENCY, jobs)
    if failed:
        raise RuntimeError(f"{failed} services kept their conditions")
    await asyncio.sleep(2)  # the watchers' echoes done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    p.add_argument("--snapshot", required=True, help="what to replay (floor.snapshot())")
    p.add_argument("--out", required=True, type=Path, help="the phases, as JSON")
    p.add_argument("--kubeconfig", required=True, help="the operator's (its ServiceAccount)")
    p.add_argument("--admin-kubeconfig", dest="admin", default=harness.admin_kubeconfig())
    p.add_argument(
        "--sweep",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=list(SWEEP),
        help="concurrencies to apply the conditions at again (comma-separated; empty: none)",
    )
    p.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of the sweep")
    args = p.parse_args(argv)
    results = asyncio.run(replay(args))
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
