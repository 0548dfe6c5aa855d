"""How the shell reads the API server's answers (real API server): a ServiceAudit that is
gone (its Service was recreated and the garbage collector took it) is simply applied again,
whole, and a 404 about an object is told apart from a missing CRD."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from svcaudit.controller.kube import ApiStatus, Kube, object_not_found
from svcaudit.controller.leader import KubeLeaseApi, LeaderElector
from svcaudit.controller.transport import Credentials, Transport
from tests.fixtures import Cluster
from tests.integration.op_helpers import ensure_crd

pytestmark = pytest.mark.cluster


def _error(kube: Kube, call: Callable[[], Awaitable[object]]) -> ApiStatus:
    async def run() -> object:
        try:
            return await call()
        finally:
            await kube.transport.close()

    try:
        asyncio.run(run())
    except ApiStatus as exc:
        return exc
    raise AssertionError("the API server accepted the call")


def test_a_missing_serviceaudit_is_applied_whole_and_told_apart_from_a_missing_crd(
    cluster: Cluster, namespace: str
) -> None:
    ensure_crd(cluster)
    kube = Kube(
        Transport(Credentials.from_configuration(cluster.api_client().configuration)),
        "svcaudit-test",
    )
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


def test_lease_calls_race_on_the_real_api_server(cluster: Cluster, namespace: str) -> None:
    """The elector's Lease calls go over the operator's one aiohttp transport: a 404 and a
    409 are answers (not failures), and of two electors racing for an absent Lease exactly
    one wins, the other being refused by the API server itself."""
    transport = Transport(Credentials.from_configuration(cluster.api_client().configuration))
    failures: list[tuple[str, str, int]] = []

    def api(name: str) -> KubeLeaseApi:
        return KubeLeaseApi(
            transport, namespace, name, timeout=5, on_error=lambda *e: failures.append(e)
        )

    async def run() -> None:
        try:
            a, b = api("race"), api("race")
            assert await a.get() is None
            spec = {"holderIdentity": "a", "leaseDurationSeconds": 15}
            won = await asyncio.gather(a.create(spec), b.create({**spec, "holderIdentity": "b"}))
            assert sorted(won) == [False, True]
            lease = await a.get()
            assert lease is not None
            rv = lease["metadata"]["resourceVersion"]
            assert await a.replace(rv, {**spec, "holderIdentity": "a2"})
            assert not await b.replace(rv, {**spec, "holderIdentity": "b2"})  # stale: 409
            # two electors racing for another, absent Lease: one leader
            electors = [LeaderElector(api("race-2"), n) for n in ("x", "y")]
            results = await asyncio.gather(*(e.try_once() for e in electors))
            assert sorted(results) == [False, True]
            assert sum(e.is_leader for e in electors) == 1
        finally:
            await transport.close()

    asyncio.run(run())
    assert failures == []


def test_a_serviceaudit_status_is_one_field_for_server_side_apply(
    cluster: Cluster, namespace: str
) -> None:
    """The CRD makes status atomic (x-kubernetes-map-type): our field manager owns it as one
    field, not leaf by leaf (a third less API server CPU per write, bench/sa_cost.py), and a
    second apply replaces the whole status (a condition dropped from it is gone)."""
    ensure_crd(cluster)
    kube = Kube(
        Transport(Credentials.from_configuration(cluster.api_client().configuration)),
        "svcaudit-test",
    )
    first = {
        "summary": {"healthy": "False", "discrepancies": 1},
        "conditions": [
            {
                "type": t,
                "status": "True",
                "reason": "Consistent",
                "message": "m",
                "lastTransitionTime": "2026-12-06T00:00:00Z",
            }
            for t in ("svcaudit.dev/EndpointsConsistent", "svcaudit.dev/DNSConsistent")
        ],
        "endpoints": {"managed": True, "expected": [{"addresses": ["10.0.0.1"]}]},
    }
    second = {
        "summary": {"healthy": "True", "discrepancies": 0},
        "conditions": first["conditions"][:1],
    }

    async def apply_twice() -> tuple[dict | None, dict | None]:
        try:
            one = await kube.apply_audit(namespace, "atomic", "uid-1", {}, first)
            two = await kube.apply_audit(namespace, "atomic", "uid-1", {}, second)
            return one, two
        finally:
            await kube.transport.close()

    one, two = asyncio.run(apply_twice())
    assert one is not None and two is not None
    ours = [m for m in two["metadata"]["managedFields"] if m["manager"] == "svcaudit-test"]
    assert len(ours) == 1 and ours[0]["fieldsV1"]["f:status"] == {}
    assert two["status"] == second  # replaced whole: no leftover endpoints, one condition
