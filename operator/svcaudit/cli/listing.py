"""Read-only cluster access for `svcaudit check`: one paginated LIST per resource kind.

No per-object GETs: even the two singletons the audit needs (default/kubernetes for the
environment, kube-system/kube-dns for the DNS server) are read with a field-selected LIST.
Raw JSON bodies are returned (the core's `from_api` reads the API's camelCase form), which
also skips the kubernetes client's slow model deserialisation.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes import config as _config
from kubernetes.client.exceptions import ApiException

Body = dict[str, Any]
config: Any = _config  # the kubernetes package's config module is untyped
PAGE_SIZE = 500


class ClusterError(Exception):
    """The API server could not be reached or refused a required call."""


@dataclass(frozen=True)
class Connection:
    api: client.ApiClient
    server: str
    context: str | None
    namespace: str  # the context's namespace (kubectl's default for -n)


def connect(
    kubeconfig: str | None, context: str | None, impersonate: str | None = None
) -> Connection:
    """The kubeconfig (or $KUBECONFIG, ~/.kube/config); in-cluster credentials as a fallback
    when neither a file nor a context was asked for and no kubeconfig exists."""
    namespace = "default"
    ctx_name: str | None = context
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if context and chosen is None:
            raise ClusterError(f"context {context!r} not found in the kubeconfig")
        if chosen:
            ctx_name = chosen["name"]
            namespace = chosen.get("context", {}).get("namespace") or "default"
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, FileNotFoundError, OSError) as exc:
        if kubeconfig or context:
            raise ClusterError(f"cannot load the kubeconfig: {exc}") from exc
        try:
            config.load_incluster_config()
        except config.ConfigException as exc2:
            raise ClusterError(f"no kubeconfig and not in a cluster: {exc}") from exc2
        api = client.ApiClient()
        ctx_name = None
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
                namespace = fh.read().strip() or "default"
        except OSError:
            pass
    if impersonate:
        # A service account user gets its groups (system:serviceaccounts[:ns]) added by the
        # API server, so `--as system:serviceaccount:NS:NAME` is that account exactly.
        api.set_default_header("Impersonate-User", impersonate)
    return Connection(api, str(api.configuration.host), ctx_name, namespace)


@dataclass
class Listing:
    """Everything one check pass reads, as raw bodies."""

    services: list[Body] = field(default_factory=list)
    pods: list[Body] = field(default_factory=list)
    slices: list[Body] = field(default_factory=list)
    nodes: list[Body] | None = None  # None: not allowed to list nodes (zones not checked)
    default_kubernetes: Body | None = None
    kube_dns: Body | None = None
    kube_dns_slices: list[Body] = field(default_factory=list)  # the DNS Service's replicas
    calls: int = 0  # LIST requests made (pages included)
    warnings: list[str] = field(default_factory=list)


def _paged(
    fetch: Callable[..., Any], *args: Any, page_size: int = PAGE_SIZE, **kwargs: Any
) -> tuple[list[Body], int]:
    items: list[Body] = []
    token: str | None = None
    calls = 0
    while True:
        extra: dict[str, Any] = {"limit": page_size, "_preload_content": False}
        if token:
            extra["_continue"] = token
        resp = fetch(*args, **kwargs, **extra)
        calls += 1
        data = json.loads(resp.data)
        kind = str(data.get("kind", "")).removesuffix("List")
        api_version = str(data.get("apiVersion", ""))
        for item in data.get("items") or []:
            # LIST items carry no kind/apiVersion; the core's views don't need them, but the
            # JSON output is friendlier with them.
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
            items.append(item)
        token = (data.get("metadata") or {}).get("continue") or None
        if not token:
            return items, calls


def _describe(exc: ApiException, what: str) -> str:
    reason = exc.reason or ""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        reason = json.loads(exc.body or "").get("message") or reason
    return f"cannot list {what}: HTTP {exc.status}: {reason}"


def list_all(
    conn: Connection,
    namespaces: list[str] | None,
    progress: Callable[[str], None] = lambda _: None,
    on_error: Callable[[str, str, int], None] = lambda *_: None,
    page_size: int = PAGE_SIZE,
    dns_service: tuple[str, str] = ("kube-system", "kube-dns"),
) -> Listing:
    """Services, pods and EndpointSlices of `namespaces` (None: all), every node, plus
    default/kubernetes and the DNS Service (`dns_service`) with its EndpointSlices. Raises
    ClusterError on a required call's failure; nodes are optional (403 -> None, a warning),
    and so are the DNS Service's slices (a warning: its ClusterIP is asked instead)."""
    core = client.CoreV1Api(conn.api)
    discovery = client.DiscoveryV1Api(conn.api)
    out = Listing()

    def many(what: str, all_ns: Callable[..., Any], one_ns: Callable[..., Any]) -> list[Body]:
        progress(f"listing {what}")
        try:
            if namespaces is None:
                items, calls = _paged(all_ns, page_size=page_size)
                out.calls += calls
                return items
            found: list[Body] = []
            for ns in namespaces:
                items, calls = _paged(one_ns, ns, page_size=page_size)
                out.calls += calls
                found += items
            return found
        except ApiException as exc:
            on_error(what, "list", int(exc.status or 0))
            raise ClusterError(_describe(exc, what)) from exc
        except Exception as exc:  # urllib3 connection errors and the like
            on_error(what, "list", 0)
            raise ClusterError(f"cannot list {what}: {exc}") from exc

    out.services = many(
        "services", core.list_service_for_all_namespaces, core.list_namespaced_service
    )
    out.pods = many("pods", core.list_pod_for_all_namespaces, core.list_namespaced_pod)
    out.slices = many(
        "endpointslices",
        discovery.list_endpoint_slice_for_all_namespaces,
        discovery.list_namespaced_endpoint_slice,
    )
    progress("listing nodes")
    try:
        out.nodes, calls = _paged(core.list_node, page_size=page_size)
        out.calls += calls
    except ApiException as exc:
        on_error("nodes", "list", int(exc.status or 0))
        if exc.status != 403:
            raise ClusterError(_describe(exc, "nodes")) from exc
        out.warnings.append("not allowed to list nodes: endpoint zones are not checked")
    out.default_kubernetes = next(
        (s for s in out.services if _is(s, "default", "kubernetes")), None
    )
    out.kube_dns = next((s for s in out.services if _is(s, *dns_service)), None)
    for ns, name, attr in (
        ("default", "kubernetes", "default_kubernetes"),
        (*dns_service, "kube_dns"),
    ):
        if getattr(out, attr) is not None or (namespaces is None):
            continue
        try:
            items, calls = _paged(
                core.list_namespaced_service, ns, field_selector=f"metadata.name={name}"
            )
            out.calls += calls
            setattr(out, attr, items[0] if items else None)
        except ApiException as exc:
            on_error("services", "list", int(exc.status or 0))
            out.warnings.append(_describe(exc, f"service {ns}/{name}"))
    _dns_slices(out, discovery, namespaces, dns_service, on_error)
    return out


