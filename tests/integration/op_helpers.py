"""Helpers for the operator's integration tests: run `svcaudit run`, read what it wrote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import REPO, Cluster, eventually

CRD = REPO / "deploy" / "crd-serviceaudits.yaml"
PREFIX = "svcaudit.dev/"
ASPECTS = ("EndpointsConsistent", "EnvironmentConsistent", "DNSConsistent", "DiscoveryHealthy")


def kubectl_json(cluster: Cluster, *args: str) -> Any:
    proc = cluster.run_kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def apply(cluster: Cluster, namespace: str, manifest: str) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def ensure_crd(cluster: Cluster) -> None:
    cluster.run_kubectl("apply", "-f", str(CRD))
    cluster.run_kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/serviceaudits.svcaudit.dev"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """`svcaudit run` as a subprocess, scoped to the test's namespace, JSON logs to a file."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_path: Path,
        *,
        dns: str | None = None,
        settle: float = 2.0,
        extra: tuple[str, ...] = (),
        kubeconfig: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.cluster = cluster
        self.settle = settle
        self.extra_env = dict(env or {})
        self.namespace = namespace
        self.log_path = log_path
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        dns = dns or f"{cluster.dns_host}:{cluster.dns_port}"
        self.args = [
            sys.executable,
            "-m",
            "svcaudit",
            "run",
            "--kubeconfig",
            kubeconfig or cluster.kubeconfig,
            "-n",
            namespace,
            "--settle-seconds",
            str(settle),
            "--resync-seconds",
            "3",
            "--debounce-seconds",
            "0.3",
            "--warmup-seconds",
            "1",
            "--dns-server",
            dns,
            "--dns-timeout",
            "1",
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SVCAUDIT_")}
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        eventually(self.alive, 60, "the operator's liveness endpoint")
        return self

    def alive(self) -> bool:
        return bool(self.probe().get("ready"))

    def probe(self) -> dict[str, Any]:
        """The operator's part of kopf's /healthz ({} while it does not answer)."""
        import urllib.request

        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"operator exited with {self.proc.returncode}:\n{self.logs_text()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2
            ) as resp:
                data = json.loads(resp.read() or b"{}")
                return dict(data.get("svcaudit") or {}) if resp.status == 200 else {}
        except OSError:
            return {}

    def kill(self) -> None:
        """kill -9: no cleanup handler runs (a held Lease is not released)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return str(resp.read().decode())

    def metric_types(self) -> dict[str, str]:
        """Metric families exposed, from the `# TYPE` lines, e.g. {'svcaudit_writes_total':
        'counter'} (labelled families appear even before their first sample)."""
        return {
            parts[2]: parts[3]
            for line in self.metrics_text().splitlines()
            if (parts := line.split())[:2] == ["#", "TYPE"] and len(parts) == 4
        }

    def metrics(self) -> dict[str, float]:
        """Prometheus samples, e.g. {'svcaudit_writes_total{kind="event"}': 1.0}."""
        out: dict[str, float] = {}
        for line in self.metrics_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def total(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def logs_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def verdict_changes(self, service: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.logs()
            if e.get("event") == "verdict changed"
            and e.get("service") == service
            and e.get("namespace") == self.namespace
        ]


@contextlib.contextmanager
def running_operator(
    cluster: Cluster, namespace: str, tmp_path: Path, **kwargs: Any
) -> Iterator[Operator]:
    ensure_crd(cluster)
    op = Operator(cluster, namespace, tmp_path / "operator.log", **kwargs).start()
    try:
        yield op
    finally:
        op.stop()


def service_conditions(cluster: Cluster, ns: str, name: str) -> dict[str, dict[str, Any]]:
    svc = kubectl_json(cluster, "service", name, "-n", ns)
    conds = ((svc or {}).get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conds}


def audit(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    data: dict[str, Any] | None = kubectl_json(cluster, "serviceaudit", name, "-n", ns)
    return data


def condition_is(
    cluster: Cluster, ns: str, name: str, aspect: str, status: str
) -> dict[str, Any] | None:
    cond = service_conditions(cluster, ns, name).get(PREFIX + aspect)
    return cond if cond and cond["status"] == status else None


def all_true(cluster: Cluster, ns: str, name: str) -> bool:
    conds = service_conditions(cluster, ns, name)
    return all(conds.get(PREFIX + a, {}).get("status") == "True" for a in ASPECTS)


def audit_codes(cluster: Cluster, ns: str, name: str) -> set[str]:
    sva = audit(cluster, ns, name) or {}
    return {d["code"] for d in (sva.get("status") or {}).get("discrepancies") or []}


def events_for(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    data = (
        kubectl_json(
            cluster,
            "events",
            "-n",
            ns,
            "--field-selector",
            f"involvedObject.kind=Service,involvedObject.name={name}",
        )
        or {}
    )
    return [
        e
        for e in data.get("items", [])
        if (e.get("source") or {}).get("component") == "svcaudit"
        or e.get("reportingComponent") == "svcaudit.dev/operator"
    ]


class UdpRelay:
    """A loopback UDP relay in front of CoreDNS that the test can switch off and on."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.enabled = threading.Event()
        self.enabled.set()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> UdpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.enabled.is_set():
                continue  # dropped: the client times out, as with a dead server
            threading.Thread(target=self._relay, args=(data, client), daemon=True).start()

    def _relay(self, data: bytes, client: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            try:
                up.sendto(data, self.upstream)
                answer, _ = up.recvfrom(65535)
                self._sock.sendto(answer, client)
            except OSError:
                pass
