"""The operator as users run it: the image `make image` builds, loaded on the local cluster's
real node, deploy/ applied with its Deployment pinned there (`make deploy-local`,
e2e/deploy_local.py). Two real containers: their processes answer the probes and the metrics
Service, use the ServiceAccount's credentials, ask the in-cluster DNS server, write verdicts,
and hand the Lease over when the leader pod is deleted. No operator runs on the host here.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e import deploy_local
from e2e.tests.realnode_helpers import (
    SHELL,
    apply,
    container,
    kexec,
    local_node_module,
    operator_processes,
    pod,
    rc,
    service,
    wait_ready,
)
from tests.fixtures import Cluster, eventually
from tests.integration.test_deploy_helpers import SA_USER

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

NS = deploy_local.NAMESPACE
LEASE = "svcaudit-leader"
CONDITIONS = ("EndpointsConsistent", "EnvironmentConsistent", "DNSConsistent", "DiscoveryHealthy")


def operator_pods(cluster: Cluster, terminating: bool = False) -> list[dict[str, Any]]:
    """The operator's pods; with `terminating`, also those being stopped (still running)."""
    out = cluster.run_kubectl(
        "get", "pods", "-n", NS, "-l", deploy_local.OPERATOR_LABELS, "-o", "json"
    ).stdout
    pods = json.loads(out)["items"]
    return [p for p in pods if terminating or not p["metadata"].get("deletionTimestamp")]


def ready_operator_pods(cluster: Cluster, count: int = 2) -> list[dict[str, Any]] | None:
    pods = operator_pods(cluster)
    ready = [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
    ]
    return ready if len(ready) == count == len(pods) else None


@pytest.fixture(scope="module")
def deployed(cluster: Cluster, operator_image: str) -> Iterator[Cluster]:
    """deploy/ running on the real node; removed afterwards (the RBAC and CRD stay), so no
    operator of ours writes behind the other tests' backs."""
    try:
        deploy_local.apply_deploy(cluster)
        deploy_local.wait_rolled_out(cluster, NS, deploy_local.DEPLOYMENT)
    except deploy_local.DeployError as exc:
        pytest.fail(str(exc), pytrace=False)
    eventually(lambda: ready_operator_pods(cluster), 120, "two ready operator pods")
    eventually(
        lambda: all(healthz(p)["ready"] for p in operator_pods(cluster)),
        60,
        "both processes past their start (the leader's first pass done)",
    )
    # A leader among them (an earlier operator killed without releasing the Lease holds it
    # until it expires: 15 s).
    eventually(
        lambda: sorted(healthz(p)["role"] for p in operator_pods(cluster)) == ["leader", "standby"],
        60,
        "one leader and one standby",
    )
    yield cluster
    cluster.run_kubectl(
        "delete", "deployment", deploy_local.DEPLOYMENT, "-n", NS, "--wait=true", timeout=120
    )
    eventually(
        lambda: not operator_pods(cluster, terminating=True), 120, "the operator pods stopped"
    )


