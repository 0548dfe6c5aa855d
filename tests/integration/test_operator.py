"""The operator against the real local cluster: `svcaudit run` as a subprocess per test.

Each test runs its own operator scoped to the test's namespace with a 2 s settle time and
a 3 s resync, so verdicts come within seconds; waits are generous deadlines, not targets.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.fixtures import REPO, Cluster
from tests.integration.op_helpers import (
    PREFIX,
    UdpRelay,
    all_true,
    apply,
    audit,
    audit_codes,
    condition_is,
    events_for,
    eventually,
    kubectl_json,
    running_operator,
    service_conditions,
)

pytestmark = pytest.mark.cluster


def rc(replicas: int = 1, ports: str = "[{containerPort: 9876}]", name: str = "rcsise") -> str:
    return f"""
apiVersion: v1
kind: ReplicationController
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{app: sise}}
  template:
    metadata: {{labels: {{app: sise}}}}
    spec:
      nodeSelector: {{type: kwok}}
      containers:
      - name: sise
        image: quay.io/openshiftlabs/simpleservice:0.5.0
        ports: {ports}
"""


def service(
    name: str = "simpleservice", selector: str = "{app: sise}", target: str = "9876"
) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {selector}
  ports: [{{port: 80, targetPort: {target}}}]
"""


def pod(name: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: sise}}}}
spec:
  nodeSelector: {{type: kwok}}
  containers:
  - name: sise
    image: quay.io/openshiftlabs/simpleservice:0.5.0
    ports: [{{containerPort: 9876}}]
