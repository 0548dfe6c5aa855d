"""The store's cluster-wide pod addresses (SVA-EP-017) and the re-audits issue 19 adds: a
pod's IP appearing or going away in ANY namespace re-audits the services whose hand-written
slices name that IP without targetRef; a node's pod range changing re-audits every service
naming addresses; a Service's topology annotations re-audit it (its slices' hints)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcaudit.controller.indexes import Store, node_fingerprint
from svcaudit.controller.translate import prepare
from svcaudit.core.endpoints import HintsPolicy, hints_policy

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IPS = ["10.244.1.5", "10.244.1.6", "010.244.001.007"]  # the last one: uninterpretable pod


def _pod(ns: str, name: str, ip: str | None, phase: str = "Running") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "metadata": {"namespace": ns, "name": name, "uid": f"u-{ns}-{name}", "labels": {}},
        "spec": {"containers": [{"name": "app"}], "nodeName": "node-1"},
        "status": status,
    }


def _service(ns: str, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "uid": f"u-{name}"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "metadata": meta,
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": [{"port": 5432, "protocol": "TCP", "targetPort": 5432}],
        },
    }


def _slice(ns: str, name: str, service: str, *addresses: str, ref: bool = False) -> dict[str, Any]:
    endpoints = []
    for a in addresses:
        ep: dict[str, Any] = {"addresses": [a], "conditions": {"ready": True}}
        if ref:
            ep["targetRef"] = {"kind": "Pod", "namespace": ns, "name": "p"}
        endpoints.append(ep)
    return {
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }


def _node(name: str, cidr: str | None, zone: str = "zone-a", beat: str = "1") -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": beat}]},
    }
    if cidr:
        body["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
    return body


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["ADDED", "DELETED"]),
        st.sampled_from(["ns", "other"]),
        st.sampled_from(["p1", "p2", "p3"]),
        st.sampled_from([*IPS, None]),
        st.sampled_from(["Running", "Pending", "Succeeded"]),
    ),
    max_size=25,
)


@SETTINGS
@given(EVENTS)
def test_live_addresses_equal_the_brute_force_count(events: list[tuple[Any, ...]]) -> None:
    store = Store()
    bodies: dict[tuple[str, str], dict[str, Any]] = {}
    for etype, ns, name, ip, phase in events:
        body = _pod(ns, name, ip, phase)
        store.apply_pod(etype, body)
        if etype == "DELETED":
            bodies.pop((ns, name), None)
        else:
            bodies[(ns, name)] = body
    want: dict[str, int] = {}
    for body in bodies.values():
        ip = body["status"].get("podIP")
        if not ip or body["status"]["phase"] == "Succeeded":
            continue
        readings = {"10.244.1.7", "8.164.1.7"} if ip.startswith("0") else {ip}
        for r in readings:
            want[r] = want.get(r, 0) + 1
    assert store.pod_addresses.live == want


def test_a_pod_ip_in_any_namespace_re_audits_the_services_naming_it() -> None:
    store = Store(sees_all_pods=True)
    store.apply_service("ADDED", _service("db-ns", "db"))
    assert store.apply_slice("ADDED", _slice("db-ns", "db-1", "db", "10.244.1.5")) == {
        ("db-ns", "db")
    }
    # a pod of another namespace takes, changes and gives back the address
    assert ("db-ns", "db") in store.apply_pod("ADDED", _pod("other", "p", "10.244.1.5"))
    assert store.pod_addresses.live == {"10.244.1.5": 1}
    assert ("db-ns", "db") not in store.apply_pod("ADDED", _pod("other", "q", "10.244.1.6"))
    assert ("db-ns", "db") in store.apply_pod(
        "MODIFIED", _pod("other", "p", "10.244.1.5", "Failed")
    )
    assert store.pod_addresses.live == {"10.244.1.6": 1}
    assert ("db-ns", "db") in store.apply_pod("MODIFIED", _pod("other", "p", "10.244.1.5"))
    assert ("db-ns", "db") in store.apply_pod("DELETED", _pod("other", "p", "10.244.1.5"))
    # endpoints with a targetRef are not "named addresses" (SVA-EP-014/015 judge them)
    store.apply_slice("MODIFIED", _slice("db-ns", "db-1", "db", "10.244.1.5", ref=True))
    assert ("db-ns", "db") not in store.apply_pod("ADDED", _pod("other", "p", "10.244.1.5"))
    assert store.pod_addresses.named == {}


def test_two_slices_naming_one_address_and_slice_moves() -> None:
    store = Store()
    store.apply_slice("ADDED", _slice("ns", "a-1", "a", "10.244.1.5"))
    store.apply_slice("ADDED", _slice("ns", "a-2", "a", "10.244.1.5"))
    store.apply_slice("DELETED", _slice("ns", "a-1", "a", "10.244.1.5"))
    assert store.pod_addresses.naming(frozenset({"10.244.1.5"})) == {("ns", "a")}
    moved = _slice("ns", "a-2", "b", "10.244.1.5")  # relabelled to another service
    store.apply_slice("MODIFIED", moved)
    assert store.pod_addresses.naming(frozenset({"10.244.1.5"})) == {("ns", "b")}
    store.apply_slice("DELETED", moved)
    assert store.pod_addresses.named == {} and store.pod_addresses.by_slice == {}


def test_a_pod_range_change_re_audits_every_service_naming_addresses() -> None:
    store = Store()
    store.apply_slice("ADDED", _slice("ns", "db-1", "db", "10.244.1.5"))
    store.apply_slice("ADDED", _slice("ns", "web-1", "web", "10.1.1.1", ref=True))
    assert store.apply_node("ADDED", _node("n1", None)) == set()
    assert store.apply_node("MODIFIED", _node("n1", "10.244.1.0/24")) == {("ns", "db")}
    assert store.apply_node("MODIFIED", _node("n1", "10.244.1.0/24", beat="2")) == set()
    assert store.apply_node("ADDED", _node("n2", "10.244.2.0/24")) == {("ns", "db")}
    assert store.apply_node("DELETED", _node("n2", "10.244.2.0/24")) == {("ns", "db")}
    assert node_fingerprint(_node("n", "10.0.0.0/24")) != node_fingerprint(_node("n", None))
    view = store.node_views["n1"]
    assert view is not None and view.pod_cidrs == ("10.244.1.0/24",)


def test_topology_annotations_re_audit_the_service_other_annotations_do_not() -> None:
    store = Store()
    store.apply_service("ADDED", _service("ns", "web", {"note": "a"}))
    assert store.apply_service("MODIFIED", _service("ns", "web", {"note": "b"})) == set()
    auto = {"note": "b", "service.kubernetes.io/topology-mode": "Auto"}
    assert store.apply_service("MODIFIED", _service("ns", "web", auto)) == {("ns", "web")}
    view = store.service_views[("ns", "web")]
    assert view is not None and hints_policy(view) is HintsPolicy.TOPOLOGY_AUTO


def test_prepare_passes_live_ips_only_when_every_namespace_is_seen() -> None:
    for sees_all in (False, True):
        store = Store(sees_all_pods=sees_all)
        store.apply_service("ADDED", _service("ns", "db"))
        store.apply_pod("ADDED", _pod("other", "p", "10.244.1.5"))
        prepared = prepare(store, ("ns", "db"), None)
        assert prepared is not None
        if sees_all:
            assert prepared.live_pod_ips is not None and "10.244.1.5" in prepared.live_pod_ips
        else:
            assert prepared.live_pod_ips is None
