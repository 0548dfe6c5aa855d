"""A real node for the local cluster: containerd + runc + CNI bridge + kubelet + kube-proxy.

`up(state)` is called by e2e.cluster.cluster once CoreDNS runs, `down(state)` before the
control plane stops. Everything this module starts or creates is recorded so that `down`
removes exactly that, and compares the machine with a snapshot taken before `up` touched
anything.

Addresses (none can leave the machine):
- node IP = the apiserver's advertise address (10.201.0.1, on cluster.py's local svcaudit0
  interface). The kubelet listens there, kube-proxy accepts NodePorts only there, and CoreDNS
  binds port 53 there (DNS_BIND_ADDRESS): pods reach it through their gateway.
- pod CIDR = the /24 the controller-manager allocates to `realnode` out of 10.244.0.0/16, on
  the bridge svcaudit-br0. Pods get routes to the pod, service and 10.201.0.0/24 ranges and NO
  default route, so they cannot even address the outside world; a mangle/POSTROUTING guard
  drops anything from the pod CIDR, or DNAT-ed from a ClusterIP, leaving by another interface.
- cluster DNS = Service kube-system/kube-dns at 10.96.0.10 (selectorless, made by cluster.py),
  with a hand-written EndpointSlice listing both CoreDNS replicas at port 53: DNS_BIND_ADDRESS
  and cluster.DNS_REPLICA_ADDRESSES[1], both on svcaudit0.

Standard library only (`python -m e2e.cluster` runs before any virtualenv exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.cluster import cluster
from e2e.cluster.node import images

NODE_NAME = "realnode"
NODE_IP = cluster.ADVERTISE_IP
DNS_BIND_ADDRESS = NODE_IP
CLUSTER_DNS_IP = cluster.CLUSTER_DNS_IP
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "svcaudit-br0"
CNI_NETWORK = "svcaudit"
GUARD_CHAIN = "SVCAUDIT-GUARD"
CNI_BIN = Path("/usr/lib/cni")
NODE_LABELS = {"type": "real", "svcaudit.io/node": "real"}
# Chains whose names we (or kube-proxy, the kubelet, CNI portmap) may create: down removes any
# of these that the baseline did not have.
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "SVCAUDIT-")
# Kernel settings the node changes (we, the CNI bridge plugin or the kubelet): restored by down.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Host paths the node's software may create outside the state folder.
HOST_PATHS = (
    "/run/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/var/run/netns",
    "/var/lib/kubelet",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
)
OUR_EXES = ("containerd", "containerd-shim-runc-v2", "runc", "kubelet", "kube-proxy")
# containerd must never reach a registry (a pod with an image we did not import would make it
# resolve and dial the registry's host): every pull goes through a "proxy" on a closed local
# port, so it fails at once and no name is even looked up (the proxy would resolve it).
NO_PULL_PROXY = "http://127.0.0.1:9"
NO_PULL_ENV = {
    "HTTP_PROXY": NO_PULL_PROXY,
    "HTTPS_PROXY": NO_PULL_PROXY,
    "http_proxy": NO_PULL_PROXY,
    "https_proxy": NO_PULL_PROXY,
    "NO_PROXY": "",
    "no_proxy": "",
    "ALL_PROXY": "",
    "all_proxy": "",
}
# A Docker engine may run beside the node (e2e/docker/engine.py: `make image`, kind). What it
# makes is its own, never this node's: its daemon's containerd and shims, its bridges and their
# veths, its mounts, and the engine's guard chain (engine.GUARD_CHAIN) are left out of the
# snapshots, so `down` neither reports nor removes them.
DOCKER_MARKERS = (b"/var/run/docker/", b"/run/docker/", b"\0moby\0")
DOCKER_MOUNTS = ("/var/lib/docker", "/run/docker", "/var/run/docker")
DOCKER_GUARD_CHAIN = "SVCAUDIT-DOCKER"
DOCKER_ROUTE = re.compile(r" dev (docker0|br-[0-9a-f]+) ")
KERNEL_LINK_ROUTE = re.compile(r"(local fe80::|fe80::/64 |multicast ff00::/8 )")
COMPONENTS = ("containerd", "kubelet", "kube-proxy")  # start order; stopped in reverse


def say(message: str) -> None:
    print(f"[realnode] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Paths


class Paths:
    """Every file and folder of the node, under <state>/node."""

    def __init__(self, state: cluster.State) -> None:
        self.root = state.dir / "node"
        self.containerd = self.root / "containerd"
        self.containerd_config = self.root / "containerd.toml"
        self.socket = self.root / "containerd.sock"
        self.cni_conf = self.root / "cni"
        self.cni_ipam = self.root / "cni-ipam"
        self.cni_cache = self.root / "cni-cache"
        self.kubelet = self.root / "kubelet"
        self.kubelet_config = self.root / "kubelet.json"
        self.pod_logs = self.root / "pod-logs"
        self.resolv_conf = self.root / "resolv.conf"
        self.proxy_config = self.root / "kube-proxy.json"
        self.baseline = self.root / "baseline.json"
        # The kubelet's cgroup root (cgroupRoot): one per state folder, so that a second node
        # on this machine (another checkout, in another network namespace) never sees, and
        # never "cleans up", this node's pod cgroups - cgroups are not per network namespace.
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]
        self.cgroup_name = f"svcaudit-{digest}"
        self.runtime_dirs = (
            self.containerd,
            self.kubelet,
            self.cni_conf,
            self.cni_ipam,
            self.cni_cache,
            self.pod_logs,
        )


# ---------------------------------------------------------------------------------------------
# Small helpers


def run(
    *argv: str | Path, check: bool = True, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        input=input,
    )


def ctr(paths: Paths, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ctr", "--address", paths.socket, "--namespace", "k8s.io", *args, check=check)


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    try:
        Path("/proc/sys", name).write_text(value + "\n")
    except OSError as exc:
        say(f"could not set {name}={value}: {exc}")


def mount_points() -> list[str]:
    """Mount points of this mount namespace (octal escapes decoded)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.append(field.encode().decode("unicode_escape"))
    return points


