"""Watch gaps in the shell: the store forgets what a re-list no longer shows, and the API
view monitor pauses, goes blind, and comes back (real bodies, a fake clock, no API)."""

from __future__ import annotations

import asyncio
from typing import Any

from svcaudit.controller.apiview import ApiView
from svcaudit.controller.indexes import Store


def _svc(name: str, app: str = "web") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}"},
        "spec": {
            "selector": {"app": app},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }


def _pod(name: str, app: str = "web") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}", "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": []}]},
        "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]},
    }


def _filled() -> Store:
    store = Store()
    for body, kind, apply in (
        (_svc("web"), "services", store.apply_service),
        (_pod("web-a"), "pods", store.apply_pod),
        (_pod("web-b"), "pods", store.apply_pod),
    ):
        apply(None, body)
        store.touch(kind, None, body, when=10.0)
    return store


def test_prune_forgets_a_pod_deleted_during_the_gap_and_reaudits_its_service() -> None:
    store = _filled()
    ghosts, affected = store.prune("pods", {("ns", "web-a")}, listed_at=20.0)
    assert ghosts == {("ns", "web-b")}
    assert ("ns", "web") in affected
    assert set(store.pods["ns"]) == {"web-a"}
    assert ("pods", ("ns", "web-b")) not in store.last_event


def test_prune_keeps_objects_seen_after_the_listing_started() -> None:
    store = _filled()
    late = _pod("web-c")
    store.apply_pod("ADDED", late)
    store.touch("pods", "ADDED", late, when=21.0)  # created after the listing began
    ghosts, _ = store.prune("pods", {("ns", "web-a"), ("ns", "web-b")}, listed_at=20.0)
    assert ghosts == set()
    assert set(store.pods["ns"]) == {"web-a", "web-b", "web-c"}


def test_prune_of_a_service_and_nothing_when_all_are_live() -> None:
    store = _filled()
    assert store.prune("services", {("ns", "web")}, listed_at=20.0) == (set(), set())
    ghosts, affected = store.prune("services", set(), listed_at=20.0)
    assert ghosts == {("ns", "web")} and ("ns", "web") in affected
    assert store.services == {}


def test_deleted_events_leave_no_bookkeeping_behind() -> None:
    store = _filled()
    store.touch("pods", "DELETED", _pod("web-a"), when=30.0)
    assert ("pods", ("ns", "web-a")) not in store.last_event


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_api_view_pauses_goes_blind_after_the_threshold_and_comes_back() -> None:
    clock = _Clock()
    answers = [True]
    calls: list[tuple[str, float]] = []
    states: list[bool] = []

    async def readyz() -> bool:
        return answers[-1]

    async def lost(since: float) -> None:
        calls.append(("lost", since))

    async def back(down_for: float) -> None:
        calls.append(("back", down_for))

    async def scenario() -> None:
        view = ApiView(readyz, 5.0, 15.0, lost, back, states.append, clock)
        await view.check_once()
        assert view.reachable and calls == [] and states == []
        answers.append(False)
        clock.now = 100.0
        await view.check_once()
        assert not view.reachable and not view.lost and states == [False]
        clock.now = 110.0
        await view.check_once()
        assert calls == []  # 10 s < 15 s: paused, still vouching
        clock.now = 116.0
        await view.check_once()
        assert view.lost and calls == [("lost", 100.0)]
        clock.now = 130.0
        await view.check_once()
        assert calls == [("lost", 100.0)]  # once
        answers.append(True)
        clock.now = 131.0
        await view.check_once()
        assert view.reachable and not view.lost and states == [False, True]
        assert calls == [("lost", 100.0), ("back", 31.0)]
        await asyncio.wait_for(view.wait_reachable(), 1)

    asyncio.run(scenario())
