"""What one ServiceAudit write costs the API server (CPU ms per write), by CRD variant, verb,
fieldValidation, body size and watchers: `python -m bench.sa_cost [--setup PODS] [--mode ...]`.

Run it on a bench cluster of its own (BENCH_CLUSTER=soak): it replaces the ServiceAudit CRD
with variants and deletes every ServiceAudit between phases (the baseline CRD is put back at
the end). `--setup PODS` brings that cluster up with bench.scenario's PODS pods, runs the
operator (settle 0) until every ServiceAudit is written, and saves them (--audits); without it
the saved ServiceAudits are replayed. Each phase writes every saved ServiceAudit REPLICAS times
(names -x1, -x2..., same owner), CONCURRENCY in flight, from this process (aiohttp, the admin
token, as bench/floor.py), and records the API server's and etcd's CPU seconds (/proc) over the
phase and one second after it (the watch fan-out), per write. Phases of a mode run in shuffled
order in each of --rounds rounds (the machine is shared: compare medians). Modes:

  crd    apply (first write, then a later one) under each CRD variant: baseline (deploy/),
         atomic_status (`x-kubernetes-map-type: atomic` on status), atomic_parts (on
         status.endpoints, .dns, .environment), status_unvalidated (no schema under status:
         attribution only); POST / merge-patch / PUT beside apply for the first two;
  size   apply of smaller and larger reports (baseline CRD);
  fv     apply with fieldValidation unset (Warn), Ignore, Strict;
  combo  baseline vs atomic_status, each with fieldValidation unset and Ignore;
  watch  apply with 0, 1, 3 full watchers and 1 metadata-only watcher of serviceaudits.

Rows go to --out (JSON lines); `--summary FILE...` prints the medians.

Measured (2 cores, shared; 2,000 pods / 400 services, ~6.8 KB reports, 802 writes a phase, medians
of 3 rounds; API server CPU ms per write, first / later): baseline apply 8.1 / 10.3; with
fieldValidation=Ignore 7.0 / 8.3 (the apply body is parsed by the YAML parser twice under the
default Warn: once to apply, once strictly for duplicate fields); atomic status 7.3 / 8.5
(managedFields 1,316 -> 337 bytes); both 6.0 / 6.6. POST 6.1, PUT 7.6, merge-patch 9.0 (baseline
CRD). Per KB of report ~0.55 / 0.7 ms over a ~4.6 / 5.5 ms fixed cost; extra watchers: no
measurable cost.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench import harness
from bench.floor import Client, cpu_now, in_flight, read_kubeconfig, server_times

API = "/apis/svcaudit.dev/v1alpha1"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON = "application/json"
META_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
FM = {"fieldManager": "svcaudit"}
CONCURRENCY = 8
CRD_PATH = harness.REPO / "deploy" / "crd-serviceaudits.yaml"
CRDS = ("baseline", "atomic_status", "atomic_parts", "status_unvalidated")
SIZES = ("full", "no_dns_observed", "half_endpoints", "no_lists", "double_lists")
METRIC_VERB = {"apply": "APPLY", "merge": "PATCH", "put": "PUT", "post": "POST"}
Item = tuple[str, str, dict[str, Any]]


def crd_variant(kind: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    st = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    if kind == "atomic_status":
        st["x-kubernetes-map-type"] = "atomic"
    elif kind == "atomic_parts":
        for part in ("endpoints", "dns", "environment"):
            st["properties"][part]["x-kubernetes-map-type"] = "atomic"
    elif kind == "status_unvalidated":
        st.clear()
        st.update({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    elif kind != "baseline":
        raise ValueError(kind)
    return crd


def install_crd(kind: str) -> None:
    harness.run_kubectl("apply", "-f", "-", input=json.dumps(crd_variant(kind)))
    harness.run_kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/serviceaudits.svcaudit.dev"
    )
    time.sleep(6)  # the CR handler rebuilt from the new schema, the OpenAPI spec republished


def resize(status: dict[str, Any], size: str) -> dict[str, Any]:
    s = copy.deepcopy(status)
    ep, dns = s.get("endpoints") or {}, s.get("dns") or {}
    if size == "no_dns_observed":
        dns.pop("observed", None)
    elif size == "half_endpoints":
        for k in ("expected", "observed"):
            if ep.get(k):
                ep[k] = ep[k][: (len(ep[k]) + 1) // 2]
    elif size in ("no_lists", "double_lists"):
        for part in (ep, dns):
            for k in ("expected", "observed"):
                if k in part:
                    part[k] = [] if size == "no_lists" else part[k] + part[k]
    elif size != "full":
        raise ValueError(size)
    return s


def bodies(audits: list[dict[str, Any]], replicas: int, size: str, label: str) -> list[Item]:
    """(namespace, name, body) of every write of a phase, as controller/kube.py applies it;
    the label differs between phases, so that a later write changes the object."""
    out = []
    for r in range(replicas):
        for a in audits:
            m = a["metadata"]
            owner = m["ownerReferences"][0]
            name = m["name"] if r == 0 else f"{m['name']}-x{r}"
            meta = {
                "name": name,
                "namespace": m["namespace"],
                "labels": {**(m.get("labels") or {}), "bench.svcaudit.dev/phase": label},
                "ownerReferences": [
                    {k: owner[k] for k in ("apiVersion", "kind", "name", "uid", "controller")}
                ],
            }
            body = {
                "apiVersion": "svcaudit.dev/v1alpha1",
                "kind": "ServiceAudit",
                "metadata": meta,
                "spec": {},
                "status": resize(a["status"], size),
            }
            out.append((m["namespace"], name, body))
    return out


class Runner:
    def __init__(self, client: Client, out: Path) -> None:
        self.c = client
        self.out = out
        self.rv: dict[tuple[str, str], str] = {}
        self.idle_rate = 0.0

    async def _write(
        self,
        key: tuple[str, str],
        method: str,
        path: str,
        body: dict[str, Any],
        ctype: str,
        params: dict[str, str],
    ) -> bool:
        async with self.c.session.request(
            method,
            self.c.base + path,
            params=params,
            data=orjson.dumps(body),
            headers={"Content-Type": ctype},
            timeout=self.c.timeout,
        ) as r:
            data = await r.read()
            if r.status >= 300:
                print(f"{method} {path}: {r.status} {data[:300]!r}", file=sys.stderr, flush=True)
                return False
            self.rv[key] = orjson.loads(data)["metadata"]["resourceVersion"]
            return True

    def jobs(self, verb: str, items: list[Item], fv: str) -> Iterator[Any]:
        extra = {"fieldValidation": fv} if fv else {}
        for ns, name, body in items:
            key, path = (ns, name), f"{API}/namespaces/{ns}/serviceaudits/{name}"
            if verb == "apply":
                params = {**FM, "force": "true", **extra}
                yield lambda k=key, p=path, b=body, q=params: self._write(
                    k, "PATCH", p, b, APPLY, q
                )
            elif verb == "merge":
                yield lambda k=key, p=path, b=body: self._write(k, "PATCH", p, b, MERGE, FM)
            elif verb == "put":

                def put(k: tuple[str, str] = key, p: str = path, b: dict[str, Any] = body) -> Any:
                    b = {**b, "metadata": {**b["metadata"], "resourceVersion": self.rv[k]}}
                    return self._write(k, "PUT", p, b, JSON, FM)

                yield put
            elif verb == "post":
                coll = f"{API}/namespaces/{ns}/serviceaudits"
                yield lambda k=key, p=coll, b=body: self._write(k, "POST", p, b, JSON, FM)
            else:
                raise ValueError(verb)

    async def _metrics(self) -> str:
        _, data = await self.c.get("/metrics")
        return data.decode()

    def _record(self, row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)
        with self.out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    async def phase(self, meta: dict[str, Any], verb: str, items: list[Item], fv: str = "") -> None:
        sel = (METRIC_VERB[verb], frozenset({"serviceaudits"}), "")
        s0 = server_times(await self._metrics(), *sel)
        c0, t0 = cpu_now(), time.monotonic()
        failed = await in_flight(CONCURRENCY, self.jobs(verb, items, fv))
        wall = time.monotonic() - t0
        await asyncio.sleep(1.0)  # the watch fan-out of the last writes
        c1 = cpu_now()
        s1 = server_times(await self._metrics(), *sel)
        n = len(items)
        api, etcd = c1["apiserver"] - c0["apiserver"], c1["etcd"] - c0["etcd"]
        ns, name, _ = items[n // 2]
        _, data = await self.c.get(f"{API}/namespaces/{ns}/serviceaudits/{name}")
        stored = orjson.loads(data)
        self._record(
            {
                **meta,
                "verb": verb,
                "fieldValidation": fv or "unset",
                "n": n,
                "failed": failed,
                "wall_s": round(wall, 2),
                "per_s": round(n / wall, 1),
                "api_cpu_s": round(api, 2),
                "etcd_cpu_s": round(etcd, 2),
                "api_ms": round(1000 * api / n, 2),
                "etcd_ms": round(1000 * etcd / n, 2),
                # less what the API server spends idle (its own loops, the cluster's controllers)
                "api_ms_less_idle": round(1000 * (api - self.idle_rate * (wall + 1)) / n, 2),
                "server_mean_ms": round(1000 * (s1[0] - s0[0]) / max(1.0, s1[1] - s0[1]), 2),
                "body_bytes_median": sorted(len(orjson.dumps(b)) for _, _, b in items)[n // 2],
                "stored_bytes": len(data),
                "managed_fields_bytes": len(orjson.dumps(stored["metadata"].get("managedFields"))),
            }
        )

    async def idle(self, seconds: float = 5) -> None:
        c0, t0 = cpu_now(), time.monotonic()
        await asyncio.sleep(seconds)
        c1 = cpu_now()
        self.idle_rate = (c1["apiserver"] - c0["apiserver"]) / (time.monotonic() - t0)
        self._record({"verb": "idle", "api_ms_per_s": round(1000 * self.idle_rate, 1)})

    async def delete_all(self, namespaces: list[str]) -> None:
        for ns in namespaces:
            async with self.c.session.delete(
                self.c.base + f"{API}/namespaces/{ns}/serviceaudits", timeout=self.c.timeout
            ) as r:
                await r.read()
        for _ in range(240):
            _, data = await self.c.get(f"{API}/serviceaudits", {"limit": "1"})
            if not orjson.loads(data)["items"]:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # the garbage collector's and the watchers' echoes


async def watcher(c: Client, metadata: bool) -> None:
    """One watch of every ServiceAudit from now, each event decoded."""
    _, data = await c.get(f"{API}/serviceaudits", {"limit": "1"})
    rv = orjson.loads(data)["metadata"]["resourceVersion"]
    params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
    async with c.session.get(
        c.base + f"{API}/serviceaudits",
        params=params,
        headers={"Accept": META_ACCEPT if metadata else JSON},
        timeout=aiohttp.ClientTimeout(total=None),
    ) as r:
        async for line in r.content:
            orjson.loads(line)


async def run_mode(args: argparse.Namespace, run: Runner, audits: list[dict[str, Any]]) -> None:
    namespaces = sorted({a["metadata"]["namespace"] for a in audits})
    rep = args.replicas

    async def pair(
        meta: dict[str, Any], verb: str = "apply", size: str = "full", fv: str = ""
    ) -> None:
        """A first write (none before) and a later one (changed label), by `verb`."""
        await run.delete_all(namespaces)
        first = "post" if verb in ("merge", "put") else verb
        await run.phase({**meta, "write": "first"}, first, bodies(audits, rep, size, "a"), fv)
        await run.phase({**meta, "write": "later"}, verb, bodies(audits, rep, size, "b"), fv)

    for rnd in range(args.rounds):
        shuffle = random.Random(rnd).shuffle
        base = {"round": rnd, "mode": args.mode}
        if args.mode == "crd":
            crds = list(CRDS)
            shuffle(crds)
            for crd in crds:
                install_crd(crd)
                await run.idle()
                await pair({**base, "crd": crd})
                if crd in ("baseline", "atomic_status"):
                    for verb in ("merge", "put"):  # first: POST
                        await pair({**base, "crd": crd}, verb)
        elif args.mode == "size":
            install_crd("baseline")
            await run.idle()
            sizes = list(SIZES)
            shuffle(sizes)
            for size in sizes:
                await pair({**base, "crd": "baseline", "size": size}, size=size)
        elif args.mode in ("fv", "combo"):
            crds = ["baseline"] if args.mode == "fv" else ["baseline", "atomic_status"]
            fvs = ["", "Ignore", "Strict"] if args.mode == "fv" else ["", "Ignore"]
            cases = [(c, f) for c in crds for f in fvs]
            shuffle(cases)
            for crd, fv in cases:
                install_crd(crd)
                await run.idle()
                await pair({**base, "crd": crd}, fv=fv)
        elif args.mode == "watch":
            install_crd("baseline")
            await run.idle()
            watchers = [("none", 0, False), ("full1", 1, False), ("full3", 3, False)]
            watchers.append(("meta1", 1, True))
            shuffle(watchers)
            for name, count, meta_only in watchers:
                await run.delete_all(namespaces)
                tasks = [asyncio.create_task(watcher(run.c, meta_only)) for _ in range(count)]
                await asyncio.sleep(1)
                await pair({**base, "crd": "baseline", "watchers": name})
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        else:
            raise ValueError(args.mode)


def setup(pods: int, audits_path: Path) -> None:
    """The cluster with the scenario, the operator's ServiceAudits saved."""
    from bench import measure
    from bench import scenario as scen
    from bench.kubeapi import Kube, Watch

    harness.cluster_up(harness.nodes_for(pods))
    kube = Kube(harness.admin_kubeconfig())
    harness.cap_node_pods(kube)
    op_kc = harness.install_operator_prereqs(kube)
    measure.create_scenario(kube, scen.generate(pods))
    svc = Watch(kube, "/api/v1/services", "services")
    sas = Watch(kube, f"{API}/serviceaudits", "serviceaudits")
    op = harness.Operator(op_kc, audits_path.with_suffix(".operator.log"), settle=0).start()
    try:
        if measure.wait_initial_reports(op, svc, sas, 900) is None:
            raise RuntimeError("the operator did not write every ServiceAudit")
        measure.wait_quiet(op)
    finally:
        op.stop()
    items, _ = kube.list_all(f"{API}/serviceaudits")
    audits_path.write_bytes(orjson.dumps(items))
    harness.log(f"saved {len(items)} ServiceAudits to {audits_path}")