def cgroup_mounts() -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[0] in ("cgroup", "cgroup2"):
            mounts.append(pre.split()[4])
    return mounts


def node_processes(paths: Paths) -> tuple[list[str], list[str]]:
    """(`pid exe` of this node's processes: its daemons, shims and runc, found by our state
    folder in their command line, and whatever lives in its pods' cgroups; `pid exe` of node
    software that belongs to some other node on this machine)."""
    ours, foreign = [], []
    marker, cgroup = str(paths.root).encode(), f"/{paths.cgroup_name}/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.readlink(proc / "exe")
            cmdline = (proc / "cmdline").read_bytes()
            in_pod = cgroup in (proc / "cgroup").read_text()
        except OSError:
            continue
        node_software = os.path.basename(exe.removesuffix(" (deleted)")) in OUR_EXES
        if node_software and any(m in cmdline for m in DOCKER_MARKERS):
            continue  # the Docker engine's containerd, shims and runc
        if in_pod or (node_software and marker in cmdline):
            ours.append(f"{proc.name} {exe}")
        elif node_software:
            foreign.append(f"{proc.name} {exe}")
    return sorted(ours), sorted(foreign)


def iptables_state(family: str) -> list[str]:
    """Custom chains and every rule, table by table, without counters."""
    save = "iptables-save" if family == "4" else "ip6tables-save"
    try:
        out = run(save, check=False).stdout
    except FileNotFoundError:
        return []
    lines, table = [], ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif DOCKER_GUARD_CHAIN in line:
            continue
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if line.split()[1] == "-":  # user-defined chain (built-ins have a policy)
                lines.append(f"v{family} {table} chain {chain}")
        elif line.startswith("-A "):
            lines.append(f"v{family} {table} {line}")
    return sorted(lines)