"""


def running_pods(cluster: Cluster, ns: str, n: int) -> list[dict]:
    data = kubectl_json(cluster, "pods", "-n", ns, "-l", "app=sise") or {"items": []}
    ready = [
        p
        for p in data["items"]
        if p.get("status", {}).get("podIP")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
        and not p["metadata"].get("deletionTimestamp")
    ]
    return ready if len(ready) == n else []


def observed_endpoints(cluster: Cluster, ns: str, name: str) -> int | None:
    sva = audit(cluster, ns, name) or {}
    return ((sva.get("status") or {}).get("summary") or {}).get("endpointsObserved")


def wait_code(
    cluster: Cluster, ns: str, name: str, aspect: str, code: str, timeout: float = 90
) -> dict:
    def check() -> dict | None:
        cond = condition_is(cluster, ns, name, aspect, "False")
        return cond if cond and code in audit_codes(cluster, ns, name) else None

    result: dict = eventually(check, timeout, f"{aspect}=False with {code}")
    return result


# ---- tutorial ---------------------------------------------------------------------------------


def test_tutorial_is_consistent_and_follows_scaling(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service())
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
    with running_operator(cluster, namespace, tmp_path) as op:
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all conditions True")
        conds = service_conditions(cluster, namespace, "simpleservice")
        svc = kubectl_json(cluster, "service", "simpleservice", "-n", namespace)
        for aspect in (
            "EndpointsConsistent",
            "EnvironmentConsistent",
            "DNSConsistent",
            "DiscoveryHealthy",
        ):
            c = conds[PREFIX + aspect]
            assert c["reason"] and c["reason"][0].isupper() and " " not in c["reason"]
            # Services have no metadata.generation (0, omitted): so is observedGeneration.
            assert c.get("observedGeneration", 0) == svc["metadata"].get("generation", 0)
            assert c["lastTransitionTime"].endswith("Z")

        pod_ip = running_pods(cluster, namespace, 1)[0]["status"]["podIP"]
        sva = eventually(
            lambda: (audit(cluster, namespace, "simpleservice") or {}).get("status"),
            30,
            "ServiceAudit status",
        )
        assert sva["summary"]["endpointsExpected"] == 1
        assert sva["summary"]["endpointsObserved"] == 1
        assert sva["summary"]["healthy"] == "True"
        assert sva["clusterIP"] == svc["spec"]["clusterIP"]
        observed = sva["endpoints"]["observed"]
        assert [e["addresses"] for e in observed] == [[pod_ip]]
        assert observed[0]["ports"][0]["port"] == 9876
        a_records = [r for r in sva["dns"]["observed"] if r["type"] == "A"]
        assert {r["value"] for r in a_records} == {svc["spec"]["clusterIP"]}
        assert [d for d in sva["discrepancies"] if d["severity"] != "info"] == []
        sva_obj = audit(cluster, namespace, "simpleservice")
        assert sva_obj is not None
        owner = sva_obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("Service", svc["metadata"]["uid"])

        table = cluster.run_kubectl("get", "sva", "-A").stdout
        header = table.splitlines()[0].split()
        assert header[:8] == [
            "NAMESPACE",
            "NAME",
            "EXPECTED",
            "OBSERVED",
            "ENDPOINTS",
            "ENV",
            "DNS",
            "HEALTHY",
        ]
        row = next(line.split() for line in table.splitlines() if namespace in line)
        assert row[1:8] == ["simpleservice", "1", "1", "True", "True", "True", "True"]

        changes_before = len(op.verdict_changes("simpleservice"))
        timings = {}
        for replicas in (2, 1):
            start = time.monotonic()
            cluster.run_kubectl("scale", "-n", namespace, f"--replicas={replicas}", "rc/rcsise")
            eventually(
                lambda r=replicas: observed_endpoints(cluster, namespace, "simpleservice") == r,
                60,
                f"{replicas} observed endpoints",
            )
            timings[replicas] = round(time.monotonic() - start, 2)
            eventually(
                lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True after scaling"
            )
        print(f"scale -> ServiceAudit endpoints: {timings}")
        assert op.verdict_changes("simpleservice")[changes_before:] == [], (
            "normal churn (scaling) must not flap a condition"
        )
        assert [
            e for e in events_for(cluster, namespace, "simpleservice") if e["type"] == "Warning"
        ] == []


# ---- discrepancies and recovery ---------------------------------------------------------------


def test_selector_typo_reports_no_endpoints_then_recovers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service(selector="{app: sisee}"))
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
    with running_operator(cluster, namespace, tmp_path) as op:
        cond = wait_code(cluster, namespace, "simpleservice", "EndpointsConsistent", "SVA-EP-101")
        assert cond["reason"] == "SelectorMatchesNoPod"
        assert "app=sisee" in cond["message"]
        assert condition_is(cluster, namespace, "simpleservice", "DiscoveryHealthy", "False")
        warnings = eventually(
            lambda: [
                e for e in events_for(cluster, namespace, "simpleservice") if e["type"] == "Warning"
            ],
            30,
            "a Warning event",
        )
        assert warnings[0]["reason"] == "SelectorMatchesNoPod"

        cluster.run_kubectl(
            "patch",
            "service",
            "simpleservice",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"selector":{"app":"sise"}}}',
        )
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "recovery")
        eventually(
            lambda: [
                e for e in events_for(cluster, namespace, "simpleservice") if e["type"] == "Normal"
            ],
            30,
            "a Normal recovery event",
        )
        changes = [
            e
            for e in op.verdict_changes("simpleservice")
            if e["condition"] == PREFIX + "EndpointsConsistent"
        ]
        # A finding younger than the settle time shows as Unknown("Settling") first.
        assert [e["status"] for e in changes if e["status"] != "Unknown"] == ["False", "True"]
        first_false = next(e for e in changes if e["status"] == "False")
        assert "SVA-EP-101" in first_false["code"]
        time.sleep(5)  # several resyncs: no more events
        assert len(events_for(cluster, namespace, "simpleservice")) == 2


def test_named_target_port_no_pod_declares(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service(target="http"))
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
    with running_operator(cluster, namespace, tmp_path):
        cond = wait_code(cluster, namespace, "simpleservice", "EndpointsConsistent", "SVA-EP-102")
        assert cond["reason"] == "NamedTargetPortNotDeclared"
        assert "http" in cond["message"]
        # Fix the pods: declare the port name (new RC template, pods recreated).
        cluster.run_kubectl("delete", "rc", "rcsise", "-n", namespace, "--wait=true")
        apply(cluster, namespace, rc(1, ports="[{name: http, containerPort: 9876}]"))
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 90, "recovery")
        sva = audit(cluster, namespace, "simpleservice") or {}
        assert sva["status"]["summary"]["endpointsObserved"] == 1


def test_pod_created_before_service_lacks_env(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, pod("early"))
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "pod early running")
    time.sleep(6)  # beyond the core's clock-skew grace around creation
    apply(cluster, namespace, service())
    with running_operator(cluster, namespace, tmp_path):
        cond = wait_code(
            cluster, namespace, "simpleservice", "EnvironmentConsistent", "SVA-ENV-001"
        )
        assert "early" in cond["message"]
        sva = audit(cluster, namespace, "simpleservice") or {}
        pods = sva["status"]["environment"]["pods"]
        assert [p["pod"] for p in pods] == ["early"]
        assert pods[0]["startedAt"] < sva["status"]["environment"]["serviceCreated"]
        # Endpoints are fine: the pod is selected and ready.
        assert condition_is(cluster, namespace, "simpleservice", "EndpointsConsistent", "True")

        cluster.run_kubectl("delete", "pod", "early", "-n", namespace, "--wait=true")
        apply(cluster, namespace, pod("early"))
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 90, "recovery")


def test_recreated_service_leaves_stale_env(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, service())
    apply(cluster, namespace, pod("old"))
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "pod old running")
    with running_operator(cluster, namespace, tmp_path):
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
        first_ip = kubectl_json(cluster, "service", "simpleservice", "-n", namespace)["spec"][
            "clusterIP"
        ]
        time.sleep(6)
        cluster.run_kubectl("delete", "service", "simpleservice", "-n", namespace)
        apply(cluster, namespace, service())
        new_ip = kubectl_json(cluster, "service", "simpleservice", "-n", namespace)["spec"][
            "clusterIP"
        ]
        assert new_ip != first_ip
        cond = wait_code(
            cluster, namespace, "simpleservice", "EnvironmentConsistent", "SVA-ENV-001"
        )
        assert "old" in cond["message"]

        cluster.run_kubectl("delete", "pod", "old", "-n", namespace, "--wait=true")
        apply(cluster, namespace, pod("new"))
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 90, "recovery")


SELECTORLESS = """
apiVersion: v1
kind: Service
metadata: {name: external-db}
spec:
  ports: [{port: 5432, targetPort: 5432}]
