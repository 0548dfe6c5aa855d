"""The measurements of one cluster size: scenario creation, initial audit, detection latency
(operator and control-plane floor), steady state and churn API load, RSS and CPU, and the
one-shot `svcaudit check -A` against Popeye."""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness
from bench import scenario as scen
from bench.harness import log
from bench.kubeapi import ApiError, Kube, Obj, Watch
from e2e.cluster import cluster as local_cluster

PREFIX = "svcaudit.dev/"
ASPECTS = ("EndpointsConsistent", "EnvironmentConsistent", "DNSConsistent", "DiscoveryHealthy")
SA_API = "/apis/svcaudit.dev/v1alpha1"
SLICE_API = "/apis/discovery.k8s.io/v1"
KINDS = ("pod_deleted", "pod_label_changed", "selector_changed", "service_recreated")
# Changes made in a thread until the event is set; the list's one item counts them.
ChurnDriver = Callable[[threading.Event, list[int]], None]


def stats(values: list[float]) -> dict[str, Any]:
    """min/median/p99/max (p99 by nearest rank: with fewer than 100 trials it is the max)."""
    if not values:
        return {"n": 0}
    v = sorted(values)
    p99 = v[min(len(v) - 1, math.ceil(0.99 * len(v)) - 1)]
    return {
        "n": len(v),
        "min": round(v[0], 3),
        "median": round(statistics.median(v), 3),
        "p99": round(p99, 3),
        "max": round(v[-1], 3),
    }


