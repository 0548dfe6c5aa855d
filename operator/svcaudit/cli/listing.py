"""Read-only cluster access for `svcaudit check`: one paginated LIST per resource kind, the
kinds at once, over the operator's aiohttp transport.

No per-object GETs: even the two singletons the audit needs (default/kubernetes for the
environment, kube-system/kube-dns for the DNS server) are read with a field-selected LIST.
Raw JSON bodies are returned (the core's `from_api` reads the API's camelCase form), which
also skips the kubernetes client's slow model deserialisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from kubernetes import client
from kubernetes import config as _config

from svcaudit.controller.transport import ApiStatus, Credentials, Transport

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


LIST_TIMEOUT = 120.0  # seconds, one page

CORE, DISCOVERY = "/api/v1", "/apis/discovery.k8s.io/v1"
PATHS = {
    "services": (CORE, "services"),
    "pods": (CORE, "pods"),
    "endpointslices": (DISCOVERY, "endpointslices"),
    "nodes": (CORE, "nodes"),
}


async def _paged(
    transport: Transport, path: str, page_size: int, **params: str
) -> tuple[list[Body], int]:
    """Every item of a LIST, page by page (continue tokens), with kind and apiVersion set."""
    items: list[Body] = []
    token: str | None = None
    calls = 0
    while True:
        query = dict(params)
        if page_size:
            query["limit"] = str(page_size)
        if token:
            query["continue"] = token
        data = await transport.get_json(path, query, LIST_TIMEOUT)
        calls += 1
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


# A LIST that got no usable answer: no connection, a timeout, or a body that is not JSON.
NO_ANSWER = (aiohttp.ClientError, OSError, ValueError)


def _status(exc: Exception) -> int:
    """The HTTP status of a failed LIST for the metrics (0: no answer came back)."""
    return exc.status if isinstance(exc, ApiStatus) else 0


def _path(kind: str, namespace: str | None = None) -> str:
    group, plural = PATHS[kind]
    return f"{group}/namespaces/{namespace}/{plural}" if namespace else f"{group}/{plural}"


def _describe(exc: Exception, what: str) -> str:
    if isinstance(exc, ApiStatus):
        reason = exc.reason or ""
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            reason = json.loads(exc.body or "").get("message") or reason
        return f"cannot list {what}: HTTP {exc.status}: {reason}".rstrip(": ")
    return f"cannot list {what}: {type(exc).__name__}: {exc}".rstrip(": ")


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
    and so are the DNS Service's slices (a warning: its ClusterIP is asked instead).

    The kinds are listed at once over one aiohttp session (the operator's transport): the
    API server prepares one while this process decodes another (at 10k pods the kinds one
    after the other, through the kubernetes client, took twice as long)."""
    return run_returning(_list_all(conn, namespaces, progress, on_error, page_size, dns_service))


T = TypeVar("T")


def run_returning(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(coroutine)'s result, without handing it back through the task: on Python
    3.11, asyncio.run's SIGINT bookkeeping builds the finished task's repr, and with it the
    repr of its result (for the listing, every pod: a sixth of check's time at 2k pods)."""
    box: list[T] = []

    async def keep() -> None:
        box.append(await coroutine)

    asyncio.run(keep())
    return box[0]


async def _list_all(  # shape: list_all's parameters, passed through
    conn: Connection,
    namespaces: list[str] | None,
    progress: Callable[[str], None],
    on_error: Callable[[str, str, int], None],
    page_size: int,
    dns_service: tuple[str, str],
) -> Listing:
    transport = Transport(
        Credentials.from_configuration(conn.api.configuration, conn.api.default_headers)
    )
    out = Listing()

    async def many(kind: str) -> list[Body]:
        try:
            found: list[Body] = []
            scopes = [None] if namespaces is None or kind == "nodes" else namespaces
            for ns in scopes:
                items, calls = await _paged(transport, _path(kind, ns), page_size)
                out.calls += calls
                found += items
            return found
        except ApiStatus as exc:
            on_error(kind, "list", exc.status)
            raise ClusterError(_describe(exc, kind)) from exc
        except NO_ANSWER as exc:
            on_error(kind, "list", 0)
            raise ClusterError(_describe(exc, kind)) from exc

    async def nodes() -> list[Body] | None:
        try:
            return await many("nodes")
        except ClusterError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiStatus) and cause.status == 403:
                out.warnings.append("not allowed to list nodes: endpoint zones are not checked")
                return None
            raise

    progress("listing services, pods, endpointslices and nodes")
    try:
        found = await asyncio.gather(
            many("services"), many("pods"), many("endpointslices"), nodes(),
            return_exceptions=True,
        )  # fmt: skip
        for result in found:  # the first failed kind in this order, whichever failed first
            if isinstance(result, BaseException):
                raise result
        out.services, out.pods, out.slices, out.nodes = found  # type: ignore[assignment]
        await _singletons(out, transport, namespaces, dns_service, on_error)
    finally:
        await transport.close()
    return out


async def _singletons(
    out: Listing,
    transport: Transport,
    namespaces: list[str] | None,
    dns_service: tuple[str, str],
    on_error: Callable[[str, str, int], None],
) -> None:
    """default/kubernetes and the DNS Service, from the listing or one field-selected LIST
    each when their namespace was not listed; then the DNS Service's slices."""
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
            path = _path("services", ns)
            items, calls = await _paged(
                transport, path, PAGE_SIZE, fieldSelector=f"metadata.name={name}"
            )
            out.calls += calls
            setattr(out, attr, items[0] if items else None)
        except (ApiStatus, *NO_ANSWER) as exc:
            on_error("services", "list", _status(exc))
            out.warnings.append(_describe(exc, f"service {ns}/{name}"))
    await _dns_slices(out, transport, namespaces, dns_service, on_error)


async def _dns_slices(
    out: Listing,
    transport: Transport,
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
        items, calls = await _paged(
            transport,
            _path("endpointslices", ns),
            PAGE_SIZE,
            labelSelector=f"kubernetes.io/service-name={name}",
        )
        out.calls += calls
        out.kube_dns_slices = items
    except (ApiStatus, *NO_ANSWER) as exc:
        on_error("endpointslices", "list", _status(exc))
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