def snapshot(paths: Paths) -> dict[str, Any]:
    """What the node could leave behind on this machine, in comparable form."""
    links = run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    routes = []
    for family in ("-4", "-6"):
        for line in run(
            "ip", family, "route", "show", "table", "all", check=False
        ).stdout.splitlines():
            line = re.sub(r" (linkdown|expires -?\d+sec)", "", line)
            if KERNEL_LINK_ROUTE.match(line) or DOCKER_ROUTE.search(line):
                continue  # made and removed by the kernel with each link (links are compared)
            routes.append(f"{family} {line.strip()}")
    netns = sorted(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else []
    return {
        "processes": node_processes(paths)[0],
        "netns": netns,
        "links": sorted(
            line.split(":")[1].strip().split("@")[0] for line in links if not docker_link(line)
        ),
        "routes": sorted(routes),
        "iptables": iptables_state("4") + iptables_state("6"),
        "mounts": sorted(m for m in mount_points() if not docker_mount(m)),
        "cgroups": sorted(
            str(Path(m) / paths.cgroup_name)
            for m in cgroup_mounts()
            if (Path(m) / paths.cgroup_name).exists()
        ),
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
        "host_paths": sorted(p for p in HOST_PATHS if os.path.lexists(p)),
    }


def docker_mount(point: str) -> bool:
    """A mount point of the Docker engine's: its data root (dockerd mounts it on itself), its
    layers, its containers' namespaces."""
    return any(point == m or point.startswith(m + "/") for m in DOCKER_MOUNTS)


def docker_link(line: str) -> bool:
    """An `ip -o link` line of the Docker engine's: its bridges and the veths they hold."""
    name = line.split(":")[1].strip().split("@")[0]
    return (
        name == "docker0"
        or name.startswith("br-")
        or " master docker0 " in line
        or (" master br-" in line)
    )


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """What `after` has (or changed) that `before` did not: the leftovers."""
    diff: dict[str, list[str]] = {}
    for key, now in after.items():
        then = before.get(key)
        if isinstance(now, dict):
            changed = [
                f"{k}: {then.get(k) if then else None} -> {v}"
                for k, v in now.items()
                if (then or {}).get(k) != v
            ]
        else:
            changed = sorted(set(now) - set(then or []))
        if changed:
            diff[key] = changed
    return diff


# ---------------------------------------------------------------------------------------------
# up


def check_prerequisites() -> None:
    missing = [
        tool
        for tool in (
            "containerd",
            "ctr",
            "runc",
            "containerd-shim-runc-v2",
            "iptables",
            "iptables-save",
            "ip",
            "mount",
            "umount",
        )
        if shutil.which(tool) is None
    ]
    missing += [
        str(CNI_BIN / p)
        for p in ("bridge", "host-local", "portmap", "loopback")
        if not (CNI_BIN / p).exists()
    ]
    if not images.BUSYBOX.exists():
        missing.append(str(images.BUSYBOX))
    for name in ("kubelet", "kube-proxy"):
        if not cluster.binary("kubernetes", name).exists():
            missing.append(str(cluster.binary("kubernetes", name)))
    if missing:
        pkgs = Path(__file__).with_name("apt-packages.txt").read_text().split()
        raise cluster.ClusterError(
            f"real node prerequisites missing: {', '.join(missing)}\n"
            f"install them with: apt-get install {' '.join(pkgs)} (or make deps), and "
            "e2e/cluster/build.sh for the Kubernetes binaries"
        )
    if os.geteuid() != 0:
        raise cluster.ClusterError("the real node needs root (network, mounts, cgroups)")


def host_network_up(paths: Paths) -> None:
    """Kernel settings for bridged pods behind kube-proxy, and the egress guard."""
    if not Path("/proc/sys/net/bridge").exists():
        run("modprobe", "br_netfilter", check=False)
    for name, value in (
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/bridge/bridge-nf-call-ip6tables", "1"),
    ):
        write_sysctl(name, value)
    # The guard sits in mangle/POSTROUTING: every packet leaving by an interface (forwarded or
    # DNAT-ed from this host) passes it, after DNAT and before any SNAT, and kube-proxy never
    # adds ACCEPT rules there that could bypass it.
    if run("iptables", "-t", "mangle", "-n", "-L", GUARD_CHAIN, check=False).returncode != 0:
        run("iptables", "-t", "mangle", "-N", GUARD_CHAIN)
    run("iptables", "-t", "mangle", "-F", GUARD_CHAIN)
    rules = [
        ["-o", "lo", "-j", "RETURN"],
        ["-o", BRIDGE, "-j", "RETURN"],
        [
            "-s",
            cluster.CLUSTER_CIDR,
            "-m",
            "comment",
            "--comment",
            "svcaudit: pods stay local",
            "-j",
            "DROP",
        ],
        ["-d", cluster.CLUSTER_CIDR, "-j", "DROP"],
        ["-d", cluster.SERVICE_CIDR, "-j", "DROP"],
        [
            "-m",
            "conntrack",
            "--ctorigdst",
            cluster.SERVICE_CIDR,
            "-m",
            "comment",
            "--comment",
            "svcaudit: service endpoints stay local",
            "-j",
            "DROP",
        ],
    ]
    for rule in rules:
        run("iptables", "-t", "mangle", "-A", GUARD_CHAIN, *rule)
    if (
        run(
            "iptables", "-t", "mangle", "-C", "POSTROUTING", "-j", GUARD_CHAIN, check=False
        ).returncode
        != 0
    ):
        run("iptables", "-t", "mangle", "-I", "POSTROUTING", "1", "-j", GUARD_CHAIN)


def containerd_config(paths: Paths) -> str:
    c = paths.containerd
    return f"""# Written by e2e/cluster/node/realnode.py: containerd for the svcaudit real node.
version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (the sandbox's -998)
  # and would fail every pod; clamp scores to containerd's own instead.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{c / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{paths.cni_conf}"
    max_conf_num = 1
"""


def start_containerd(state: cluster.State, paths: Paths) -> None:
    for folder in (paths.containerd, paths.cni_conf):
        folder.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(paths))
    cluster.start_process(
        state,
        "containerd",
        [
            shutil.which("containerd") or "containerd",
            "--config",
            str(paths.containerd_config),
            "--log-level",
            "warn",
        ],
        env=NO_PULL_ENV,
    )
    cluster.wait_for(
        state,
        "containerd",
        lambda: paths.socket.exists() and ctr(paths, "version").returncode == 0,
        30,
        "containerd's socket",
    )


