"""kopf wiring: raw watch events feed the indexes; a background task reconciles.

Only `@kopf.on.event` handlers are used (plus startup/cleanup/probe activities): kopf keeps no
progress or diff-base for them, so it never writes annotations, status fields or finalizers to
the watched objects. Handlers return None (a returned value would be stored in status).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import kopf
import structlog

from svcaudit.controller.indexes import Body, Key, Store
from svcaudit.controller.leader import LeaderElector
from svcaudit.controller.reconcile import Reconciler
from svcaudit.controller.settings import CRD_GROUP, CRD_PLURAL, CRD_VERSION, ControllerSettings

log = structlog.get_logger("svcaudit.handlers")


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.posting.enabled = False  # kopf would post its log lines as Events on our objects
    settings.peering.standalone = True  # HA is our own Lease (controller/leader.py)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 4  # only kopf's own sync helpers; our handlers are async


def build_registry(
    controller: ControllerSettings,
    store: Store,
    reconciler: Reconciler,
    leader: LeaderElector | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    task: dict[str, asyncio.Task[None]] = {}

    def feed(apply: Callable[[str | None, Body], set[Key]], event: kopf.RawEvent) -> None:
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        etype = event.get("type")
        if etype is None:
            reconciler.listing_event()
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
        if leader is not None:
            task["leader"] = asyncio.create_task(leader.run(), name="svcaudit-leader")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        t = task.pop("reconciler", None)
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
            "audits": reconciler.audits,
            "services": len(store.services),
            "writes": dict(reconciler.kube.writes),
            "role": "leader" if reconciler.leader.is_leader else "standby",
            "identity": leader.identity if leader is not None else "",
        }

    @kopf.on.event("v1", "services", registry=registry)
    async def on_service(event: kopf.RawEvent, **_: Any) -> None:
        feed(store.apply_service, event)

    @kopf.on.event("v1", "pods", registry=registry)
    async def on_pod(event: kopf.RawEvent, **_: Any) -> None:
        feed(store.apply_pod, event)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    async def on_slice(event: kopf.RawEvent, **_: Any) -> None:
        feed(store.apply_slice, event)

    @kopf.on.event("v1", "nodes", registry=registry)
    async def on_node(event: kopf.RawEvent, **_: Any) -> None:
        feed(store.apply_node, event)

    if controller.write_serviceaudits:

        @kopf.on.event(CRD_GROUP, CRD_VERSION, CRD_PLURAL, registry=registry)
        async def on_audit(event: kopf.RawEvent, **_: Any) -> None:
            feed(store.apply_audit, event)

    return registry
