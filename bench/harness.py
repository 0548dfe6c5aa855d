"""The benchmark's own cluster (beside the test cluster: its own folder and port offset), the
operator as a subprocess with its own ServiceAccount, what is read from /proc and /metrics, and
the machine a result was measured on.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.kubeapi import Kube
from e2e.cluster import cluster as local_cluster

REPO = Path(__file__).resolve().parent.parent
# The local cluster's command line (e2e/cluster/__main__.py), run from the repository's root.
CLUSTER_CMD = (sys.executable, "-m", "e2e.cluster")
# BENCH_CLUSTER=soak runs a second bench cluster (ports +300) so a soak can run beside a bench.
_WHICH = os.environ.get("BENCH_CLUSTER", "bench")
CLUSTER_DIR = REPO / f".cluster-{_WHICH}"
PORT_OFFSET = 300 if _WHICH == "soak" else 100
APISERVER = f"https://127.0.0.1:{16443 + PORT_OFFSET}"
DNS = f"127.0.0.1:{1053 + PORT_OFFSET}"
ETCD_METRICS = f"http://127.0.0.1:{12379 + PORT_OFFSET}/metrics"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The cluster's controllers get higher client rate limits for the bench (thousands of pods to
# schedule and slice), and kwok moves more pods through their stages at once.
CLUSTER_ENV = {
    "SVCAUDIT_CLUSTER_DIR": str(CLUSTER_DIR),
    "SVCAUDIT_CLUSTER_PORT_OFFSET": str(PORT_OFFSET),
    "SVCAUDIT_CLUSTER_CLIENT_QPS": "400",
    "SVCAUDIT_KWOK_POD_PARALLELISM": "32",
}
OPERATOR_SA = ("svcaudit-system", "svcaudit")
FLOW_READ = "bench-svcaudit-read"
FLOW_WRITE = "bench-svcaudit-write"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CLUSTER_ENV}
    return subprocess.run(
        [*CLUSTER_CMD, *args],
        env=env,
        text=True,
        capture_output=True,
        check=check,
        cwd=REPO,
    )


def cluster_up(nodes: int) -> float:
    t = time.monotonic()
    cluster("down", check=False)
    proc = cluster("up", "--nodes", str(nodes), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench cluster failed to start:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - t


def cluster_down() -> None:
    cluster("down", check=False)


def cluster_pids() -> dict[str, int]:
    out = {}
    for f in (CLUSTER_DIR / "pids").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            out[f.stem] = int(f.read_text().split()[0])
    return out


# What the local cluster (e2e/cluster/cluster.py) allows. Each node gets a /24 of
# --cluster-cidr 10.244.0.0/16 (--node-cidr-mask-size=24): 256 of them, the last of which,
# 10.244.255.0/24, is also kwok's fallback for a node without one. kwok node InternalIPs are
# 10.202.0.(10 + i) (NODE_IP_BASE): i < 245. kwok gives a pod an IP from its node's /24 (254
# hosts; a deleted pod's comes back once kwok has seen it go), and kwok nodes say they hold a
# million pods, so nothing but NODE_POD_CAP (cap_node_pods) stops the scheduler from putting
# more than 254 on one node (it balances pods without requests only roughly: 1 point of its
# score is ~50 such pods on a kwok node).
PODS_PER_NODE = 150
NODE_POD_CAP = 240  # under 254: headroom for IPs kwok has not released yet
MAX_NODES = 245


def nodes_for(pods: int) -> int:
    """kwok nodes for a scenario: 150 pods a node; above 245 nodes (36,750 pods: the cluster's
    node IPs and /24s run out) 245 nodes with more pods each, up to NODE_POD_CAP (58,800 pods,
    leaving the scheduler no room to spare beyond)."""
    nodes = max(10, -(-pods // PODS_PER_NODE))
    if nodes <= MAX_NODES:
        return nodes
    if pods > MAX_NODES * NODE_POD_CAP * 0.95:
        raise ValueError(
            f"{pods} pods need more than {MAX_NODES} kwok nodes of {NODE_POD_CAP} pods: the "
            "local cluster has 10.244.0.0/16 in /24s and node IPs 10.202.0.10-254 "
            "(e2e/cluster/cluster.py)"
        )
    return MAX_NODES


def cap_node_pods(kube: Kube, cap: int = NODE_POD_CAP) -> int:
    """Every kwok node's pod capacity (and allocatable) set to `cap`, so that the scheduler
    never gives a node more pods than its /24 has addresses. kwok keeps a node's capacity once
    set (its node-initialize stage only fills what is missing). How many nodes."""
    nodes, _ = kube.list_all("/api/v1/nodes?labelSelector=type%3Dkwok")
    # kwok's own defaults for the rest (a node it has not initialised yet keeps what we set)
    pods = {"cpu": "1k", "memory": "1Ti", "pods": str(cap)}
    for node in nodes:
        kube.merge_patch(
            f"/api/v1/nodes/{node['metadata']['name']}/status",
            {"status": {"capacity": pods, "allocatable": pods}},
        )
    return len(nodes)


def cluster_footprint() -> dict[str, Any]:
    """RSS now and peak (MB) and CPU seconds of each cluster component, and etcd's database
    size (total and in use, MB, from its /metrics): where a larger size would break first."""
    out: dict[str, Any] = {}
    for name, pid in sorted(cluster_pids().items()):
        with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
            out[name] = {k: round(v, 1) for k, v in proc_stats(pid).items()}
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(ETCD_METRICS, timeout=10) as r,
    ):
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name == "etcd_mvcc_db_total_size_in_bytes":
                out["etcd_db_mb"] = round(float(value) / 2**20, 1)
            elif name == "etcd_mvcc_db_total_size_in_use_in_bytes":
                out["etcd_db_in_use_mb"] = round(float(value) / 2**20, 1)
    return out


def kubectl() -> str:
    return str(local_cluster.binary("kubernetes", "kubectl"))


def versions() -> dict[str, str]:
    """The pinned versions of every component (e2e/cluster/versions.env)."""
    return dict(local_cluster.VERSIONS)


def machine() -> dict[str, Any]:
    """Where a result was measured: cores, CPU, RAM, kernel, Python, the commit, the operator's
    uncommitted files, the components' versions, the load at the start."""
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "operator"], cwd=REPO, capture_output=True, text=True
    ).stdout.split("\n")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git": git,
        "operator_uncommitted": [line[3:] for line in dirty if line.strip()],
        "versions": versions(),
    }


