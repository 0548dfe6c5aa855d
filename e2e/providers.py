"""Which cluster the e2e suite runs on: `local`, `kind` or `existing` (E2E_CLUSTER).

The default is `kind` where a Docker engine answers, else `local` (the project's own
cluster of local processes). The suite is the same for all three; what differs is only how
the cluster is reached and whether a real node is there for the curl/env steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PROVIDERS = ("local", "kind", "existing")
KIND_CONFIG = Path(__file__).resolve().parent / "kind" / "kind-config.yaml"
KIND_DNS_MANIFEST = KIND_CONFIG.with_name("dns-nodeport.yaml")
KIND_DNS_PORT = 30053  # the host port kind-config.yaml maps to the DNS NodePort


def docker_available() -> bool:
    """True when a Docker engine (not just the client) answers."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and bool(probe.stdout.strip())


def select_provider(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    chosen = env.get("E2E_CLUSTER", "").strip()
    if chosen:
        if chosen not in PROVIDERS:
            raise ValueError(f"E2E_CLUSTER={chosen!r}: choose one of {', '.join(PROVIDERS)}")
        return chosen
    return "kind" if docker_available() else "local"


def has_real_node(provider: str, environ: dict[str, str] | None = None) -> bool:
    """Whether pods really run (curl and printenv steps are meaningful)."""
    env = os.environ if environ is None else environ
    if provider == "kind":
        return True
    return env.get("NODE", "") == "real"