def _dns_slices(
    out: Listing,
    discovery: Any,
    namespaces: list[str] | None,
    dns_service: tuple[str, str],
    on_error: Callable[[str, str, int], None],
) -> None:
    """The DNS Service's EndpointSlices: from the listing when it covers their namespace,
    else one label-selected LIST (not allowed: a warning, and its ClusterIP is asked)."""
    ns, name = dns_service
    if namespaces is None or ns in namespaces:
        out.kube_dns_slices = [s for s in out.slices if _labelled(s, ns, name)]
        return
    try:
        items, calls = _paged(
            discovery.list_namespaced_endpoint_slice,
            ns,
            label_selector=f"kubernetes.io/service-name={name}",
        )
        out.calls += calls
        out.kube_dns_slices = items
    except ApiException as exc:
        on_error("endpointslices", "list", int(exc.status or 0))
        out.warnings.append(
            _describe(exc, f"the EndpointSlices of {ns}/{name}") + ": its ClusterIP is asked"
        )


def _labelled(body: Body, namespace: str, service: str) -> bool:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    return bool(
        meta.get("namespace") == namespace and labels.get("kubernetes.io/service-name") == service
    )


def _is(body: Body, namespace: str, name: str) -> bool:
    meta = body.get("metadata") or {}
    return bool(meta.get("namespace") == namespace and meta.get("name") == name)