def import_images(paths: Paths) -> None:
    started = time.monotonic()
    folder = images.build()
    wanted = images.tarballs(folder)
    for tarball in wanted.values():
        ctr(paths, "images", "import", str(tarball))
    present = set(ctr(paths, "images", "ls", "-q").stdout.split())
    if set(wanted) - present:
        raise cluster.ClusterError(f"images {sorted(set(wanted) - present)} missing after import")
    say(f"images ready in {time.monotonic() - started:.1f}s ({folder})")


def kubelet_config(state: cluster.State, paths: Paths) -> dict[str, Any]:
    pki = state.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet-realnode.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-realnode.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{paths.cgroup_name}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        # Images can never be pulled again here: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "1Mi",
        "maxPods": 110,
    }


def kubelet_kubeconfig(state: cluster.State, paths: Paths) -> Path:
    """The kubelet's identity system:node:realnode (group system:nodes) as a client
    certificate: it works even against an apiserver started before the node was wanted,
    whose token file predates the node's token."""
    pki = state.pki
    if not (pki / "kubelet-realnode-client.crt").exists():
        cluster.sign_cert(
            pki,
            "kubelet-realnode-client",
            f"/O=system:nodes/CN=system:node:{NODE_NAME}",
            "clientAuth",
            None,
        )
    path = paths.root / "kubelet.kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "svcaudit-local",
                        "cluster": {
                            "server": f"https://127.0.0.1:{cluster.PORTS['apiserver']}",
                            "certificate-authority": str(pki / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": f"system:node:{NODE_NAME}",
                        "user": {
                            "client-certificate": str(pki / "kubelet-realnode-client.crt"),
                            "client-key": str(pki / "kubelet-realnode-client.key"),
                        },
                    }
                ],
                "contexts": [
                    {
                        "name": "svcaudit-local",
                        "context": {
                            "cluster": "svcaudit-local",
                            "user": f"system:node:{NODE_NAME}",
                        },
                    }
                ],
                "current-context": "svcaudit-local",
            },
            indent=2,
        )
    )
    path.chmod(0o600)
    return path


