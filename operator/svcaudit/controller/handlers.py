"""kopf wiring: raw watch events feed the indexes; a background task reconciles.

Only `@kopf.on.event` handlers are used (plus startup/cleanup/probe activities): kopf keeps no
progress or diff-base for them, so it never writes annotations, status fields or finalizers to
the watched objects. Handlers return None (a returned value would be stored in status).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import kopf
import structlog

from svcaudit.controller.indexes import Body, Key, Store, slim
from svcaudit.controller.leader import LeaderElector
from svcaudit.controller.reconcile import Reconciler
from svcaudit.controller.settings import CRD_GROUP, CRD_PLURAL, CRD_VERSION, ControllerSettings

log = structlog.get_logger("svcaudit.handlers")


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf builds a diff base (a deep copy of the whole body) and a diff for every event,
    for change-detecting handlers; we have only event handlers, which use neither. At 10k
    pods that copy was ~10 % of the operator's CPU (bench/)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    # List in pages: kopf's default is one LIST of everything, i.e. 10k pod bodies in memory
    # at once; pages cut the operator's peak RSS by ~45 MB at 10k pods (bench/).
    settings.watching.chunk_size = 500
    settings.posting.enabled = False  # kopf would post its log lines as Events on our objects
    settings.peering.standalone = True  # HA is our own Lease (controller/leader.py)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    # Retry a lost API server for as long as it takes, every 5 s at most (kopf's default
    # gives up after ~54 s): the watches then resume within seconds of its return.
    settings.networking.error_backoffs = (1, 1, 2, 3) + (5,) * 100_000
    settings.execution.max_workers = 4  # only kopf's own sync helpers; our handlers are async
    # kopf keeps a worker task per object until it has been idle this long (default 5 s): at
    # start-up that is every listed object at once. Ours finish in microseconds (bench/, 10k
    # pods: -17 MB of peak RSS at 0.5 s).
    settings.queueing.idle_timeout = 0.5


def build_registry(
    controller: ControllerSettings,
    store: Store,
    reconciler: Reconciler,
    leader: LeaderElector | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    task: dict[str, asyncio.Task[None]] = {}

    def feed(
        kind: str, apply: Callable[[str | None, Body], set[Key]], event: kopf.RawEvent
    ) -> None:
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        obj = slim(obj)
        etype = event.get("type")
        if etype is None:
            reconciler.listing_event(kind)  # type None: kopf (re-)lists this resource
        store.touch(kind, etype, obj, time.monotonic())
        affected = apply(etype, obj)
        if affected:
            reconciler.mark(affected)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same credentials as our own client: --kubeconfig/KUBECONFIG, else in-cluster."""
        if controller.kubeconfig is None:
            info = kopf.login_with_service_account(**kwargs)
            if info is not None:
                return info
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        task["reconciler"] = asyncio.create_task(reconciler.run(), name="svcaudit-reconciler")
        task["apiview"] = asyncio.create_task(reconciler.view.run(), name="svcaudit-apiview")
        if leader is not None:
            task["leader"] = asyncio.create_task(leader.run(), name="svcaudit-leader")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for name in ("apiview", "reconciler"):
            t = task.pop(name, None)
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        t = task.pop("leader", None)
        if leader is not None and t is not None:  # the reconciler has stopped: hand over
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
            await leader.release()

    @kopf.on.probe(id="svcaudit", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        for name, t in task.items():
            if t.done():
                raise RuntimeError(f"the {name} task has stopped")
        return {
            "ready": reconciler.ready,
            "api": reconciler.view.describe(),
            "audits": reconciler.audits,
            "services": len(store.services),
            "writes": dict(reconciler.kube.writes),
            "role": "leader" if reconciler.leader.is_leader else "standby",
            "identity": leader.identity if leader is not None else "",
        }

    @kopf.on.event("v1", "services", registry=registry)
    async def on_service(event: kopf.RawEvent, **_: Any) -> None:
        feed("services", store.apply_service, event)

    @kopf.on.event("v1", "pods", registry=registry)
    async def on_pod(event: kopf.RawEvent, **_: Any) -> None:
        feed("pods", store.apply_pod, event)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    async def on_slice(event: kopf.RawEvent, **_: Any) -> None:
        feed("endpointslices", store.apply_slice, event)

    @kopf.on.event("v1", "nodes", registry=registry)
    async def on_node(event: kopf.RawEvent, **_: Any) -> None:
        feed("nodes", store.apply_node, event)

    if controller.write_serviceaudits:

        @kopf.on.event(CRD_GROUP, CRD_VERSION, CRD_PLURAL, registry=registry)
        async def on_audit(event: kopf.RawEvent, **_: Any) -> None:
            feed("serviceaudits", store.apply_audit, event)

    return registry
