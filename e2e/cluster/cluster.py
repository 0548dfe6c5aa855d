"""A real Kubernetes cluster made of local processes: `python -m e2e.cluster up|down|status|env`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes whose pods get
IPs and become Ready, so the real EndpointSlice controller publishes them) and CoreDNS (two
replicas behind kube-system/kube-dns), all built from the Go module proxy by build.sh.
Standard library only, so it runs before any virtualenv exists. State (certificates,
kubeconfigs, logs, pid files) lives in one folder, by default `<repo>/.cluster`, overridable
with SVCAUDIT_CLUSTER_DIR.

This is the module `e2e.cluster.cluster`; its command line is `python -m e2e.cluster` (run from
the repository's root), which calls main() here. The real node (e2e.cluster.node.realnode)
imports this module: there is one copy of it, and one ClusterError.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# e2e.cluster.node.realnode is imported in the functions that use it, never here: it imports
# this module at its top (and the real node is optional).
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
# The apiserver must advertise a non-loopback address; it lives on a local interface of this
# machine so that nothing addressed to it can ever leave the host.
ADVERTISE_IP = "10.201.0.1"
HOST_IFACE = "svcaudit0"
# The cluster DNS: two CoreDNS replicas, each on an address of HOST_IFACE at port 53, the
# endpoints of kube-system/kube-dns (an EndpointSlice may not list a loopback address).
# Replica 1 also answers on 127.0.0.1:PORTS["coredns"] (the tests' --dns-server).
DNS_REPLICA_ADDRESSES = (ADVERTISE_IP, "10.201.0.2")
CLUSTER_DNS_IP = "10.96.0.10"
# Node InternalIPs for the kwok nodes: never routed anywhere (blackholed below).
NODE_IP_BASE = "10.202.0."
BLACKHOLES = (SERVICE_CIDR, CLUSTER_CIDR, "10.202.0.0/24")
ZONES = ("zone-a", "zone-b", "zone-c")

# A second cluster (the benchmark's) can run beside the test cluster: every port moves by
# SVCAUDIT_CLUSTER_PORT_OFFSET, and only the offset-0 cluster owns the host network setup.
PORT_OFFSET = int(os.environ.get("SVCAUDIT_CLUSTER_PORT_OFFSET", "0"))
PORTS = {
    name: port + PORT_OFFSET
    for name, port in {
        "etcd": 12379,
        "etcd-peer": 12380,
        "apiserver": 16443,
        "controller-manager": 10257,
        "scheduler": 10259,
        "kwok": 10247,
        "coredns": 1053,
        "coredns-health": 18080,
        "coredns-health-node": 18081,
        "coredns-2-health": 18082,
    }.items()
}
# A second cluster (PORT_OFFSET) owns no host address: it runs one CoreDNS, on loopback only,
# and no kube-dns Service (its users give --dns-server).
DNS_REPLICAS = ("coredns",) if PORT_OFFSET else ("coredns", "coredns-2")
COMPONENT_ORDER = ("etcd", "apiserver", "controller-manager", "scheduler", "kwok", *DNS_REPLICAS)


def read_versions() -> dict[str, str]:
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


VERSIONS = read_versions()


def cache_dir() -> Path:
    return Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))


def binary(component: str, name: str | None = None) -> Path:
    folder = {
        "kubernetes": f"kubernetes-{VERSIONS['KUBE_VERSION']}",
        "etcd": f"etcd-{VERSIONS['ETCD_VERSION']}",
        "kwok": f"kwok-{VERSIONS['KWOK_VERSION']}",
        "coredns": f"coredns-{VERSIONS['COREDNS_VERSION']}",
        "helm": f"helm-{VERSIONS['HELM_VERSION']}",
    }[component]
    return cache_dir() / folder / (name or component)


@dataclass
class State:
    """Everything a later command (or a test fixture) needs to find the running cluster."""

    dir: Path
    nodes: int = 2
    real_node: bool = False
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def pids(self) -> Path:
        return self.dir / "pids"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def info(self) -> dict[str, object]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": f"https://127.0.0.1:{PORTS['apiserver']}",
            "dns": {"host": "127.0.0.1", "port": PORTS["coredns"], "zone": "cluster.local"},
            "dnsReplicas": [f"{a}:53" for a in DNS_REPLICA_ADDRESSES[: len(DNS_REPLICAS)]]
            if not PORT_OFFSET
            else [],
            "serviceCIDR": SERVICE_CIDR,
            "clusterCIDR": CLUSTER_CIDR,
            "advertiseAddress": ADVERTISE_IP,
            "nodes": [node_name(i) for i in range(self.nodes)],
            "realNode": self.real_node,
            "logs": str(self.logs),
            "versions": VERSIONS,
        }

    def save(self) -> None:
        data = asdict(self)
        data["dir"] = str(self.dir)
        (self.dir / "state.json").write_text(json.dumps(data, indent=2))
        (self.dir / "cluster.json").write_text(json.dumps(self.info(), indent=2))

    @classmethod
    def load(cls, folder: Path) -> State | None:
        path = folder / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["dir"] = Path(data["dir"])
        return cls(**data)


def state_dir() -> Path:
    return Path(os.environ.get("SVCAUDIT_CLUSTER_DIR", REPO / ".cluster")).resolve()


def node_name(index: int) -> str:
    return f"kwok-node-{index}"


def say(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


class ClusterError(RuntimeError):
    """A component failed to start; the message names it and shows its log tail."""


# ---------------------------------------------------------------------------------------------
# Certificates and credentials (openssl, made once per state folder)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(state: State) -> None:
    pki = state.pki
    if (pki / "ca.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    openssl("genrsa", "-out", str(pki / "ca.key"), "2048")
    openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-key",
        str(pki / "ca.key"),
        "-sha256",
        "-days",
        "3650",
        "-subj",
        "/CN=svcaudit-local-ca",
        "-out",
        str(pki / "ca.crt"),
    )
    sans = [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        f"IP:{ADVERTISE_IP}",
        f"IP:{next(ipaddress.ip_network(SERVICE_CIDR).hosts())}",
    ]
    sign_cert(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", ",".join(sans))
    # apiserver -> kubelet client identity (exec/logs on the real node)
    sign_cert(
        pki,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "clientAuth",
        None,
    )
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def sign_cert(pki: Path, name: str, subject: str, usage: str, sans: str | None) -> None:
    ext = pki / f"{name}.ext"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append(f"subjectAltName={sans}")
    ext.write_text("\n".join(lines) + "\n")
    openssl("genrsa", "-out", str(pki / f"{name}.key"), "2048")
    openssl(
        "req",
        "-new",
        "-key",
        str(pki / f"{name}.key"),
        "-subj",
        subject,
        "-out",
        str(pki / f"{name}.csr"),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(pki / f"{name}.csr"),
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(pki / f"{name}.crt"),
    )


# user name -> groups, for the static token file. Every component gets its own identity and
# the RBAC roles Kubernetes bootstraps for it; only the admin and kwok (a simulator standing in
# for kubelets) are system:masters.
IDENTITIES = {
    "admin": ("kubernetes-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kwok": ("kwok-controller", "system:masters"),
    "coredns": ("system:coredns", ""),
    "kube-proxy": ("system:kube-proxy", ""),
}


def make_credentials(state: State) -> None:
    for component in IDENTITIES:
        state.tokens.setdefault(component, secrets.token_hex(24))
    lines = []
    for component, (user, groups) in IDENTITIES.items():
        lines.append(f'{state.tokens[component]},{user},{user},"{groups}"')
    for extra_user, extra_groups in extra_token_users(state):
        state.tokens.setdefault(extra_user, secrets.token_hex(24))
        lines.append(f'{state.tokens[extra_user]},{extra_user},{extra_user},"{extra_groups}"')
    (state.pki / "tokens.csv").write_text("\n".join(lines) + "\n")
    os.chmod(state.pki / "tokens.csv", 0o600)
    kc_dir = state.dir / "kubeconfigs"
    kc_dir.mkdir(exist_ok=True)
    for name, token in state.tokens.items():
        write_kubeconfig(state, kc_dir / f"{name}.kubeconfig", name, token)
    write_kubeconfig(state, state.kubeconfig, "admin", state.tokens["admin"])


def extra_token_users(state: State) -> list[tuple[str, str]]:
    """Identities of the real node (kubelet), when there is one."""
    if not state.real_node:
        return []
    return [("system:node:realnode", "system:nodes")]


def write_kubeconfig(state: State, path: Path, user: str, token: str) -> None:
    ca = base64.b64encode((state.pki / "ca.crt").read_bytes()).decode()
    server = f"https://127.0.0.1:{PORTS['apiserver']}"
    # JSON is valid YAML, and every Kubernetes client reads it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "svcaudit-local",
                "cluster": {"server": server, "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "svcaudit-local", "context": {"cluster": "svcaudit-local", "user": user}}
        ],
        "current-context": "svcaudit-local",
    }
    path.write_text(json.dumps(config, indent=2))
    os.chmod(path, 0o600)


# ---------------------------------------------------------------------------------------------
# Host network: a dummy interface for the advertise address, blackholes for cluster ranges


def run_ip(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def network_up() -> None:
    if run_ip("link", "show", HOST_IFACE).returncode != 0:
        # a bridge with no ports: this kernel has no dummy interfaces, and a bridge holds a
        # local address just as well
        run_ip("link", "add", HOST_IFACE, "type", "bridge", check=True)
    for address in (ADVERTISE_IP, *DNS_REPLICA_ADDRESSES):
        run_ip("addr", "replace", f"{address}/32", "dev", HOST_IFACE, check=True)
    run_ip("link", "set", HOST_IFACE, "up", check=True)
    for cidr in BLACKHOLES:
        run_ip("route", "replace", "blackhole", cidr)


def network_down() -> None:
    if PORT_OFFSET:
        return  # the offset-0 cluster owns the bridge and the routes
    for cidr in BLACKHOLES:
        run_ip("route", "del", "blackhole", cidr)
    if run_ip("link", "show", HOST_IFACE).returncode == 0:
        run_ip("link", "del", HOST_IFACE)


# ---------------------------------------------------------------------------------------------
# Processes: started in their own session, recorded by pid file, stopped by pid only


def pid_file(state: State, name: str) -> Path:
    return state.pids / f"{name}.pid"


def running_pid(state: State, name: str) -> int | None:
    """The pid of our process `name`, if it is alive and still the binary we started."""
    path = pid_file(state, name)
    if not path.exists():
        return None
    try:
        pid_text, exe = path.read_text().split("\n", 1)
        pid = int(pid_text)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (ValueError, OSError):
        return None
    return pid if cmdline == exe.strip() else None


def start_process(
    state: State,
    name: str,
    argv: list[str],
    env: dict[str, str] | None = None,
) -> None:
    if running_pid(state, name):
        return
    state.logs.mkdir(parents=True, exist_ok=True)
    state.pids.mkdir(parents=True, exist_ok=True)
    log = open(state.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=state.dir,
    )
    log.close()
    pid_file(state, name).write_text(f"{proc.pid}\n{argv[0]}\n")
    # Popen returns once exec has closed the child's CLOEXEC pipe, a moment before the kernel
    # publishes the new command line: until then running_pid() would say "exited".
    deadline = time.monotonic() + 5
    while running_pid(state, name) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def stop_process(state: State, name: str, timeout: float = 15.0) -> bool:
    pid = running_pid(state, name)
    path = pid_file(state, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(state, name) == pid:
        reap(pid)
        time.sleep(0.1)
    if running_pid(state, name) == pid:
        os.kill(pid, signal.SIGKILL)
        while running_pid(state, name) == pid:
            reap(pid)
            time.sleep(0.05)
    path.unlink(missing_ok=True)
    return True


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(state: State, name: str, lines: int = 30) -> str:
    path = state.logs / f"{name}.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(state: State, name: str, check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if name and pid_file(state, name).exists() and running_pid(state, name) is None:
            raise ClusterError(
                f"{name} exited while waiting for {what}.\n"
                f"--- {state.logs / (name + '.log')} (tail) ---\n"
                f"{log_tail(state, name)}"
            )
        try:
            if check():
                return
        except Exception as exc:
            last_error = str(exc)
        time.sleep(0.3)
    tail = log_tail(state, name) if name else ""
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {what} ({last_error}).\n"
        f"--- {name} log tail ---\n{tail}"
    )


# ---------------------------------------------------------------------------------------------
# Talking to the apiserver without any third-party client


def api(
    state: State,
    method: str,
    path: str,
    body: object | None = None,
    content_type: str = "application/json",
    token: str | None = None,
) -> dict[str, Any]:
    """One request; the decoded JSON answer (untyped, as the apiserver sends it)."""
    ctx = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"https://127.0.0.1:{PORTS['apiserver']}{path}",
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token or state.tokens['admin']}",
            "Content-Type": content_type,
            "Accept": "application/json",
        },
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        raw = resp.read()
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {"raw": raw.decode(errors="replace")}


def api_ok(state: State, path: str) -> bool:
    try:
        api(state, "GET", path)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def apply(state: State, path: str, obj: dict[str, Any]) -> None:
    """Server-side apply of one object at its API path (create or update)."""
    api(
        state,
        "PATCH",
        f"{path}?fieldManager=svcaudit-cluster&force=true",
        obj,
        content_type="application/apply-patch+yaml",
    )


# ---------------------------------------------------------------------------------------------
# Components


def start_etcd(state: State) -> None:
    data = state.dir / "etcd-data"
    start_process(
        state,
        "etcd",
        [
            str(binary("etcd")),
            "--name=svcaudit",
            f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{PORTS['etcd']}",
            f"--advertise-client-urls=http://127.0.0.1:{PORTS['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{PORTS['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{PORTS['etcd-peer']}",
            f"--initial-cluster=svcaudit=http://127.0.0.1:{PORTS['etcd-peer']}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
    )

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['etcd']}/health", timeout=2) as r:
            health: object = json.loads(r.read()).get("health")
            return health == "true"

    wait_for(state, "etcd", healthy, 60, "etcd /health")


def start_apiserver(state: State) -> None:
    pki = state.pki
    start_process(
        state,
        "apiserver",
        [
            str(binary("kubernetes", "kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{PORTS['etcd']}",
            "--bind-address=0.0.0.0",
            f"--secure-port={PORTS['apiserver']}",
            f"--advertise-address={ADVERTISE_IP}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            # the real node's Hostname address ("realnode") resolves nowhere: dial its InternalIP
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
    )
    wait_for(state, "apiserver", lambda: api_ok(state, "/readyz"), 120, "kube-apiserver /readyz")


def start_controller_manager(state: State) -> None:
    pki = state.pki
    kc = state.dir / "kubeconfigs" / "controller-manager.kubeconfig"
    start_process(
        state,
        "controller-manager",
        [
            str(binary("kubernetes", "kube-controller-manager")),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={PORTS['controller-manager']}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={CLUSTER_CIDR}",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            # kwok never re-reports a pod Ready once the node lifecycle controller has set it
            # NotReady (a kubelet would), so a node must survive the fault tests' 30 s control
            # plane outages (plus a loaded restart) without being declared NotReady.
            "--node-monitor-grace-period=2m",
            *client_qps_flags(),
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
    )


def client_qps_flags() -> list[str]:
    """The benchmark (bench/) raises the controllers' client rate limits so that thousands of
    pods are scheduled and sliced quickly: SVCAUDIT_CLUSTER_CLIENT_QPS. Unset: the defaults."""
    qps = os.environ.get("SVCAUDIT_CLUSTER_CLIENT_QPS")
    if not qps:
        return []
    return [f"--kube-api-qps={int(qps)}", f"--kube-api-burst={2 * int(qps)}"]


def start_scheduler(state: State) -> None:
    kc = state.dir / "kubeconfigs" / "scheduler.kubeconfig"
    start_process(
        state,
        "scheduler",
        [
            str(binary("kubernetes", "kube-scheduler")),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={PORTS['scheduler']}",
            *client_qps_flags(),
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
    )


def create_kwok_nodes(state: State) -> None:
    """Node objects kwok will manage: distinct InternalIPs and zones, no taints."""
    for i in range(state.nodes):
        name = node_name(i)
        apply(
            state,
            f"/api/v1/nodes/{name}",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        "topology.kubernetes.io/zone": ZONES[i % len(ZONES)],
                    },
                },
            },
        )
        status = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": f"{NODE_IP_BASE}{10 + i}"},
                    {"type": "Hostname", "address": name},
                ]
            },
        }
        apply(state, f"/api/v1/nodes/{name}/status", status)


# How many pods kwok moves through their stages at once (the benchmark raises it).
KWOK_POD_PARALLELISM = int(os.environ.get("SVCAUDIT_KWOK_POD_PARALLELISM", "8"))


def start_kwok(state: State) -> None:
    stages = binary("kwok").parent / "stages"
    if not stages.is_dir():
        raise ClusterError(f"kwok stage definitions missing in {stages}: run e2e/cluster/build.sh")
    config = state.dir / "kwok.yaml"
    docs = [
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n"
        f"  cidr: 10.244.255.0/24\n  nodeIP: {NODE_IP_BASE}9\n"
        "  manageAllNodes: false\n"
        # kwok applies no defaults to a configuration read from a file
        f"  podPlayStageParallelism: {KWOK_POD_PARALLELISM}\n  nodePlayStageParallelism: 4\n"
        "  nodeLeaseParallelism: 4\n  podsOnNodeSyncParallelism: 1\n"
        "  enablePodsOnNodeSyncListPager: true\n  enablePodsOnNodeSyncStreamWatch: false\n"
        "  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake\n"
        f"  serverAddress: 127.0.0.1:{PORTS['kwok']}\n"
    ]
    docs += [p.read_text() for p in sorted(stages.glob("*.yaml"))]
    config.write_text("\n---\n".join(docs))
    start_process(
        state,
        "kwok",
        [
            str(binary("kwok")),
            f"--kubeconfig={state.dir / 'kubeconfigs' / 'kwok.kubeconfig'}",
            f"--config={config}",
        ],
    )


COREDNS_RBAC = [
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:coredns",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
            ],
        },
    ),
]


def coredns_binds(state: State, replica: str = "coredns") -> list[tuple[str, int]]:
    """(address, port) a CoreDNS replica listens on: replica 1 on loopback (the tests'
    --dns-server) and, in the offset-0 cluster, each replica on its address of HOST_IFACE at
    port 53 (kube-dns's endpoints; pods of the real node reach them through their gateway)."""
    binds = [("127.0.0.1", PORTS["coredns"])] if replica == "coredns" else []
    if not PORT_OFFSET:
        binds.append((DNS_REPLICA_ADDRESSES[DNS_REPLICAS.index(replica)], 53))
    return binds


def _health_port(replica: str, port: int) -> int:
    if replica != "coredns":
        return PORTS[f"{replica}-health"]
    return PORTS["coredns-health" if port != 53 else "coredns-health-node"]


def start_coredns(state: State, replica: str = "coredns") -> None:
    """One CoreDNS replica (`coredns`, `coredns-2`): its own Corefile, same kubernetes
    plugin configuration, the cluster's CoreDNS credentials."""
    for path, obj in COREDNS_RBAC:
        apply(state, path, obj)
    kc = state.dir / "kubeconfigs" / "coredns.kubeconfig"
    corefile = state.dir / ("Corefile" if replica == "coredns" else f"Corefile-{replica}")
    # No `forward`: names outside the cluster zones are never sent anywhere.
    blocks = []
    for bind, port in coredns_binds(state, replica):
        health = _health_port(replica, port)
        blocks.append(
            f"cluster.local:{port} in-addr.arpa:{port} ip6.arpa:{port} {{\n"
            f"    bind {bind}\n    errors\n    health 127.0.0.1:{health}\n"
            f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
            f"        kubeconfig {kc} svcaudit-local\n        pods insecure\n        ttl 5\n"
            f"    }}\n    loadbalance\n}}\n"
        )
    text = "\n".join(blocks)
    if running_pid(state, replica) and (not corefile.exists() or corefile.read_text() != text):
        stop_process(state, replica)  # started with another configuration: restart it
        say(f"restarting {replica}: its Corefile changed")
    corefile.write_text(text)
    start_process(state, replica, [str(binary("coredns")), f"-conf={corefile}"])

    def serving() -> bool:
        binds = coredns_binds(state, replica)
        health = f"http://127.0.0.1:{_health_port(replica, binds[0][1])}/health"
        with urllib.request.urlopen(health, timeout=2) as r:
            if r.status != 200:
                return False
        # /health answers once the first server block runs; the others may bind a moment
        # later, so every listener is checked on its own.
        for bind, port in binds:
            socket.create_connection((bind, port), timeout=2).close()
        return True

    wait_for(state, replica, serving, 60, f"{replica}: CoreDNS /health and every DNS listener")


def start_coredns_2(state: State) -> None:
    start_coredns(state, "coredns-2")


def apply_cluster_dns(state: State) -> None:
    """kube-system/kube-dns: ClusterIP 10.96.0.10, selectorless, one hand-written slice
    listing every replica at port 53 (offset-0 cluster only: the addresses are its own)."""
    if PORT_OFFSET:
        return
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    apply(
        state,
        "/api/v1/namespaces/kube-system/services/kube-dns",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "ports": [{**p, "targetPort": 53} for p in ports],
            },
        },
    )
    endpoints = [
        {"addresses": [a], "conditions": {"ready": True}}
        for a in DNS_REPLICA_ADDRESSES[: len(DNS_REPLICAS)]
    ]
    apply(
        state,
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-svcaudit",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-svcaudit",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "svcaudit-cluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        },
    )