def admin_kubeconfig() -> str:
    return str(CLUSTER_DIR / "kubeconfig")


def run_kubectl(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        [kubectl(), "--kubeconfig", admin_kubeconfig(), *args],
        input=input,
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def install_operator_prereqs(kube: Kube) -> str:
    """The CRD, the operator's namespace, ServiceAccount and RBAC from deploy/, a token
    kubeconfig for that ServiceAccount, and two FlowSchemas that count its requests
    (apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}). Returns the
    operator's kubeconfig path."""
    for f in ("00-namespace.yaml", "crd-serviceaudits.yaml", "rbac.yaml"):
        run_kubectl("apply", "-f", str(REPO / "deploy" / f))
    run_kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/serviceaudits.svcaudit.dev"
    )
    ns, sa = OPERATOR_SA
    token = run_kubectl("create", "token", sa, "-n", ns, "--duration=48h").strip()
    cfg = json.loads((CLUSTER_DIR / "kubeconfig").read_text())
    cfg["users"] = [{"name": "svcaudit", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "svcaudit"
    path = CLUSTER_DIR / "svcaudit-operator.kubeconfig"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    subject = {"kind": "ServiceAccount", "serviceAccount": {"namespace": ns, "name": sa}}
    for name, verbs in (
        (FLOW_READ, ["get", "list", "watch"]),
        (FLOW_WRITE, ["create", "update", "patch", "delete", "deletecollection"]),
    ):
        kube.apply(
            f"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/{name}",
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": name},
                "spec": {
                    # exempt: counted, never queued, so the measurement does not throttle
                    "priorityLevelConfiguration": {"name": "exempt"},
                    "matchingPrecedence": 100,
                    "rules": [
                        {
                            "subjects": [subject],
                            "resourceRules": [
                                {
                                    "verbs": verbs,
                                    "apiGroups": ["*"],
                                    "resources": ["*"],
                                    "namespaces": ["*"],
                                    "clusterScope": True,
                                }
                            ],
                            "nonResourceRules": [
                                {"verbs": verbs, "nonResourceURLs": ["*"]},
                            ],
                        }
                    ],
                },
            },
        )
    return str(path)


_FLOW_RE = re.compile(
    r'^apiserver_flowcontrol_dispatched_requests_total\{[^}]*flow_schema="([^"]+)"[^}]*\} (\S+)$',
    re.M,
)


def operator_api_requests(kube: Kube) -> dict[str, float]:
    """Requests of the operator's identity the apiserver dispatched so far, by read/write."""
    text = kube.text("/metrics")
    out = {"read": 0.0, "write": 0.0}
    for schema, value in _FLOW_RE.findall(text):
        if schema == FLOW_READ:
            out["read"] += float(value)
        elif schema == FLOW_WRITE:
            out["write"] += float(value)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stats(pid: int) -> dict[str, float]:
    """RSS now and peak (MB, VmRSS/VmHWM) and CPU seconds (utime+stime) of one process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(parts[11]) + int(parts[12])) / CLK_TCK
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "hwm_mb": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_s": cpu,
    }


class Operator:
    """`svcaudit run` as a subprocess with the operator's ServiceAccount, JSON log to a file."""

    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        *,
        settle: float,
        debounce: float = 0.5,
        resync: float | None = None,  # None: the operator's default
        extra: tuple[str, ...] = (),
    ):
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        self.args = [
            sys.executable,
            "-m",
            "svcaudit",
            "run",
            "--kubeconfig",
            kubeconfig,
            "--settle-seconds",
            str(settle),
            "--debounce-seconds",
            str(debounce),
            *(("--resync-seconds", str(resync)) if resync is not None else ()),
            "--dns-server",
            DNS,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Operator:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SVCAUDIT_")}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.args, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        logf.close()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set() and self.proc and self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                self.samples.append((time.monotonic(), proc_stats(self.pid)))
            self._stop.wait(0.5)

    def stats(self) -> dict[str, float]:
        return proc_stats(self.pid)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the operator exited:\n{tail}")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def total(self, prefix: str, metrics: dict[str, float] | None = None) -> float:
        m = self.metrics() if metrics is None else metrics
        return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))

    def stop(self) -> dict[str, Any]:
        """SIGTERM (then SIGKILL); returns the last /proc sample."""
        self._stop.set()
        last = self.samples[-1][1] if self.samples else {}
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                last = proc_stats(self.pid)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return last

    def error_lines(self) -> list[str]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                if "Traceback" in line or " ERROR " in line:
                    out.append(line)
                continue
            level = str(rec.get("level") or rec.get("levelname") or "").lower()
            if level in ("error", "critical", "fatal"):
                out.append(line)
        return out


