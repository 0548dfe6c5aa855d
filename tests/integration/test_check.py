"""`svcaudit check` against the real local cluster: output formats, exit codes, DNS failure,
list-only access, pagination, settle passes, metrics file, and the kubectl plugin."""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fixtures import REPO, Cluster, eventually
from tests.integration.test_check_helpers import (
    VENV_BIN,
    by_name,
    check,
    check_json,
    codes,
    make_workload,
    settled_workload,
    statuses,
)

pytestmark = pytest.mark.cluster


def _stable(doc: dict) -> dict:
    """The parts of a report that do not depend on timing."""
    return {(s["namespace"], s["name"]): (statuses(s), sorted(codes(s))) for s in doc["services"]}


def test_check_reports_verdicts_formats_and_exit_codes(cluster: Cluster, namespace: str) -> None:
    make_workload(cluster, namespace)
    doc = settled_workload(cluster, namespace)
    services = by_name(doc, namespace)
    assert set(services) == {"web", "named"}, "-n scopes the check to one namespace"
    assert {s["namespace"] for s in doc["services"]} == {namespace}
    web, named = services["web"], services["named"]
    assert statuses(web) == {
        "Endpoints": "True",
        "Environment": "True",
        "DNS": "True",
        "Healthy": "True",
    }
    assert statuses(named)["Endpoints"] == "False"
    assert statuses(named)["Healthy"] == "False"
    assert "SVA-EP-102" in codes(named)
    assert doc["summary"]["services"] == 2
    assert doc["summary"]["healthy"]["False"] == 1
    assert doc["settle"]["passes"] == 1 and "transient" in doc["settle"]["note"]
    assert doc["dns"]["server"] == f"{cluster.dns_host}:{cluster.dns_port}"

    # Exit codes follow --fail-on: SVA-EP-102 is a warning.
    assert check(cluster, "-n", namespace).returncode == 1
    assert check(cluster, "-n", namespace, "--fail-on", "warning").returncode == 1
    assert check(cluster, "-n", namespace, "--fail-on", "error").returncode == 0
    assert check(cluster, "-n", namespace, "--fail-on", "never").returncode == 0

    # YAML says what JSON says.
    proc = check(cluster, "-n", namespace, "-o", "yaml")
    assert _stable(yaml.safe_load(proc.stdout)) == _stable(doc)

    # The table: grouped by namespace, the finding with its fix, a summary; no colour and no
    # progress output when not on a terminal.
    proc = check(cluster, "-n", namespace)
    table = proc.stdout
    assert f"NAMESPACE {namespace}" in table
    assert "SVA-EP-102 NamedTargetPortNotDeclared" in table
    assert "fix: " in table
    assert "2 services in 1 namespaces: 1 healthy, 1 failing, 0 unknown" in table
    assert "note: one-shot check" in table
    assert "\033[" not in table
    assert proc.stderr == ""
    coloured = check(cluster, "-n", namespace, "--color", "always").stdout
    assert "\033[31mFalse" in coloured and "\033[32mTrue" in coloured


def test_check_progress_only_on_a_terminal(cluster: Cluster, namespace: str) -> None:
    make_workload(cluster, namespace, pods=1)
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "svcaudit",
                "check",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--dns-server={cluster.dns_host}:{cluster.dns_port}",
                "-n",
                namespace,
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    err = b"".join(chunks).decode()
    assert "listing services" in err and "auditing" in err
    assert json.loads(proc.stdout)["kind"] == "CheckReport", "stdout stays clean JSON"


def test_unreachable_dns_is_unknown_never_false(cluster: Cluster, namespace: str) -> None:
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    started = time.monotonic()
    # Nothing listens on port 9 of loopback: refused at once (a dead server costs one probe).
    _, doc = check_json(cluster, "-n", namespace, "--dns-server", "127.0.0.1:9", dns=False)
    elapsed = time.monotonic() - started
    assert doc["dns"]["error"], doc["dns"]
    for svc in doc["services"]:
        assert svc["verdicts"]["DNS"]["status"] == "Unknown", svc
        assert not any(d["aspect"] == "DNS" for d in svc["discrepancies"])
    web = by_name(doc, namespace)["web"]
    assert statuses(web)["Healthy"] == "Unknown"
    assert statuses(web)["Endpoints"] == "True"
    assert elapsed < 30
    # A server that swallows queries (timeouts) is Unknown too; --dns-timeout bounds the cost.
    # A loopback UDP socket nobody reads: the queries never leave this machine.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent_port = silent.getsockname()[1]
        _, doc = check_json(
            cluster,
            "-n",
            namespace,
            "--dns-server",
            f"127.0.0.1:{silent_port}",
            "--dns-timeout",
            "0.5",
            dns=False,
        )
    assert {s["verdicts"]["DNS"]["status"] for s in doc["services"]} == {"Unknown"}
    assert "timeout" in doc["dns"]["error"]
    # --no-dns: not checked at all.
    _, doc = check_json(cluster, "-n", namespace, "--no-dns", dns=False)
    assert {s["verdicts"]["DNS"]["status"] for s in doc["services"]} == {"Unknown"}
    assert doc["dns"]["checked"] is False