def conditions(obj: Obj | None) -> dict[str, dict[str, Any]]:
    if not obj:
        return {}
    out = {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        t = c.get("type", "")
        if t.startswith(PREFIX):
            out[t[len(PREFIX) :]] = c
    return out


def has_all(obj: Obj | None) -> bool:
    c = conditions(obj)
    return all(a in c for a in ASPECTS)


def cond_is(obj: Obj | None, aspect: str, status: str, reason: str | None = None) -> bool:
    c = conditions(obj).get(aspect)
    return bool(c and c.get("status") == status and (reason is None or c.get("reason") == reason))


def sa_counts(obj: Obj | None) -> tuple[int, int] | None:
    if not obj:
        return None
    s = (obj.get("status") or {}).get("summary") or {}
    if "endpointsExpected" not in s:
        return None
    return int(s.get("endpointsExpected", -1)), int(s.get("endpointsObserved", -1))


# ---------------------------------------------------------------------------------------------
# The scenario on the cluster


def create_scenario(kube: Kube, sc: scen.Scenario) -> dict[str, float]:
    t0 = time.monotonic()
    for ns in sc.namespaces:
        kube.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
    # The default ServiceAccount must exist before pods can be created in a namespace.
    for ns in sc.namespaces:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                kube.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default")
                break
            except ApiError:
                time.sleep(0.2)
    kube.parallel(
        lambda o: kube.create(f"/api/v1/namespaces/{o['metadata']['namespace']}/services", o),
        sc.service_objects,
    )
    t_svc = time.monotonic()
    kube.parallel(
        lambda o: kube.create(f"/api/v1/namespaces/{o['metadata']['namespace']}/pods", o),
        sc.pod_objects,
    )
    t_pods = time.monotonic()
    log(
        f"created {len(sc.service_objects)} services in {t_svc - t0:.1f}s, "
        f"{sc.pod_count} pods in {t_pods - t_svc:.1f}s; waiting for them to run"
    )
    want = sc.pod_count
    while True:
        pods, _ = kube.list_all("/api/v1/pods?labelSelector=bench%3Dsvcaudit")
        running = sum(
            1
            for p in pods
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
        )
        if running >= want:
            per_node: dict[str, int] = {}
            for pod in pods:
                node = pod.get("spec", {}).get("nodeName") or ""
                per_node[node] = per_node.get(node, 0) + 1
            break
        if time.monotonic() - t_pods > 1200:
            raise RuntimeError(f"only {running}/{want} pods Running after 20 min")
        time.sleep(2)
    t_run = time.monotonic()
    # not-ready pods: kwok's pod-ready stage only acts on Pending pods, so this sticks
    for ns, name in sc.not_ready:
        kube.strategic_patch(
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            {
                "status": {
                    "conditions": [
                        {"type": "Ready", "status": "False", "reason": "BenchNotReady"},
                        {"type": "ContainersReady", "status": "False"},
                    ]
                }
            },
        )
    # wait for the EndpointSlice controller to finish: the slices' endpoint total is stable
    last, stable_since = (-1, -1), time.monotonic()
    while time.monotonic() - stable_since < 8:
        slices, _ = kube.list_all(f"{SLICE_API}/endpointslices")
        total = sum(len(s.get("endpoints") or []) for s in slices)
        ready = sum(
            1
            for s in slices
            for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready")
        )
        if (total, ready) != last:
            last, stable_since = (total, ready), time.monotonic()
        time.sleep(1)
    t_done = time.monotonic()
    log(f"pods Running after {t_run - t_pods:.1f}s; slices stable ({last}) at {t_done - t0:.1f}s")
    return {
        "create_services_s": round(t_svc - t0, 1),
        "create_pods_s": round(t_pods - t_svc, 1),
        "pods_running_s": round(t_run - t_pods, 1),
        "total_s": round(t_done - t0, 1),
        "slice_endpoints": last[0],
        "slice_endpoints_ready": last[1],
        # how evenly the scheduler spread them (a kwok node's /24 holds 254)
        "pods_per_node_min": min(per_node.values()),
        "pods_per_node_max": max(per_node.values()),
    }


def clear_published(kube: Kube, svc_watch: Watch, namespaces: list[str]) -> None:
    """Remove what an operator published (ServiceAudits, svcaudit conditions) so that the
    next start is a true initial audit."""
    for ns in namespaces:
        kube.request("DELETE", f"{SA_API}/namespaces/{ns}/serviceaudits", ok=(404,))

    def strip(key: str) -> None:
        obj = svc_watch.objects.get(key)
        conds = (obj or {}).get("status", {}).get("conditions") or []
        if not conds:
            return
        ns, name = key.split("/", 1)
        keep = [c for c in conds if not c.get("type", "").startswith(PREFIX)]
        kube.merge_patch(
            f"/api/v1/namespaces/{ns}/services/{name}/status",
            {"status": {"conditions": keep or None}},
        )

    kube.parallel(strip, list(svc_watch.objects))
    svc_watch.wait(lambda objs: not any(conditions(o) for o in objs.values()), 60)


# ---------------------------------------------------------------------------------------------
# The operator


def wait_initial_audit(op: harness.Operator, svc_watch: Watch, timeout: float) -> float | None:
    """Seconds from the operator's start to every Service carrying all four conditions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op.check_alive()
        with svc_watch.cond:
            objs = dict(svc_watch.objects)
            stamps = dict(svc_watch.stamps)
        if objs and all(has_all(o) for o in objs.values()):
            done = min(time.monotonic(), max(stamps.get(k, 0.0) for k in objs))
            return done - op.started_at
        time.sleep(0.2)
    return None


def wait_initial_reports(
    op: harness.Operator, svc_watch: Watch, sa_watch: Watch, timeout: float
) -> float | None:
    """Seconds from the operator's start to every Service having its ServiceAudit (owned by
    that Service incarnation). The operator writes reports after conditions (a report waits
    while audits wait), so this comes after `wait_initial_audit`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op.check_alive()
        with svc_watch.cond:
            uids = {k: (o.get("metadata") or {}).get("uid") for k, o in svc_watch.objects.items()}
        with sa_watch.cond:
            reports = dict(sa_watch.objects)
            stamps = dict(sa_watch.stamps)
        if uids and all(
            ((reports.get(k) or {}).get("status") or {}).get("serviceUID") == uid
            for k, uid in uids.items()
        ):
            done = min(time.monotonic(), max(stamps.get(k, 0.0) for k in uids))
            return done - op.started_at
        time.sleep(0.2)
    return None


