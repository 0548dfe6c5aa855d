"""Faults: the control plane's bad days, against the real local cluster (issue 9).

Each test breaks something real (kills the operator, stops kube-apiserver, etcd, the
controller-manager or CoreDNS, cuts the operator off the API server), then checks that
every verdict converges back to the truth within a stated time, that nothing false was
published meanwhile, and that the operator never crashed. They stop components of the
shared cluster, so they are `lifecycle` tests: they run after everything else.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures import CLUSTER_CMD, Cluster, cluster_env
from tests.integration.op_helpers import (
    PREFIX,
    Operator,
    all_true,
    apply,
    audit,
    audit_codes,
    condition_is,
    ensure_crd,
    eventually,
    kubectl_json,
    running_operator,
    service_conditions,
)
from tests.integration.tcp_relay import TcpRelay
from tests.integration.test_check_helpers import check_json, statuses

pytestmark = [pytest.mark.cluster, pytest.mark.lifecycle]

OUTAGE_SECONDS = 30
RECOVERY_BOUND = 60  # stated bound: every verdict back to the truth this long after a fault
CONTROL_PLANE_RECOVERY = 180  # the same, when the control plane itself lags after a restart


# ---- the cluster's components --------------------------------------------------------------


def control(cluster: Cluster, action: str, component: str) -> None:
    if cluster.provider != "local" or cluster.state_dir is None:
        pytest.skip("stopping control-plane components needs the project's local cluster")
    env = cluster_env({"SVCAUDIT_CLUSTER_DIR": str(cluster.state_dir)})
    subprocess.run(
        [*CLUSTER_CMD, action, component],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@contextlib.contextmanager
def stopped(cluster: Cluster, component: str) -> Iterator[None]:
    control(cluster, "stop", component)
    try:
        yield
    finally:
        control(cluster, "start", component)
        eventually(lambda: api_ready(cluster), 120, "the API server ready again")


def api_ready(cluster: Cluster) -> bool:
    return cluster.run_kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0


# ---- the scenario ---------------------------------------------------------------------------


def pod(name: str, app: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  nodeSelector: {{type: kwok}}
  containers:
  - name: main
    image: svcaudit.local/simpleservice:0.5.0
    ports: [{{containerPort: 9876, name: http}}]
---
"""


def service(name: str, app: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {app}}}
  ports: [{{port: 80, targetPort: http}}]
---
"""


def scenario(cluster: Cluster, ns: str, good: int = 2) -> None:
    """`good-N`: two running pods each, consistent; `typo`: a selector matching no pod."""
    manifest = "".join(
        service(f"good-{i}", f"good-{i}")
        + pod(f"good-{i}-a", f"good-{i}")
        + pod(f"good-{i}-b", f"good-{i}")
        for i in range(good)
    )
    manifest += service("typo", "typpo") + pod("typo-a", "typo")
    apply(cluster, ns, manifest)


def converged(cluster: Cluster, ns: str, good: int = 2) -> bool:
    """The truth of `scenario`: good ones all True, typo's endpoints False (SVA-EP-101)."""
    return all(all_true(cluster, ns, f"good-{i}") for i in range(good)) and bool(
        condition_is(cluster, ns, "typo", "EndpointsConsistent", "False")
        and "SVA-EP-101" in audit_codes(cluster, ns, "typo")
    )


def wait_converged(cluster: Cluster, ns: str, what: str, good: int = 2) -> float:
    started = time.monotonic()
    eventually(lambda: converged(cluster, ns, good), RECOVERY_BOUND, what)
    return time.monotonic() - started


def no_crash(op: Operator) -> None:
    assert op.proc is not None and op.proc.poll() is None, op.logs_text()
    crashes = [e for e in op.logs() if e.get("exception") or e.get("level") == "critical"]
    assert crashes == [], crashes[:3]


