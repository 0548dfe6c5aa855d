"""The operator's credentials, from kopf's own login: in-cluster (the pod's ServiceAccount)
when no kubeconfig was asked for and the pod has one, else the kubeconfig (KUBECONFIG,
~/.kube/config).

kopf logs in with these for itself (handlers.py) and our transport uses the same, so the
operator never loads the kubernetes client: kopf imports it, when installed, only to
recognise its model objects, which the operator never hands it, and that import alone was
20 MB of the operator's 190 MB at 10k pods (bench/). `without_client_libraries` hides it from
kopf while kopf is imported (kopf's documented path when the libraries are absent).

What kopf's kubeconfig login reads: token, client certificate and key (files or data), CA,
basic auth, insecure-skip-tls-verify. A kubeconfig with none of these (an exec plugin) is
read by the kubernetes client instead (`credentials`), for our transport.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from svcaudit.controller.transport import Credentials

if TYPE_CHECKING:
    import kopf

CLIENT_LIBRARIES = ("kubernetes", "pykube", "kubernetes_asyncio")


@contextlib.contextmanager
def without_client_libraries() -> Iterator[None]:
    """While kopf is imported, the Kubernetes client libraries look absent (unless already
    imported: then kopf sees them, as before)."""
    hidden = [name for name in CLIENT_LIBRARIES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def login(kubeconfig: str | None, **kwargs: Any) -> kopf.ConnectionInfo:
    """kopf's login: the ServiceAccount in a pod (unless a kubeconfig was given), else the
    kubeconfig. In a pod, the API server is reached at KUBERNETES_SERVICE_HOST (as client-go
    does), not by the name kubernetes.default.svc: the operator must reach the API server
    while the cluster DNS it audits is down."""
    import kopf

    settings = kwargs.pop("settings", None) or kopf.OperatorSettings()
    if kubeconfig is None:
        info = kopf.login_with_service_account(settings=settings, **kwargs)
        if info is not None:
            return dataclasses.replace(info, server=in_cluster_server(info.server))
    info = kopf.login_with_kubeconfig(settings=settings, **kwargs)
    if info is None:
        raise kopf.LoginError("no credentials: not in a pod, and no kubeconfig found")
    return info


def in_cluster_server(default: str | None) -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT") or "443"
    if not host:
        return default or "https://kubernetes.default.svc"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"https://{host}:{port}"


def credentials(kubeconfig: str | None) -> Credentials:
    """The transport's credentials; the Authorization header is read again (the token file,
    the kubeconfig) each time the transport asks, so rotated tokens are used.

    A kubeconfig whose user kopf's login cannot read (an exec plugin, an auth provider
    without a token: no token, certificate or password) is read by the kubernetes client
    instead, as before, at the cost of its import."""
    info = login(kubeconfig)
    if not (info.token or info.certificate_path or info.certificate_data or info.username):
        return _client_credentials(kubeconfig)
    server = str(info.server or "")

    def authorization() -> str | None:
        return login(kubeconfig).as_http_headers().get("Authorization")

    context = info.as_ssl_context() if server.startswith("https") else False
    return Credentials(server, context, authorization)


def _client_credentials(kubeconfig: str | None) -> Credentials:
    from kubernetes import config  # only for kubeconfigs kopf's login cannot read

    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    return Credentials.from_configuration(api.configuration)
