"""How the shell reads the API server's answers (real API server): a ServiceAudit that is
gone (its Service was recreated and the garbage collector took it) is simply applied again,
whole, and a 404 about an object is told apart from a missing CRD."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.client.exceptions import ApiException

from svcaudit.controller.kube import Kube, object_not_found
from tests.fixtures import Cluster
from tests.integration.op_helpers import ensure_crd

pytestmark = pytest.mark.cluster


def _error(call: object) -> ApiException:
    try:
        asyncio.run(call)  # type: ignore[arg-type]
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

    # A 404 naming an object (here the Service, read by name) is about that object...
    gone = _error(
        asyncio.to_thread(kube._core.read_namespaced_service, "no-such-service", namespace)
    )
    assert gone.status == 404
    assert object_not_found(gone)

    # A group/version the API server does not serve: what a cluster without our CRD answers.
    no_crd = _error(
        asyncio.to_thread(
            kube._custom.patch_namespaced_custom_object,
            "nothing.svcaudit.test",
            "v1",
            namespace,
            "things",
            "x",
            {"apiVersion": "nothing.svcaudit.test/v1", "kind": "Thing", "metadata": {"name": "x"}},
            field_manager="svcaudit-test",
            _content_type="application/apply-patch+yaml",
        )
    )
    assert no_crd.status == 404
    assert not object_not_found(no_crd)