def fresh_verdicts(cluster: Cluster, ns: str) -> dict[str, dict[str, str]]:
    """{service: {condition type without prefix: status}} from a one-shot `svcaudit check`."""
    _, doc = check_json(cluster, "-n", ns)
    types = {
        "Endpoints": "EndpointsConsistent",
        "Environment": "EnvironmentConsistent",
        "DNS": "DNSConsistent",
        "Healthy": "DiscoveryHealthy",
    }
    return {s["name"]: {types[a]: v for a, v in statuses(s).items()} for s in doc["services"]}


def agree_with_fresh_check(cluster: Cluster, ns: str) -> bool:
    fresh = fresh_verdicts(cluster, ns)
    published = {
        name: {
            t.removeprefix(PREFIX): c["status"]
            for t, c in service_conditions(cluster, ns, name).items()
            if t.startswith(PREFIX)
        }
        for name in fresh
    }
    return fresh == published


def healthy_gauge(op: Operator, ns: str, verdict: str) -> float:
    key = f'svcaudit_services{{healthy="{verdict}",namespace="{ns}"}}'
    return op.metrics().get(key, 0.0)


# ---- the operator killed ------------------------------------------------------------------


class Churn:
    """Relabels and recreates pods of the `good` services in a thread until stopped."""

    def __init__(self, cluster: Cluster, ns: str, good: int) -> None:
        self.cluster, self.ns, self.good = cluster, ns, good
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.changes = 0

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        rng = random.Random(9)
        while not self._stop.is_set():
            i = rng.randrange(self.good)
            name = f"good-{i}-{rng.choice('ab')}"
            kubectl = self.cluster.run_kubectl
            kubectl(
                "label", "pod", name, "-n", self.ns, "app=elsewhere", "--overwrite", check=False
            )
            kubectl(
                "label", "pod", name, "-n", self.ns, f"app=good-{i}", "--overwrite", check=False
            )
            kubectl("delete", "pod", name, "-n", self.ns, "--wait=false", check=False)
            apply(self.cluster, self.ns, pod(name, f"good-{i}"))
            self.changes += 1