"""


def hand_slice(ip: str, target_pod: str) -> str:
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: external-db-1
  labels: {{kubernetes.io/service-name: external-db}}
addressType: IPv4
ports: [{{port: 5432, protocol: TCP, name: ""}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: {target_pod}}}
"""


def test_selectorless_service_with_wrong_slice_ip(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, pod("db"))
    db = eventually(lambda: running_pods(cluster, namespace, 1), 60, "pod db running")[0]
    apply(cluster, namespace, SELECTORLESS)
    apply(cluster, namespace, hand_slice("10.255.255.1", "db"))
    with running_operator(cluster, namespace, tmp_path):

        def wrong() -> dict | None:
            return condition_is(cluster, namespace, "external-db", "EndpointsConsistent", "False")

        cond = eventually(wrong, 90, "EndpointsConsistent=False for the wrong IP")
        assert cond["reason"] == "EndpointAddressNotPodIP"
        assert "10.255.255.1" in cond["message"]
        assert "SVA-EP-014" in audit_codes(cluster, namespace, "external-db")
        (found,) = [
            d
            for d in audit(cluster, namespace, "external-db")["status"]["discrepancies"]
            if d["code"] == "SVA-EP-014"
        ]
        assert found["hint"]

        apply(cluster, namespace, hand_slice(db["status"]["podIP"], "db"))
        eventually(
            lambda: condition_is(cluster, namespace, "external-db", "EndpointsConsistent", "True"),
            90,
            "recovery",
        )