# ---------------------------------------------------------------------------------------------
# Commands


def nodes_ready(state: State, names: list[str]) -> bool:
    listing = api(state, "GET", "/api/v1/nodes")
    ready = set()
    for node in listing.get("items", []):
        for cond in node.get("status", {}).get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready.add(node["metadata"]["name"])
    return set(names) <= ready


def check_binaries(state: State) -> None:
    needed = [binary("etcd"), binary("kwok"), binary("coredns")] + [
        binary("kubernetes", b)
        for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    ]
    if state.real_node:
        needed += [binary("kubernetes", b) for b in ("kubelet", "kube-proxy")]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        say("binaries missing, building them (first time on this machine: 20-45 min)")
        subprocess.run([str(HERE / "build.sh")], check=True)


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Serialize up/down: two callers (a test session and a developer) must not interleave."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(args: argparse.Namespace) -> int:
    with exclusive(state_dir()):
        return _up(args)


def down(args: argparse.Namespace) -> int:
    with exclusive(state_dir()):
        return _down(args)


def _real_node_running(state: State) -> bool:
    from e2e.cluster.node import realnode

    return realnode.running(state)


def _up(args: argparse.Namespace) -> int:
    folder = state_dir()
    state = State.load(folder) or State(dir=folder)
    if (
        all(running_pid(state, c) for c in COMPONENT_ORDER)
        and (not args.real_node or state.real_node)
        and (not state.real_node or _real_node_running(state))
    ):
        say(f"already running; export KUBECONFIG={state.kubeconfig}")
        return 0
    state.nodes = args.nodes
    state.real_node = state.real_node or args.real_node
    if state.real_node and PORT_OFFSET:
        print("[cluster] the real node runs only in the offset-0 cluster", file=sys.stderr)
        return 2
    adding_real_node = state.real_node and not _real_node_running(state)
    started = time.monotonic()
    if adding_real_node:
        # The node's token joins the token file (read only at apiserver start) and CoreDNS
        # must bind an address pods reach: restart those two; the rest reconnect by themselves.
        for name in ("coredns", "apiserver"):
            if stop_process(state, name):
                say(f"restarting {name} for the real node")
    check_binaries(state)
    try:
        if state.real_node:  # before anything starts: one line naming the fix
            from e2e.cluster.node import realnode

            realnode.check_prerequisites()
        network_up()
        make_pki(state)
        make_credentials(state)
        state.save()
        steps = [
            ("etcd", start_etcd),
            ("kube-apiserver", start_apiserver),
            ("kube-controller-manager", start_controller_manager),
            ("kube-scheduler", start_scheduler),
            ("kwok nodes", create_kwok_nodes),
            ("kwok", start_kwok),
            ("coredns", start_coredns),
        ]
        if not PORT_OFFSET:
            steps += [("coredns-2", start_coredns_2), ("kube-dns", apply_cluster_dns)]
        if state.real_node:
            from e2e.cluster.node import realnode

            steps.append(("real node", realnode.up))
        for label, step in steps:
            t = time.monotonic()
            step(state)
            say(f"{label} started ({time.monotonic() - t:.1f}s)")
        names = [node_name(i) for i in range(state.nodes)]
        if state.real_node:
            names.append("realnode")
        wait_for(state, "kwok", lambda: nodes_ready(state, names), 120, f"nodes {names} Ready")
        wait_for(
            state,
            "controller-manager",
            lambda: api_ok(state, "/api/v1/namespaces/default/serviceaccounts/default"),
            120,
            "the default ServiceAccount",
        )
    except (ClusterError, subprocess.CalledProcessError) as exc:
        print(f"[cluster] FAILED: {exc}", file=sys.stderr)
        print(f"[cluster] all logs: {state.logs}", file=sys.stderr)
        return 1
    state.save()
    say(f"up in {time.monotonic() - started:.1f}s: {', '.join(names)} Ready")
    say(f"export KUBECONFIG={state.kubeconfig}")
    say(f"kubectl: {binary('kubernetes', 'kubectl')}")
    say(f"cluster DNS: 127.0.0.1:{PORTS['coredns']} (dig @127.0.0.1 -p {PORTS['coredns']} ...)")
    return 0


