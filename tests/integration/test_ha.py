"""High availability on the real local cluster: replicas of `svcaudit run --leader-elect`
share a coordination.k8s.io Lease (in the test's namespace); one leads and writes, the others
stand by with a warm store. Measured: failover after kill -9 and handover on a clean stop.

"No double writes" is checked four ways: a sampler polls every replica's svcaudit_leader all
along and never sees two leaders; a standby's svcaudit_writes_total and audits stay 0; during a
steady state with two replicas the resourceVersions of the Services and ServiceAudits and the
Events do not move; and a verdict change after a failover raises exactly one Event, from the
new leader.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Cluster, eventually
from tests.integration.op_helpers import (
    Operator,
    all_true,
    audit_codes,
    condition_is,
    ensure_crd,
    events_for,
    kubectl_json,
)
from tests.integration.test_check_helpers import make_workload, settled_workload

pytestmark = pytest.mark.cluster

LEASE = "svcaudit-leader"
BOUND = 25.0  # seconds; the defaults (15 s lease, 2 s retry) give 13-17 s, + settle (2 s)


def replica(cluster: Cluster, ns: str, tmp_path: Path, name: str) -> Operator:
    """One replica: leader election on, with the Lease in the test's namespace; POD_NAME
    names it (identity and the Events' reportingInstance)."""
    return Operator(
        cluster,
        ns,
        tmp_path / f"{name}.log",
        extra=("--leader-elect", "--leader-election-namespace", ns),
        env={"POD_NAME": name},
    )


def leader_gauge(op: Operator) -> float | None:
    """svcaudit_leader of a replica, None when it does not answer (killed)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=1
        ) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("svcaudit_leader "):
            return float(line.split()[1])
    return None


class LeaderSampler:
    """Polls every live replica's svcaudit_leader every 100 ms; remembers the most leaders
    seen at one instant."""

    def __init__(self) -> None:
        self.ops: dict[str, Operator] = {}
        self.samples = 0
        self.most = 0
        self.overlaps: list[dict[str, float | None]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, name: str, op: Operator) -> None:
        with self._lock:
            self.ops[name] = op

    def remove(self, name: str) -> None:
        with self._lock:
            self.ops.pop(name, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ops = dict(self.ops)
            seen = {name: leader_gauge(op) for name, op in ops.items()}
            leaders = sum(1 for v in seen.values() if v == 1)
            self.samples += 1
            self.most = max(self.most, leaders)
            if leaders > 1:
                self.overlaps.append(seen)
            self._stop.wait(0.1)

    def __enter__(self) -> LeaderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def lease(cluster: Cluster, ns: str) -> dict[str, Any]:
    data: dict[str, Any] = kubectl_json(cluster, "lease", LEASE, "-n", ns) or {}
    return data.get("spec") or {}


def leads(op: Operator) -> bool:
    """From svcaudit_leader, computed at each scrape. (kopf caches the probe's answer for up
    to 10 s, so the probe's `role` is not used for timing.)"""
    return leader_gauge(op) == 1


def the_leader(ops: dict[str, Operator]) -> str | None:
    gauges = {name: leader_gauge(op) for name, op in ops.items()}
    leaders = [n for n, v in gauges.items() if v == 1]
    standbys = [n for n, v in gauges.items() if v == 0]
    return leaders[0] if len(leaders) == 1 and len(standbys) == len(ops) - 1 else None


def published(cluster: Cluster, ns: str) -> dict[str, Any]:
    """What a write would change: resourceVersions of Services and ServiceAudits, and our
    Events per Service."""
    svcs = kubectl_json(cluster, "services", "-n", ns)["items"]
    svas = (kubectl_json(cluster, "serviceaudits", "-n", ns) or {"items": []})["items"]
    out: dict[str, Any] = {
        f"svc/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in svcs
    }
    out |= {f"sva/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in svas}
    out |= {
        f"events/{o['metadata']['name']}": len(events_for(cluster, ns, o["metadata"]["name"]))
        for o in svcs
    }
    return out


def test_one_leader_failover_and_no_double_writes(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ensure_crd(cluster)
    make_workload(cluster, namespace)  # web: healthy; named: SVA-EP-102 (False)
    settled_workload(cluster, namespace)
    ops: dict[str, Operator] = {}
    measured: dict[str, float] = {}
    try:
        with LeaderSampler() as sampler:
            for name in ("svcaudit-a", "svcaudit-b"):
                ops[name] = replica(cluster, namespace, tmp_path, name).start()
                sampler.add(name, ops[name])

            # ---- one leader, and it alone publishes ------------------------------------
            first = eventually(lambda: the_leader(ops), 30, "exactly one leader")
            (second,) = set(ops) - {first}
            leader, standby = ops[first], ops[second]
            identity = leader.probe()["identity"]
            assert identity.startswith(first + "_")
            assert lease(cluster, namespace)["holderIdentity"] == identity
            eventually(lambda: leader.probe().get("role") == "leader", 15, "probe: leader")
            assert standby.probe().get("role") == "standby"
            eventually(lambda: all_true(cluster, namespace, "web"), 60, "web: all True")
            eventually(
                lambda: (
                    "SVA-EP-102" in audit_codes(cluster, namespace, "named")
                    and condition_is(cluster, namespace, "named", "EndpointsConsistent", "False")
                ),
                60,
                "named: EndpointsConsistent=False (SVA-EP-102)",
            )
            eventually(lambda: events_for(cluster, namespace, "named"), 30, "a Warning event")
            time.sleep(4)  # let the writes' watch events come back

            # ---- steady state with two replicas: nothing moves -------------------------
            before = published(cluster, namespace)
            leader_writes = leader.total("svcaudit_writes_total")
            leader_audits = leader.total("svcaudit_audits_total")
            time.sleep(10)  # three resyncs (3 s) of the leader
            assert leader.total("svcaudit_audits_total") >= leader_audits + 4
            assert leader.total("svcaudit_writes_total") == leader_writes
            assert standby.total("svcaudit_writes_total") == 0
            assert standby.total("svcaudit_audits_total") == 0, "a standby does not audit"
            assert standby.probe()["writes"] == {}
            assert published(cluster, namespace) == before

            # ---- kill -9 the leader, nothing changes: the standby takes over, 0 writes --
            killed = time.monotonic()
            sampler.remove(first)
            leader.kill()
            eventually(lambda: leads(standby), 40, f"{second} leads", interval=0.1)
            measured["takeover after kill -9 (no change)"] = time.monotonic() - killed
            new_identity = standby.probe()["identity"]
            eventually(
                lambda: lease(cluster, namespace)["holderIdentity"] == new_identity, 10, "lease"
            )
            eventually(
                lambda: standby.total("svcaudit_audits_total") >= 6, 30, "the new leader audits"
            )
            time.sleep(2)
            assert standby.total("svcaudit_writes_total") == 0, "failover rewrote something"
            assert standby.verdict_changes("web") == standby.verdict_changes("named") == []
            assert published(cluster, namespace) == before

            # ---- a fresh standby; kill -9 the leader and change the cluster at once -----
            ops["svcaudit-c"] = third = replica(cluster, namespace, tmp_path, "svcaudit-c").start()
            sampler.add("svcaudit-c", third)
            assert leader_gauge(third) == 0
            warnings_before = len(events_for(cluster, namespace, "web"))
            killed = time.monotonic()
            sampler.remove(second)
            standby.kill()
            cluster.run_kubectl(
                "patch",
                "service",
                "web",
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"spec":{"selector":{"app":"nothing"}}}',
            )
            changed = time.monotonic()
            eventually(lambda: leads(third), 40, "svcaudit-c leads", interval=0.1)
            measured["takeover after kill -9"] = time.monotonic() - killed
            eventually(
                lambda: (
                    "SVA-EP-101" in audit_codes(cluster, namespace, "web")
                    and condition_is(cluster, namespace, "web", "EndpointsConsistent", "False")
                ),
                60,
                "web: EndpointsConsistent=False (SVA-EP-101) from the new leader",
            )
            measured["change made after kill -9 -> condition"] = time.monotonic() - changed
            time.sleep(3)
            new_events = events_for(cluster, namespace, "web")[warnings_before:]
            assert [(e["type"], e["reason"]) for e in new_events] == [
                ("Warning", "SelectorMatchesNoPod")
            ], new_events
            assert {e.get("reportingInstance") for e in new_events} == {"svcaudit-c"}

            # ---- clean stop (a rolling update): the Lease is released, handover at once --
            ops["svcaudit-d"] = fourth = replica(cluster, namespace, tmp_path, "svcaudit-d").start()
            sampler.add("svcaudit-d", fourth)
            assert leader_gauge(fourth) == 0
            stopping = time.monotonic()
            sampler.remove("svcaudit-c")
            third.stop()
            eventually(lambda: leads(fourth), 20, "svcaudit-d leads", interval=0.1)
            measured["handover after SIGTERM"] = time.monotonic() - stopping
            assert any(e.get("event") == "lease released" for e in third.logs())
            spec = lease(cluster, namespace)
            assert spec["holderIdentity"] == fourth.probe()["identity"]
            assert spec["leaseTransitions"] == 3  # a -> b -> c -> (released) -> d
            assert spec["leaseDurationSeconds"] == 15
            time.sleep(4)
            assert fourth.total("svcaudit_writes_total") == 0  # it had nothing to change
    finally:
        for op in ops.values():
            op.stop()
    print()
    for what, seconds in measured.items():
        print(f"HA: {what}: {seconds:.1f}s")
    print(f"HA: {sampler.samples} samples of svcaudit_leader, at most {sampler.most} leader(s)")
    assert sampler.overlaps == [], "two replicas led at the same time"
    assert sampler.most == 1 and sampler.samples > 100
    assert measured["takeover after kill -9"] < BOUND
    assert measured["change made after kill -9 -> condition"] < BOUND
    assert measured["handover after SIGTERM"] < 5  # retry period 2 s, plus the stop itself