def test_unreachable_dns_is_unknown_not_false(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service())
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
    with (
        UdpRelay((cluster.dns_host, cluster.dns_port)) as relay,
        running_operator(cluster, namespace, tmp_path, dns=relay.address) as op,
    ):
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
        relay.enabled.clear()
        cond = eventually(
            lambda: condition_is(cluster, namespace, "simpleservice", "DNSConsistent", "Unknown"),
            60,
            "DNSConsistent=Unknown",
        )
        assert cond["reason"] and cond["message"]
        sva = audit(cluster, namespace, "simpleservice") or {}
        assert sva["status"]["dns"].get("error")
        # Never False while DNS cannot be asked, and the other aspects are unaffected.
        for _ in range(8):
            assert not condition_is(cluster, namespace, "simpleservice", "DNSConsistent", "False")
            assert condition_is(cluster, namespace, "simpleservice", "EndpointsConsistent", "True")
            time.sleep(0.5)
        relay.enabled.set()
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "DNS recovery")
        dns_changes = [
            e["status"]
            for e in op.verdict_changes("simpleservice")
            if e["condition"] == PREFIX + "DNSConsistent"
        ]
        assert "False" not in dns_changes


def _documented_metrics() -> dict[str, str]:
    """{name: type} from the table of docs/metrics.md."""
    text = (REPO / "docs" / "metrics.md").read_text()
    found = re.findall(r"^\| `(svcaudit_[a-z_]+)` \| (gauge|counter|histogram) \|", text, re.M)
    return dict(found)


def test_metrics_endpoint_exposes_the_documented_metrics(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """/metrics serves every metric of docs/metrics.md with its type; after audits it holds
    per-question DNS latencies, the settled discrepancies and services, and the writes; a
    deleted Service leaves the gauges."""
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service())
    apply(cluster, namespace, service(name="broken", selector="{app: nothing}"))
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
    documented = _documented_metrics()
    assert len(documented) >= 10, documented
    ns = f'namespace="{namespace}"'
    with running_operator(cluster, namespace, tmp_path) as op:
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
        wait_code(cluster, namespace, "broken", "EndpointsConsistent", "SVA-EP-101")
        exposed = op.metric_types()
        assert {n: exposed.get(n) for n in documented} == documented

        def settled() -> dict[str, float] | None:
            m = op.metrics()
            return (
                m
                if (
                    m.get(f'svcaudit_services{{healthy="True",{ns}}}') == 1
                    and m.get(f'svcaudit_services{{healthy="False",{ns}}}') == 1
                )
                else None
            )

        m = eventually(settled, 30, "one healthy and one unhealthy service in the gauge")
        assert any(
            k.startswith("svcaudit_discrepancies{")
            and 'code="SVA-EP-101"' in k
            and ns in k
            and v >= 1
            for k, v in m.items()
        )
        # Every audit asks DNS: latencies are observed per question, answered ones included.
        answered = m.get('svcaudit_dns_query_duration_seconds_count{outcome="answer"}', 0)
        assert answered >= 2, "per-question DNS latency observations"
        assert m['svcaudit_dns_query_duration_seconds_sum{outcome="answer"}'] > 0
        assert m["svcaudit_audit_duration_seconds_count"] >= 2
        assert op.total('svcaudit_audits_total{healthy="False"}') >= 1
        assert m.get('svcaudit_writes_total{kind="service-status"}', 0) >= 2
        assert op.total("svcaudit_verdict_changes_total") >= 1
        assert op.total("svcaudit_dns_query_failures_total") == 0
        assert op.total("svcaudit_api_errors_total") == 0

        cluster.run_kubectl("delete", "service", "broken", "-n", namespace)
        eventually(
            lambda: (
                not any(
                    k.startswith("svcaudit_discrepancies{") and 'code="SVA-EP-101"' in k and ns in k
                    for k in op.metrics()
                )
            ),
            60,
            "the deleted Service's discrepancy series gone",
        )
        assert op.metrics()[f'svcaudit_services{{healthy="False",{ns}}}'] == 0


# ---- lifecycle and manners ------------------------------------------------------------------


def test_deleting_the_service_removes_its_serviceaudit(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, service())
    with running_operator(cluster, namespace, tmp_path):
        eventually(lambda: audit(cluster, namespace, "simpleservice"), 60, "ServiceAudit")
        cluster.run_kubectl("delete", "service", "simpleservice", "-n", namespace)
        eventually(
            lambda: audit(cluster, namespace, "simpleservice") is None,
            60,
            "ServiceAudit garbage-collected",
        )
        time.sleep(4)  # resyncs must not resurrect it
        assert audit(cluster, namespace, "simpleservice") is None


