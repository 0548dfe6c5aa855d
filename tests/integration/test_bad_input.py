"""Bad input (issue 9, item 2): unusual but valid objects get the right verdict, none crashes
the operator, and objects it cannot interpret give Unknown naming the field.

All cases (tests/integration/bad_input_cases.py) are created at once in a few namespaces,
ONE operator audits them all, and each case is then checked against what it published.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures import Cluster, eventually
from tests.integration.bad_input_cases import HOLD, Case, cases
from tests.integration.op_helpers import (
    PREFIX,
    Operator,
    audit,
    ensure_crd,
    kubectl_json,
    service_conditions,
)
from tests.integration.test_check_helpers import check_json

pytestmark = pytest.mark.cluster

CASES = cases()
ASPECTS = ("EndpointsConsistent", "EnvironmentConsistent", "DNSConsistent", "DiscoveryHealthy")
PREFIXES = {  # namespace role -> create_namespace prefix (a 63-character one for "long")
    "main": "bad-input",
    "long": "bad-input-long-namespace-name-at-the-dns-label-limit-xxx",  # + "-" + 6 = 63
    "links": "bad-input-links",
    "big": "bad-input-big",
    "bad": "bad-input-odd",
    "badpod": "bad-input-oddpod",
}


@dataclass
class World:
    namespaces: dict[str, str]
    operator: Operator
    published: dict[str, dict[str, Any]]  # case id -> {"conditions", "audit"}
    converged_after: float
    checked: dict[tuple[str, str], dict[str, Any]]  # `svcaudit check`'s services, same moment
    check_uninterpretable: list[dict[str, str]]  # what check said it could not interpret


def _apply(cluster: Cluster, ns: str, objects: list[dict[str, Any]]) -> None:
    if objects:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        cluster.run_kubectl("apply", "-n", ns, "-f", "-", input=doc, timeout=180)


def _pods(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    data = kubectl_json(cluster, "pods", "-n", ns) or {"items": []}
    return {p["metadata"]["name"]: p for p in data["items"]}


def _running(cluster: Cluster, ns: str, names: list[str]) -> bool:
    pods = _pods(cluster, ns)
    return all((pods.get(n) or {}).get("status", {}).get("podIP") for n in names)


def _patch_status(cluster: Cluster, ns: str, pod: str, patch: dict[str, Any]) -> None:
    cluster.run_kubectl(
        "patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip


def _odd(ip: str) -> str:
    """The same IPv4 address with leading zeros: accepted by the apiserver (with a warning)."""
    return ".".join(f"{int(part):03d}" for part in ip.split("."))


def _create_odd_service(cluster: Cluster, ns: str, case: Case) -> None:
    """A Service whose clusterIP has a leading zero; retried on an address already taken."""
    for _ in range(10):
        octets = (random.randint(100, 250), random.randint(10, 99))
        odd_ip = f"10.96.{octets[0]}.0{octets[1]}"
        body = json.loads(json.dumps(case.objects).replace("@ODD_CLUSTER_IP@", odd_ip))
        proc = cluster.run_kubectl(
            "apply", "-n", ns, "-f", "-", check=False,
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": body}),
        )  # fmt: skip
        if proc.returncode == 0:
            return
    pytest.fail(f"could not create a service with a leading-zero clusterIP: {proc.stderr}")


def _matches(case: Case, snap: dict[str, Any]) -> bool:
    conds = snap["conditions"]
    statuses = tuple(conds.get(PREFIX + a, {}).get("status") for a in ASPECTS)
    if statuses != case.expect:
        return False
    status = (snap["audit"] or {}).get("status") or {}
    codes = {d["code"] for d in status.get("discrepancies") or []}
    if not case.codes <= codes:
        return False
    observed = (status.get("summary") or {}).get("endpointsObserved")
    return case.endpoints is None or observed == case.endpoints


def _snapshot(cluster: Cluster, ns: str, case: Case) -> dict[str, Any]:
    return {
        "conditions": service_conditions(cluster, ns, case.service),
        "audit": audit(cluster, ns, case.service),
    }


@pytest.fixture(scope="module")
def world(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ensure_crd(cluster)
    namespaces = {role: cluster.create_namespace(prefix) for role, prefix in PREFIXES.items()}
    assert len(namespaces["long"]) == 63
    op: Operator | None = None
    try:
        # 1. pods that must start before their service (enableServiceLinks false)
        for case in CASES:
            _apply(cluster, namespaces[case.ns], case.early)
        early = [(namespaces[c.ns], o["metadata"]["name"]) for c in CASES for o in c.early]
        for ns, name in early:
            eventually(lambda ns=ns, name=name: _running(cluster, ns, [name]), 90, f"{name} up")
        time.sleep(6)  # beyond the core's 5 s grace window around a service's creation
        # 2. services, slices, config maps; then 3. pods and workloads
        for case in CASES:
            ns = namespaces[case.ns]
            if case.id == "uninterpretable-service-cluster-ip":
                _create_odd_service(cluster, ns, case)
                continue
            first = [o for o in case.objects if o["kind"] not in ("Pod", "ReplicaSet")]
            _apply(cluster, ns, first)
        for case in CASES:
            ns = namespaces[case.ns]
            _apply(cluster, namespaces["main"], case.foreign)
            later = [o for o in case.objects if o["kind"] in ("Pod", "ReplicaSet")]
            for o in later:
                if o["kind"] == "Pod" and o["metadata"]["name"] in case.terminating:
                    o["metadata"]["finalizers"] = [HOLD]
            _apply(cluster, ns, later)
        # 4. states kwok does not produce by itself
        for case in CASES:
            ns = namespaces[case.ns]
            touched = [*case.not_ready, *case.succeeded, *case.terminating, *case.odd_ip]
            if touched:
                eventually(lambda ns=ns, t=touched: _running(cluster, ns, t), 90, f"{touched}")
            for name in case.not_ready:
                _patch_status(
                    cluster, ns, name,
                    {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                )  # fmt: skip
            for name in case.succeeded:
                _patch_status(cluster, ns, name, {"status": {"phase": "Succeeded"}})
            for name in case.terminating:
                cluster.run_kubectl("delete", "pod", name, "-n", ns, "--wait=false")
            for name in case.odd_ip:
                ip = _pods(cluster, ns)[name]["status"]["podIP"]
                _patch_status(
                    cluster, ns, name,
                    {"status": {"podIP": _odd(ip), "podIPs": [{"ip": _odd(ip)}]}},
                )  # fmt: skip
        # 5. one operator for everything
        log = tmp_path_factory.mktemp("bad-input") / "operator.log"
        extra: tuple[str, ...] = ()
        for ns in list(namespaces.values())[1:]:
            extra += ("-n", ns)
        op = Operator(cluster, namespaces["main"], log, extra=extra).start()
        started = time.monotonic()

        def converged() -> bool:
            pending = [
                c.id for c in CASES if not _matches(c, _snapshot(cluster, namespaces[c.ns], c))
            ]
            return not pending

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not converged():
            time.sleep(2)
        converged_after = time.monotonic() - started
        time.sleep(4)  # a few more audits and resyncs: nothing may change any more
        published = {c.id: _snapshot(cluster, namespaces[c.ns], c) for c in CASES}
        scope = [arg for ns in namespaces.values() for arg in ("-n", ns)]
        _, doc = check_json(cluster, *scope)
        checked = {(s["namespace"], s["name"]): s for s in doc["services"]}
        print(f"bad input: {len(CASES)} cases converged after {converged_after:.1f}s")
        yield World(namespaces, op, published, converged_after, checked, doc["uninterpretable"])
    finally:
        if op is not None:
            op.stop()
        for case in CASES:
            for name in case.terminating:
                cluster.run_kubectl(
                    "patch", "pod", name, "-n", namespaces[case.ns], "--type=json",
                    "-p", '[{"op":"remove","path":"/metadata/finalizers"}]', check=False,
                )  # fmt: skip
        for ns in namespaces.values():
            cluster.run_kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_verdict(world: World, case: Case, cluster: Cluster) -> None:
    snap = world.published[case.id]
    foreign = [o["metadata"]["name"] for o in case.foreign]  # the selector's pods elsewhere
    assert _running(cluster, world.namespaces["main"], foreign)
    conds = snap["conditions"]
    shown = {a: (conds.get(PREFIX + a) or {}) for a in ASPECTS}
    summary = {a: (c.get("status"), c.get("reason"), c.get("message")) for a, c in shown.items()}
    statuses = tuple(c.get("status") for c in shown.values())
    assert statuses == case.expect, summary
    status = (snap["audit"] or {}).get("status") or {}
    codes = {d["code"] for d in status.get("discrepancies") or []}
    assert case.codes <= codes, (codes, summary)
    for aspect, reason in case.reasons.items():
        assert shown[aspect].get("reason") == reason, summary
    for aspect, text in case.messages.items():
        assert text in (shown[aspect].get("message") or ""), summary
    if case.endpoints is not None:
        assert status["summary"]["endpointsObserved"] == case.endpoints, status["summary"]
    # every False names a catalogue reason, every True is Consistent/Healthy
    for cond in shown.values():
        if cond.get("status") == "True":
            assert cond["reason"] in ("Consistent", "Healthy"), summary


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_agrees_with_the_operator(world: World, case: Case) -> None:
    """Both front ends assemble an audit the same way (translate.prepare over one store):
    on the same objects, `svcaudit check` gives the operator's verdicts and codes."""
    snap = world.published[case.id]
    conds = snap["conditions"]
    operator = tuple(conds.get(PREFIX + a, {}).get("status") for a in ASPECTS)
    status = (snap["audit"] or {}).get("status") or {}
    operator_codes = sorted({d["code"] for d in status.get("discrepancies") or []})
    found = world.checked.get((world.namespaces[case.ns], case.service))
    assert found is not None, f"check did not audit {case.service}"
    verdicts = found["verdicts"]
    check = tuple(verdicts[a]["status"] for a in ("Endpoints", "Environment", "DNS", "Healthy"))
    check_codes = sorted({d["code"] for d in found["discrepancies"]})
    assert (check, check_codes) == (operator, operator_codes), {
        "check": {a: verdicts[a] for a in verdicts},
        "operator": {a: conds.get(PREFIX + a) for a in ASPECTS},
    }


