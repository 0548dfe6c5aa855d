"""The simpleservice tutorial, step by step, with svcaudit's verdict checked at every step.

Three pages (Services, Service discovery, Environment variables), in tutorial order, on the
real node (pods really run: curl and printenv are real), with the operator running. Each test
asserts what the page shows AND what svcaudit reports at that moment. Tests in this module
build on each other, in file order, like a person following the pages.

Needs a provider with a real node (local with NODE=real, kind); elsewhere the whole module is
reported as not applicable (a skip with that reason), never silently passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from e2e.tests.realnode_helpers import (
    SHELL,
    apply,
    cluster_ip,
    curl_json,
    get,
    kexec,
    pod,
    pod_spec,
    printenv,
    service,
    wait_ready,
)
from e2e.tests.realnode_helpers import container as base_container
from tests.fixtures import Cluster, eventually
from tests.integration.op_helpers import (
    PREFIX,
    Operator,
    audit,
    ensure_crd,
    service_conditions,
)

pytestmark = pytest.mark.realnode

# The core does not judge container starts this close to a service's creation (clock skew,
# kubelet informer lag); a person following the tutorial is slower than that anyway.
ENV_GRACE_SECONDS = 5.0
# a condition's type (without the prefix) -> its key in the ServiceAudit's status.summary
SUMMARY_KEY = {
    "EndpointsConsistent": "endpoints",
    "EnvironmentConsistent": "environment",
    "DNSConsistent": "dns",
    "DiscoveryHealthy": "healthy",
}


def container(**kwargs: Any) -> dict[str, Any]:
    """The simpleservice container with a readiness probe that tolerates a loaded machine."""
    c = base_container(**kwargs)
    if "readinessProbe" in c:
        c["readinessProbe"].update(periodSeconds=2, timeoutSeconds=5, failureThreshold=3)
    return c


def rc(replicas: int) -> dict[str, Any]:
    """The tutorial's ReplicationController rcsise: app=sise, simpleservice on 9876."""
    return {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "rcsise"},
        "spec": {
            "replicas": replicas,
            "selector": {"app": "sise"},
            "template": {"metadata": {"labels": {"app": "sise"}}, "spec": pod_spec(container())},
        },
    }


def wait_past_env_grace(pod: dict[str, Any]) -> None:
    started = min(
        datetime.fromisoformat(s["state"]["running"]["startedAt"])
        for s in pod["status"]["containerStatuses"]
    )
    delay = (started - datetime.now(UTC)).total_seconds() + ENV_GRACE_SECONDS + 1.5
    if delay > 0:
        time.sleep(delay)


class InClusterOperator:
    """The operator deploy/ runs inside the cluster (kind: the fixture applied deploy/ as
    users do, so the settle time is deploy/'s 45 s)."""

    settle = 45.0
    namespace = "svcaudit-system"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def logs_text(self) -> str:
        out = self.cluster.run_kubectl(
            "logs",
            "-n",
            self.namespace,
            "-l",
            "app.kubernetes.io/name=svcaudit",
            "--tail=200",
            check=False,
        )
        return out.stdout[-6000:]

    def stop(self) -> None:
        """Nothing: it belongs to the cluster, which the session's fixture removes."""