def _snapshot(cluster: Cluster, ns: str) -> dict[str, object]:
    pods = kubectl_json(cluster, "pods", "-n", ns)["items"]
    svcs = kubectl_json(cluster, "services", "-n", ns)["items"]

    def meta(obj: dict) -> dict:
        m = obj["metadata"]
        return {
            k: m.get(k)
            for k in ("labels", "annotations", "finalizers", "ownerReferences", "generation", "uid")
        }

    return {
        "pods": {p["metadata"]["name"]: (p["metadata"]["resourceVersion"], meta(p)) for p in pods},
        "services": {s["metadata"]["name"]: (meta(s), s["spec"]) for s in svcs},
        "pod_managers": sorted(
            {f.get("manager") for p in pods for f in p["metadata"].get("managedFields", [])}
        ),
    }


def _write_count(cluster: Cluster, ns: str) -> tuple[dict[str, str], int]:
    svcs = kubectl_json(cluster, "services", "-n", ns)["items"]
    svas = (kubectl_json(cluster, "serviceaudits", "-n", ns) or {"items": []})["items"]
    events = len(kubectl_json(cluster, "events", "-n", ns)["items"])
    rvs = {f"svc/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in svcs}
    rvs |= {f"sva/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in svas}
    return rvs, events


def test_user_objects_untouched_and_quiet_cluster_sees_no_writes(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, rc(2))
    apply(cluster, namespace, service())
    apply(cluster, namespace, service(name="broken", selector="{app: nothing}"))
    eventually(lambda: running_pods(cluster, namespace, 2), 60, "two running pods")
    time.sleep(2)
    before = _snapshot(cluster, namespace)
    with running_operator(cluster, namespace, tmp_path) as op:
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
        eventually(
            lambda: condition_is(cluster, namespace, "broken", "EndpointsConsistent", "False"),
            60,
            "broken reported",
        )
        time.sleep(5)  # let everything settle
        rvs, events = _write_count(cluster, namespace)
        writes, audits_run = op.total("svcaudit_writes_total"), op.total("svcaudit_audits_total")
        quiet_start = time.monotonic()
        time.sleep(60)
        rvs_after, events_after = _write_count(cluster, namespace)
        assert rvs_after == rvs, "the operator wrote during a quiet minute"
        assert events_after == events
        assert op.total("svcaudit_writes_total") == writes
        audits_in_quiet_minute = op.total("svcaudit_audits_total") - audits_run
        assert audits_in_quiet_minute >= 20, "resyncs kept auditing (3 s period, 2 services)"
        audits = [e for e in op.logs() if e.get("event") == "verdict changed"]
        assert audits, "the operator logged its verdicts"
        print(
            f"quiet minute: {time.monotonic() - quiet_start:.0f}s, "
            f"{audits_in_quiet_minute:.0f} audits, 0 writes"
        )
    after = _snapshot(cluster, namespace)
    assert after["pods"] == before["pods"], "pods must never be written"
    assert after["services"] == before["services"], "service metadata/spec untouched"
    assert "svcaudit" not in after["pod_managers"]
    for svc in kubectl_json(cluster, "services", "-n", namespace)["items"]:
        assert not any(k.startswith("kopf") for k in (svc["metadata"].get("annotations") or {}))
        assert not svc["metadata"].get("finalizers")


FOREIGN = """
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "simpleservice", "namespace": "%s"},
 "status": {"conditions": [{"type": "example.com/Reachable", "status": "True",
   "reason": "Probed", "message": "someone else's", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}
"""


def test_conditions_of_other_field_managers_survive(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service())
    cluster.run_kubectl(
        "apply",
        "--server-side",
        "--field-manager=other-controller",
        "--subresource=status",
        "-f",
        "-",
        input=FOREIGN % namespace,
    )
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
    with running_operator(cluster, namespace, tmp_path):
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
        assert "example.com/Reachable" in service_conditions(cluster, namespace, "simpleservice")
        # A verdict change rewrites our conditions: the foreign one must still be there.
        cluster.run_kubectl(
            "patch",
            "service",
            "simpleservice",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"selector":{"app":"gone"}}}',
        )
        wait_code(cluster, namespace, "simpleservice", "EndpointsConsistent", "SVA-EP-101")
        conds = service_conditions(cluster, namespace, "simpleservice")
        assert conds["example.com/Reachable"]["message"] == "someone else's"
        svc = kubectl_json(
            cluster, "service", "simpleservice", "-n", namespace, "--show-managed-fields"
        )
        managers = {
            f["manager"]
            for f in svc["metadata"]["managedFields"]
            if f.get("subresource") == "status"
        }
        assert {"svcaudit", "other-controller"} <= managers


