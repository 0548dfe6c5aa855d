"""The shell's path for objects the core cannot interpret: the store keeps what failed, the
audit of the services they concern is Unknown ("Uninterpretable") naming object and field.
Real API bodies through Store.apply_* -> translate.prepare -> translate.audit -> settle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from k8sobjs import endpoint, eslice, node, pod, port, service

from svcaudit.controller import translate
from svcaudit.controller.indexes import Store
from svcaudit.controller.settings import ControllerSettings
from svcaudit.core.audit import UNINTERPRETABLE, settle

NOW = datetime(2025, 1, 2, tzinfo=UTC)
NS = "shop"
SEL = {"app": "web"}


def store_with(*bodies: dict[str, Any]) -> tuple[Store, set[tuple[str, str]]]:
    store = Store()
    marked: set[tuple[str, str]] = set()
    apply = {
        "Service": store.apply_service,
        "Pod": store.apply_pod,
        "EndpointSlice": store.apply_slice,
        "Node": store.apply_node,
    }
    for body in bodies:
        marked |= apply[body["kind"]]("ADDED", body)
    return store, marked


def verdicts(store: Store, name: str) -> dict[str, tuple[str, str, str]]:
    prepared = translate.prepare(store, (NS, name), None)
    assert prepared is not None
    result = translate.audit(prepared, None, NOW, ControllerSettings())
    reported, _ = settle(result, None, NOW, 2)
    return {str(a): (v.status, v.reason, v.message) for a, v in reported.verdicts.items()}


def test_uninterpretable_service_is_audited_unknown_naming_the_field() -> None:
    bad = service("web", NS, selector=SEL, cluster_ip="10.96.010.7")
    store, marked = store_with(node(), bad)
    assert (NS, "web") in marked
    prepared = translate.prepare(store, (NS, "web"), None)
    assert prepared is not None and prepared.service_error is not None
    assert translate.dns_questions(prepared, ControllerSettings()) == []
    v = verdicts(store, "web")
    for aspect in ("Endpoints", "Environment", "DNS", "Healthy"):
        status, reason, message = v[aspect]
        assert (status, reason) == ("Unknown", UNINTERPRETABLE)
        assert "Service shop/web: spec.clusterIPs[0]: not an IP address: '10.96.010.7'" in message
    # Fixed by its owner: the error is forgotten, the audit is a normal one.
    store.apply_service("MODIFIED", service("web", NS, selector=SEL, cluster_ip="10.96.10.7"))
    assert (NS, "web") not in store.service_errors
    after = verdicts(store, "web")
    assert after["Endpoints"][1] == "Settling"  # SelectorMatchesNoPod, not yet lasting
    assert after["DNS"][1] == "DnsNotObserved"


def test_uninterpretable_pod_routes_to_and_blinds_the_services_selecting_it() -> None:
    svc = service("web", NS, selector=SEL, cluster_ip="10.96.10.8")
    other = service("db", NS, selector={"app": "db"}, cluster_ip="10.96.10.9")
    good = pod("a", NS, labels=dict(SEL))
    sl = eslice("web-1", "web", [endpoint("10.244.0.5", "a", ns=NS)], [port(8080)], ns=NS)
    store, _ = store_with(node(), svc, other, good, sl)
    bad = pod("odd", NS, labels=dict(SEL), ips=["010.244.0.7"])
    marked = store.apply_pod("ADDED", bad)
    assert {(NS, "web"), (NS, "db")} <= marked
    assert "web" in store.pod_routes[(NS, "odd")] and "db" not in store.pod_routes[(NS, "odd")]
    v = verdicts(store, "web")
    assert v["Endpoints"][:2] == ("Unknown", UNINTERPRETABLE)
    assert v["Endpoints"][2].startswith("Pod shop/odd: status.podIPs[0].ip: not an IP address")
    assert verdicts(store, "db")["Endpoints"][1] != UNINTERPRETABLE  # not selected by db
    # Its status fixed: the store forgets the error and web's endpoints are judged again.
    fixed = pod("odd", NS, labels=dict(SEL), ips=["10.244.0.7"])
    assert (NS, "web") in store.apply_pod("MODIFIED", fixed)
    assert store.unparsed_for((NS, "web")) == []
    assert verdicts(store, "web")["Endpoints"][1] != UNINTERPRETABLE
    store.apply_pod("MODIFIED", bad)
    store.apply_pod("DELETED", bad)
    assert store.unparsed_for((NS, "web")) == []


def test_uninterpretable_slice_is_attributed_by_its_label() -> None:
    svc = service("ext", NS, cluster_ip="10.96.10.11")  # selectorless
    bad = eslice("ext-1", "ext", [{"addresses": ["010.0.0.1"]}], [port(80)], ns=NS)
    store, marked = store_with(node(), svc, bad)
    assert (NS, "ext") in marked
    v = verdicts(store, "ext")
    assert v["Endpoints"] == (
        "Unknown",
        UNINTERPRETABLE,
        "EndpointSlice shop/ext-1: endpoints[0].addresses[0]: not an IP address: '010.0.0.1'",
    )
    assert v["Environment"][0] == "True"
    # relabelled to another service: ext no longer depends on it
    moved = eslice("ext-1", "other", [{"addresses": ["010.0.0.1"]}], [port(80)], ns=NS)
    assert (NS, "ext") in store.apply_slice("MODIFIED", moved)
    assert store.unparsed_for((NS, "ext")) == []
    assert len(store.unparsed_for((NS, "other"))) == 1
    store.apply_slice("DELETED", moved)
    assert store.unparsed_for((NS, "other")) == []