class Tutorial:
    """What the steps share: the namespaces, the running operator, the pods seen so far."""

    def __init__(
        self, cluster: Cluster, namespace: str, other: str, operator: Operator | InClusterOperator
    ):
        self.cluster = cluster
        self.ns = namespace
        self.other = other
        self.operator = operator
        self.pods: dict[str, list[dict[str, Any]]] = {}

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.run_kubectl(*args, input=input).stdout

    def statuses(self, name: str, ns: str | None = None) -> dict[str, str]:
        conds = service_conditions(self.cluster, ns or self.ns, name)
        return {
            t.removeprefix(PREFIX): c["status"] for t, c in conds.items() if t.startswith(PREFIX)
        }

    def wait_statuses(
        self, name: str, want: dict[str, str], ns: str | None = None, timeout: float = 60
    ) -> dict[str, str]:
        """Wait for the conditions, then for the ServiceAudit to say the same (its report is
        written just after the conditions: controller/reports.py); a discrepancy shows once it
        has lasted the settle time."""
        timeout += self.operator.settle
        seen: dict[str, Any] = {}

        def check() -> dict[str, str] | None:
            got = self.statuses(name, ns)
            seen["last"] = got
            return got if all(got.get(k) == v for k, v in want.items()) else None

        def reported() -> bool:
            summary = ((audit(self.cluster, ns or self.ns, name) or {}).get("status") or {}).get(
                "summary"
            ) or {}
            seen["summary"] = summary
            return all(summary.get(SUMMARY_KEY[k]) == v for k, v in want.items())

        try:
            got = eventually(check, timeout, f"{name} conditions {want}")
            eventually(reported, 30, f"{name}'s ServiceAudit to follow its conditions {want}")
            return got  # type: ignore[no-any-return]
        except pytest.fail.Exception:
            detail = (audit(self.cluster, ns or self.ns, name) or {}).get("status") or {}
            pytest.fail(
                f"{name}: wanted {want}, last seen {seen.get('last')}; summary "
                f"{seen.get('summary')} then "
                f"{detail.get('summary')}; discrepancies "
                f"{[(d['code'], d['subject']) for d in detail.get('discrepancies') or []]}"
                f"\noperator log tail:\n{self.operator.logs_text()[-1500:]}"
            )

    def audit(self, name: str, ns: str | None = None) -> dict[str, Any]:
        data = audit(self.cluster, ns or self.ns, name)
        assert data is not None, f"no ServiceAudit {name}"
        return data

    def codes(self, name: str, ns: str | None = None) -> set[str]:
        """Codes of the discrepancies that count (info-level notes never fail a verdict)."""
        status = self.audit(name, ns).get("status") or {}
        return {d["code"] for d in status.get("discrepancies") or [] if d["severity"] != "info"}


@pytest.fixture(scope="module")
def tut(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tutorial]:
    if not cluster.real_node:
        pytest.skip(
            f"not applicable on provider {cluster.provider!r} without a real node: "
            "the tutorial's curl and printenv steps need pods that really run "
            "(run with NODE=real)"
        )
    ns = cluster.create_namespace("tutorial")
    other = cluster.create_namespace("other")
    operator: Operator | InClusterOperator
    if cluster.provider == "kind":  # the operator runs in the cluster, from deploy/
        operator = InClusterOperator(cluster)
    else:
        ensure_crd(cluster)
        log: Path = tmp_path_factory.mktemp("tutorial") / "operator.log"
        operator = Operator(cluster, ns, log, extra=("-n", other)).start()
    try:
        yield Tutorial(cluster, ns, other, operator)
    finally:
        operator.stop()
        for name in (ns, other):
            cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


# ---------------------------------------------------------------------------------------------
# Page 1: Services


def test_services_1_rc_runs_one_pod(tut: Tutorial) -> None:
    """`kubectl apply -f rc.yaml`; `kubectl get pods -l app=sise` shows one Running pod."""
    apply(tut.cluster, tut.ns, rc(replicas=1))
    pods = wait_ready(tut.cluster, tut.ns, "app=sise", 1)
    assert pods[0]["status"]["phase"] == "Running"
    assert pods[0]["status"]["podIP"]
    described = tut.kubectl("describe", "pod", "-n", tut.ns, pods[0]["metadata"]["name"])
    assert pods[0]["status"]["podIP"] in described
    tut.pods["first"] = pods