def test_operator_killed_mid_reconcile_during_churn(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    good = 4
    scenario(cluster, namespace, good)
    ensure_crd(cluster)
    rng = random.Random(42)
    log = tmp_path / "operator.log"
    with Churn(cluster, namespace, good) as churn:
        for round_ in range(3):
            op = Operator(cluster, namespace, log).start()
            time.sleep(rng.uniform(1.0, 5.0))  # a random point: audits and writes in flight
            assert op.proc is not None
            op.proc.kill()  # kill -9
            op.proc.wait(timeout=10)
            if round_ == 1:
                # Deleted while no operator runs: its ServiceAudit must not outlive it.
                cluster.run_kubectl("delete", "service", "good-3", "-n", namespace)
    assert churn.changes > 0
    cluster.run_kubectl("delete", "pod", "good-3-a", "good-3-b", "-n", namespace, "--wait=false")
    with running_operator(cluster, namespace, tmp_path) as op:
        seconds = wait_converged(cluster, namespace, "verdicts after 3 kills", good=3)
        print(f"converged {seconds:.1f}s after the last restart")
        services = kubectl_json(cluster, "services", "-n", namespace)["items"]
        uids = {s["metadata"]["name"]: s["metadata"]["uid"] for s in services}

        def one_audit_per_service() -> list[dict] | None:
            audits = kubectl_json(cluster, "serviceaudits", "-n", namespace)["items"]
            names = sorted(a["metadata"]["name"] for a in audits)
            return audits if names == sorted(uids) else None

        # The orphan goes through the garbage collector (ownerReference), not through us.
        audits = eventually(
            one_audit_per_service, 60, "one ServiceAudit per Service, none for the deleted one"
        )
        for a in audits:
            owners = a["metadata"]["ownerReferences"]
            assert [o["uid"] for o in owners] == [uids[a["metadata"]["name"]]]
        for i in range(3):
            summary = (audit(cluster, namespace, f"good-{i}") or {})["status"]["summary"]
            assert summary["endpointsExpected"] == summary["endpointsObserved"] == 2
        no_crash(op)


# ---- the API server and etcd stopped ----------------------------------------------------------


@pytest.mark.parametrize("component", ["apiserver", "etcd"])
def test_control_plane_outage_turns_verdicts_unknown_then_back(
    cluster: Cluster, namespace: str, tmp_path: Path, component: str
) -> None:
    scenario(cluster, namespace)
    with running_operator(cluster, namespace, tmp_path, extra=("--api-unknown-after", "5")) as op:
        wait_converged(cluster, namespace, "verdicts before the outage")
        eventually(lambda: healthy_gauge(op, namespace, "True") == 2, 30, "2 healthy in metrics")
        with stopped(cluster, component):
            eventually(
                lambda: op.metrics().get("svcaudit_api_reachable") == 0.0, 30, "API unreachable"
            )
            # The operator stops vouching: no stale True (nor False) in what it serves.
            eventually(
                lambda: healthy_gauge(op, namespace, "Unknown") == 3, 30, "3 Unknown in metrics"
            )
            assert (
                healthy_gauge(op, namespace, "True") == healthy_gauge(op, namespace, "False") == 0
            )
            time.sleep(OUTAGE_SECONDS - 10)
            no_crash(op)
        back = time.monotonic()
        eventually(lambda: op.metrics().get("svcaudit_api_reachable") == 1.0, 60, "API back")
        # Changes after the outage are seen: the watches reconnected by themselves.
        cluster.run_kubectl(
            "patch",
            "service",
            "typo",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"selector":{"app":"typo"}}}',
        )
        eventually(
            lambda: (
                "typo" in fresh_verdicts(cluster, namespace)
                and fresh_verdicts(cluster, namespace)["typo"]["EndpointsConsistent"] == "True"
            ),
            CONTROL_PLANE_RECOVERY,
            "the cluster itself publishing typo's endpoints",
        )
        # After an API server restart the control plane itself may lag for a while (node
        # heartbeats, the EndpointSlice controller's "informer cache is out of date"
        # retries), and svcaudit reports such lag as it is. The truth is therefore what a
        # fresh one-shot `svcaudit check` reads from the API right now: the operator's
        # published verdicts must agree with it (a stale view would not).
        eventually(
            lambda: agree_with_fresh_check(cluster, namespace),
            CONTROL_PLANE_RECOVERY,
            "published verdicts = a fresh check, typo's fix included",
        )
        assert condition_is(cluster, namespace, "typo", "EndpointsConsistent", "True")
        assert healthy_gauge(op, namespace, "Unknown") == 0
        print(f"{component}: back to the truth {time.monotonic() - back:.1f}s after restart")
        no_crash(op)
        ours = [e for e in op.logs() if str(e.get("logger", "")).startswith("svcaudit")]
        errors = [e for e in ours if e.get("level") in ("error", "critical")]
        assert errors == [], errors[:3]


# ---- controller-manager stopped: slices lag, and we say so ------------------------------------


