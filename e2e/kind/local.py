"""A kind cluster for svcaudit: the public kindest/node where it can be had, else (offline, as
on this project's machines) the node image of node_image.py; then the images loaded and the
operator deployed from deploy/, as users do. The e2e fixture (tests/fixtures.py, with
pytest-kind) and this command line share every step.

  python3 -m e2e.kind.local up      # node image (built if missing), `kind create cluster`,
                                    # kube-system Running, the images loaded, deploy/ applied
  python3 -m e2e.kind.local smoke   # simpleservice pod + ClusterIP Service, wget and nslookup
                                    # from a svcaudit.local/shell pod, then removes them
  python3 -m e2e.kind.local down [--network]   # `kind delete cluster`, checks nothing is left
                                    # (--network also removes the docker network "kind")

The docker network "kind" is created IPv4-only beforehand (kind would try IPv6 first); our
engine (e2e/docker/engine.py) gives it a 10.211.x.0/24 range, which its guard keeps on this
machine; pods' traffic leaving the node is masqueraded to the node's address (ptp ipMasq).
The kubeconfig goes to <cache>/kind/<name>.kubeconfig, never ~/.kube/config.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from e2e.cluster.node import images as busybox_images
from e2e.docker.image import has_image
from e2e.kind import node_image

NAME = "svcaudit-e2e"  # kind-config.yaml's name, and the Makefile's KIND_CLUSTER
REPO = Path(__file__).resolve().parent.parent.parent
PUBLIC_CONFIG = REPO / "e2e" / "kind" / "kind-config.yaml"
DNS_NODEPORT = REPO / "e2e" / "kind" / "dns-nodeport.yaml"
DEPLOY = REPO / "deploy"
OPERATOR_IMAGE = "svcaudit:dev"
NETWORK = "kind"
WORKLOAD = """\
apiVersion: v1
kind: Pod
metadata: {name: sise, labels: {app: sise}}
spec:
  containers:
    - {name: sise, image: %(sise)s, imagePullPolicy: Never, ports: [{containerPort: 9876}]}
---
apiVersion: v1
kind: Service
metadata: {name: simpleservice}
spec:
  selector: {app: sise}
  ports: [{port: 80, targetPort: 9876}]
---
apiVersion: v1
kind: Pod
metadata: {name: jump}
spec:
  containers:
    - {name: shell, image: %(shell)s, imagePullPolicy: Never}
"""

started = time.monotonic()


class Failed(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[kind {time.monotonic() - started:6.1f}s] {message}", flush=True)


def kind_bin() -> str:
    return str(node_image.binaries()["kind"])


def kubeconfig(name: str) -> Path:
    return node_image.cache_root() / "kind" / f"{name}.kubeconfig"


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=stdin)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise Failed(f"`{' '.join(argv[:5])}...` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def kubectl(name: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    exe = str(node_image.binaries()["kubectl"])
    return sh(exe, f"--kubeconfig={kubeconfig(name)}", *args, check=check, stdin=stdin)


def ensure_network() -> None:
    out = sh("docker", "network", "inspect", NETWORK, check=False)
    if out.strip() and out.strip() != "[]":
        info = json.loads(out)[0]
        if info.get("EnableIPv6"):
            say(f"note: docker network {NETWORK} has IPv6 enabled (not made by us)")
        return
    sh(
        "docker",
        "network",
        "create",
        "-d=bridge",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=true",
        "-o",
        "com.docker.network.driver.mtu=1500",
        NETWORK,
    )
    subnet = sh(
        "docker", "network", "inspect", NETWORK, "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"
    ).strip()
    say(f"docker network {NETWORK} created, IPv4 only: {subnet}")


def wait_kube_system(name: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = kubectl(name, "get", "pods", "-n", "kube-system", "-o", "json", check=False)
        try:
            pods = json.loads(out)["items"]
        except (ValueError, KeyError):
            pods = []
        waiting = []
        for pod in pods:
            ready = all(c.get("ready") for c in pod["status"].get("containerStatuses", []) or [{}])
            if pod["status"].get("phase") != "Running" or not ready:
                waiting.append(pod["metadata"]["name"])
        if pods and not waiting and any("coredns" in p["metadata"]["name"] for p in pods):
            say(f"kube-system: all {len(pods)} pods Running and ready")
            return
        last = ", ".join(waiting) or "no pods yet"
        time.sleep(2)
    raise Failed(f"kube-system not ready after {timeout:.0f}s: {last}")


def public_node_image() -> str:
    """The kindest/node kind-config.yaml pins (by digest)."""
    for line in PUBLIC_CONFIG.read_text().splitlines():
        if line.strip().startswith("image:"):
            return line.split("image:", 1)[1].strip()
    raise Failed(f"{PUBLIC_CONFIG} names no node image")


def node_choice() -> tuple[str | None, Path]:
    """(the --image to pass, the config): the public node image where the engine has it or can
    pull it (kind-config.yaml: three nodes, as users run it), else ours (built if missing;
    kind-config-local.yaml: one node, our images named honestly)."""
    public = public_node_image()
    if (
        has_image(public)
        or subprocess.run(["docker", "pull", public], capture_output=True).returncode == 0
    ):
        say(f"node image: {public} (public)")
        return None, PUBLIC_CONFIG
    say(f"node image: {public.split('@')[0]} cannot be pulled here; building ours")
    t = time.monotonic()
    image = node_image.build()
    say(f"node image {image} ({time.monotonic() - t:.1f}s)")
    return image, node_image.KIND_CONFIG


def load_images(name: str) -> None:
    """The operator image and the tutorial's (no registry involved)."""
    t = time.monotonic()
    sh(kind_bin(), "load", "docker-image", OPERATOR_IMAGE, "--name", name)
    folder = busybox_images.build()
    for ref, tar in busybox_images.tarballs(folder).items():
        if ref == busybox_images.PAUSE_IMAGE:
            continue  # the sandbox image: preloaded in our node image, unused by kindest/node
        sh(kind_bin(), "load", "image-archive", str(tar), "--name", name)
    say(f"images loaded ({time.monotonic() - t:.1f}s): {OPERATOR_IMAGE} and the tutorial's")