def _down(args: argparse.Namespace) -> int:
    folder = state_dir()
    state = State.load(folder)
    if state is None:
        say("nothing to stop")
        network_down()
        return 0
    if state.real_node:
        from e2e.cluster.node import realnode

        realnode.down(state)
    for name in reversed(COMPONENT_ORDER):
        if stop_process(state, name):
            say(f"stopped {name}")
    network_down()
    if not args.keep:
        shutil.rmtree(state.dir / "etcd-data", ignore_errors=True)
        (state.dir / "state.json").unlink(missing_ok=True)
    say("down")
    return 0


def _component_starters() -> dict[str, Callable[[State], None]]:
    return {
        "etcd": start_etcd,
        "apiserver": start_apiserver,
        "controller-manager": start_controller_manager,
        "scheduler": start_scheduler,
        "kwok": start_kwok,
        "coredns": start_coredns,
        "coredns-2": start_coredns_2,
    }


def stop_component(args: argparse.Namespace) -> int:
    """Stop one component, for the fault tests (`start` or `up` brings it back)."""
    with exclusive(state_dir()):
        state = State.load(state_dir())
        if state is None:
            say("not created")
            return 1
        pid = running_pid(state, args.component)
        if pid is not None and args.kill:
            os.kill(pid, signal.SIGKILL)
            while running_pid(state, args.component) == pid:
                reap(pid)
                time.sleep(0.05)
            pid_file(state, args.component).unlink(missing_ok=True)
        elif pid is not None:
            stop_process(state, args.component)
        say(f"{args.component} stopped" if pid is not None else f"{args.component} not running")
        return 0


