"""Which cluster the e2e suite runs on: `local`, `kind` or `existing` (E2E_CLUSTER).

The default is always `local` (the project's own cluster of local processes), even where a
Docker engine answers (`make image` starts one here): `make test` means the same thing on every
machine. kind is chosen explicitly (E2E_CLUSTER=kind). The suite is the same for all three;
what differs is only how the cluster is reached and whether a real node is there for the
curl/env steps.
"""

from __future__ import annotations

import os
from pathlib import Path

PROVIDERS = ("local", "kind", "existing")
KIND_CONFIG = Path(__file__).resolve().parent / "kind" / "kind-config.yaml"
KIND_DNS_MANIFEST = KIND_CONFIG.with_name("dns-nodeport.yaml")
KIND_DNS_PORT = 30053  # the host port kind-config.yaml maps to the DNS NodePort


def select_provider(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    chosen = env.get("E2E_CLUSTER", "").strip()
    if chosen:
        if chosen not in PROVIDERS:
            raise ValueError(f"E2E_CLUSTER={chosen!r}: choose one of {', '.join(PROVIDERS)}")
        return chosen
    return "local"


def has_real_node(provider: str, environ: dict[str, str] | None = None) -> bool:
    """Whether pods really run (curl and printenv steps are meaningful)."""
    env = os.environ if environ is None else environ
    if provider == "kind":
        return True
    return env.get("NODE", "") == "real"
