"""The Kubernetes API calls the shell makes besides watching (controller/informer.py).

All writes are server-side apply with our own field manager, or Event creation. Every call
goes over the shared aiohttp session (controller/transport.py), from the event loop, with
kopf's login (controller/login.py): the operator never loads the kubernetes client (its API
classes and models took ~1.5 s to import and 20 MB, and its calls a worker thread each).

Hooks (the metrics): `on_write(kind)` per successful write, `on_error(resource, verb, status)`
per failed call (HTTP status, 0 when no response came back), 404s included even where the
caller treats them as an answer (a Service deleted mid-audit, a missing CRD).

With leader election, `may_write()` is asked right before every write; a replica that is not
the leader gets `NotLeader` instead of a request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
import structlog

from svcaudit.controller.settings import CRD_GROUP, CRD_KIND, CRD_PLURAL, CRD_VERSION
from svcaudit.controller.transport import ApiStatus, Transport

__all__ = ["ApiStatus", "Kube", "NotLeader", "object_not_found"]

APPLY = "application/apply-patch+yaml"
JSON = "application/json"
log = structlog.get_logger("svcaudit.kube")


class NotLeader(Exception):
    """A write refused before it was sent: this replica does not hold the leader Lease."""


class Kube:
    def __init__(
        self,
        transport: Transport,
        field_manager: str,
        on_write: Callable[[str], None] | None = None,
        on_error: Callable[[str, str, int], None] | None = None,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self.transport = transport  # shared with the informers' watches and the Lease calls
        self.field_manager = field_manager
        self.writes: dict[str, int] = {}
        self._on_write = on_write
        self._on_error = on_error
        # Leader election (controller/leader.py): asked right before every write.
        self.may_write = may_write

    async def _apply(self, resource: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (forced, our field manager). fieldValidation=Ignore: by default
        (Warn) the API server parses every apply body a second time, strictly, only to warn
        about duplicate or unknown fields, which the operator never reads (and our bodies
        have none: unknown fields would be pruned all the same); ~1 ms of its CPU per
        ServiceAudit write (bench/sa_cost.py)."""
        self._gate()
        params = {
            "fieldManager": self.field_manager,
            "force": "true",
            "fieldValidation": "Ignore",
        }
        return await self._request(resource, "apply", "PATCH", path, params, body, APPLY)

    # shape: one HTTP call's parts; all but the first four have defaults
    async def _request(
        self,
        resource: str,
        verb: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        accept: str = JSON,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """One call; its JSON answer ({} if none). An error status raises ApiStatus (callers
        tell 404s and conflicts apart by it); no answer raises aiohttp's error or TimeoutError."""
        with self._call(resource, verb):
            status, reason, data = await self.transport.send(
                method, path, params or {}, body, content_type, timeout, accept=accept
            )
            if status >= 300:
                raise ApiStatus(status, data.decode(errors="replace"), reason)
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def _gate(self) -> None:
        if self.may_write is not None and not self.may_write():
            raise NotLeader("not the leader: write skipped")

    @contextmanager
    def _call(self, resource: str, verb: str) -> Iterator[None]:
        """Report a failed API call to `on_error`, then let the exception go on."""
        try:
            yield
        except ApiStatus as exc:
            if self._on_error is not None:
                self._on_error(resource, verb, exc.status)
            raise
        except Exception:  # connection errors, timeouts: no response
            if self._on_error is not None:
                self._on_error(resource, verb, 0)
            raise

    def _count(self, what: str, namespace: str = "", name: str = "") -> None:
        log.debug("applied", kind=what, namespace=namespace, name=name)
        self.writes[what] = self.writes.get(what, 0) + 1
        if self._on_write is not None:
            self._on_write(what)

    async def readyz(self) -> bool:
        """Whether the API server says it is ready (its etcd check included)."""
        try:
            await self._request("readyz", "get", "GET", "/readyz", accept="text/plain", timeout=10)
        except Exception:
            return False
        return True

    async def whoami(self) -> str | None:
        """The user the API server authenticates us as (a SelfSubjectReview, which every
        authenticated user may create), or None if it cannot say: logged at start, so that a
        permission error can be read against the identity that got it."""
        try:
            answer = await self._request(
                "selfsubjectreviews",
                "create",
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                timeout=10,
            )
        except Exception:
            return None
        user = (answer.get("status") or {}).get("userInfo") or {}
        name = user.get("username")
        return name if isinstance(name, str) else None

    async def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request(
                "services", "get", "GET", f"/api/v1/namespaces/{namespace}/services/{name}"
            )
        except ApiStatus as exc:
            if exc.status == 404:
                return None
            raise

    async def list_endpointslices(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The EndpointSlices of one Service (its kubernetes.io/service-name label): one
        LIST, not a watch (the DNS Service's, read now and then by dns_server.py)."""
        answer = await self._request(
            "endpointslices",
            "list",
            "GET",
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            {"labelSelector": f"kubernetes.io/service-name={service}"},
        )
        items = answer.get("items") or []
        return [i for i in items if isinstance(i, dict)]

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
        except ApiStatus as exc:
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
        status: Mapping[str, Any] | bytes,
    ) -> dict[str, Any] | None:
        """The whole ServiceAudit (no status subresource): created or updated in one apply.
        `status` may come serialised already (JSON bytes: a report that waited its turn)."""
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
            "status": orjson.Fragment(status) if isinstance(status, bytes) else dict(status),
        }
        path = f"/apis/{CRD_GROUP}/{CRD_VERSION}/namespaces/{namespace}/{CRD_PLURAL}/{name}"
        answer = await self._apply("serviceaudits", path, body)
        self._count("serviceaudit", namespace, name)
        return answer

    async def create_event(self, event: Mapping[str, Any]) -> None:
        namespace = event["metadata"]["namespace"]
        self._gate()
        await self._request(
            "events", "create", "POST", f"/api/v1/namespaces/{namespace}/events", body=event
        )
        self._count("event", namespace, str(event["involvedObject"]["name"]))


def object_not_found(exc: ApiStatus) -> bool:
    """A 404 about an object (a Status naming it), as opposed to one about a resource type
    the API server does not serve (a missing CRD answers with a bare "404 page not found")."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return False
    details = body.get("details") if isinstance(body, dict) else None
    return isinstance(details, dict) and bool(details.get("name"))
