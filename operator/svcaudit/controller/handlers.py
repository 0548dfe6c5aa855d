"""kopf wiring: kopf runs the operator (login, start-up and clean-up, the liveness probe,
signals); our informers (controller/informer.py) feed the indexes; a task reconciles.

kopf has no resource handler here, so it never watches, patches, annotates or adds finalizers
to anything. Its per-event processing cost ~1.5 ms of CPU per watch event, 30 s of the initial
audit at 10k pods (bench/); the informers deliver the same events for a fraction of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import kopf
import structlog

from svcaudit.controller.indexes import Affected, Key, Store, slim
from svcaudit.controller.informer import Informer, collection_paths
from svcaudit.controller.leader import LeaderElector
from svcaudit.controller.login import login as kopf_login
from svcaudit.controller.reconcile import Reconciler
from svcaudit.controller.settings import ControllerSettings

log = structlog.get_logger("svcaudit.handlers")


def kopf_settings() -> kopf.OperatorSettings:
    """kopf runs no watch of ours: it needs no resource discovery either (no CRD or namespace
    watches, so no RBAC for them)."""
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.posting.enabled = False  # kopf would post its log lines as Events on our objects
    settings.peering.standalone = True  # HA is our own Lease (controller/leader.py)
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 4  # only kopf's own sync helpers; our activities are async
    return settings


def build_registry(
    controller: ControllerSettings,
    store: Store,
    reconciler: Reconciler,
    leader: LeaderElector | None = None,
) -> kopf.OperatorRegistry:
    """kopf's handlers: log in, start our tasks, stop them (the Lease first), probe them."""
    registry = kopf.OperatorRegistry()
    task: dict[str, asyncio.Task[None]] = {}
    task_refs: set[asyncio.Task[None]] = set()  # one-off tasks, kept until done
    transport = reconciler.kube.transport
    informers = _informers(controller, store, reconciler)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same credentials as our transport's (login.py): in-cluster, else the
        kubeconfig (--kubeconfig/KUBECONFIG)."""
        return kopf_login(controller.kubeconfig, **kwargs)

    async def log_identity() -> None:
        user = await reconciler.kube.whoami()
        log.info("authenticated", user=user or "unknown (no SelfSubjectReview answer)")

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        identity = asyncio.create_task(log_identity(), name="svcaudit-whoami")
        task_refs.add(identity)
        identity.add_done_callback(task_refs.discard)
        for informer in informers:
            task[f"informer {informer.path}"] = asyncio.create_task(
                informer.run(), name=f"svcaudit-informer-{informer.path}"
            )
        task["reconciler"] = asyncio.create_task(
            reconciler.run(synced=lambda: all(i.synced for i in informers)),
            name="svcaudit-reconciler",
        )
        task["apiview"] = asyncio.create_task(reconciler.view.run(), name="svcaudit-apiview")
        if leader is not None:
            task["leader"] = asyncio.create_task(leader.run(), name="svcaudit-leader")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await _stop(task, leader)
        await transport.close()

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

    return registry


def _informers(
    controller: ControllerSettings, store: Store, reconciler: Reconciler
) -> list[Informer]:
    """One informer per watched collection (per kind, per namespace or cluster-wide), each
    feeding the store and marking the services its events affect."""
    kinds = ["services", "pods", "endpointslices", "nodes"]
    if controller.write_serviceaudits:
        kinds.append("serviceaudits")
    return [
        Informer(
            reconciler.kube.transport,
            kind,
            path,
            _deliverer(store, reconciler, kind),
            _lister(store, reconciler, namespace),
        )
        for kind in kinds
        for namespace, path in collection_paths(kind, controller.namespaces)
    ]


def _deliverer(
    store: Store, reconciler: Reconciler, kind: str
) -> Callable[[str | None, dict[str, Any]], None]:
    """A watch event of `kind` into the store; the services it affects are marked for an
    audit once the reconciler is ready (before, its first pass audits every service)."""
    apply = store.applier(kind)
    prompt = kind == "endpointslices"  # the control plane's answer: audited at once (queue.py)

    def deliver(etype: str | None, obj: dict[str, Any]) -> None:
        obj = slim(obj)
        store.touch(kind, etype, obj, time.monotonic())
        affected = apply(etype, obj)
        if affected and reconciler.ready:  # before: the first pass audits every service
            ripple = affected.ripple if isinstance(affected, Affected) else frozenset()
            reconciler.mark(affected - ripple if ripple else affected, prompt=prompt)
            if ripple:
                reconciler.mark(ripple, ripple=True)

    return deliver


def _lister(
    store: Store, reconciler: Reconciler, namespace: str | None
) -> Callable[[str, set[Key], float, bool], None]:
    """What a completed listing of `namespace` (None: all) does to the store."""

    def on_listed(kind: str, live: set[Key], listed_at: float, first: bool) -> None:
        """A listing brings no DELETED events: forget what it no longer shows."""
        ghosts, affected = store.prune(kind, live, listed_at, namespace)
        if ghosts and not first:
            log.info("deleted during a watch gap", kind=kind, objects=len(ghosts))
        if reconciler.ready:
            reconciler.mark(affected)

    return on_listed


async def _stop(task: dict[str, asyncio.Task[None]], leader: LeaderElector | None) -> None:
    """Stop our tasks, handing the Lease over first: from then on every write of ours is
    refused (kube.may_write follows the Lease), so the next leader does not wait for the rest
    of the shutdown, which on a loaded machine outlasted a pod's grace period (handover 44 s
    instead of 1 s)."""
    t = task.pop("leader", None)
    if leader is not None and t is not None:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
        await leader.release()
    names = ["apiview", "reconciler", *(n for n in task if n.startswith("informer "))]
    for name in names:
        t = task.pop(name, None)
        if t is not None:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
