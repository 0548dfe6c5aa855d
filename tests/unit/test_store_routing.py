"""The store's routing (pod -> services to re-audit) after any sequence of service and pod
events equals the brute-force answer: the services whose selector selects the pod. The store
matches a pod only against services sharing one of its labels (a selector index); this
checks the index never misses or keeps a route."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcaudit.controller.indexes import Affected, Store
from svcaudit.core.endpoints import selects

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABELS = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]), max_size=2)
NAMES = st.sampled_from(["s1", "s2", "s3"])
PODS = st.sampled_from(["p1", "p2", "p3"])
NAMESPACES = st.sampled_from(["ns", "other"])


def _service(ns: str, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "uid": f"u-{name}", "resourceVersion": "1"},
        "spec": {
            "selector": selector or None,
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }


def _pod(ns: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "uid": f"u-{name}", "labels": labels},
        "spec": {"containers": [{"name": "app"}], "nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": "10.244.0.5"},
    }


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("svc"), st.sampled_from(["ADDED", "DELETED"]), NAMESPACES, NAMES, LABELS),
        st.tuples(st.just("pod"), st.sampled_from(["ADDED", "DELETED"]), NAMESPACES, PODS, LABELS),
    ),
    max_size=25,
)


@SETTINGS
@given(EVENTS)
def test_routes_equal_the_brute_force_selector_match(events: list[tuple[Any, ...]]) -> None:
    store = Store()
    for kind, etype, ns, name, labels in events:
        if kind == "svc":
            store.apply_service(etype, _service(ns, name, labels))
        else:
            store.apply_pod(etype, _pod(ns, name, labels))
    for (ns, pod_name), routes in store.pod_routes.items():
        pod = store.pod_views[ns][pod_name]
        assert pod is not None
        # routes are as of the pod's last event or the services' last change, whichever is
        # later: both paths must agree with the selector on the current views
        want = {
            s
            for s in store.services_by_ns.get(ns, ())
            if (view := store.service_views.get((ns, s))) is not None and selects(view, pod)
        }
        assert routes == want


def _slice(order: list[str], ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": "s1-abc",
            "labels": {"kubernetes.io/service-name": "s1"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-1"}
            for ip in order
        ],
    }


def test_a_slice_rewritten_reordered_audits_nothing_again_but_a_change_does() -> None:
    store = Store()
    assert store.apply_slice(None, _slice(["10.0.0.1", "10.0.0.2"])) == {("ns", "s1")}
    # The controller rewrites a slice, reordered, for a named port no pod declares.
    assert store.apply_slice("MODIFIED", _slice(["10.0.0.2", "10.0.0.1"])) == set()
    assert [e.addresses for e in store.slice_views_of(("ns", "s1"))[0].endpoints] == [
        ("10.0.0.2",),
        ("10.0.0.1",),
    ]
    assert store.apply_slice("MODIFIED", _slice(["10.0.0.2", "10.0.0.1"], ready=False)) == {
        ("ns", "s1")
    }
    assert store.apply_slice("MODIFIED", _slice(["10.0.0.2"], ready=False)) == {("ns", "s1")}
    assert store.apply_slice("DELETED", _slice(["10.0.0.2"], ready=False)) == {("ns", "s1")}
    assert store.slice_views_of(("ns", "s1")) == []


def test_a_service_or_pod_coming_or_going_ripples_to_its_namespace_only_as_a_ripple() -> None:
    """Every service of the namespace is re-audited (the pods' variables changed), but only
    the object's own services are direct: the rest is `ripple`, audited after them."""
    store = Store()
    for name in ("s1", "s2", "s3"):
        store.apply_service(None, _service("ns", name, {"app": name}))
    store.apply_service(None, _service("other", "s1", {"app": "s1"}))
    added = store.apply_service("ADDED", _service("ns", "s4", {"app": "s4"}))
    assert isinstance(added, Affected)
    assert added == {("ns", "s1"), ("ns", "s2"), ("ns", "s3"), ("ns", "s4")}
    assert added.ripple == {("ns", "s1"), ("ns", "s2"), ("ns", "s3")}
    gone = store.apply_service("DELETED", _service("ns", "s4", {"app": "s4"}))
    assert isinstance(gone, Affected) and gone - gone.ripple == {("ns", "s4")}
    started = store.apply_pod("ADDED", _pod("ns", "p1", {"app": "s2"}))
    assert isinstance(started, Affected) and started - started.ripple == {("ns", "s2")}
    assert started.ripple == {("ns", "s1"), ("ns", "s3")}
    relabelled = store.apply_pod("MODIFIED", _pod("ns", "p1", {"app": "s3"}))
    assert relabelled == {("ns", "s2"), ("ns", "s3")}  # its routes: both direct
    assert getattr(relabelled, "ripple", frozenset()) == frozenset()
    stopped = store.apply_pod("DELETED", _pod("ns", "p1", {"app": "s3"}))
    assert isinstance(stopped, Affected) and stopped - stopped.ripple == {("ns", "s3")}
