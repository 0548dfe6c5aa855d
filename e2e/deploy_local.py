"""`make deploy-local`: the operator image running for real on the local cluster's real node.

1. the image: `make image` (e2e/docker/image.py), a no-op when nothing changed;
2. loaded into the real node's containerd (namespace k8s.io), as `kind load` would: no
   registry involved, so `imagePullPolicy: IfNotPresent` finds it;
3. applied as users apply it: deploy/ verbatim, except that the Deployment gets
   `nodeSelector: {type: real}` (kwok nodes run no process; deploy/ itself stays unpinned),
   or with `--helm`, `helm install` of the chart with that node selector;
4. waited for: both replicas rolled out and ready.

`--delete` removes what 3. made (the CRD stays, as the chart's policy is: deleting it would
delete every ServiceAudit). Usage, from the repository's root, with the local cluster up
(NODE=real make cluster-up):
  .venv/bin/python -m e2e.deploy_local [--helm] [--delete]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from e2e.docker import engine
from e2e.docker import image as image_builder

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CHART = REPO / "helm" / "svcaudit"
NAMESPACE = "svcaudit-system"
DEPLOYMENT = "svcaudit"
HELM_RELEASE = "svcaudit"
REAL_NODE = {"type": "real"}
DEFAULT_TAG = "svcaudit:dev"  # the image deploy/ names
OPERATOR_LABELS = "app.kubernetes.io/name=svcaudit,app.kubernetes.io/component=operator"


class DeployError(RuntimeError):
    """A step failed; the message names it."""


def say(message: str) -> None:
    print(f"[deploy-local] {message}", flush=True)


class LocalCluster:
    """The running local cluster, from its state folder (`python -m e2e.cluster up`)."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.dir = (
            state_dir or Path(os.environ.get("SVCAUDIT_CLUSTER_DIR", REPO / ".cluster")).resolve()
        )
        info_path = self.dir / "cluster.json"
        if not info_path.exists():
            raise DeployError(f"no local cluster in {self.dir}: run `NODE=real make cluster-up`")
        info = json.loads(info_path.read_text())
        if not info.get("realNode"):
            raise DeployError(
                "the local cluster has no real node (pods on kwok nodes run nothing): "
                "`make cluster-down && NODE=real make cluster-up`"
            )
        self.kubeconfig = info["kubeconfig"]
        cache = Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))
        versions = info["versions"]
        self.kubectl = str(cache / f"kubernetes-{versions['KUBE_VERSION']}" / "kubectl")
        self.helm = str(cache / f"helm-{versions['HELM_VERSION']}" / "helm")
        self.containerd_socket = self.dir / "node" / "containerd.sock"

    def run_kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise DeployError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
        return proc


class Kubectl(Protocol):
    """A cluster that runs kubectl: LocalCluster here, tests.fixtures.Cluster in the tests."""

    def run_kubectl(
        self, *args: str, input: str | None = ..., check: bool = ..., timeout: float = ...
    ) -> subprocess.CompletedProcess[str]: ...


def build_image(tag: str) -> None:
    if image_builder.main(["--tag", tag]) != 0:
        raise DeployError(f"the image {tag} could not be built (see the line above)")


def load_image(cluster: LocalCluster, tag: str) -> None:
    """`docker save` into the real node's containerd (what `kind load docker-image` does),
    skipped when containerd already holds this very image (same config digest)."""
    started = time.monotonic()
    wanted = image_id(tag)
    ctr = ["ctr", "--address", str(cluster.containerd_socket), "--namespace", "k8s.io"]
    name = tag if "/" in tag.split(":")[0] else f"docker.io/library/{tag}"
    if config_digest(ctr, name) == wanted:
        say(f"{tag} already on the real node ({wanted[:19]})")
        return
    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [*ctr, "images", "import", "-"], stdin=save.stdout, capture_output=True, text=True
    )
    save.wait()
    if save.returncode != 0 or imported.returncode != 0:
        raise DeployError(f"loading {tag} into the real node failed: {imported.stderr.strip()}")
    if config_digest(ctr, name) != wanted:
        raise DeployError(f"{name} is not in the real node's containerd after the import")
    say(f"{tag} loaded on the real node in {time.monotonic() - started:.1f}s")


