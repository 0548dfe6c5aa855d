"""How the shell reads the API server's 404s (real API server): a ServiceAudit that is gone
(its Service was recreated and the garbage collector took it) is not a missing CRD."""

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


def test_a_missing_serviceaudit_is_told_apart_from_a_missing_crd(
    cluster: Cluster, namespace: str
) -> None:
    ensure_crd(cluster)
    kube = Kube(cluster.api_client(), "svcaudit-test")
    gone = _error(kube.apply_audit_status(namespace, "no-such-audit", {"conditions": []}))
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