def test_services_2_service_publishes_the_pod(tut: Tutorial) -> None:
    """Service simpleservice (80 -> 9876): ClusterIP, `Endpoints: <podIP>:9876`.

    svcaudit: endpoints and DNS consistent; the environment is NOT — the pod started before
    the service, so it lacks SIMPLESERVICE_* (the tutorial's first classic surprise)."""
    wait_past_env_grace(tut.pods["first"][0])
    apply(tut.cluster, tut.ns, service("simpleservice"))
    ip = cluster_ip(tut.cluster, tut.ns, "simpleservice")
    pod_ip = tut.pods["first"][0]["status"]["podIP"]
    described = eventually(
        lambda: (
            (d := tut.kubectl("describe", "svc", "simpleservice", "-n", tut.ns))
            and f"{pod_ip}:9876" in d
            and d
        ),
        30,
        "Endpoints in describe",
    )
    assert ip in described
    statuses = tut.wait_statuses(
        "simpleservice",
        {
            "EndpointsConsistent": "True",
            "DNSConsistent": "True",
            "EnvironmentConsistent": "False",
            "DiscoveryHealthy": "False",
        },
    )
    assert statuses["DiscoveryHealthy"] == "False"
    status = tut.audit("simpleservice")["status"]
    assert status["summary"]["endpointsExpected"] == status["summary"]["endpointsObserved"] == 1
    observed = {a for ep in status["endpoints"]["observed"] for a in ep["addresses"]}
    assert observed == {pod_ip}
    assert {
        "name": f"simpleservice.{tut.ns}.svc.cluster.local.",
        "type": "A",
        "value": ip,
    } in status["dns"]["observed"]
    assert "SVA-ENV-001" in tut.codes("simpleservice")
    discrepancy(tut, "simpleservice", "SVA-ENV-001")  # with its hint
    stale = {p["pod"] for p in status["environment"]["pods"]}
    assert tut.pods["first"][0]["metadata"]["name"] in stale
    # ... and it is true: the pod really has no such variable.
    env = printenv(tut.cluster, tut.ns, tut.pods["first"][0]["metadata"]["name"])
    assert "SIMPLESERVICE_SERVICE_HOST" not in env


def test_services_3_pod_ip_answers(tut: Tutorial) -> None:
    name, pod_ip = (
        tut.pods["first"][0]["metadata"]["name"],
        tut.pods["first"][0]["status"]["podIP"],
    )
    info = curl_json(tut.cluster, tut.ns, name, f"http://{pod_ip}:9876/info")
    assert info["version"] == "0.5.0"
    assert info["host"] == f"{pod_ip}:9876"
    # svcaudit: the address that answered is the one endpoint, expected and observed.
    endpoints = tut.audit("simpleservice")["status"]["endpoints"]
    for side in ("expected", "observed"):
        assert {a for ep in endpoints[side] for a in ep["addresses"]} == {pod_ip}
    assert tut.statuses("simpleservice")["EndpointsConsistent"] == "True"


def test_services_4_cluster_ip_answers_through_kube_proxy(tut: Tutorial) -> None:
    name = tut.pods["first"][0]["metadata"]["name"]
    ip = cluster_ip(tut.cluster, tut.ns, "simpleservice")
    info = curl_json(tut.cluster, tut.ns, name, f"http://{ip}:80/info")
    assert info["version"] == "0.5.0"
    assert info["host"] == f"{ip}:80"
    # svcaudit audits the same VIP that kube-proxy just served.
    assert tut.audit("simpleservice")["status"]["clusterIP"] == ip
    assert tut.statuses("simpleservice")["EndpointsConsistent"] == "True"


def test_services_5_service_name_answers_through_cluster_dns(tut: Tutorial) -> None:
    name = tut.pods["first"][0]["metadata"]["name"]
    info = curl_json(tut.cluster, tut.ns, name, "http://simpleservice/info")
    assert info["host"] == "simpleservice"
    # svcaudit: the name resolves (DNSConsistent True, the A record is the VIP), while the
    # environment of this pod, started before the service, is still reported as missing.
    ip = cluster_ip(tut.cluster, tut.ns, "simpleservice")
    a_records = {
        r["value"]
        for r in tut.audit("simpleservice")["status"]["dns"]["observed"]
        if r["type"] == "A" and r["name"] == f"simpleservice.{tut.ns}.svc.cluster.local."
    }
    assert a_records == {ip}
    statuses = tut.statuses("simpleservice")
    assert statuses["DNSConsistent"] == "True"
    assert statuses["EnvironmentConsistent"] == "False"


