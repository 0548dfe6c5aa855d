"""How the shell reads the API server's answers (real API server): a ServiceAudit that is
gone (its Service was recreated and the garbage collector took it) is simply applied again,
whole, and a 404 about an object is told apart from a missing CRD."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from kubernetes.client.exceptions import ApiException

from svcaudit.controller.kube import Kube, object_not_found
from tests.fixtures import Cluster
from tests.integration.op_helpers import ensure_crd

pytestmark = pytest.mark.cluster


def _error(kube: Kube, call: Callable[[], Awaitable[object]]) -> ApiException:
    async def run() -> object:
        try:
            return await call()
        finally:
            await kube.transport.close()

    try:
        asyncio.run(run())
    except ApiException as exc:
        return exc
    raise AssertionError("the API server accepted the call")


def test_a_missing_serviceaudit_is_applied_whole_and_told_apart_from_a_missing_crd(
    cluster: Cluster, namespace: str
) -> None:
    ensure_crd(cluster)
    kube = Kube(cluster.api_client(), "svcaudit-test")
    status = {"summary": {"healthy": "True"}}

    async def apply() -> dict | None:
        try:
            return await kube.apply_audit(namespace, "new-audit", "uid-1", {"a": "b"}, status)
        finally:
            await kube.transport.close()

    made = asyncio.run(apply())
    assert made is not None
    assert made["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert made["status"]["summary"] == {"healthy": "True"}  # one apply: object and status

    # A 404 naming an object (here a Service, read by name) is about that object...
    path = f"/api/v1/namespaces/{namespace}/services/no-such-service"
    gone = _error(kube, lambda: kube._request("services", "get", "GET", path))
    assert gone.status == 404
    assert object_not_found(gone)
    assert asyncio.run(_closing(kube, kube.get_service(namespace, "no-such-service"))) is None

    # A group/version the API server does not serve: what a cluster without our CRD answers.
    thing = {"apiVersion": "nothing.svcaudit.test/v1", "kind": "Thing", "metadata": {"name": "x"}}
    no_crd = _error(
        kube,
        lambda: kube._apply(
            "things", f"/apis/nothing.svcaudit.test/v1/namespaces/{namespace}/things/x", thing
        ),
    )
    assert no_crd.status == 404
    assert not object_not_found(no_crd)


async def _closing(kube: Kube, call: Awaitable[object]) -> object:
    try:
        return await call
    finally:
        await kube.transport.close()
