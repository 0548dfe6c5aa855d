"""The operator's credentials (controller/login.py), from kubeconfig files on disk: a token
read by kopf's login, re-read when the file changes; an exec-plugin user, which kopf's login
cannot read, through the kubernetes client (the plugin really runs); in a pod, the API server
by KUBERNETES_SERVICE_HOST, not by a DNS name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from svcaudit.controller.login import credentials, in_cluster_server


def _kubeconfig(path: Path, user: dict[str, object]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


def test_a_token_is_read_again_when_the_kubeconfig_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _kubeconfig(tmp_path / "kc", {"token": "first"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    creds = credentials(str(path))
    assert creds.server == "http://127.0.0.1:9" and creds.ssl is False
    assert creds.authorization() == "Bearer first"
    _kubeconfig(path, {"token": "rotated"})
    assert creds.authorization() == "Bearer rotated"


def test_an_exec_plugin_user_goes_through_the_kubernetes_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "from-the-plugin"},
    }
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
        "interactiveMode": "Never",
    }
    path = _kubeconfig(tmp_path / "kc", {"exec": plugin})
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert credentials(str(path)).authorization() == "Bearer from-the-plugin"


def test_in_a_pod_the_api_server_is_reached_by_its_service_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert in_cluster_server("https://kubernetes.default.svc") == "https://10.96.0.1:443"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert in_cluster_server(None) == "https://[fd00::1]:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert in_cluster_server(None) == "https://kubernetes.default.svc"