def summary(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        if r["verb"] != "idle":
            key: tuple[str, ...] = (
                r["mode"],
                r.get("crd", ""),
                r.get("size", "full"),
                r.get("watchers", ""),
                r["fieldValidation"],
                r["write"],
                r["verb"],
            )
            groups[key].append(r)
    print(
        "mode crd size watchers fieldValidation write verb | runs api_ms(median min-max) "
        "less_idle etcd_ms body stored managedFields"
    )
    for key, rs in sorted(groups.items()):
        api = [r["api_ms"] for r in rs]

        def med(field: str, rs: list[dict[str, Any]] = rs) -> float:
            return float(statistics.median(r[field] for r in rs))

        print(
            " ".join(k or "-" for k in key),
            "|",
            len(rs),
            f"{statistics.median(api):.2f} ({min(api):.2f}-{max(api):.2f})",
            f"{med('api_ms_less_idle'):.2f} {med('etcd_ms'):.2f}",
            f"{med('body_bytes_median'):.0f} {med('stored_bytes'):.0f}",
            f"{med('managed_fields_bytes'):.0f}",
        )


async def amain(args: argparse.Namespace) -> None:
    audits = [
        a for a in orjson.loads(args.audits.read_bytes()) if a["metadata"].get("ownerReferences")
    ]
    client = Client(read_kubeconfig(harness.admin_kubeconfig()))
    try:
        await run_mode(args, Runner(client, args.out), audits)
    finally:
        await client.session.close()
        install_crd("baseline")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sa_cost", description=__doc__.split("\n")[0])
    p.add_argument("--setup", type=int, metavar="PODS", help="bring the cluster up first")
    p.add_argument("--audits", type=Path, default=Path("/tmp/sa_cost-audits.json"))
    p.add_argument("--mode", choices=("crd", "size", "fv", "combo", "watch"), default="crd")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2, help="writes per saved ServiceAudit")
    p.add_argument("--out", type=Path, default=Path("/tmp/sa_cost.jsonl"))
    p.add_argument("--summary", nargs="+", metavar="FILE", help="print the medians and exit")
    args = p.parse_args(argv)
    if args.summary:
        summary(args.summary)
        return 0
    if args.setup:
        setup(args.setup, args.audits)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