def test_check_needs_only_list_permission(cluster: Cluster, namespace: str) -> None:
    """An identity that may only LIST (no get, no watch) audits exactly as an admin does: the
    check makes no per-object calls. A namespace-only identity degrades, not fails."""
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    role = f"svcaudit-test-lister-{uuid.uuid4().hex[:6]}"
    rbac = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: lister, namespace: {namespace}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: nslister, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {role}}}
rules:
- {{apiGroups: [""], resources: [services, pods, nodes], verbs: [list]}}
- {{apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {role}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}
subjects: [{{kind: ServiceAccount, name: lister, namespace: {namespace}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: nslister, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}
subjects: [{{kind: ServiceAccount, name: nslister, namespace: {namespace}}}]
"""
    cluster.run_kubectl("apply", "-f", "-", input=rbac)
    try:
        lister = f"system:serviceaccount:{namespace}:lister"
        assert (
            cluster.run_kubectl(
                "auth", "can-i", "get", "services", "--as", lister, check=False
            ).stdout.strip()
            == "no"
        )
        _, admin = check_json(cluster, "-n", namespace)
        _, listed = check_json(cluster, "-n", namespace, "--as", lister)
        assert _stable(listed) == _stable(admin)
        assert listed["warnings"] == []
        _, everything = check_json(cluster, "-A", "--as", lister)
        assert any(s["namespace"] == namespace for s in everything["services"])

        # Namespace-only: no nodes (zones unchecked), no default/kubernetes; still audits.
        proc = check(
            cluster,
            "-n",
            namespace,
            "-o",
            "json",
            "--as",
            f"system:serviceaccount:{namespace}:nslister",
        )
        assert proc.returncode in (0, 1), proc.stderr
        doc = json.loads(proc.stdout)
        assert any("nodes" in w for w in doc["warnings"]), doc["warnings"]
        assert set(by_name(doc, namespace)) == {"web", "named"}
        # Without list on services at all: a clear error and exit code 3.
        proc = check(
            cluster, "-n", "kube-system", "--as", f"system:serviceaccount:{namespace}:nslister"
        )
        assert proc.returncode == 3
        assert "cannot list services: HTTP 403" in proc.stderr
    finally:
        cluster.run_kubectl(
            "delete", "clusterrole,clusterrolebinding", role, "--wait=false", check=False
        )


def test_check_paginates(cluster: Cluster, namespace: str) -> None:
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    _, whole = check_json(cluster, "-n", namespace)
    _, paged = check_json(cluster, "-n", namespace, "--chunk-size", "1")
    assert _stable(paged) == _stable(whole)
    # 2 services + 2 pods + 2 slices + nodes, one item per page: many more calls.
    assert whole["summary"]["apiCalls"] < paged["summary"]["apiCalls"]
    assert paged["summary"]["apiCalls"] >= 2 + 2 + 2 + 2
    # -A: one LIST per kind when everything fits in a page (4 kinds, 4 calls).
    _, everything = check_json(cluster, "-A")
    assert everything["summary"]["apiCalls"] == 4


def test_check_settle_second_pass(cluster: Cluster, namespace: str) -> None:
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    started = time.monotonic()
    code, doc = check_json(cluster, "-n", namespace, "--settle", "2")
    assert time.monotonic() - started >= 2
    assert doc["settle"]["passes"] == 2
    assert code == 1
    named = by_name(doc, namespace)["named"]
    assert "SVA-EP-102" in codes(named), "a lasting finding survives the second pass"
    assert named["pending"] == []


def test_check_settle_marks_new_findings_pending(cluster: Cluster, namespace: str) -> None:
    """A finding that appears between the passes is pending (Unknown), not reported."""
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "svcaudit",
            "check",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--dns-server={cluster.dns_host}:{cluster.dns_port}",
            "-n",
            namespace,
            "-o",
            "json",
            "--settle",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # check says when its first pass is done
    assert first.startswith("first pass: "), first
    cluster.run_kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input="""
apiVersion: v1
kind: Service
metadata: {name: late}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: nope}]
""",
    )
    out, _ = proc.communicate(timeout=60)
    doc = json.loads(out)
    late = by_name(doc, namespace)["late"]
    assert late["discrepancies"] == [] or all(
        d["severity"] == "info" for d in late["discrepancies"]
    )
    assert "SVA-EP-102" in {d["code"] for d in late["pending"]}, late
    assert late["verdicts"]["Endpoints"]["status"] == "Unknown"
    assert late["verdicts"]["Endpoints"]["reason"] == "Settling"


def test_check_metrics_file(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    path = tmp_path / "svcaudit.prom"
    proc = check(cluster, "-n", namespace, "--metrics-file", str(path))
    assert proc.returncode == 1
    text = path.read_text()
    assert (
        f'svcaudit_discrepancies{{aspect="Endpoints",code="SVA-EP-102",'
        f'namespace="{namespace}",severity="warning"}} 1.0'
    ) in text
    assert f'svcaudit_services{{healthy="True",namespace="{namespace}"}} 1.0' in text
    assert f'svcaudit_services{{healthy="False",namespace="{namespace}"}} 1.0' in text
    assert 'svcaudit_audits_total{healthy="False"} 1.0' in text
    assert "svcaudit_audit_duration_seconds_count 2.0" in text


def test_check_unreachable_cluster_exits_3(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "nowhere",
                "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "nobody", "user": {"token": "x"}}],
                "contexts": [
                    {"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}
                ],
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "svcaudit", "check", "-A", f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: cannot list services")
    assert proc.stdout == ""
    # An unknown context is an error too, not a silent fallback.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "svcaudit",
            "check",
            "-A",
            f"--kubeconfig={kubeconfig}",
            "--context",
            "elsewhere",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 3 and "context 'elsewhere' not found" in proc.stderr


def test_kubectl_plugin(cluster: Cluster, namespace: str) -> None:
    """`kubectl svcaudit check` runs the installed kubectl-svcaudit entry point."""
    assert (VENV_BIN / "kubectl-svcaudit").exists(), "pip install -e . installs the plugin"
    make_workload(cluster, namespace)
    settled_workload(cluster, namespace)
    kubectl_dir = str(Path(cluster.kubectl).parent)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{kubectl_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "KUBECONFIG": cluster.kubeconfig,
    }
    plugins = subprocess.run(
        [cluster.kubectl, "plugin", "list"], capture_output=True, text=True, env=env, timeout=30
    )
    assert str(VENV_BIN / "kubectl-svcaudit") in plugins.stdout, plugins.stdout + plugins.stderr
    proc = subprocess.run(
        [
            cluster.kubectl,
            "svcaudit",
            "check",
            "-n",
            namespace,
            "-o",
            "json",
            f"--dns-server={cluster.dns_host}:{cluster.dns_port}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # the named-port finding
    doc = json.loads(proc.stdout)
    assert set(by_name(doc, namespace)) == {"web", "named"}
    assert doc["cluster"]["context"], "KUBECONFIG from the environment, as kubectl passes it"
    assert shutil.which("kubectl-svcaudit", path=env["PATH"])


def _many_services(count: int) -> str:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"extra-{i:03d}"},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
        }
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _dns_questions(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("svcaudit_dns_query_duration_seconds_count")
    )


def test_dns_asked_from_two_processes_gives_the_same_report(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """From 200 services, check forks a second process for half of the DNS questions
    (cli/halves.py): the report and the metrics are those of one process, and a silent DNS
    server costs one timeout, not two."""
    make_workload(cluster, namespace)
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=_many_services(220))
    settled_workload(cluster, namespace)

    def every_service_sliced() -> bool:  # the controller takes a while over 220 services
        _, doc = check_json(cluster, "-n", namespace, "--no-dns", dns=False)
        return not any("SVA-EP-001" in codes(s) for s in doc["services"])

    eventually(every_service_sliced, 120, "an EndpointSlice for every service")
    reports, questions = [], []
    for processes in ("1", "2"):
        path = tmp_path / f"p{processes}.prom"
        _, doc = check_json(
            cluster, "-n", namespace, "--dns-processes", processes, "--metrics-file", str(path)
        )
        assert doc["summary"]["services"] == 222
        reports.append(_stable(doc))
        questions.append(_dns_questions(path.read_text()))
    assert reports[0] == reports[1]
    assert questions[0] > 222
    assert questions[1] == questions[0] + 1  # the second process's own reachability question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        _, doc = check_json(
            cluster,
            "-n",
            namespace,
            "--dns-server",
            f"127.0.0.1:{silent.getsockname()[1]}",
            "--dns-timeout",
            "1",
            dns=False,
        )
        elapsed = time.monotonic() - started
    assert {s["verdicts"]["DNS"]["status"] for s in doc["services"]} == {"Unknown"}
    assert "timeout" in doc["dns"]["error"]
    assert elapsed < 15
