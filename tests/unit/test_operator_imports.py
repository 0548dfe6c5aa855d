"""The operator's process never loads the kubernetes client (login.py: kopf's login instead,
20 MB at 10k pods), while `check` still may, and kopf, imported with the client hidden, still
finds it afterwards for anyone else in the process."""

from __future__ import annotations

import subprocess
import sys

OPERATOR_PATH = """
import sys
from svcaudit.controller.login import without_client_libraries
with without_client_libraries():
    import kopf
    from svcaudit.controller.handlers import build_registry
from svcaudit.controller import kube, publish, reconcile, transport, dns_server, indexes
from svcaudit.controller.login import credentials
from svcaudit import metrics
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "pykube"))
print(",".join(loaded))
import kubernetes.client  # not hidden any more
print("importable")
"""


def test_the_operator_path_imports_no_kubernetes_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", OPERATOR_PATH], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["", "importable"]