def start_kubelet(state: cluster.State, paths: Paths) -> None:
    if not (state.pki / "kubelet-realnode.crt").exists():
        cluster.sign_cert(
            state.pki,
            "kubelet-realnode",
            f"/O=system:nodes/CN=system:node:{NODE_NAME}",
            "serverAuth",
            f"DNS:{NODE_NAME},IP:{NODE_IP},IP:127.0.0.1",
        )
    # Pods with dnsPolicy Default (and the host search list of ClusterFirst pods) come from this
    # file: it names only the cluster DNS on this machine, never an outside resolver.
    paths.resolv_conf.write_text(
        f"# svcaudit real node: no resolver outside this machine\nnameserver {DNS_BIND_ADDRESS}\n"
    )
    for folder in (paths.kubelet, paths.pod_logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths.kubelet_config.write_text(json.dumps(kubelet_config(state, paths), indent=2))
    kubeconfig = kubelet_kubeconfig(state, paths)
    labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    cluster.start_process(
        state,
        "kubelet",
        [
            str(cluster.binary("kubernetes", "kubelet")),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={labels}",
            f"--root-dir={paths.kubelet}",
            "--v=1",
        ],
    )


def node_pod_cidr(state: cluster.State) -> str:
    node = cluster.api(state, "GET", f"/api/v1/nodes/{NODE_NAME}")
    return str(node.get("spec", {}).get("podCIDR", ""))


def write_cni_config(paths: Paths, pod_cidr: str) -> None:
    """The pod network: bridge + host-local on the node's podCIDR, portmap for hostPorts.

    No default route in pods: only the pod, service and node ranges are routed, via the bridge.
    """
    prefix = pod_cidr.split("/")[0].rsplit(".", 1)[0]
    conflist = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_ipam),
                    "ranges": [[{"subnet": pod_cidr, "gateway": f"{prefix}.1"}]],
                    "routes": [
                        {"dst": cluster.CLUSTER_CIDR},
                        {"dst": cluster.SERVICE_CIDR},
                        {"dst": f"{NODE_IP.rsplit('.', 1)[0]}.0/24"},
                    ],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    paths.cni_conf.mkdir(parents=True, exist_ok=True)
    tmp = paths.cni_conf / ".10-svcaudit.conflist.tmp"
    tmp.write_text(json.dumps(conflist, indent=2))
    tmp.rename(paths.cni_conf / "10-svcaudit.conflist")


def start_kube_proxy(state: cluster.State, paths: Paths) -> None:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {
            "kubeconfig": str(state.dir / "kubeconfigs" / "kube-proxy.kubeconfig")
        },
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "clusterCIDR": cluster.CLUSTER_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # NodePorts answer on the node IP only (no localhost NodePorts: no route_localnet).
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {
            "masqueradeAll": False,
            "syncPeriod": "30s",
            "minSyncPeriod": "1s",
            "localhostNodePorts": False,
        },
        # 0 = leave the machine's conntrack settings alone
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    text = json.dumps(config, indent=2)
    # kube-proxy exits as soon as its configuration file is written to (even with the same
    # content): a running one's file is left alone, so an `up` that completes a running
    # cluster (a component added) does not kill it.
    if not cluster.running_pid(state, "kube-proxy"):
        paths.proxy_config.write_text(text)
    cluster.start_process(
        state,
        "kube-proxy",
        [
            str(cluster.binary("kubernetes", "kube-proxy")),
            f"--config={paths.proxy_config}",
            "--v=1",
        ],
    )


