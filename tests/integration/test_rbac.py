"""RBAC proven, not assumed: the identity deploy/ gives the operator is exactly what its code
needs. The operator and `svcaudit check` run with that ServiceAccount's real token; a missing
permission shows up as a 403 in their logs or a missing write, an excessive one in the
`kubectl auth can-i --list` comparison, and forbidden writes are attempted for real."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.fixtures import Cluster
from tests.integration.op_helpers import Operator, audit, condition_is, ensure_crd, events_for
from tests.integration.test_check_helpers import (
    by_name,
    check,
    codes,
    eventually,
    make_workload,
    settled_workload,
    statuses,
)
from tests.integration.test_deploy_helpers import (
    LEADER_ELECTION,
    REQUIRED,
    SA_NAMESPACE,
    SA_USER,
    apply_deploy,
    deploy_documents,
    granted,
    merged,
    rules_of,
    sa_kubeconfig,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Cluster:
    apply_deploy(cluster)
    eventually(
        lambda: (
            cluster.run_kubectl(
                "get", "sa", "svcaudit", "-n", "svcaudit-system", check=False
            ).returncode
            == 0
        ),
        30,
        "the SA",
    )
    return cluster


def test_declared_rules_are_what_the_code_needs() -> None:
    assert rules_of(deploy_documents()) == REQUIRED
    # One ClusterRole, and one Role for leader election in the operator's namespace only.
    kinds = [d["kind"] for d in deploy_documents()]
    assert kinds.count("ClusterRole") == 1 and kinds.count("Role") == 1
    assert rules_of(deploy_documents(), "Role") == LEADER_ELECTION
    role = next(d for d in deploy_documents() if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == SA_NAMESPACE
    sa = [{"kind": "ServiceAccount", "name": "svcaudit", "namespace": "svcaudit-system"}]
    for kind, ref in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        (binding,) = [d for d in deploy_documents() if d["kind"] == kind]
        assert binding["subjects"] == sa
        assert binding["roleRef"]["kind"] == ref
    (binding,) = [d for d in deploy_documents() if d["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == SA_NAMESPACE
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_effective_permissions_are_exact(deployed: Cluster, namespace: str) -> None:
    """What the API server says the ServiceAccount may do, beyond a bare ServiceAccount's
    defaults, is exactly REQUIRED anywhere, plus LEADER_ELECTION in its own namespace:
    nothing missing, nothing more."""
    bare = f"system:serviceaccount:{namespace}:default"
    assert granted(deployed, SA_USER, bare) == REQUIRED
    assert granted(deployed, SA_USER, bare, namespace) == REQUIRED  # a user namespace
    assert granted(deployed, SA_USER, bare, SA_NAMESPACE) == merged(REQUIRED, LEADER_ELECTION)


def _can(cluster: Cluster, *args: str) -> str:
    return cluster.run_kubectl("auth", "can-i", *args, "--as", SA_USER, check=False).stdout.strip()


def test_forbidden_writes_are_refused(deployed: Cluster, namespace: str) -> None:
    make_workload(deployed, namespace, pods=1)
    sa = ("--as", SA_USER)

    def refused(*args: str) -> None:
        proc = deployed.run_kubectl(*args, *sa, check=False)
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), (args, proc)

    # A Pod: never written.
    refused(
        "patch",
        "pod",
        "web-0",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"labels":{"touched":"yes"}}}',
    )
    refused("delete", "pod", "web-0", "-n", namespace)
    refused("label", "pod", "web-0", "-n", namespace, "touched=yes")
    # A Service's spec and metadata: never written (only its status subresource).
    refused(
        "patch",
        "service",
        "web",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"selector":{"app":"other"}}}',
    )
    refused("annotate", "service", "web", "-n", namespace, "touched=yes")
    refused("delete", "service", "web", "-n", namespace)
    refused("create", "service", "clusterip", "sneaky", "--tcp=80", "-n", namespace)
    # Nothing else is readable: Secrets, ConfigMaps, Endpoints.
    refused("get", "secrets", "-n", namespace)
    refused("get", "configmaps", "-n", namespace)
    refused("get", "endpoints", "-n", namespace)
    assert _can(deployed, "get", "pods", "-n", namespace) == "no"
    assert _can(deployed, "update", "services/status", "-n", namespace) == "no"

    # ... while the status subresource is writable, the way the operator writes it: a
    # server-side apply without a prior GET (kubectl patch would GET first).
    from kubernetes import client

    api = deployed.api_client()
    api.set_default_header("Impersonate-User", SA_USER)
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "status": {
            "conditions": [
                {
                    "type": "rbac-test.svcaudit.dev/Probe",
                    "status": "True",
                    "reason": "Probe",
                    "message": "written by test_rbac",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ]
        },
    }
    client.CoreV1Api(api).patch_namespaced_service_status(
        "web",
        namespace,
        body,
        field_manager="svcaudit-rbac-test",
        force=True,
        _content_type="application/apply-patch+yaml",
        _preload_content=False,
    )
    spec_body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"app": "other"}},
    }
    with pytest.raises(client.ApiException) as denied:
        client.CoreV1Api(api).patch_namespaced_service(
            "web",
            namespace,
            spec_body,
            field_manager="svcaudit-rbac-test",
            force=True,
            _content_type="application/apply-patch+yaml",
            _preload_content=False,
        )
    assert denied.value.status == 403
    svc = json.loads(
        deployed.run_kubectl("get", "service", "web", "-n", namespace, "-o", "json").stdout
    )
    assert svc["spec"]["selector"] == {"app": "web"}
    assert "rbac-test.svcaudit.dev/Probe" in {c["type"] for c in svc["status"]["conditions"]}


def test_check_runs_with_the_operator_identity(
    deployed: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`svcaudit check -A` with the ServiceAccount's token sees what an admin sees."""
    make_workload(deployed, namespace)
    settled_workload(deployed, namespace)
    kubeconfig = sa_kubeconfig(deployed, tmp_path / "sa.kubeconfig")
    sa_cluster = dataclasses.replace(deployed, kubeconfig=str(kubeconfig))
    proc = check(sa_cluster, "-A", "-o", "json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["warnings"] == [] and doc["uninterpretable"] == []
    mine = by_name(doc, namespace)
    assert statuses(mine["web"])["Healthy"] == "True"
    assert "SVA-EP-102" in codes(mine["named"])
    # Impersonation says the same as the real token.
    proc2 = check(deployed, "-n", namespace, "-o", "json", "--as", SA_USER)
    assert proc2.returncode == 1, proc2.stderr
    assert {k: statuses(v) for k, v in by_name(json.loads(proc2.stdout), namespace).items()} == {
        k: statuses(v) for k, v in mine.items()
    }


def test_operator_runs_with_the_operator_identity(
    deployed: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`svcaudit run --leader-elect` with the ServiceAccount's token: it takes its Lease (in
    svcaudit-system, as deployed), lists, watches, writes conditions, ServiceAudits and
    Events, and nothing in its logs is a permission error."""
    make_workload(deployed, namespace)
    settled_workload(deployed, namespace)
    kubeconfig = sa_kubeconfig(deployed, tmp_path / "sa.kubeconfig")
    sa_cluster = dataclasses.replace(deployed, kubeconfig=str(kubeconfig))
    ensure_crd(deployed)  # as the admin: the operator itself may not touch CRDs
    lease = f"rbac-test-{namespace}"[:63]  # not the deployed replicas' own Lease
    election = ("--leader-elect", "--leader-election-namespace", SA_NAMESPACE)
    op = Operator(
        sa_cluster,
        namespace,
        tmp_path / "operator.log",
        extra=(*election, "--leader-election-id", lease),
    ).start()
    try:
        eventually(lambda: op.probe().get("role") == "leader", 30, "the Lease taken")
        eventually(
            lambda: condition_is(deployed, namespace, "named", "EndpointsConsistent", "False"),
            90,
            "named: EndpointsConsistent=False",
        )
        eventually(
            lambda: condition_is(deployed, namespace, "web", "DiscoveryHealthy", "True"),
            90,
            "web: DiscoveryHealthy=True",
        )
        sva = eventually(
            lambda: (audit(deployed, namespace, "named") or {}).get("status"),
            60,
            "the ServiceAudit of named",
        )
        assert "SVA-EP-102" in {d["code"] for d in sva["discrepancies"]}
        eventually(lambda: events_for(deployed, namespace, "named"), 60, "an Event")
    finally:
        op.stop()
        deployed.run_kubectl("delete", "lease", lease, "-n", SA_NAMESPACE, check=False)
    assert any(e.get("event") == "lease released" for e in op.logs())
    text = op.logs_text()
    lowered = text.lower()
    for marker in ("forbidden", " 403", "not enough permissions"):
        assert marker not in lowered, f"permission problem in the operator's log:\n{text}"