def test_check_reports_what_it_cannot_interpret(world: World) -> None:
    """Uninterpretable objects are audited (what they feed is Unknown) and listed, never
    silently dropped."""
    ns = world.namespaces["bad"]
    found = world.checked[(ns, "odd-svc")]
    assert {v["status"] for v in found["verdicts"].values()} == {"Unknown"}
    listed = {(u["kind"], u["field"]) for u in world.check_uninterpretable}
    assert ("Service", "spec.clusterIPs[0]") in listed
    assert ("EndpointSlice", "endpoints[0].addresses[0]") in listed
    assert ("Pod", "status.podIPs[0].ip") in listed


def test_uninterpretable_messages_name_object_and_field(world: World) -> None:
    ns = world.namespaces["bad"]
    conds = world.published["uninterpretable-service-cluster-ip"]["conditions"]
    for aspect in ASPECTS:
        msg = conds[PREFIX + aspect]["message"]
        assert f"Service {ns}/odd-svc: spec.clusterIPs[0]: not an IP address: '10.96." in msg
    conds = world.published["uninterpretable-endpointslice-address"]["conditions"]
    msg = conds[PREFIX + "EndpointsConsistent"]["message"]
    assert msg == (
        f"EndpointSlice {ns}/odd-slice-1: endpoints[0].addresses[0]: "
        "not an IP address: '010.201.009.011'"
    )
    # the operator still wrote a ServiceAudit for the service it cannot read
    sva = world.published["uninterpretable-service-cluster-ip"]["audit"]
    assert sva is not None and sva["status"]["summary"]["healthy"] == "Unknown"


def test_terminating_endpoint_published_as_terminating(world: World) -> None:
    status = world.published["terminating-pod-beside-a-ready-one"]["audit"]["status"]
    by_pod = {e["targetRef"]["name"]: e for e in status["endpoints"]["observed"]}
    assert by_pod["term-1"]["terminating"] is True and by_pod["term-1"]["ready"] is False
    assert by_pod["term-0"]["ready"] is True


def test_operator_survived_without_errors(world: World) -> None:
    op = world.operator
    assert op.proc is not None and op.proc.poll() is None, op.logs_text()
    assert op.alive()
    bad = [
        e
        for e in op.logs()
        if str(e.get("level", "")).lower() in ("error", "critical", "exception")
        or "Traceback" in json.dumps(e)
        or e.get("exception")
    ]
    assert bad == [], bad[:3]
    assert "Traceback" not in op.log_path.read_text(errors="replace")
    warned = {
        (e.get("kind"), e.get("field"))
        for e in op.logs()
        if e.get("event") == "uninterpretable object: what it feeds is Unknown"
    }
    assert ("Service", "spec.clusterIPs[0]") in warned
    assert ("EndpointSlice", "endpoints[0].addresses[0]") in warned
    assert ("Pod", "status.podIPs[0].ip") in warned