def start_component(args: argparse.Namespace) -> int:
    with exclusive(state_dir()):
        state = State.load(state_dir())
        if state is None:
            say("not created")
            return 1
        t = time.monotonic()
        try:
            _component_starters()[args.component](state)
        except ClusterError as exc:
            print(f"[cluster] FAILED: {exc}", file=sys.stderr)
            return 1
        say(f"{args.component} started ({time.monotonic() - t:.1f}s)")
        return 0


def status(args: argparse.Namespace) -> int:
    state = State.load(state_dir())
    if state is None:
        say("not created")
        return 1
    healthy = True
    for name in COMPONENT_ORDER:
        pid = running_pid(state, name)
        healthy &= pid is not None
        print(f"  {name:20} {'running pid ' + str(pid) if pid else 'STOPPED'}")
    if healthy:
        ready = api_ok(state, "/readyz")
        print(f"  {'apiserver /readyz':20} {'ok' if ready else 'NOT READY'}")
        healthy &= ready
    print(json.dumps(state.info(), indent=2))
    return 0 if healthy else 1


def env(args: argparse.Namespace) -> int:
    state = State.load(state_dir())
    if state is None:
        return 1
    print(f"export KUBECONFIG={state.kubeconfig}")
    print(f"export PATH={binary('kubernetes', 'kubectl').parent}:$PATH")
    print(f"export SVCAUDIT_DNS_SERVER=127.0.0.1:{PORTS['coredns']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the cluster (idempotent)")
    p_up.add_argument("--nodes", type=int, default=int(os.environ.get("KWOK_NODES", "2")))
    p_up.add_argument(
        "--real-node",
        action="store_true",
        default=os.environ.get("NODE", "") == "real",
        help="also run a real kubelet+containerd node",
    )
    p_up.set_defaults(func=up)
    p_down = sub.add_parser("down", help="stop everything `up` started")
    p_down.add_argument("--keep", action="store_true", help="keep etcd data")
    p_down.set_defaults(func=down)
    sub.add_parser("status", help="component pids and readiness").set_defaults(func=status)
    p_stop = sub.add_parser("stop", help="stop one component (fault tests)")
    p_stop.add_argument("component", choices=COMPONENT_ORDER)
    p_stop.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    p_stop.set_defaults(func=stop_component)
    p_start = sub.add_parser("start", help="start one stopped component again")
    p_start.add_argument("component", choices=COMPONENT_ORDER)
    p_start.set_defaults(func=start_component)
    sub.add_parser("env", help="shell exports to use the cluster").set_defaults(func=env)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    # Not an entry point any more: as a script this file would be a second copy of the module
    # the real node imports (another ClusterError). One line naming the command instead.
    sys.exit("the local cluster's command line is: python -m e2e.cluster " + " ".join(sys.argv[1:]))