def run_measured(
    argv: list[str], out_path: Path | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """Run one command in a fresh child and measure its wall time, CPU and peak RSS.

    The peak is the child's own VmHWM, read from /proc every 20 ms until it exits. Not
    wait4's ru_maxrss: on Linux a child's maxrss starts at its parent's RSS at fork (kept
    across exec), so every command measured from this process (~470 MB with its watches)
    read at least that much."""
    t = time.monotonic()
    out = open(out_path, "wb") if out_path else subprocess.DEVNULL  # noqa: SIM115
    err_path = (out_path.with_suffix(out_path.suffix + ".stderr")) if out_path else None
    err = open(err_path, "wb") if err_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
    peak_kb = 0
    done = threading.Event()

    def watch_peak() -> None:
        nonlocal peak_kb
        status = Path(f"/proc/{proc.pid}/status")
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        program = os.fsencode(argv[0])
        while not done.is_set():
            try:
                if cmdline.read_bytes().split(b"\0")[0] != program:
                    done.wait(0.005)  # between fork and exec: still our own memory
                    continue
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, ValueError, IndexError):
                pass  # not started yet, or gone
            done.wait(0.02)

    watcher = threading.Thread(target=watch_peak, daemon=True)
    watcher.start()
    _, status, rusage = os.wait4(proc.pid, 0)
    done.set()
    watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t
    for f in (out, err):
        if f is not subprocess.DEVNULL:
            f.close()  # type: ignore[union-attr]
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 2),
        "exit_code": proc.returncode,
    }
