#!/usr/bin/env python3
"""`make demo`: the main job in one command.

Brings the local cluster up (building what is missing), starts the operator, applies the
simpleservice tutorial, introduces one classic mistake (a selector typo), and prints what a
user sees — `kubectl get sva` and the Service's conditions — before the mistake, with it, and
after the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "svcaudit-demo"
SETTLE_SECONDS = "3"

TUTORIAL = (REPO / "e2e/manifests/tutorial-kwok.yaml").read_text()


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


class Demo:
    def __init__(self) -> None:
        # from the repository's root, where the e2e package is (and .cluster, below)
        up = subprocess.run([sys.executable, "-m", "e2e.cluster", "up"], cwd=REPO)
        if up.returncode != 0:
            sys.exit("the local cluster did not start; see the messages above")
        self.state = REPO / os.environ.get("SVCAUDIT_CLUSTER_DIR", ".cluster")
        info = json.loads((self.state / "cluster.json").read_text())
        self.kubeconfig = info["kubeconfig"]
        cache = Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache/svcaudit"))
        self.kubectl_bin = str(cache / f"kubernetes-{info['versions']['KUBE_VERSION']}/kubectl")
        self.dns = f"{info['dns']['host']}:{info['dns']['port']}"
        self.operator: subprocess.Popen[bytes] | None = None

    def kubectl(self, *args: str, stdin: str | None = None, show: bool = False) -> str:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        proc = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 and not args[0] == "delete":
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        if show:
            print(proc.stdout, end="", flush=True)
        return proc.stdout

    def start_operator(self) -> None:
        log = open(self.state / "logs" / "operator-demo.log", "w")  # noqa: SIM115
        svcaudit = Path(sys.executable).parent / "svcaudit"
        self.operator = subprocess.Popen(
            [
                str(svcaudit),
                "run",
                "--kubeconfig",
                self.kubeconfig,
                "--dns-server",
                self.dns,
                "--settle-seconds",
                SETTLE_SECONDS,
                "-n",
                NAMESPACE,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        print(
            f"operator started (pid {self.operator.pid}, settle {SETTLE_SECONDS}s, log {log.name})"
        )

    def stop_operator(self) -> None:
        if self.operator and self.operator.poll() is None:
            self.operator.terminate()
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                self.operator.kill()

    def conditions(self) -> dict[str, dict[str, Any]]:
        svc = json.loads(self.kubectl("get", "svc", "simpleservice", "-n", NAMESPACE, "-o", "json"))
        return {
            c["type"]: c
            for c in (svc.get("status") or {}).get("conditions") or []
            if c["type"].startswith("svcaudit.dev/")
        }

    def wait_healthy(self, status: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.operator and self.operator.poll() is not None:
                sys.exit(
                    f"the operator exited (code {self.operator.returncode}); "
                    f"see {self.state / 'logs/operator-demo.log'}"
                )
            healthy = self.conditions().get("svcaudit.dev/DiscoveryHealthy")
            if healthy and healthy["status"] == status:
                return
            time.sleep(0.5)
        sys.exit(f"DiscoveryHealthy never became {status} within {timeout:.0f}s")

    def show(self) -> None:
        self.kubectl("get", "sva", "-n", NAMESPACE, show=True)
        print("$ kubectl get svc simpleservice -o yaml   # status.conditions")
        for ctype, cond in sorted(self.conditions().items()):
            print(f"  {ctype:36} {cond['status']:7} {cond['reason']}")
            if cond["status"] != "True":
                print(f"      {cond['message']}")

    def run(self) -> None:
        banner("the tutorial: RC rcsise (2 pods, app=sise) + Service simpleservice (80 -> 9876)")
        self.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--ignore-not-found")
        self.kubectl("create", "namespace", NAMESPACE)
        crd = str(REPO / "deploy/crd-serviceaudits.yaml")
        self.kubectl("apply", "-f", crd, show=True)
        self.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/serviceaudits.svcaudit.dev"
        )
        self.start_operator()
        self.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=TUTORIAL, show=True)
        started = time.monotonic()
        self.wait_healthy("True")
        print(f"(verdict True after {time.monotonic() - started:.1f}s)")
        self.show()

        banner("a mistake: the selector has a typo (app=sies)")
        patch = '{"spec":{"selector":{"app":"sies"}}}'
        self.kubectl("patch", "svc", "simpleservice", "-n", NAMESPACE, "-p", patch, show=True)
        started = time.monotonic()
        self.wait_healthy("False")
        print(f"(verdict False after {time.monotonic() - started:.1f}s)")
        self.show()
        detail = json.loads(
            self.kubectl("get", "sva", "simpleservice", "-n", NAMESPACE, "-o", "json")
        )
        findings = (detail.get("status") or {}).get("discrepancies") or []
        print("$ kubectl get sva simpleservice -o yaml   # status.discrepancies")
        info = [item for item in findings if item.get("severity") == "info"]
        for item in (item for item in findings if item.get("severity") != "info"):
            print(
                f"  {item.get('code')} [{item.get('severity')}] {item.get('subject')}: "
                f"expected {item.get('expected')}, observed {item.get('observed')}"
            )
            if item.get("hint"):
                print(f"      hint: {item['hint']}")
        if info:
            print(f"  (+{len(info)} info-level notes, which never make a verdict False)")

        banner("the fix: selector back to app=sise")
        patch = '{"spec":{"selector":{"app":"sise"}}}'
        self.kubectl("patch", "svc", "simpleservice", "-n", NAMESPACE, "-p", patch, show=True)
        started = time.monotonic()
        self.wait_healthy("True")
        print(f"(verdict True again after {time.monotonic() - started:.1f}s)")
        self.show()
        banner("done")
        print(
            f"The cluster is still running: export KUBECONFIG={self.kubeconfig}; "
            "`make cluster-down` stops it."
        )


def main() -> int:
    demo = Demo()
    try:
        demo.run()
    finally:
        demo.stop_operator()
    return 0


if __name__ == "__main__":
    sys.exit(main())
