"""deploy/ as users apply it, statically: the files, the hardened Deployment, the settings the
operator reads, the image recipe. The operator running from it for real on the real node is
tests/integration/test_in_cluster.py."""

from __future__ import annotations

import re

from tests.fixtures import REPO
from tests.integration.test_deploy_helpers import DEPLOY, deploy_documents


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