def node_ready(state: cluster.State, since: float = 0.0) -> bool:
    """Ready, as last reported by a kubelet heartbeat at or after `since` (epoch seconds):
    a restarted node's old Ready condition does not count."""
    node = cluster.api(state, "GET", f"/api/v1/nodes/{NODE_NAME}")
    conditions = node.get("status", {}).get("conditions", [])
    for c in conditions:
        if c.get("type") == "Ready" and c.get("status") == "True":
            beat = datetime.strptime(c["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ")
            return beat.replace(tzinfo=UTC).timestamp() >= int(since)
    return False


def running(state: cluster.State) -> bool:
    """Whether every process of the node is alive (cluster.py's `up`: is it needed?)."""
    return all(cluster.running_pid(state, c) for c in COMPONENTS)


def check_cluster_dns() -> None:
    """CoreDNS must already listen on DNS_BIND_ADDRESS:53 (cluster.py's coredns_binds)."""
    try:
        socket.create_connection((DNS_BIND_ADDRESS, 53), timeout=2).close()
    except OSError as exc:
        raise cluster.ClusterError(
            f"CoreDNS does not answer on {DNS_BIND_ADDRESS}:53 ({exc}): it was started without "
            "the real node; restart the cluster: python -m e2e.cluster down && "
            "python -m e2e.cluster up --real-node"
        ) from exc


def up(state: cluster.State) -> None:
    """Start (or complete) the real node; idempotent."""
    started = time.monotonic()
    check_prerequisites()
    check_cluster_dns()
    paths = Paths(state)
    paths.root.mkdir(parents=True, exist_ok=True)
    if not paths.baseline.exists() and not any(cluster.running_pid(state, c) for c in COMPONENTS):
        paths.baseline.write_text(json.dumps(snapshot(paths), indent=1))
    host_network_up(paths)
    start_containerd(state, paths)
    import_images(paths)
    cluster.apply_cluster_dns(state)  # made by cluster.py already; idempotent
    make_cgroup_root(paths)
    kubelet_started = 0.0 if cluster.running_pid(state, "kubelet") else time.time()
    start_kubelet(state, paths)

    def registered() -> bool:
        return bool(node_pod_cidr(state))

    cluster.wait_for(state, "kubelet", registered, 90, f"node {NODE_NAME} and its podCIDR")
    pod_cidr = node_pod_cidr(state)
    write_cni_config(paths, pod_cidr)
    start_kube_proxy(state, paths)
    cluster.wait_for(
        state, "kubelet", lambda: node_ready(state, kubelet_started), 90, f"node {NODE_NAME} Ready"
    )
    cluster.wait_for(
        state, "kube-proxy", lambda: kube_proxy_synced(), 60, "kube-proxy's first iptables sync"
    )
    say(
        f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s: podCIDR {pod_cidr}, "
        f"bridge {BRIDGE}, node IP {NODE_IP}, cluster DNS {CLUSTER_DNS_IP} -> "
        + ", ".join(f"{a}:53" for a in cluster.DNS_REPLICA_ADDRESSES)
    )


def kube_proxy_synced() -> bool:
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:10256/healthz", timeout=2) as resp:
        status: int = resp.status
    return status == 200


# ---------------------------------------------------------------------------------------------
# down


def kill_containers(state: cluster.State, paths: Paths) -> None:
    """Stop every container of the node: through containerd, then by pid as a fallback."""
    if cluster.running_pid(state, "containerd") and paths.socket.exists():
        tasks = ctr(paths, "tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            ctr(paths, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
        for task in tasks:
            ctr(paths, "tasks", "delete", "--force", task, check=False)
        containers = ctr(paths, "containers", "ls", "-q", check=False).stdout.split()
        if containers:
            ctr(paths, "containers", "delete", *containers, check=False)
    # Whatever containerd did not stop: container processes (in pod cgroups), then the shims
    # recorded in containerd's state folder.
    for line in node_processes(paths)[0]:
        pid, exe = line.split(" ", 1)
        if os.path.basename(exe) not in OUR_EXES:
            kill(int(pid))
    task_dir = paths.containerd / "state" / "io.containerd.runtime.v2.task"
    for pid_file in task_dir.glob("*/*/shim.pid"):
        try:
            shim = int(pid_file.read_text().strip())
            if os.readlink(f"/proc/{shim}/exe").endswith("containerd-shim-runc-v2"):
                kill(shim)
        except (OSError, ValueError):
            pass


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def unmount_under(folder: Path) -> list[str]:
    """Unmount everything below `folder` (deepest first); what could not be unmounted."""
    prefix = str(folder) + "/"
    for _ in range(5):
        points = sorted(
            {p for p in mount_points() if p.startswith(prefix) or p == str(folder)},
            key=lambda p: (-p.count("/"), p),
        )
        if not points:
            return []
        for point in points:
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)
    return [p for p in mount_points() if p.startswith(prefix) or p == str(folder)]


def remove_chains(baseline: list[str]) -> None:
    """Remove user chains we may have created (and every rule jumping to them)."""
    for family, tool in (("4", "iptables"), ("6", "ip6tables")):
        if shutil.which(tool) is None:
            continue
        current = iptables_state(family)
        ours: dict[str, set[str]] = {}
        for line in current:
            _, table, kind, *rest = line.split(" ", 3)
            if kind == "chain" and line not in baseline and rest[0].startswith(OUR_CHAIN_PREFIXES):
                ours.setdefault(table, set()).add(rest[0])
        for line in current:  # rules in other chains that jump to ours
            _, table, rule = line.split(" ", 2)
            if not rule.startswith("-A ") or table not in ours:
                continue
            args = shlex.split(rule)
            chain, target = args[1], args[args.index("-j") + 1] if "-j" in args else ""
            if chain not in ours[table] and target in ours[table]:
                run(tool, "-t", table, "-D", chain, *args[2:], check=False)
        for table, chains in ours.items():
            for chain in chains:
                run(tool, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(tool, "-t", table, "-X", chain, check=False)


def make_cgroup_root(paths: Paths) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset group starts with
    no CPUs or memory nodes, so it inherits its parent's."""
    for mount in cgroup_mounts():
        top = Path(mount) / paths.cgroup_name
        top.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (top / name).exists() and not (top / name).read_text().strip():
                (top / name).write_text((Path(mount) / name).read_text())


def remove_cgroups(paths: Paths, baseline: list[str], legacy: bool) -> None:
    """Our cgroup root, bottom up (a group with live processes cannot be removed); with
    `legacy`, also the /kubepods tree a node made before cgroupRoot was set."""
    names = [paths.cgroup_name] + (["kubepods"] if legacy else [])
    for mount, name in ((m, n) for m in cgroup_mounts() for n in names):
        top = Path(mount) / name
        if not top.exists() or str(top) in baseline:
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*dirs, top]:
            for _ in range(20):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def remove_host_paths(paths: Paths, baseline: dict[str, Any]) -> None:
    """Files the node's software made outside the state folder."""
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(paths.root)):
                link.unlink()
    for path in HOST_PATHS:
        p = Path(path)
        if path in baseline.get("host_paths", []) or not p.exists() or p.is_symlink():
            continue
        if any(m == path or m.startswith(path + "/") for m in mount_points()):
            continue
        # only folders holding nothing but what the node's software leaves there: sockets
        # (shims, the kubelet's fixed device-plugins one), its checkpoints, CNI's result cache
        leftover = [f for f in p.rglob("*") if not f.is_dir()]
        if all(
            f.is_socket()
            or f.parent.name == "results"
            or "device-plugins" in f.parts
            or f.name.endswith("_checkpoint")
            for f in leftover
        ):
            shutil.rmtree(p, ignore_errors=True)