def test_services_6_scale_to_two(tut: Tutorial) -> None:
    """Two Running pods, two endpoints; svcaudit's expected == observed follows."""
    tut.kubectl("scale", "-n", tut.ns, "--replicas=2", "rc/rcsise")
    pods = wait_ready(tut.cluster, tut.ns, "app=sise", 2)
    ips = {p["status"]["podIP"] for p in pods}

    def audited_both() -> bool:
        status = tut.audit("simpleservice").get("status") or {}
        observed = {
            a
            for ep in (status.get("endpoints") or {}).get("observed") or []
            for a in ep["addresses"]
        }
        summary = status.get("summary") or {}
        return (
            observed == ips
            and summary.get("endpointsExpected") == 2
            and summary.get("endpointsObserved") == 2
            and summary.get("endpoints") == "True"
        )

    eventually(audited_both, 60, "the ServiceAudit to show both endpoints")
    # The new pod started after the service: it has the variables; the first one still not.
    new = [p for p in pods if p["metadata"]["name"] != tut.pods["first"][0]["metadata"]["name"]]
    env = printenv(tut.cluster, tut.ns, new[0]["metadata"]["name"])
    assert env["SIMPLESERVICE_SERVICE_HOST"] == cluster_ip(tut.cluster, tut.ns, "simpleservice")
    stale = {p["pod"] for p in tut.audit("simpleservice")["status"]["environment"]["pods"]}
    assert new[0]["metadata"]["name"] not in stale
    assert tut.pods["first"][0]["metadata"]["name"] in stale
    # The fix for that surprise: recreate the pod that predates the service (the RC replaces
    # it); every pod then has the variables and the verdict recovers.
    first = tut.pods["first"][0]["metadata"]["name"]
    tut.kubectl("delete", "pod", first, "-n", tut.ns, "--grace-period=1", "--wait=false")
    tut.wait_statuses(
        "simpleservice",
        {"EnvironmentConsistent": "True", "DiscoveryHealthy": "True"},
        timeout=120,
    )
    assert "SVA-ENV-001" not in tut.codes("simpleservice")


def test_services_7_clean_up(tut: Tutorial) -> None:
    """Deleting the service removes its ServiceAudit (owner reference, garbage collector)."""
    tut.kubectl("delete", "svc", "simpleservice", "-n", tut.ns)
    tut.kubectl("delete", "rc", "rcsise", "-n", tut.ns)
    eventually(
        lambda: audit(tut.cluster, tut.ns, "simpleservice") is None,
        60,
        "the ServiceAudit to be garbage-collected",
    )
    eventually(
        lambda: not get(tut.cluster, tut.ns, "pods", "-l", "app=sise")["items"],
        60,
        "the pods to go",
    )


# ---------------------------------------------------------------------------------------------
# Page 2: Service discovery


def test_discovery_1_thesvc_and_jump_pod(tut: Tutorial) -> None:
    """Service thesvc first, then RC rcsise (2 replicas) and the jump pod: everything started
    after the service, so svcaudit finds all three routes consistent."""
    apply(tut.cluster, tut.ns, service("thesvc"))
    apply(tut.cluster, tut.ns, rc(replicas=2), pod("jumpod", base_container("shell", image=SHELL)))
    wait_ready(tut.cluster, tut.ns, "app=sise", 2)
    eventually(
        lambda: get(tut.cluster, tut.ns, "pod", "jumpod")["status"].get("phase") == "Running",
        60,
        "jumpod Running",
    )
    tut.wait_statuses(
        "thesvc",
        {
            "EndpointsConsistent": "True",
            "DNSConsistent": "True",
            "EnvironmentConsistent": "True",
            "DiscoveryHealthy": "True",
        },
    )
    assert tut.codes("thesvc") == set()