def test_stopped_controller_manager_is_reported_as_endpoint_lag(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    scenario(cluster, namespace, good=1)
    with running_operator(cluster, namespace, tmp_path, settle=3.0) as op:
        wait_converged(cluster, namespace, "verdicts before", good=1)
        with stopped(cluster, "controller-manager"):
            apply(cluster, namespace, pod("good-0-c", "good-0"))  # the slice will not follow
            cond = eventually(
                lambda: condition_is(cluster, namespace, "good-0", "EndpointsConsistent", "False"),
                60,
                "the missing endpoint reported once settled",
            )
            assert "good-0-c" in cond["message"] or "good-0-c" in str(
                (audit(cluster, namespace, "good-0") or {}).get("status")
            )
            assert any(c.startswith("SVA-EP-") for c in audit_codes(cluster, namespace, "good-0"))
        eventually(
            lambda: all_true(cluster, namespace, "good-0"), RECOVERY_BOUND, "slices caught up"
        )
        no_crash(op)


# ---- CoreDNS stopped -----------------------------------------------------------------------------


def test_stopped_coredns_is_unknown_then_recovers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The resync is an hour here: a pod added while CoreDNS is down is audited at once (DNS
    Unknown), and nothing in the cluster changes after CoreDNS is back, so the recovery is the
    operator's own retry of the failed DNS observation (2 s, doubling, at most 60 s)."""
    scenario(cluster, namespace, good=1)
    with running_operator(cluster, namespace, tmp_path, extra=("--resync-seconds", "3600")) as op:
        wait_converged(cluster, namespace, "verdicts before", good=1)
        with stopped(cluster, "coredns"):
            apply(cluster, namespace, pod("good-0-c", "good-0"))
            cond = eventually(
                lambda: condition_is(cluster, namespace, "good-0", "DNSConsistent", "Unknown"),
                60,
                "DNSConsistent Unknown",
            )
            assert cond["reason"] and cond["message"]
            for _ in range(6):
                assert not condition_is(cluster, namespace, "good-0", "DNSConsistent", "False")
                time.sleep(0.5)
        eventually(
            lambda: all_true(cluster, namespace, "good-0"), RECOVERY_BOUND, "DNS back to True"
        )
        changes = [
            e["status"]
            for e in op.verdict_changes("good-0")
            if e["condition"] == PREFIX + "DNSConsistent"
        ]
        assert "False" not in changes
        no_crash(op)


# ---- a watch gap ending in "410 Gone": deletions must not be missed ---------------------------


def test_watch_gap_with_expired_resource_version_misses_no_deletion(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The operator is cut off the API server (a TCP relay we switch off), a pod is deleted
    and a selector changed meanwhile, and the API server restarts, so the operator's next
    watch asks for a resource version the new server no longer has (410 Gone) and kopf
    re-lists: a re-list brings no DELETED events, yet the deleted pod must be forgotten."""
    scenario(cluster, namespace, good=1)
    with TcpRelay(api_address(cluster)) as relay:
        kubeconfig = relay.kubeconfig(cluster, tmp_path)
        with running_operator(
            cluster, namespace, tmp_path, kubeconfig=kubeconfig, extra=("--api-unknown-after", "5")
        ) as op:
            wait_converged(cluster, namespace, "verdicts before", good=1)
            relay.cut()
            eventually(lambda: op.metrics().get("svcaudit_api_reachable") == 0.0, 30, "cut off")
            # The cluster goes on without the operator: a pod leaves, a selector is fixed.
            cluster.run_kubectl(
                "delete", "pod", "good-0-b", "-n", namespace, "--grace-period=0", "--force"
            )
            cluster.run_kubectl(
                "patch",
                "service",
                "typo",
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"spec":{"selector":{"app":"typo"}}}',
            )
            with stopped(cluster, "apiserver"):
                pass  # a fresh watch cache: the operator's last resource version is gone
            relay.restore()
            healed = time.monotonic()
            eventually(lambda: all_true(cluster, namespace, "typo"), RECOVERY_BOUND, "typo fixed")

            def one_endpoint() -> bool:
                summary = ((audit(cluster, namespace, "good-0") or {}).get("status") or {}).get(
                    "summary"
                ) or {}
                return summary.get("endpointsExpected") == summary.get("endpointsObserved") == 1

            eventually(one_endpoint, RECOVERY_BOUND, "the deleted pod forgotten")
            assert all_true(cluster, namespace, "good-0")
            print(f"resynced {time.monotonic() - healed:.1f}s after the gap")
            events = [e.get("event") for e in op.logs()]
            assert "watch expired: listing again" in events  # the informer met the 410
            assert "deleted during a watch gap" in events  # and its re-list forgot the pod
            no_crash(op)


def api_address(cluster: Cluster) -> tuple[str, int]:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    host, port = config["clusters"][0]["cluster"]["server"].split("//")[1].rsplit(":", 1)
    return host, int(port)