def test_restart_changes_nothing(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """A restarted operator resumes from the published verdicts: no writes, no events."""
    apply(cluster, namespace, rc(1))
    apply(cluster, namespace, service())
    apply(cluster, namespace, service(name="broken", selector="{app: nothing}"))
    eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running pod")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with running_operator(cluster, namespace, first):
        eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
        wait_code(cluster, namespace, "broken", "EndpointsConsistent", "SVA-EP-101")
        eventually(lambda: events_for(cluster, namespace, "broken"), 30, "a Warning event")
        time.sleep(4)
        rvs, events = _write_count(cluster, namespace)
        conditions = {
            n: service_conditions(cluster, namespace, n) for n in ("simpleservice", "broken")
        }
    with running_operator(cluster, namespace, second) as op:
        eventually(lambda: op.total("svcaudit_audits_total") >= 8, 60, "a few resync audits")
        assert op.total("svcaudit_writes_total") == 0
        assert op.verdict_changes("simpleservice") == op.verdict_changes("broken") == []
        assert _write_count(cluster, namespace) == (rvs, events)
        assert {
            n: service_conditions(cluster, namespace, n) for n in ("simpleservice", "broken")
        } == conditions


def test_a_burst_of_pod_changes_is_one_audit_of_the_services_it_touches(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Scaling 1 -> 10 makes dozens of pod and slice events; the service they touch is audited
    a few times (debounce 2 s: up to 2 prompt audits of its first slice writes, the pod event
    echoing one of them, then the trailing one), and a service in another namespace not at
    all (no resync during the test)."""
    other = cluster.create_namespace("bystander")
    try:
        apply(cluster, namespace, rc(1))
        apply(cluster, namespace, service())
        apply(cluster, other, rc(1))
        apply(cluster, other, service())
        eventually(lambda: running_pods(cluster, namespace, 1), 60, "one running sise pod")
        extra = ("-n", other, "--resync-seconds", "600", "--debounce-seconds", "2")
        extra += ("--log-level", "debug")
        with running_operator(cluster, namespace, tmp_path, extra=extra) as op:
            eventually(lambda: all_true(cluster, namespace, "simpleservice"), 60, "all True")
            eventually(lambda: all_true(cluster, other, "simpleservice"), 60, "all True")

            def audits(ns: str) -> int:
                return sum(
                    1
                    for e in op.logs()
                    if e.get("event") == "audited"
                    and e.get("namespace") == ns
                    and e.get("service") == "simpleservice"
                )

            def idle() -> bool:
                m = op.metrics()
                return m.get("svcaudit_queue_length") == 0 == m.get("svcaudit_audits_in_flight")

            eventually(idle, 30, "the initial audits done")
            before, bystander = audits(namespace), audits(other)
            cluster.run_kubectl("scale", "-n", namespace, "--replicas=10", "rc/rcsise")
            eventually(
                lambda: observed_endpoints(cluster, namespace, "simpleservice") == 10,
                60,
                "10 observed endpoints",
            )
            eventually(idle, 30, "every audit of the burst done (nothing debouncing)")
            burst = audits(namespace) - before
            print(f"audits for a 1 -> 10 burst: {burst}")
            assert 1 <= burst <= 4
            assert audits(other) == bystander
    finally:
        cluster.run_kubectl("delete", "namespace", other, "--wait=false", check=False)
