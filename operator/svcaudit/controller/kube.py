"""The Kubernetes API calls the shell makes besides watching (controller/informer.py).

All writes are server-side apply with our own field manager, or Event creation. The applies
go over the shared aiohttp session (controller/transport.py), from the event loop; the rare
calls (Events, two GETs, /readyz) use the synchronous kubernetes client in worker threads.

Hooks (the metrics): `on_write(kind)` per successful write, `on_error(resource, verb, status)`
per failed call (HTTP status, 0 when no response came back), 404s included even where the
caller treats them as an answer (a Service deleted mid-audit, a missing CRD).

With leader election, `may_write()` is asked right before every write; a replica that is not
the leader gets `NotLeader` instead of a request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from svcaudit.controller.settings import CRD_GROUP, CRD_KIND, CRD_PLURAL, CRD_VERSION
from svcaudit.controller.transport import Transport

APPLY = "application/apply-patch+yaml"
JSON = "application/json"
log = structlog.get_logger("svcaudit.kube")


class NotLeader(Exception):
    """A write refused before it was sent: this replica does not hold the leader Lease."""


def load_client(kubeconfig: str | None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            pass
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    return api


class Kube:
    def __init__(
        self,
        api: client.ApiClient,
        field_manager: str,
        on_write: Callable[[str], None] | None = None,
        on_error: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self.transport = Transport(api.configuration)  # writes here, and the informers' watches
        self.field_manager = field_manager
        self.writes: dict[str, int] = {}
        self._on_write = on_write
        self._on_error = on_error
        # Leader election (controller/leader.py): asked right before every write.
        self.may_write: Callable[[], bool] | None = None

    async def _apply(self, resource: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (forced, our field manager) over the shared aiohttp session.
        An error status raises ApiException, as the kubernetes client would."""
        self._gate()
        params = {"fieldManager": self.field_manager, "force": "true"}
        with self._call(resource, "apply"):
            status, reason, data = await self.transport.patch(path, params, body, APPLY, 30)
            if status >= 300:
                raise ApiException(status=status, reason=reason, body=data.decode(errors="replace"))
        answer = orjson.loads(data)
        return answer if isinstance(answer, dict) else {}

    def _gate(self) -> None:
        if self.may_write is not None and not self.may_write():
            raise NotLeader("not the leader: write skipped")

    @contextmanager
    def _call(self, resource: str, verb: str) -> Iterator[None]:
        """Report a failed API call to `on_error`, then let the exception go on."""
        try:
            yield
        except ApiException as exc:
            if self._on_error is not None:
                self._on_error(resource, verb, int(exc.status or 0))
            raise
        except Exception:  # urllib3 connection errors and the like: no response
            if self._on_error is not None:
                self._on_error(resource, verb, 0)
            raise

    def _count(self, what: str, namespace: str = "", name: str = "") -> None:
        log.debug("applied", kind=what, namespace=namespace, name=name)
        self.writes[what] = self.writes.get(what, 0) + 1
        if self._on_write is not None:
            self._on_write(what)

    def _get_raw(
        self, path: str, query: list[tuple[str, Any]] | None = None, accept: str = JSON
    ) -> Any:
        """GET a path with our credentials; the response (status, data) or ApiException."""
        method, url, headers, _, _ = self._api.param_serialize(
            "GET",
            path,
            query_params=query or [],
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        resp = self._api.call_api(method, url, header_params=headers, _request_timeout=10)
        resp.read()  # type: ignore[no-untyped-call]
        if not 200 <= resp.status < 300:
            raise ApiException(http_resp=resp)
        return resp

    async def readyz(self) -> bool:
        """Whether the API server says it is ready (its etcd check included)."""

        def call() -> bool:
            with self._call("readyz", "get"):
                self._get_raw("/readyz", accept="text/plain")
            return True

        try:
            return await asyncio.to_thread(call)
        except Exception:
            return False

    async def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                with self._call("services", "get"):
                    resp = self._core.read_namespaced_service(
                        name, namespace, _preload_content=False
                    )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return _json(resp)

        return await asyncio.to_thread(call)

    async def apply_service_status(
        self, namespace: str, name: str, conditions: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "status": {"conditions": conditions},
        }
        try:
            answer = await self._apply(
                "services/status", f"/api/v1/namespaces/{namespace}/services/{name}/status", body
            )
        except ApiException as exc:
            if exc.status == 404:  # deleted while we audited it: nothing to report on
                return None
            raise
        self._count("service-status", namespace, name)
        return answer

    async def apply_audit(
        self,
        namespace: str,
        name: str,
        owner_uid: str,
        labels: Mapping[str, str],
        status: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """The whole ServiceAudit (no status subresource): created or updated in one apply."""
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": CRD_KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels),
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": name,
                        "uid": owner_uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {},
            "status": dict(status),
        }
        path = f"/apis/{CRD_GROUP}/{CRD_VERSION}/namespaces/{namespace}/{CRD_PLURAL}/{name}"
        answer = await self._apply("serviceaudits", path, body)
        self._count("serviceaudit", namespace, name)
        return answer

    async def create_event(self, event: Mapping[str, Any]) -> None:
        namespace = event["metadata"]["namespace"]
        body = client.CoreV1Event.from_dict(dict(event))
        assert body is not None
        self._gate()
        with self._call("events", "create"):
            await asyncio.to_thread(
                self._core.create_namespaced_event, namespace, body, _preload_content=False
            )
        self._count("event", namespace, str(event["involvedObject"]["name"]))


def _json(resp: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(resp.data)
    except (AttributeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def object_not_found(exc: ApiException) -> bool:
    """A 404 about an object (a Status naming it), as opposed to one about a resource type
    the API server does not serve (a missing CRD answers with a bare "404 page not found")."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return False
    details = body.get("details") if isinstance(body, dict) else None
    return isinstance(details, dict) and bool(details.get("name"))