def image_id(tag: str) -> str:
    """Docker's ID of the image (its config digest), as the kubelet reports it as imageID."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise DeployError(f"no image {tag} in the Docker engine: run `make image`")
    return proc.stdout.strip()


def config_digest(ctr: list[str], name: str) -> str | None:
    """The config digest (Docker's image ID) of `name` in containerd, None if absent."""
    listed = subprocess.run(
        [*ctr, "images", "ls", f"name=={name}"], capture_output=True, text=True, check=False
    )
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    if listed.returncode != 0 or not rows:
        return None
    digest = rows[0][2]
    for _ in range(2):  # an index names its manifests; a manifest names its config
        got = subprocess.run(
            [*ctr, "content", "get", digest], capture_output=True, text=True, check=False
        )
        if got.returncode != 0:
            return None
        doc = json.loads(got.stdout)
        if "config" in doc:
            return str(doc["config"]["digest"])
        digest = doc["manifests"][0]["digest"]
    return None


def deploy_documents(node_selector: dict[str, str] | None = REAL_NODE) -> list[dict[str, Any]]:
    """deploy/ as users apply it, with the Deployment's pods pinned by `node_selector`."""
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "Deployment" and node_selector:
            doc["spec"]["template"]["spec"]["nodeSelector"] = dict(node_selector)
    return docs


def apply_deploy(
    cluster: Kubectl,
    node_selector: dict[str, str] | None = REAL_NODE,
    replicas: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply` of deploy/, the Deployment pinned (its pods are never created
    unpinned, so none lands where it should not, even for a moment)."""
    docs = deploy_documents(node_selector)
    if replicas is not None:
        for doc in docs:
            if doc["kind"] == "Deployment":
                doc["spec"]["replicas"] = replicas
    body = yaml.safe_dump_all(docs, sort_keys=False)
    proc = cluster.run_kubectl("apply", "-f", "-", input=body, timeout=120)
    cluster.run_kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/serviceaudits.svcaudit.dev"
    )
    return proc


def wait_rolled_out(cluster: Kubectl, namespace: str, deployment: str, timeout: int = 180) -> None:
    proc = cluster.run_kubectl(
        "rollout",
        "status",
        f"deployment/{deployment}",
        "-n",
        namespace,
        f"--timeout={timeout}s",
        check=False,
        timeout=timeout + 30,
    )
    if proc.returncode != 0:
        pods = cluster.run_kubectl(
            "get", "pods", "-n", namespace, "-l", OPERATOR_LABELS, "-o", "wide", check=False
        )
        raise DeployError(
            f"deployment/{deployment} did not roll out: {proc.stderr.strip()}\n{pods.stdout}"
        )


def helm_values(tag: str) -> list[str]:
    """The chart's values for this image on the real node."""
    repository, _, version = tag.rpartition(":")
    return [
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={version}",
        "--set",
        "nodeSelector.type=real",
    ]


def deploy(cluster: LocalCluster, tag: str, helm: bool) -> None:
    build_image(tag)
    load_image(cluster, tag)
    started = time.monotonic()
    if helm:
        subprocess.run(
            [
                cluster.helm,
                f"--kubeconfig={cluster.kubeconfig}",
                "upgrade",
                "--install",
                HELM_RELEASE,
                str(CHART),
                "-n",
                NAMESPACE,
                "--create-namespace",
                *helm_values(tag),
                "--wait",
                "--timeout",
                "180s",
            ],
            check=True,
        )
        deployment = f"{HELM_RELEASE}-svcaudit" if HELM_RELEASE != "svcaudit" else "svcaudit"
    else:
        if tag != DEFAULT_TAG:
            raise DeployError("deploy/ names svcaudit:dev: use --helm for another tag")
        print(apply_deploy(cluster).stdout, end="")
        deployment = DEPLOYMENT
    wait_rolled_out(cluster, NAMESPACE, deployment)
    pods = cluster.run_kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", OPERATOR_LABELS, "-o", "wide"
    ).stdout
    say(f"rolled out in {time.monotonic() - started:.1f}s:\n{pods}")


def delete(cluster: LocalCluster, helm: bool) -> None:
    if helm:
        subprocess.run(
            [
                cluster.helm,
                f"--kubeconfig={cluster.kubeconfig}",
                "uninstall",
                HELM_RELEASE,
                "-n",
                NAMESPACE,
                "--wait",
            ],
            check=False,
        )
        return
    docs = [d for d in deploy_documents() if d["kind"] != "CustomResourceDefinition"]
    cluster.run_kubectl(
        "delete", "--ignore-not-found", "--wait", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    say("deleted deploy/'s objects (the CRD and the ServiceAudits stay)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=os.environ.get("IMAGE", DEFAULT_TAG))
    parser.add_argument("--helm", action="store_true", help="helm install the chart instead")
    parser.add_argument("--delete", action="store_true", help="remove what deploy-local made")
    args = parser.parse_args(argv)
    try:
        cluster = LocalCluster()
        if args.delete:
            delete(cluster, args.helm)
        else:
            deploy(cluster, args.tag, args.helm)
    except (DeployError, engine.EngineError, subprocess.CalledProcessError) as exc:
        print(f"[deploy-local] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
