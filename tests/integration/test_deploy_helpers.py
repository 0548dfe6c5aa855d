"""Helpers for the deploy/, RBAC and Helm tests: manifests, normalised RBAC rules, the
ServiceAccount's real credentials, and `kubectl auth can-i --list` parsing."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from e2e import deploy_local
from tests.fixtures import REPO, Cluster

DEPLOY = REPO / "deploy"
SA_NAMESPACE = "svcaudit-system"
SA_NAME = "svcaudit"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"

# What the operator's code calls (operator/svcaudit/controller/*; kopf watches nothing), written
# out independently of deploy/rbac.yaml so that a change to either is caught:
# (apiGroup, resource) -> verbs.
REQUIRED: dict[tuple[str, str], frozenset[str]] = {
    ("", "services"): frozenset({"get", "list", "watch"}),
    ("", "pods"): frozenset({"list", "watch"}),
    ("", "nodes"): frozenset({"list", "watch"}),
    ("discovery.k8s.io", "endpointslices"): frozenset({"list", "watch"}),
    ("", "services/status"): frozenset({"patch"}),
    ("svcaudit.dev", "serviceaudits"): frozenset({"list", "watch", "create", "patch"}),
    ("", "events"): frozenset({"create", "patch"}),
}

# Leader election (operator/svcaudit/controller/leader.py): one Lease, read, created and
# updated in the operator's own namespace only (a Role, never the ClusterRole).
LEADER_ELECTION: dict[tuple[str, str], frozenset[str]] = {
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
}

Rules = dict[tuple[str, str], frozenset[str]]


def merged(*rules: Rules) -> Rules:
    out: dict[tuple[str, str], frozenset[str]] = {}
    for r in rules:
        for key, verbs in r.items():
            out[key] = out.get(key, frozenset()) | verbs
    return out


def documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(paths):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def deploy_documents() -> list[dict[str, Any]]:
    return documents(DEPLOY.glob("*.yaml"))


def rules_of(docs: Iterable[dict[str, Any]], kind: str = "ClusterRole") -> Rules:
    """Normalised rules of every `kind` object: (group, resource) -> verbs."""
    out: dict[tuple[str, str], set[str]] = {}
    for d in docs:
        if d.get("kind") != kind:
            continue
        for rule in d.get("rules") or []:
            assert not rule.get("resourceNames"), "no per-name rules expected"
            for group in rule.get("apiGroups") or [""]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return {k: frozenset(v) for k, v in out.items()}


_ROW = re.compile(r"^(\S+)\s+\[\]\s+\[\]\s+\[([^\]]*)\]\s*$")


def can_i_list(cluster: Cluster, user: str, namespace: str = "default") -> Rules:
    """`kubectl auth can-i --list --as USER -n NS`, resources only (non-resource URLs
    dropped): the cluster-wide rules plus the namespace's Roles."""
    proc = cluster.run_kubectl("auth", "can-i", "--list", "--as", user, "-n", namespace)
    out: dict[tuple[str, str], set[str]] = {}
    for line in proc.stdout.splitlines()[1:]:
        m = _ROW.match(line)
        if not m:
            continue
        name, verbs = m.group(1), m.group(2).split()
        resource, _, group = name.partition(".")
        if "/" in name and "." in name.split("/")[0]:  # e.g. serviceaudits.svcaudit.dev/status
            base, _, sub = name.partition("/")
            resource, _, group = base.partition(".")
            resource = f"{resource}/{sub}"
        out.setdefault((group, resource), set()).update(verbs)
    return {k: frozenset(v) for k, v in out.items()}


def granted(cluster: Cluster, user: str, baseline_user: str, namespace: str = "default") -> Rules:
    """What `user` may do in `namespace` beyond what a bare ServiceAccount may (self-reviews
    and the like)."""
    mine = can_i_list(cluster, user, namespace)
    base = can_i_list(cluster, baseline_user, namespace)
    out: Rules = {}
    for key, verbs in mine.items():
        extra = verbs - base.get(key, frozenset())
        if extra:
            out[key] = extra
    return out


def sa_kubeconfig(
    cluster: Cluster, path: Path, namespace: str = SA_NAMESPACE, name: str = SA_NAME
) -> Path:
    """A kubeconfig holding a real token of the ServiceAccount (TokenRequest API): the very
    credentials the operator's pod gets, not impersonation."""
    admin = json.loads(
        cluster.run_kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
    )
    token = cluster.run_kubectl(
        "create", "token", name, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}
        ],
    }
    path.write_text(yaml.safe_dump(kc))
    path.chmod(0o600)
    return path


def apply_deploy(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    """deploy/'s objects without a running operator (replicas 0): for the tests that need
    only its RBAC, while nothing writes to the cluster behind their back."""
    return deploy_local.apply_deploy(cluster, replicas=0)