@pytest.fixture(scope="module")
def tutorial(deployed: Cluster) -> Iterator[str]:
    """The tutorial in a namespace of its own: RC rcsise (2 pods) and Service simpleservice
    80 -> 9876, on the real node."""
    namespace = deployed.create_namespace("incluster")
    apply(deployed, namespace, rc(replicas=2), service("simpleservice"))
    wait_ready(deployed, namespace, "app=sise", 2)
    yield namespace
    deployed.run_kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def conditions(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    svc = json.loads(cluster.run_kubectl("get", "svc", name, "-n", namespace, "-o", "json").stdout)
    return {
        c["type"].removeprefix("svcaudit.dev/"): c["status"]
        for c in (svc.get("status") or {}).get("conditions") or []
        if c["type"].startswith("svcaudit.dev/")
    }


def all_true(cluster: Cluster, namespace: str, name: str) -> dict[str, str] | None:
    got = conditions(cluster, namespace, name)
    return got if all(got.get(c) == "True" for c in CONDITIONS) else None


def resource_version(cluster: Cluster, namespace: str, kind: str, name: str) -> str:
    return str(
        cluster.run_kubectl(
            "get", kind, name, "-n", namespace, "-o", "jsonpath={.metadata.resourceVersion}"
        ).stdout
    )


def healthz(pod: dict[str, Any]) -> dict[str, Any]:
    """GET /healthz of the pod's own process, from the host (the pod CIDR is routed to the
    node's bridge)."""
    url = f"http://{pod['status']['podIP']}:8080/healthz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read())["svcaudit"]  # type: ignore[no-any-return]


def lease_holder(cluster: Cluster) -> str:
    return str(
        cluster.run_kubectl(
            "get", "lease", LEASE, "-n", NS, "-o", "jsonpath={.spec.holderIdentity}"
        ).stdout
    )


def log_events(cluster: Cluster, pod_name: str) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("logs", "-n", NS, pod_name).stdout
    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": line, "level": "unparsed"})
    return events


def test_apply_is_clean_and_idempotent(deployed: Cluster) -> None:
    again = deploy_local.apply_deploy(deployed)
    lines = [line for line in again.stdout.splitlines() if line.strip()]
    assert lines and all(line.endswith("unchanged") for line in lines), again.stdout
    # deploy/ exactly as users apply it: accepted, with no warning (e.g. pod security).
    users = deployed.run_kubectl("apply", "--dry-run=server", "-f", str(deploy_local.DEPLOY))
    assert "Warning" not in users.stderr, users.stderr


def test_two_real_containers_run_the_image_hardened(deployed: Cluster) -> None:
    image_id = deploy_local.image_id(deploy_local.DEFAULT_TAG)  # what make image built
    pods = operator_pods(deployed)
    assert len(pods) == 2
    for p in pods:
        assert p["spec"]["nodeName"] == "realnode"
        (status,) = p["status"]["containerStatuses"]
        assert status["ready"] and "running" in status["state"], status
        assert status["containerID"].startswith("containerd://")
        assert status["imageID"] == image_id
        assert p["spec"]["serviceAccountName"] == "svcaudit"
        # What the kernel says of the running process: user, capabilities, read-only root.
        name = p["metadata"]["name"]
        uid = kexec(deployed, NS, name, "id", "-u").stdout.strip()
        assert uid == str(p["spec"]["securityContext"]["runAsUser"]) == "10001"
        caps = kexec(deployed, NS, name, "grep", "CapEff", "/proc/1/status").stdout
        assert caps.split()[1] == "0000000000000000"
        write = kexec(deployed, NS, name, "touch", "/probe", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        assert kexec(deployed, NS, name, "touch", "/tmp/probe").returncode == 0  # emptyDir


def test_probes_are_answered_by_the_process_one_leader(deployed: Cluster) -> None:
    answers = {p["metadata"]["name"]: healthz(p) for p in operator_pods(deployed)}
    roles = sorted(a["role"] for a in answers.values())
    assert roles == ["leader", "standby"], answers
    assert all(a["api"] == "reachable" and a["ready"] for a in answers.values()), answers
    leader = next(name for name, a in answers.items() if a["role"] == "leader")
    assert lease_holder(deployed).startswith(f"{leader}_")


def test_metrics_are_scraped_through_the_service_from_another_pod(
    deployed: Cluster, namespace: str
) -> None:
    apply(deployed, namespace, pod("scraper", container("shell", SHELL)))
    wait_ready(deployed, namespace, "!app", 1)
    url = f"http://svcaudit-metrics.{NS}.svc.cluster.local:9090/metrics"
    seen: dict[str, str] = {}

    def scrape() -> bool:
        # kube-proxy balances: ask until both replicas have answered (leader 1, standby 0).
        proc = kexec(deployed, namespace, "scraper", "wget", "-qO-", url, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("svcaudit_leader "):
                seen[line.split()[1]] = proc.stdout
        return set(seen) == {"1.0", "0.0"}

    eventually(scrape, 60, "metrics from both replicas through the Service", interval=0.2)
    assert "svcaudit_audit_duration_seconds" in seen["1.0"]
    slices = json.loads(
        deployed.run_kubectl(
            "get",
            "endpointslices",
            "-n",
            NS,
            "-l",
            "kubernetes.io/service-name=svcaudit-metrics",
            "-o",
            "json",
        ).stdout
    )["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert addresses == {p["status"]["podIP"] for p in operator_pods(deployed)}


def test_no_operator_runs_on_the_host(deployed: Cluster) -> None:
    """Every `svcaudit run` process on this machine lives in a pod of the real node."""
    _, realnode, state = local_node_module(deployed)
    pod_cgroup = f"/{realnode.Paths(state).cgroup_name}/"
    found = [(pid, pod_cgroup in cgroups) for pid, cgroups in operator_processes()]
    assert len(found) == 2 and all(in_pod for _, in_pod in found), found


def test_in_cluster_operator_writes_verdicts_with_the_in_cluster_dns(
    deployed: Cluster, tutorial: str
) -> None:
    got = eventually(lambda: all_true(deployed, tutorial, "simpleservice"), 90, "verdicts")
    assert got == dict.fromkeys(CONDITIONS, "True")
    audit = json.loads(
        deployed.run_kubectl("get", "sva", "simpleservice", "-n", tutorial, "-o", "json").stdout
    )
    summary = audit["status"]["summary"]
    assert summary["endpointsExpected"] == summary["endpointsObserved"] == 2
    assert summary["healthy"] == "True"
    # DNS was asked of the default in-cluster servers: every replica of kube-dns (the ready
    # endpoints of its EndpointSlices; no --dns-server anywhere in the pod), and they answered
    # (DNSConsistent is True, not Unknown).
    slices = json.loads(
        deployed.run_kubectl(
            "get", "endpointslices", "-n", "kube-system",
            "-l", "kubernetes.io/service-name=kube-dns", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    replicas = sorted(
        f"{a}:53" for s in slices for e in s["endpoints"] for a in e["addresses"]
        if (e.get("conditions") or {}).get("ready", True)
    )  # fmt: skip
    leader = lease_holder(deployed).rsplit("_", 1)[0]
    leader_pod = next(p for p in operator_pods(deployed) if p["metadata"]["name"] == leader)
    (c,) = leader_pod["spec"]["containers"]
    assert "SVCAUDIT_DNS_SERVER" not in {e["name"] for e in c["env"]}
    assert not any("--dns-server" in a for a in c.get("args") or [])
    servers = [e for e in log_events(deployed, leader) if e["event"] == "dns server"]
    assert [e["servers"] for e in servers] == [replicas]
    assert servers[0]["source"] == "kube-system/kube-dns replicas"


def test_credentials_are_the_service_accounts(deployed: Cluster) -> None:
    """The process authenticates with the pod's ServiceAccount token (no kubeconfig in the
    pod), as the API server itself says (a SelfSubjectReview the operator logs at start).
    What that identity may do is exactly deploy/'s RBAC (test_rbac.py)."""
    for p in operator_pods(deployed):
        (c,) = p["spec"]["containers"]
        assert "KUBECONFIG" not in {e["name"] for e in c.get("env") or []}
        mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
        assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
        events = log_events(deployed, p["metadata"]["name"])
        users = [e["user"] for e in events if e["event"] == "authenticated"]
        assert users == [SA_USER], events[:5]


def test_deleting_the_leader_pod_hands_over_without_rewrites(
    deployed: Cluster, tutorial: str
) -> None:
    eventually(lambda: all_true(deployed, tutorial, "simpleservice"), 90, "verdicts")
    before = {
        kind: resource_version(deployed, tutorial, kind, "simpleservice")
        for kind in ("service", "serviceaudit")
    }
    leader = lease_holder(deployed).rsplit("_", 1)[0]
    started = time.monotonic()
    deployed.run_kubectl("delete", "pod", leader, "-n", NS, "--wait=false")

    def new_holder() -> str | None:
        holder = lease_holder(deployed)
        return holder if holder and not holder.startswith(f"{leader}_") else None

    # The stopping leader releases the Lease; the standby, or the Deployment's replacement
    # if it is up by then (both try every retry period), takes it.
    holder = eventually(new_holder, 60, "another pod holding the Lease", interval=0.1)
    handover = time.monotonic() - started
    print(f"leader pod deleted: {holder} held the Lease {handover:.1f}s later")
    assert handover < 15, handover  # a graceful stop releases the Lease: one retry period

    def successor_pod() -> dict[str, Any] | None:  # once the kubelet has published its IP
        return next(
            (
                p
                for p in operator_pods(deployed)
                if holder.startswith(p["metadata"]["name"] + "_") and p["status"].get("podIP")
            ),
            None,
        )

    successor: dict[str, Any] = eventually(successor_pod, 30, "the new leader's pod")
    # The new leader audits: a Service created now gets its verdicts...
    apply(deployed, tutorial, service("simpleservice-after"))
    eventually(lambda: all_true(deployed, tutorial, "simpleservice-after"), 90, "new verdicts")
    eventually(lambda: healthz(successor)["ready"], 60, "the new leader's first pass")
    # ... and rewrites nothing that was right already.
    after = {
        kind: resource_version(deployed, tutorial, kind, "simpleservice")
        for kind in ("service", "serviceaudit")
    }
    assert after == before

    # It leads (a renewal slower than the 10 s renew deadline on a loaded machine makes it
    # step back until the next one succeeds: its log then says so).
    deadline = time.monotonic() + 30
    while healthz(successor)["role"] != "leader":
        if time.monotonic() > deadline:
            events = log_events(deployed, successor["metadata"]["name"])
            pytest.fail(f"the successor does not lead; its log ends: {events[-8:]}")
        time.sleep(0.5)
    eventually(lambda: ready_operator_pods(deployed), 120, "the Deployment's replacement pod")


def test_pods_keep_running_for_a_minute_without_restart_or_error(deployed: Cluster) -> None:
    def age(p: dict[str, Any]) -> float:
        started = p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        return (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds()

    pods = eventually(lambda: ready_operator_pods(deployed), 120, "two ready pods")
    youngest = min(age(p) for p in pods)
    if youngest < 60:
        time.sleep(60 - youngest)
    pods = eventually(lambda: ready_operator_pods(deployed), 30, "two ready pods")
    for p in pods:
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0, p["status"]
        errors = [
            e
            for e in log_events(deployed, p["metadata"]["name"])
            if e.get("level") in ("error", "critical", "unparsed")
        ]
        assert errors == [], errors[:5]
