"""deploy/: `kubectl apply -f deploy/` on the local cluster, the hardened Deployment, the
metrics Service, and settings the operator actually reads."""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures import REPO, Cluster
from tests.integration.test_check_helpers import by_name, check_json, eventually, statuses
from tests.integration.test_deploy_helpers import DEPLOY, apply_deploy, deploy_documents

pytestmark = pytest.mark.cluster


def _deployment() -> dict:
    return next(d for d in deploy_documents() if d["kind"] == "Deployment")


def test_crd_is_referenced_not_duplicated() -> None:
    crds = [
        (p.name, d)
        for p in DEPLOY.glob("*.yaml")
        for d in __import__("yaml").safe_load_all(p.read_text())
        if d and d.get("kind") == "CustomResourceDefinition"
    ]
    assert [name for name, _ in crds] == ["crd-serviceaudits.yaml"]
    # The namespace is applied first (kubectl apply -f DIR goes in file-name order).
    assert sorted(p.name for p in DEPLOY.glob("*.yaml"))[0] == "00-namespace.yaml"


def test_apply_is_clean_and_idempotent(cluster: Cluster) -> None:
    apply_deploy(cluster)
    again = cluster.run_kubectl("apply", "-f", str(DEPLOY))
    lines = [line for line in again.stdout.splitlines() if line.strip()]
    assert lines and all(line.endswith("unchanged") for line in lines), again.stdout
    assert "Warning" not in again.stderr, again.stderr  # e.g. pod-security violations


def test_deployment_is_hardened_and_its_pod_runs(cluster: Cluster) -> None:
    apply_deploy(cluster)
    cluster.run_kubectl(
        "rollout",
        "status",
        "deployment/svcaudit",
        "-n",
        "svcaudit-system",
        "--timeout=90s",
        timeout=120,
    )
    pods = json.loads(
        cluster.run_kubectl(
            "get",
            "pods",
            "-n",
            "svcaudit-system",
            "-l",
            "app.kubernetes.io/name=svcaudit,app.kubernetes.io/component=operator",
            "-o",
            "json",
        ).stdout
    )["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2  # leader and standby (docs/operator.md#high-availability)
    assert {p["spec"]["containers"][0]["image"] for p in live} == {"svcaudit:dev"}
    spec = live[0]["spec"]
    assert spec["serviceAccountName"] == "svcaudit"
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] == "health"
    # kopf's liveness endpoint listens where the probes look.
    assert env["SVCAUDIT_LIVENESS"] == f"http://0.0.0.0:{ports['health']}/healthz"
    assert env["SVCAUDIT_METRICS_PORT"] == str(ports["metrics"])
    assert env["SVCAUDIT_LEADER_ELECT"] == "true"
    ns_env = next(e for e in c["env"] if e["name"] == "SVCAUDIT_LEADER_ELECTION_NAMESPACE")
    assert ns_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert any(v["mountPath"] == "/tmp" for v in c["volumeMounts"])


def test_metrics_service_selects_the_operator_pod(cluster: Cluster) -> None:
    """The metrics Service's EndpointSlice holds the operator pod on the metrics port, and
    svcaudit itself finds the svcaudit-system namespace consistent."""
    apply_deploy(cluster)
    cluster.run_kubectl(
        "rollout",
        "status",
        "deployment/svcaudit",
        "-n",
        "svcaudit-system",
        "--timeout=90s",
        timeout=120,
    )

    def healthy() -> dict | None:
        _, doc = check_json(cluster, "-n", "svcaudit-system", "--no-dns", dns=False)
        svc = by_name(doc, "svcaudit-system").get("svcaudit-metrics")
        return svc if svc and statuses(svc)["Endpoints"] == "True" else None

    svc = eventually(healthy, 60, "svcaudit-metrics: EndpointsConsistent")
    # Our own pods get no Docker-link variables (enableServiceLinks: false), so the Service's
    # SVCAUDIT_METRICS_PORT=tcp://... never meets our setting of the same name (SVA-ENV-004).
    assert statuses(svc)["Environment"] == "True", svc
    slices = json.loads(
        cluster.run_kubectl(
            "get",
            "endpointslices",
            "-n",
            "svcaudit-system",
            "-l",
            "kubernetes.io/service-name=svcaudit-metrics",
            "-o",
            "json",
        ).stdout
    )["items"]
    endpoints = [e for s in slices for e in s.get("endpoints") or []]
    ports = [p["port"] for s in slices for p in s.get("ports") or []]
    # Both replicas: a standby is ready too (it serves its svcaudit_leader 0).
    assert len(endpoints) == 2 and {e["targetRef"]["kind"] for e in endpoints} == {"Pod"}
    assert ports == [9090]


def test_two_replicas_elect_a_leader() -> None:
    """HA in the manifests: two replicas, leader election on, a rollout that never stops the
    old leader before its successor runs, spread over nodes. (No PodDisruptionBudget:
    `kubectl apply` reports a policy/v1 PDB "configured" at every apply, since its selector
    is always patched, which would break the clean re-apply above.)"""
    dep = _deployment()
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = dep["spec"]["template"]
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == pod["metadata"]["labels"]


def test_every_setting_of_the_deployment_is_read_by_the_operator() -> None:
    """Each SVCAUDIT_* variable the Deployment sets is one `svcaudit run` reads (a typo or a
    flag the operator lacks would be silently ignored otherwise)."""
    source = (REPO / "operator" / "svcaudit" / "cli" / "run.py").read_text()
    read = set(re.findall(r'_env(?:_float)?\("([A-Z_]+)"', source))
    (c,) = _deployment()["spec"]["template"]["spec"]["containers"]
    ours = {
        e["name"].removeprefix("SVCAUDIT_") for e in c["env"] if e["name"].startswith("SVCAUDIT_")
    }
    assert ours - read == set(), f"not read by svcaudit run: {sorted(ours - read)}"


def test_image_recipe_matches_what_is_tested() -> None:
    """The image pins exactly the runtime closure installed (and tested) here, and runs as
    the same non-root user the manifests ask for. (Building it needs Docker: docs/install.md.)"""
    from importlib.metadata import version

    pins = {}
    for line in (REPO / "requirements" / "image.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            pins[name] = ver
    for top in ("kopf", "kubernetes", "pyyaml", "structlog", "dnspython", "prometheus-client"):
        assert top in pins, top
    mismatched = {n: (v, version(n)) for n, v in pins.items() if version(n) != v}
    assert mismatched == {}, "requirements/image.txt drifted from the tested .venv"
    dockerfile = (REPO / "Dockerfile").read_text()
    uid = _deployment()["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert f"USER {uid}:" in dockerfile
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim", dockerfile, re.M)
    assert "-r requirements/image.txt" in dockerfile