def down(state: cluster.State) -> dict[str, list[str]]:
    """Stop and remove everything up() made; returns what is still left (empty when clean)."""
    paths = Paths(state)
    baseline: dict[str, Any] = {}
    if paths.baseline.exists():
        baseline = json.loads(paths.baseline.read_text())
    for name in ("kube-proxy", "kubelet"):
        if cluster.stop_process(state, name):
            say(f"stopped {name}")
    kill_containers(state, paths)
    if cluster.stop_process(state, "containerd"):
        say("stopped containerd")
    kill_containers(state, paths)  # shims containerd may have left behind
    stuck = unmount_under(paths.root)
    if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        run("ip", "link", "delete", BRIDGE, check=False)
    for link in differences(baseline, snapshot(paths)).get("links", []) if baseline else []:
        if link.startswith("veth"):
            run("ip", "link", "delete", link, check=False)
    if cluster.binary("kubernetes", "kube-proxy").exists() and baseline:
        run(cluster.binary("kubernetes", "kube-proxy"), "--cleanup", check=False, timeout=60)
    remove_chains(baseline.get("iptables", []))
    foreign = node_processes(paths)[1]
    remove_cgroups(paths, baseline.get("cgroups", []), legacy=not foreign)
    for name, value in baseline.get("sysctls", {}).items():
        if value is not None and read_sysctl(name) != value:
            write_sysctl(name, value)
    if foreign:  # another node shares /run/containerd, /var/lib/kubelet, ...: leave them
        say(f"another node runs on this machine ({len(foreign)} processes): host paths kept")
    else:
        remove_host_paths(paths, baseline)
    if not stuck:
        for folder in paths.runtime_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        for sock in (paths.socket, paths.socket.with_name(paths.socket.name + ".ttrpc")):
            sock.unlink(missing_ok=True)
    else:
        say(f"could not unmount {stuck}; left {paths.root} in place")
    if not baseline:
        return {}
    leftovers = differences(baseline, snapshot(paths))
    if foreign:  # shared host paths, and mounts elsewhere, may be the other node's doing
        leftovers.pop("host_paths", None)
        mine = [m for m in leftovers.pop("mounts", []) if m.startswith(str(paths.root))]
        if mine:
            leftovers["mounts"] = mine
    if leftovers:
        say(f"left on this machine after down: {json.dumps(leftovers, indent=1)}")
    else:
        paths.baseline.unlink(missing_ok=True)
        say("node down; machine as it was before up")
    return leftovers
