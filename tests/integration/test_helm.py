"""helm/svcaudit: lint, render, equivalence with deploy/, values, and a real install on the
local cluster whose ServiceAccount has exactly deploy/'s permissions.

helm is built like the cluster binaries: `bash e2e/cluster/build.sh helm` (HELM_VERSION in
e2e/cluster/versions.env); the test builds it when missing (a no-op when cached)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import deploy_local
from tests.fixtures import REPO, Cluster
from tests.integration.test_check_helpers import eventually
from tests.integration.test_deploy_helpers import (
    LEADER_ELECTION,
    REQUIRED,
    deploy_documents,
    granted,
    merged,
    rules_of,
)

pytestmark = pytest.mark.cluster

CHART = REPO / "helm" / "svcaudit"


def _versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "e2e" / "cluster" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cache = Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))
    binary = cache / f"helm-{_versions()['HELM_VERSION']}" / "helm"
    if not binary.exists():
        subprocess.run(
            ["bash", str(REPO / "e2e" / "cluster" / "build.sh"), "helm"], check=True, timeout=1800
        )
    home = tmp_path_factory.mktemp("helm-home")
    os.environ.update(
        {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
    )
    return [str(binary)]


def run_helm(helm: list[str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*helm, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(
    helm: list[str], *sets: str, release: str = "svcaudit", namespace: str = "svcaudit-system"
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, "--include-crds"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(run_helm(helm, *args).stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_lint(helm: list[str]) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout
    for sets in (
        ["metrics.serviceMonitor.enabled=true"],
        ["watchNamespaces={a,b}"],
        ["rbac.create=false", "serviceAccount.create=false"],
        ["leaderElection.enabled=false"],
    ):
        args = [a for s in sets for a in ("--set", s)]
        run_helm(helm, "lint", "--strict", str(CHART), *args)


def test_chart_is_equivalent_to_deploy(helm: list[str]) -> None:
    """Same permissions, same CRD, same hardened pod as deploy/ with the default values."""
    chart = render(helm)
    deploy = deploy_documents()
    assert rules_of(chart) == rules_of(deploy) == REQUIRED
    assert rules_of(chart, "Role") == rules_of(deploy, "Role") == LEADER_ELECTION
    role, ref_role = one(chart, "Role"), one(deploy, "Role")
    assert role["metadata"]["name"] == ref_role["metadata"]["name"]
    assert role["metadata"]["namespace"] == ref_role["metadata"]["namespace"]
    role_binding = one(chart, "RoleBinding")
    assert role_binding["subjects"] == one(deploy, "RoleBinding")["subjects"]
    assert role_binding["roleRef"]["name"] == role["metadata"]["name"]
    assert one(chart, "CustomResourceDefinition") == one(deploy, "CustomResourceDefinition")
    binding = one(chart, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "svcaudit", "namespace": "svcaudit-system"}
    ]
    assert binding["roleRef"]["name"] == one(chart, "ClusterRole")["metadata"]["name"]
    ours, theirs = one(chart, "Deployment"), one(deploy, "Deployment")
    pod, ref = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
    assert pod["securityContext"] == ref["securityContext"]
    (c,), (rc,) = pod["containers"], ref["containers"]
    for key in (
        "image",
        "args",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "securityContext",
        "volumeMounts",
    ):
        assert c[key] == rc[key], key
    assert c["resources"] == rc["resources"]
    assert env_of(ours) == env_of(theirs)
    assert pod["volumes"] == ref["volumes"]
    assert ours["spec"]["replicas"] == theirs["spec"]["replicas"] == 2
    assert ours["spec"]["strategy"] == theirs["spec"]["strategy"]
    (spread,), (ref_spread,) = pod["topologySpreadConstraints"], ref["topologySpreadConstraints"]
    # The same constraint; the chart's selector also names the release (its pod labels do).
    assert spread.pop("labelSelector") == {"matchLabels": ours["spec"]["selector"]["matchLabels"]}
    ref_spread = {k: v for k, v in ref_spread.items() if k != "labelSelector"}
    assert spread == ref_spread
    svc, ref_svc = one(chart, "Service"), one(deploy, "Service")
    assert svc["spec"]["ports"] == ref_svc["spec"]["ports"]
    assert [d for d in chart if d["kind"] == "ServiceMonitor"] == []


def test_values_reach_the_operator(helm: list[str]) -> None:
    docs = render(
        helm,
        "watchNamespaces={team-a,team-b}",
        "settleSeconds=10",
        "dnsServer=10.0.0.10:53",
        "dnsService=dns-system/coredns",
        "dnsReplicas=5",
        "clusterDomain=example.internal",
        "reports={conditions}",
        "image.repository=registry.local/svcaudit",
        "image.tag=1.2.3",
        "resources.limits.memory=1Gi",
        "metrics.port=9191",
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prom",
        release="audit",
    )
    dep = one(docs, "Deployment")
    env = env_of(dep)
    assert env["SVCAUDIT_NAMESPACES"] == "team-a,team-b"
    assert env["SVCAUDIT_SETTLE_SECONDS"] == "10"
    assert env["SVCAUDIT_DNS_SERVER"] == "10.0.0.10:53"
    assert env["SVCAUDIT_DNS_SERVICE"] == "dns-system/coredns"
    assert env["SVCAUDIT_DNS_REPLICAS"] == "5"
    assert env["SVCAUDIT_CLUSTER_DOMAIN"] == "example.internal"
    assert env["SVCAUDIT_REPORTS"] == "conditions"
    assert env["SVCAUDIT_METRICS_PORT"] == "9191"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.local/svcaudit:1.2.3"
    assert c["resources"]["limits"]["memory"] == "1Gi"
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["port"] == 9191
    assert one(docs, "ClusterRole")["metadata"]["name"] == "audit-svcaudit"
    assert env["SVCAUDIT_LEADER_ELECTION_ID"] == "audit-svcaudit-leader"  # one per release
    assert one(docs, "Role")["metadata"]["name"] == "audit-svcaudit-leader-election"
    # Defaults leave the unset settings to the operator's own defaults.
    env = env_of(one(render(helm), "Deployment"))
    assert "SVCAUDIT_NAMESPACES" not in env and "SVCAUDIT_DNS_SERVER" not in env
    # Without leader election: one replica, replaced (never two writers), no Lease rights.
    single = render(helm, "leaderElection.enabled=false")
    dep = one(single, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "SVCAUDIT_LEADER_ELECT" not in env_of(dep)
    assert [d["kind"] for d in single if d["kind"] in ("Role", "RoleBinding")] == []


def test_install_runs_the_image_on_the_real_node(
    helm: list[str], cluster: Cluster, namespace: str, operator_image: str
) -> None:
    """`helm install` into a fresh namespace with values for the image and the real node: two
    real operator pods, whose ServiceAccount may do exactly what deploy/'s may, write a
    verdict; an upgrade rolls new settings out; `helm uninstall` leaves nothing of the release
    (the CRD stays, as Helm's policy for crds/ is, and the Lease the operator made)."""
    release = f"sva-{uuid.uuid4().hex[:6]}"
    base = [f"--kubeconfig={cluster.kubeconfig}", "-n", namespace]
    values = deploy_local.helm_values(operator_image)  # as `make deploy-local HOW=helm`
    fullname = f"{release}-svcaudit"
    audited = cluster.create_namespace("helm-audited")
    try:
        run_helm(
            helm, "install", release, str(CHART), *base, *values, "--wait", "--timeout", "180s"
        )
        listed = json.loads(run_helm(helm, "list", *base, "-o", "json").stdout)
        assert [(r["name"], r["status"]) for r in listed] == [(release, "deployed")]
        sa = f"system:serviceaccount:{namespace}:{fullname}"
        bare = f"system:serviceaccount:{namespace}:default"
        assert granted(cluster, sa, bare) == REQUIRED
        assert granted(cluster, sa, bare, namespace) == merged(REQUIRED, LEADER_ELECTION)
        pods = json.loads(
            cluster.run_kubectl(
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                "app.kubernetes.io/instance=" + release,
                "-o",
                "json",
            ).stdout
        )["items"]
        assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} == {"realnode"}
        assert all(p["status"]["containerStatuses"][0]["ready"] for p in pods)
        # One verdict, written by the chart's operator (no other operator runs now).
        cluster.run_kubectl(
            "create", "service", "clusterip", "lonely", "--tcp=80:8080", "-n", audited
        )

        def verdict() -> str | None:
            svc = json.loads(
                cluster.run_kubectl("get", "svc", "lonely", "-n", audited, "-o", "json").stdout
            )
            found = {
                c["type"]: c["status"] for c in (svc.get("status") or {}).get("conditions") or []
            }
            return found.get("svcaudit.dev/DNSConsistent")

        assert eventually(verdict, 90, "the chart's operator's verdict") == "True"
        # The metrics Service selects the operator pods.
        eventually(
            lambda: (
                len(
                    json.loads(
                        cluster.run_kubectl(
                            "get",
                            "endpointslices",
                            "-n",
                            namespace,
                            "-l",
                            f"kubernetes.io/service-name={fullname}-metrics",
                            "-o",
                            "json",
                        ).stdout
                    )["items"][0].get("endpoints")
                    or []
                )
                == 2
            ),
            60,
            "the metrics Service's two endpoints",
        )
        # Upgrading with new values rolls the new settings out.
        run_helm(
            helm,
            "upgrade",
            release,
            str(CHART),
            *base,
            *values,
            "--set",
            "settleSeconds=5",
            "--wait",
            "--timeout",
            "180s",
        )
        dep = json.loads(
            cluster.run_kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json").stdout
        )
        assert env_of(dep)["SVCAUDIT_SETTLE_SECONDS"] == "5"
    finally:
        run_helm(helm, "uninstall", release, *base, "--wait", "--timeout", "120s", check=False)
        cluster.run_kubectl("delete", "namespace", audited, "--wait=false", check=False)

    def left() -> list[str]:
        return cluster.run_kubectl(
            "get",
            "all,serviceaccounts,roles,rolebindings,configmaps,secrets",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).stdout.split()

    eventually(lambda: not left(), 120, "every object of the release gone (pods stop last)")
    gone = cluster.run_kubectl("get", "clusterrole", fullname, check=False)
    assert gone.returncode != 0, "uninstall removes the cluster-scoped RBAC"
    assert cluster.run_kubectl("get", "crd", "serviceaudits.svcaudit.dev").returncode == 0