def test_discovery_2_fqdn_resolves_and_answers(tut: Tutorial) -> None:
    ip = cluster_ip(tut.cluster, tut.ns, "thesvc")
    fqdn = f"thesvc.{tut.ns}.svc.cluster.local"
    lookup = kexec(tut.cluster, tut.ns, "jumpod", "nslookup", fqdn).stdout
    assert ip in lookup
    info = curl_json(tut.cluster, tut.ns, "jumpod", "http://thesvc/info")
    assert info["host"] == "thesvc"
    # svcaudit asked the same DNS the pod asked, and got the same answer.
    dns = tut.audit("thesvc")["status"]["dns"]
    assert {"name": f"{fqdn}.", "type": "A", "value": ip} in dns["observed"]
    assert {"name": f"{fqdn}.", "type": "A", "value": ip} in dns["expected"]
    assert tut.statuses("thesvc")["DNSConsistent"] == "True"


def test_discovery_3_cross_namespace_name(tut: Tutorial) -> None:
    """Namespace `other` with its own rcsise + thesvc; `thesvc.<other>` from the jump pod."""
    apply(tut.cluster, tut.other, service("thesvc"))
    apply(tut.cluster, tut.other, rc(replicas=2))
    wait_ready(tut.cluster, tut.other, "app=sise", 2)
    info = curl_json(tut.cluster, tut.ns, "jumpod", f"http://thesvc.{tut.other}/info")
    assert info["host"] == f"thesvc.{tut.other}"
    tut.wait_statuses("thesvc", {"DiscoveryHealthy": "True"}, ns=tut.other)
    # The two services are distinct: each audit lists its own namespace's pods only.
    mine = {
        ep["targetRef"]["namespace"]
        for ep in tut.audit("thesvc", tut.other)["status"]["endpoints"]["observed"]
    }
    assert mine == {tut.other}


def test_discovery_4_clean_up(tut: Tutorial) -> None:
    tut.kubectl("delete", "pod", "jumpod", "-n", tut.ns, "--wait=false")
    for ns in (tut.ns, tut.other):
        tut.kubectl("delete", "svc", "thesvc", "-n", ns)
        tut.kubectl("delete", "rc", "rcsise", "-n", ns)
    for ns in (tut.ns, tut.other):

        def collected(ns: str = ns) -> bool:
            return audit(tut.cluster, ns, "thesvc") is None

        eventually(collected, 60, "GC of thesvc")


# ---------------------------------------------------------------------------------------------
# Page 3: Environment variables


def test_env_1_version_override_and_injected_variables(tut: Tutorial) -> None:
    """Pod `envs` with SIMPLE_SERVICE_VERSION=1.0: /info says 1.0; /env and printenv show
    KUBERNETES_* and the variables of every service that existed when it started — exactly
    what svcaudit expects (its environment verdict is True)."""
    apply(
        tut.cluster,
        tut.ns,
        service(
            "simpleservice",
            ports=[
                {"name": "web", "port": 80, "targetPort": 9876},
                {"name": "metrics", "port": 9090, "targetPort": 9876, "protocol": "TCP"},
            ],
        ),
    )
    apply(
        tut.cluster,
        tut.ns,
        pod("envs", container(env={"SIMPLE_SERVICE_VERSION": "1.0"}), labels={"app": "sise"}),
    )
    wait_ready(tut.cluster, tut.ns, "app=sise", 1)
    info = curl_json(tut.cluster, tut.ns, "envs", "http://127.0.0.1:9876/info")
    assert info["version"] == "1.0"
    served = curl_json(tut.cluster, tut.ns, "envs", "http://127.0.0.1:9876/env")
    printed = printenv(tut.cluster, tut.ns, "envs")
    for variables in (served["env"], printed):
        assert variables["KUBERNETES_SERVICE_HOST"] == cluster_ip(
            tut.cluster, "default", "kubernetes"
        )
        assert variables["KUBERNETES_PORT_443_TCP"].startswith("tcp://")
        assert variables["SIMPLESERVICE_SERVICE_PORT_METRICS"] == "9090"
    tut.wait_statuses(
        "simpleservice", {"EnvironmentConsistent": "True", "DiscoveryHealthy": "True"}
    )
    # svcaudit's expected variables for this service == what the kubelet injected.
    ip = cluster_ip(tut.cluster, tut.ns, "simpleservice")
    injected = {k: v for k, v in printed.items() if k.startswith("SIMPLESERVICE_")}
    assert injected == {
        "SIMPLESERVICE_SERVICE_HOST": ip,
        "SIMPLESERVICE_SERVICE_PORT": "80",
        "SIMPLESERVICE_SERVICE_PORT_WEB": "80",
        "SIMPLESERVICE_SERVICE_PORT_METRICS": "9090",
        "SIMPLESERVICE_PORT": f"tcp://{ip}:80",
        "SIMPLESERVICE_PORT_80_TCP": f"tcp://{ip}:80",
        "SIMPLESERVICE_PORT_80_TCP_PROTO": "tcp",
        "SIMPLESERVICE_PORT_80_TCP_PORT": "80",
        "SIMPLESERVICE_PORT_80_TCP_ADDR": ip,
        "SIMPLESERVICE_PORT_9090_TCP": f"tcp://{ip}:9090",
        "SIMPLESERVICE_PORT_9090_TCP_PROTO": "tcp",
        "SIMPLESERVICE_PORT_9090_TCP_PORT": "9090",
        "SIMPLESERVICE_PORT_9090_TCP_ADDR": ip,
    }