def wait_quiet(op: harness.Operator, seconds: float = 8, timeout: float = 300) -> None:
    """Until the operator's writes and audits counters stop moving for `seconds`."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        m = op.metrics()
        cur = (op.total("svcaudit_writes_total", m), op.total("svcaudit_audit_queue_length", m))
        if cur != last:
            last, since = cur, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(1)


def api_window(
    kube: Kube, op: harness.Operator, seconds: float, during: ChurnDriver | None = None
) -> dict[str, Any]:
    """Operator writes (its metrics), requests by its identity (apiserver APF counters) and
    CPU over a window, per minute; `during` runs in a thread meanwhile (churn)."""
    m0, a0, s0 = op.metrics(), harness.operator_api_requests(kube), op.stats()
    t0 = time.monotonic()
    stop = threading.Event()
    changes: list[int] = [0]
    th = None
    if during:
        th = threading.Thread(target=during, args=(stop, changes), daemon=True)
        th.start()
    time.sleep(seconds)
    stop.set()
    if th:
        th.join(30)
    m1, a1, s1 = op.metrics(), harness.operator_api_requests(kube), op.stats()
    minutes = (time.monotonic() - t0) / 60
    writes = op.total("svcaudit_writes_total", m1) - op.total("svcaudit_writes_total", m0)
    audits = op.total("svcaudit_audits_total", m1) - op.total("svcaudit_audits_total", m0)
    errors = op.total("svcaudit_api_errors_total", m1) - op.total("svcaudit_api_errors_total", m0)
    by_kind = {
        k.split('kind="')[1].split('"')[0]: v - m0.get(k, 0.0)
        for k, v in m1.items()
        if k.startswith("svcaudit_writes_total{") and 'kind="' in k and v - m0.get(k, 0.0)
    }
    return {
        "seconds": round(minutes * 60, 1),
        "changes_made": changes[0],
        "operator_writes_per_min": round(writes / minutes, 2),
        "operator_writes_by_kind": by_kind,
        "operator_audits_per_min": round(audits / minutes, 1),
        "operator_api_errors": errors,
        "apiserver_requests_per_min": {
            "read": round((a1["read"] - a0["read"]) / minutes, 1),
            "write": round((a1["write"] - a0["write"]) / minutes, 1),
        },
        "cpu_s_per_min": round((s1["cpu_s"] - s0["cpu_s"]) / minutes, 2),
        "rss_mb_end": round(s1["rss_mb"], 1),
    }


# ---------------------------------------------------------------------------------------------
# Detection trials


class Trials:
    def __init__(
        self,
        kube: Kube,
        sc: scen.Scenario,
        svc: Watch,
        sas: Watch,
        slices: Watch,
        targets: list[scen.ServiceSpec],
    ):
        self.kube, self.sc, self.svc, self.sas, self.slices = kube, sc, svc, sas, slices
        self.targets = targets
        self._lock = threading.Lock()

    def next_target(self) -> scen.ServiceSpec:
        with self._lock:
            return self.targets.pop(0)

    def slice_endpoints(self, ns: str, name: str, uid: str | None = None) -> int | None:
        total, found = 0, False
        for k, s in list(self.slices.objects.items()):
            if not k.startswith(ns + "/"):
                continue
            if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") != name:
                continue
            if uid and not any(
                o.get("uid") == uid for o in s["metadata"].get("ownerReferences", [])
            ):
                continue
            found = True
            total += len(s.get("endpoints") or [])
        return total if found else None

    def wait_slices(
        self, ns: str, name: str, want: int, timeout: float, uid: str | None = None
    ) -> float | None:
        def pred(objs: dict[str, Obj]) -> bool:
            return self.slice_endpoints(ns, name, uid) == want

        deadline = time.monotonic() + timeout
        with self.slices.cond:
            while True:
                if pred(self.slices.objects):
                    return self.slices.last_event_at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.slices.cond.wait(min(left, 0.5))

    def _ready_before(self, t: scen.ServiceSpec, timeout: float = 60) -> int:
        k = len(t.pods)
        ok = self.sas.wait_key(t.key, lambda o: sa_counts(o) == (k, k), timeout)
        ok2 = self.svc.wait_key(t.key, lambda o: cond_is(o, "EndpointsConsistent", "True"), 5)
        if ok is None or ok2 is None:
            raise RuntimeError(
                f"target {t.key} not healthy before the trial: "
                f"{sa_counts(self.sas.objects.get(t.key))}"
            )
        return k

    def run(self, kind: str, timeout: float) -> dict[str, Any]:
        t = self.next_target()
        k = self._ready_before(t)
        ns, name = t.namespace, t.name
        pod = t.pods[-1]
        pod_path = f"/api/v1/namespaces/{ns}/pods/{pod}"
        svc_path = f"/api/v1/namespaces/{ns}/services/{name}"
        res: dict[str, Any] = {"kind": kind, "service": t.key}
        floor_box: dict[str, float | None] = {}

        def floor(want: int, uid_getter: Callable[[], str] | None = None) -> None:
            uid = uid_getter() if uid_getter else None
            floor_box["t"] = self.wait_slices(ns, name, want, timeout, uid)

        if kind in ("pod_deleted", "pod_label_changed"):
            fl = threading.Thread(target=floor, args=(k - 1,))
            t0 = time.monotonic()
            fl.start()
            if kind == "pod_deleted":
                self.kube.delete(pod_path + "?gracePeriodSeconds=0")
            else:
                self.kube.merge_patch(pod_path, {"metadata": {"labels": {"app": name + "-off"}}})
            t1 = self.sas.wait_key(t.key, lambda o: sa_counts(o) == (k - 1, k - 1), timeout)
            fl.join(timeout)
            # restore
            if kind == "pod_deleted":
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        self.kube.request(
                            "POST", f"/api/v1/namespaces/{ns}/pods", self._pod(t, pod)
                        )
                        break
                    except ApiError as e:  # still terminating
                        if e.status != 409:
                            raise
                        time.sleep(0.2)
            else:
                self.kube.merge_patch(pod_path, {"metadata": {"labels": {"app": name}}})
        elif kind == "selector_changed":
            fl = threading.Thread(target=floor, args=(0,))
            t0 = time.monotonic()
            fl.start()
            self.kube.strategic_patch(svc_path, {"spec": {"selector": {"app": name + "-typo"}}})
            t1 = self.svc.wait_key(
                t.key,
                lambda o: cond_is(o, "EndpointsConsistent", "False", "SelectorMatchesNoPod"),
                timeout,
            )
            fl.join(timeout)
            self.kube.strategic_patch(svc_path, {"spec": {"selector": {"app": name}}})
        elif kind == "service_recreated":
            old = self.svc.objects[t.key]["metadata"]["uid"]
            self.kube.delete(svc_path)
            self.svc.wait_key(t.key, lambda o: o is None or o["metadata"]["uid"] != old, 60)
            body = next(
                o
                for o in self.sc.service_objects
                if o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name
            )
            t0 = time.monotonic()
            created = self.kube.create(f"/api/v1/namespaces/{ns}/services", body)
            uid = created["metadata"]["uid"]
            fl = threading.Thread(target=floor, args=(k, lambda: uid))
            fl.start()
            t1 = self.svc.wait_key(
                t.key,
                lambda o: (
                    o is not None
                    and o["metadata"]["uid"] == uid
                    and cond_is(o, "EnvironmentConsistent", "False")
                ),
                timeout,
            )
            fl.join(timeout)
            # pods keep the old ClusterIP in their environment: this service stays failing
        else:
            raise ValueError(kind)
        res["operator_s"] = None if t1 is None else round(t1 - t0, 3)
        ft = floor_box.get("t")
        res["floor_s"] = None if ft is None else round(max(ft - t0, 0.0), 3)
        if kind in ("pod_deleted", "pod_label_changed", "selector_changed"):
            # the restore must be seen before the next trial (and it frees the target)
            back = self.sas.wait_key(t.key, lambda o: sa_counts(o) == (k, k), timeout)
            back2 = self.svc.wait_key(
                t.key, lambda o: cond_is(o, "EndpointsConsistent", "True"), timeout
            )
            res["restored"] = back is not None and back2 is not None
            if res["restored"]:
                with self._lock:
                    self.targets.append(t)
        return res

    def _pod(self, t: scen.ServiceSpec, pod: str) -> Obj:
        return next(
            o
            for o in self.sc.pod_objects
            if o["metadata"]["namespace"] == t.namespace and o["metadata"]["name"] == pod
        )


def churn(kube: Kube, sc: scen.Scenario, rate: float) -> ChurnDriver:
    """A churn driver for api_window(): flips the `app` label of random pods of plain services
    out of and back into their selector, `rate` changes per second."""
    pool = [s for s in sc.services if s.kind == "plain"][-max(1, len(sc.services) // 10) :]
    rng = random.Random(8)

    def run(stop: threading.Event, changes: list[int]) -> None:
        off: list[tuple[str, str, str]] = []
        while not stop.is_set():
            t = time.monotonic()
            if off and (len(off) > 20 or rng.random() < 0.5):
                ns, pod, app = off.pop(0)
                labels = {"app": app}
            else:
                s = rng.choice(pool)
                ns, pod, app = s.namespace, rng.choice(s.pods), s.name
                if any(p == pod and n == ns for n, p, _ in off):
                    continue
                off.append((ns, pod, app))
                labels = {"app": app + "-off"}
            with contextlib.suppress(ApiError):
                kube.merge_patch(
                    f"/api/v1/namespaces/{ns}/pods/{pod}", {"metadata": {"labels": labels}}
                )
                changes[0] += 1
            stop.wait(max(0.0, 1 / rate - (time.monotonic() - t)))
        for ns, pod, app in off:
            with contextlib.suppress(ApiError):
                kube.merge_patch(
                    f"/api/v1/namespaces/{ns}/pods/{pod}", {"metadata": {"labels": {"app": app}}}
                )
                changes[0] += 1

    return run


# ---------------------------------------------------------------------------------------------
# One-shot: svcaudit check -A vs Popeye


def popeye_binary() -> Path:
    """Where `e2e/cluster/build.sh popeye` puts Popeye (under SVCAUDIT_CACHE, like the rest)."""
    v = harness.versions()["POPEYE_VERSION"]
    return local_cluster.cache_dir() / f"popeye-{v}" / "popeye"


def one_shots(
    out_dir: Path, trials: int, popeye: bool, popeye_all_skipped: str = ""
) -> dict[str, Any]:
    """`svcaudit check -A` (with DNS and without) and Popeye (all linters, and -s svc,po),
    alternately, `trials` times each. `popeye_all_skipped`: why Popeye's all-linters run is
    left out (its memory at this size), kept as a note."""
    kc = harness.admin_kubeconfig()
    cmds = {
        "svcaudit_check": [
            sys.executable,
            "-m",
            "svcaudit",
            "check",
            "-A",
            "-o",
            "json",
            "--fail-on",
            "never",
            "--kubeconfig",
            kc,
            "--dns-server",
            harness.DNS,
        ],
        "svcaudit_check_no_dns": [
            sys.executable,
            "-m",
            "svcaudit",
            "check",
            "-A",
            "-o",
            "json",
            "--fail-on",
            "never",
            "--kubeconfig",
            kc,
            "--no-dns",
        ],
    }
    pbin = popeye_binary()
    notes = {}
    if popeye and pbin.exists():
        base = [
            str(pbin),
            "-A",
            "--kubeconfig",
            kc,
            "-o",
            "json",
            "--force-exit-zero",
            "--logs",
            str(out_dir / "popeye.log"),
            "--log-level",
            "2",
        ]
        if popeye_all_skipped:
            notes["popeye"] = f"all-linters run skipped: {popeye_all_skipped}"
        else:
            cmds["popeye"] = base
        cmds["popeye_svc_po"] = [*base, "-s", "svc,po"]
    elif popeye:
        notes["popeye"] = f"not built ({pbin} missing): run `e2e/cluster/build.sh popeye`"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {name: {"trials": []} for name in cmds}
    for i in range(trials):
        for name, argv in cmds.items():
            r = harness.run_measured(argv, out_dir / f"{name}-{i}.json")
            results[name]["trials"].append(r)
            log(
                f"  {name} #{i}: {r['wall_s']}s, peak RSS {r['peak_rss_mb']} MB, "
                f"exit {r['exit_code']}"
            )
    for name, r in results.items():
        r["wall_s"] = stats([t["wall_s"] for t in r["trials"]])
        r["peak_rss_mb"] = stats([t["peak_rss_mb"] for t in r["trials"]])
        r["argv"] = [a if a != kc else "<bench kubeconfig>" for a in cmds[name]]
    results.update({"notes": notes})
    return results
