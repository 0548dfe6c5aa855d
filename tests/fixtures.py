"""Shared fixtures: a real cluster, brought up once per session, and a namespace per test.

`cluster` uses the cluster KUBECONFIG points to when asked to (E2E_CLUSTER=existing): never
by default, since the suite creates namespaces, starts operators and (fault tests) stops
components, which nobody wants on whatever cluster their shell happens to point at. Otherwise
it starts the project's local cluster (`python -m e2e.cluster up`), reusing it when it is
already running, and leaves it running for the next session unless SVCAUDIT_CLUSTER_TEARDOWN=1;
or kind (E2E_CLUSTER=kind: created for the session and deleted afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The local cluster's command line (e2e/cluster/__main__.py); run it with cluster_env().
CLUSTER_CMD = (sys.executable, "-m", "e2e.cluster")


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ (and `extra`) with the repository first on PYTHONPATH: CLUSTER_CMD finds the
    e2e package whatever the current directory (which stays the caller's, so that a relative
    SVCAUDIT_CLUSTER_DIR means the same folder here and there)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **(extra or {}), "PYTHONPATH": path}


def eventually(
    check: Callable[[], Any], timeout: float = 90, what: str = "", interval: float = 0.25
) -> Any:
    """Poll until `check` returns a truthy value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def process_alive(pid: int) -> bool:
    """A process that exists and is not a zombie (PID 1 here may not reap orphans at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass(frozen=True)
class Cluster:
    """How tests reach the cluster under test."""

    kubeconfig: str
    dns_host: str
    dns_port: int
    state_dir: Path | None
    real_node: bool
    kubectl: str
    provider: str

    def run_kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )

    def create_namespace(self, prefix: str) -> str:
        """A new namespace `<prefix>-<random>`, returned once its default ServiceAccount exists
        (pods cannot be created before that)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.run_kubectl("create", "namespace", name)
        eventually(
            lambda: (
                self.run_kubectl(
                    "get", "serviceaccount", "default", "-n", name, check=False
                ).returncode
                == 0
            ),
            # After a control-plane outage test, the controller-manager may first have to
            # win its leader Lease back (up to its 15 s lease duration) and re-list.
            90,
            f"the default ServiceAccount in {name}",
            interval=0.2,
        )
        return name

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster (the library has no type hints)."""
        from kubernetes import config

        new_client: Callable[..., Any] = config.new_client_from_config
        return new_client(config_file=self.kubeconfig)


def _state_dir() -> Path:
    return Path(os.environ.get("SVCAUDIT_CLUSTER_DIR", REPO / ".cluster")).resolve()


def _local_cluster(real_node: bool) -> Cluster:
    args = [*CLUSTER_CMD, "up"]
    if real_node:
        args.append("--real-node")
    proc = subprocess.run(args, capture_output=True, text=True, env=cluster_env())
    if proc.returncode != 0:
        # Once for the whole session (not once per test), with the cluster's own error line,
        # which names the fix (e.g. "run make deps").
        print(f"{proc.stdout}\n{proc.stderr}", file=sys.stderr)
        failed = [line for line in proc.stderr.splitlines() if "FAILED" in line]
        reason = failed[0] if failed else (proc.stderr.strip().splitlines() or ["?"])[-1]
        pytest.exit(f"the local cluster did not start: {reason}", returncode=1)
    info = json.loads((_state_dir() / "cluster.json").read_text())
    versions = info["versions"]
    kubectl = (
        Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))
        / f"kubernetes-{versions['KUBE_VERSION']}"
        / "kubectl"
    )
    return Cluster(
        kubeconfig=info["kubeconfig"],
        dns_host=info["dns"]["host"],
        dns_port=info["dns"]["port"],
        state_dir=_state_dir(),
        real_node=bool(info["realNode"]),
        kubectl=str(kubectl),
        provider="local",
    )


def _existing_cluster() -> Cluster | None:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).exists():
        return None
    kubectl = os.environ.get("KUBECTL", "kubectl")
    probe = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return None
    host, _, port = os.environ.get("SVCAUDIT_DNS_SERVER", "").partition(":")
    return Cluster(
        kubeconfig=kubeconfig,
        dns_host=host,
        dns_port=int(port or 53),
        state_dir=None,
        real_node=os.environ.get("NODE") == "real",
        kubectl=kubectl,
        provider="existing",
    )


def _kind_cluster() -> Iterator[Cluster]:
    """A kind cluster, made by pytest-kind with the kind and kubectl binaries build.sh made
    (it downloads nothing): the public kindest/node where it can be had, else our own node
    image (e2e/kind/node_image.py); the operator image and the tutorial's loaded, and the
    operator deployed from deploy/ as users do (e2e/kind/local.py). Deleted afterwards,
    with the docker network it used, unless SVCAUDIT_KEEP_KIND=1."""
    from pytest_kind import KindCluster

    from e2e import deploy_local
    from e2e.kind import local, node_image
    from e2e.providers import KIND_DNS_PORT

    try:
        deploy_local.build_image(local.OPERATOR_IMAGE)
        bins = node_image.ensure_binaries()
        image, config = local.node_choice()
        local.ensure_network()
    except (deploy_local.DeployError, local.Failed, node_image.BuildError) as exc:
        pytest.exit(f"kind: {exc}", returncode=1)
    path = local.kubeconfig(local.NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = KindCluster(
        local.NAME,
        kubeconfig=path,
        image=image,
        kind_path=bins["kind"],
        kubectl_path=bins["kubectl"],
    )
    kind.create(config_file=config)
    try:
        try:
            local.prepare(local.NAME)
        except local.Failed as exc:
            pytest.exit(f"kind: {exc}", returncode=1)
        yield Cluster(
            kubeconfig=str(path),
            dns_host="127.0.0.1",
            dns_port=KIND_DNS_PORT,
            state_dir=None,
            real_node=True,
            kubectl=str(bins["kubectl"]),
            provider="kind",
        )
    finally:
        if os.environ.get("SVCAUDIT_KEEP_KIND") != "1":
            local.down(local.NAME, network=True)


@pytest.fixture(scope="session")
def operator_image(cluster: Cluster) -> str:
    """The operator image (`make image`: built here, or reused when nothing changed), loaded on
    the local cluster's real node, where deploy/ and the chart run it for real."""
    if not cluster.real_node or cluster.provider != "local":
        pytest.skip("the operator image runs on the local cluster's real node (NODE=real)")
    from e2e import deploy_local

    tag = deploy_local.DEFAULT_TAG
    try:
        deploy_local.build_image(tag)
        deploy_local.load_image(deploy_local.LocalCluster(cluster.state_dir), tag)
    except deploy_local.DeployError as exc:
        pytest.fail(f"the operator image: {exc}", pytrace=False)
    return tag


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    from e2e.providers import select_provider

    provider = select_provider()
    if provider == "kind":
        yield from _kind_cluster()
        return
    if provider == "existing":
        found = _existing_cluster()
        if found is None:
            pytest.fail("E2E_CLUSTER=existing but KUBECONFIG does not reach a cluster")
        yield found
        return
    real_node = os.environ.get("NODE", "") == "real"
    yield _local_cluster(real_node)
    if os.environ.get("SVCAUDIT_CLUSTER_TEARDOWN") == "1":
        subprocess.run([*CLUSTER_CMD, "down"], check=False, env=cluster_env())


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    base = request.node.name.lower().replace("_", "-")
    base = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-")
    name = cluster.create_namespace(base)
    yield name
    cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


# Tests about one provider's own machinery (marker -> the providers it applies to). They are
# deselected elsewhere, with the reason in the report's header: never skipped, never run
# where they mean nothing.
PROVIDER_MARKERS = {
    "local_only": ("local",),  # the local cluster's processes, real node, machine
    "kind_only": ("kind",),  # kind's nodes, their containerd and network
}


def pytest_report_header(config: pytest.Config) -> str:
    from e2e.providers import select_provider

    provider = select_provider()
    left_out = [m for m, providers in PROVIDER_MARKERS.items() if provider not in providers]
    return (
        f"cluster provider: {provider} (E2E_CLUSTER); tests marked {', '.join(left_out)} "
        "are about another provider's own machinery and are deselected"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of another provider's machinery are deselected (see PROVIDER_MARKERS); tests
    marked `lifecycle` stop and restart the cluster: they run after everything else."""
    from e2e.providers import select_provider

    provider = select_provider()
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        applies = all(
            provider in providers
            for marker, providers in PROVIDER_MARKERS.items()
            if item.get_closest_marker(marker)
        )
        (keep if applies else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    keep.sort(key=lambda item: item.get_closest_marker("lifecycle") is not None)
    items[:] = keep