# ---------------------------------------------------------------------------------------------
# The classic surprises: the False verdict a user sees, its code and hint, and the recovery


def discrepancy(tut: Tutorial, name: str, code: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        status = (audit(tut.cluster, tut.ns, name) or {}).get("status") or {}
        return next((d for d in status.get("discrepancies") or [] if d["code"] == code), None)

    item: dict[str, Any] = eventually(found, 60, f"{code} on {name}")
    assert item["hint"], f"{code} has no hint"
    return item


def test_surprise_service_recreated_leaves_stale_env(tut: Tutorial) -> None:
    """Delete and recreate simpleservice: a new ClusterIP; `envs` keeps the old one."""
    old_ip = cluster_ip(tut.cluster, tut.ns, "simpleservice")
    wait_past_env_grace(get(tut.cluster, tut.ns, "pod", "envs"))
    tut.kubectl("delete", "svc", "simpleservice", "-n", tut.ns)
    apply(tut.cluster, tut.ns, service("simpleservice"))
    new_ip = cluster_ip(tut.cluster, tut.ns, "simpleservice")
    assert new_ip != old_ip
    assert printenv(tut.cluster, tut.ns, "envs")["SIMPLESERVICE_SERVICE_HOST"] == old_ip
    tut.wait_statuses("simpleservice", {"EnvironmentConsistent": "False"})
    discrepancy(tut, "simpleservice", "SVA-ENV-001")
    # The fix: restart the pod (recreate it); the new container has the new IP.
    tut.kubectl("delete", "pod", "envs", "-n", tut.ns)
    apply(tut.cluster, tut.ns, pod("envs", container(), labels={"app": "sise"}))
    wait_ready(tut.cluster, tut.ns, "app=sise", 1)
    assert printenv(tut.cluster, tut.ns, "envs")["SIMPLESERVICE_SERVICE_HOST"] == new_ip
    tut.wait_statuses(
        "simpleservice", {"EnvironmentConsistent": "True", "DiscoveryHealthy": "True"}
    )


def test_surprise_selector_typo(tut: Tutorial) -> None:
    patch = json.dumps({"spec": {"selector": {"app": "sies"}}})
    tut.kubectl("patch", "svc", "simpleservice", "-n", tut.ns, "-p", patch)
    tut.wait_statuses(
        "simpleservice", {"EndpointsConsistent": "False", "DiscoveryHealthy": "False"}
    )
    discrepancy(tut, "simpleservice", "SVA-EP-101")
    patch = json.dumps({"spec": {"selector": {"app": "sise"}}})
    tut.kubectl("patch", "svc", "simpleservice", "-n", tut.ns, "-p", patch)
    tut.wait_statuses("simpleservice", {"EndpointsConsistent": "True", "DiscoveryHealthy": "True"})


def test_surprise_named_target_port_not_declared(tut: Tutorial) -> None:
    apply(
        tut.cluster,
        tut.ns,
        service("named", ports=[{"name": "web", "port": 80, "targetPort": "http"}]),
    )
    tut.wait_statuses("named", {"EndpointsConsistent": "False"})
    discrepancy(tut, "named", "SVA-EP-102")
    # The slice really has the pod with no port for it.
    slices = get(tut.cluster, tut.ns, "endpointslices", "-l", "kubernetes.io/service-name=named")[
        "items"
    ]
    assert any(s.get("endpoints") for s in slices)
    assert all(not s.get("ports") for s in slices)
    # The fix: target the number the pod declares.
    apply(
        tut.cluster,
        tut.ns,
        service("named", ports=[{"name": "web", "port": 80, "targetPort": 9876}]),
    )
    tut.wait_statuses("named", {"EndpointsConsistent": "True"})


def test_surprise_not_ready_pod(tut: Tutorial) -> None:
    """A pod whose readiness probe fails is not a ready endpoint; no ready endpoint at all is
    a finding; headless DNS then lists nobody."""
    bad = container(probe=False)
    bad["readinessProbe"] = {"httpGet": {"path": "/nope", "port": 9876}, "periodSeconds": 1}
    apply(
        tut.cluster,
        tut.ns,
        service("unready", selector={"app": "unready"}),
        service("unready-headless", selector={"app": "unready"}, clusterIP="None"),
        pod("unready-0", bad, labels={"app": "unready"}),
    )
    eventually(
        lambda: get(tut.cluster, tut.ns, "pod", "unready-0")["status"].get("phase") == "Running",
        60,
        "unready-0 Running",
    )
    tut.wait_statuses("unready", {"EndpointsConsistent": "False"})
    discrepancy(tut, "unready", "SVA-EP-107")
    status = tut.audit("unready")["status"]
    assert [ep["ready"] for ep in status["endpoints"]["observed"]] == [False]
    # The headless service: no ready endpoint either, and its name has no address to list.
    tut.wait_statuses("unready-headless", {"EndpointsConsistent": "False"})
    discrepancy(tut, "unready-headless", "SVA-EP-107")
    headless = tut.audit("unready-headless")["status"]
    assert headless["dns"]["absent"], "the headless name should answer NXDOMAIN"
    # The fix: a probe on a path that answers.
    tut.kubectl("delete", "pod", "unready-0", "-n", tut.ns)
    apply(tut.cluster, tut.ns, pod("unready-0", container(), labels={"app": "unready"}))
    wait_ready(tut.cluster, tut.ns, "app=unready", 1)
    tut.wait_statuses("unready", {"EndpointsConsistent": "True"})
    tut.wait_statuses("unready-headless", {"EndpointsConsistent": "True", "DNSConsistent": "True"})
    pod_ip = get(tut.cluster, tut.ns, "pod", "unready-0")["status"]["podIP"]
    name = f"unready-headless.{tut.ns}.svc.cluster.local."
    observed = tut.audit("unready-headless")["status"]["dns"]["observed"]
    assert {"name": name, "type": "A", "value": pod_ip} in observed


def test_surprise_external_name(tut: Tutorial) -> None:
    """ExternalName: a CNAME, no endpoints, no variables; svcaudit checks exactly that."""
    apply(
        tut.cluster,
        tut.ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {"type": "ExternalName", "externalName": "db.example.invalid"},
        },
    )
    tut.wait_statuses(
        "db", {"EndpointsConsistent": "True", "DNSConsistent": "True", "DiscoveryHealthy": "True"}
    )
    expected = tut.audit("db")["status"]["dns"]["expected"]
    assert {
        "name": f"db.{tut.ns}.svc.cluster.local.",
        "type": "CNAME",
        "value": "db.example.invalid.",
    } in expected
    lookup = kexec(
        tut.cluster,
        tut.ns,
        "envs",
        "nslookup",
        "-type=CNAME",
        f"db.{tut.ns}.svc.cluster.local",
        check=False,
    ).stdout
    assert "db.example.invalid" in lookup
