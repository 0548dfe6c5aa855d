"""The informer (controller/informer.py) against the real API server: a paged first listing,
then every change in order, lines longer than aiohttp's read buffer, and a resource that is
not served (the reconciler's guarantees rest on these). The 410 Gone that makes it list again
is met end to end in test_faults.py::test_watch_gap… (a version from before an API server
restart); a watch from version 1 is not a reliable 410: an uncompacted etcd replays it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from svcaudit.controller.informer import Informer
from svcaudit.controller.transport import Credentials, Transport
from tests.fixtures import Cluster
from tests.integration.op_helpers import apply

pytestmark = pytest.mark.cluster

Seen = list[tuple[str | None, str]]


def _configmap(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{v: '{value}'}}\n"


def _informer(cluster: Cluster, namespace: str, seen: Seen, listed: list[Any]) -> Informer:
    transport = Transport(Credentials.from_configuration(cluster.api_client().configuration))
    return Informer(
        transport,
        "configmaps",
        f"/api/v1/namespaces/{namespace}/configmaps",
        lambda etype, obj: seen.append((etype, obj["metadata"]["name"])),
        lambda kind, live, at, first: listed.append((kind, sorted(live), first)),
        page_size=2,  # 6 objects: three pages
        watch_seconds=30,
    )


def test_lists_in_pages_then_delivers_every_change_in_order(
    cluster: Cluster, namespace: str
) -> None:
    for i in range(5):
        apply(cluster, namespace, _configmap(f"cm-{i}", "a"))
    seen: Seen = []
    listed: list[Any] = []
    informer = _informer(cluster, namespace, seen, listed)

    async def main() -> None:
        task = asyncio.create_task(informer.run())
        try:
            while not informer.synced:
                await asyncio.sleep(0.05)
            ours = [f"cm-{i}" for i in range(5)]  # (beside the namespace's kube-root-ca.crt)
            first = [name for etype, name in seen if etype is None]
            assert sorted(first) == sorted([*ours, "kube-root-ca.crt"])  # once each, 3 pages
            assert listed == [
                (
                    "configmaps",
                    sorted((namespace, n) for n in [*ours, "kube-root-ca.crt"]),
                    True,
                )
            ]

            def kubectl(*args: str, input: str | None = None) -> None:
                cluster.run_kubectl(*args, "-n", namespace, input=input)

            big = "x" * 300_000  # a ~300 KB watch line: aiohttp's read buffer is 64 KiB
            await asyncio.to_thread(kubectl, "create", "-f", "-", input=_configmap("cm-big", big))
            await asyncio.to_thread(kubectl, "apply", "-f", "-", input=_configmap("cm-0", "b"))
            await asyncio.to_thread(kubectl, "delete", "configmap", "cm-1")
            for _ in range(200):
                if ("DELETED", "cm-1") in seen:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await informer.transport.close()

    asyncio.run(main())
    changes = [(t, n) for t, n in seen if t is not None]
    assert changes == [("ADDED", "cm-big"), ("MODIFIED", "cm-0"), ("DELETED", "cm-1")]
    assert informer.listings == 1


def test_a_resource_the_api_server_does_not_serve_is_synced_empty(
    cluster: Cluster, namespace: str
) -> None:
    """A missing CRD must not hold the first audits back for ever; it is looked for later."""
    listed: list[Any] = []
    informer = _informer(cluster, namespace, [], listed)
    informer.path = f"/apis/nothing.svcaudit.test/v1/namespaces/{namespace}/things"

    async def main() -> None:
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(_until(lambda: informer.synced), 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await informer.transport.close()

    asyncio.run(main())
    assert informer.synced and informer.listings == 0
    assert listed == []  # nothing listed, nothing pruned


async def _until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.05)