def deploy_operator(name: str) -> None:
    """`kubectl apply -f deploy/`, exactly as users do, then the rollout; and the NodePort
    Service that publishes cluster DNS to the host (the tests ask it directly)."""
    t = time.monotonic()
    kubectl(name, "apply", "-f", str(DEPLOY))
    kubectl(name, "apply", "-f", str(DNS_NODEPORT))
    kubectl(
        name, "rollout", "status", "deployment/svcaudit", "-n", "svcaudit-system", "--timeout=180s"
    )
    say(f"operator deployed from deploy/ and rolled out ({time.monotonic() - t:.1f}s)")


def prepare(name: str) -> None:
    """Everything after `kind create cluster`."""
    wait_kube_system(name)
    load_images(name)
    deploy_operator(name)


def up(name: str) -> None:
    from e2e.docker import image as operator_image

    if operator_image.main(["--tag", OPERATOR_IMAGE]) != 0:
        raise Failed(f"the operator image {OPERATOR_IMAGE} could not be built")
    image, config = node_choice()
    ensure_network()
    kubeconfig(name).parent.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    argv = [kind_bin(), "create", "cluster", "--name", name, "--config", str(config)]
    argv += ["--kubeconfig", str(kubeconfig(name))] + (["--image", image] if image else [])
    proc = subprocess.run(argv)
    if proc.returncode != 0:
        raise Failed(f"kind create cluster exited {proc.returncode}")
    say(f"kind create cluster: {time.monotonic() - t:.1f}s")
    prepare(name)
    say(f"up: kubectl --kubeconfig {kubeconfig(name)} get serviceaudits -A")


def smoke(name: str) -> None:
    manifest = WORKLOAD % {
        "sise": busybox_images.SIMPLESERVICE_IMAGE,
        "shell": busybox_images.SHELL_IMAGE,
    }
    kubectl(name, "apply", "-f", "-", stdin=manifest)
    try:
        kubectl(name, "wait", "--for=condition=Ready", "pod/sise", "pod/jump", "--timeout=90s")
        ip = kubectl(name, "get", "svc", "simpleservice", "-o", "jsonpath={.spec.clusterIP}")
        for _ in range(30):  # the EndpointSlice and kube-proxy's rules follow the pod
            body = kubectl(
                name,
                "exec",
                "jump",
                "--",
                "timeout",
                "5",
                "wget",
                "-qO-",
                "http://simpleservice:80/info",
                check=False,
            )
            if body.strip():
                break
            time.sleep(1)
        if '"version"' not in body:
            raise Failed(f"wget http://simpleservice:80/info from the shell pod: {body!r}")
        say(f"wget http://simpleservice:80/info -> {body.strip()}")
        dns = kubectl(
            name, "exec", "jump", "--", "nslookup", "simpleservice.default.svc.cluster.local"
        )
        if ip not in dns:
            raise Failed(f"nslookup simpleservice: {ip} not in:\n{dns}")
        say(f"nslookup simpleservice.default.svc.cluster.local -> {ip}")
    finally:
        kubectl(name, "delete", "-f", "-", "--wait=false", check=False, stdin=manifest)


def down(name: str, network: bool) -> None:
    sh(kind_bin(), "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig(name)))
    kubeconfig(name).unlink(missing_ok=True)
    left = sh("docker", "ps", "-aq", "--filter", f"label=io.x-k8s.kind.cluster={name}").split()
    if left:
        raise Failed(f"containers of {name} left: {left}")
    if network:
        attached = sh(
            "docker", "network", "inspect", NETWORK, "-f", "{{len .Containers}}", check=False
        ).strip()
        if attached == "0":
            sh("docker", "network", "rm", NETWORK)
            say(f"docker network {NETWORK} removed")
        elif attached:
            say(f"docker network {NETWORK} kept: {attached} containers still attached")
    say(f"cluster {name} deleted; no container of it left")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "smoke", "down"))
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--network", action="store_true", help="down: remove network kind too")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.name)
        elif args.command == "smoke":
            smoke(args.name)
        else:
            down(args.name, args.network)
    except (Failed, node_image.BuildError) as exc:
        say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
