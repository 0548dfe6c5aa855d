"""\"Did you mean\": the hint of SVA-EP-101 (the selector matches no pod) names the closest
labels: a value typo, a key typo, a missing key, or the pods in another namespace. At most
three, in an order that does not depend on the input's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8sobjs import pod, service

from svcaudit.controller.indexes import Store
from svcaudit.core.audit import AuditInputs, audit_service
from svcaudit.core.codes import CATALOGUE
from svcaudit.core.expect import expect_document, parse_inventory
from svcaudit.core.model import Pod, Service
from svcaudit.core.podindex import PodIndex
from svcaudit.core.suggest import LabelIndex, did_you_mean, distance

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2025, 1, 2, tzinfo=UTC)
BASE_HINT = CATALOGUE["SVA-EP-101"].hint


def guesses(
    selector: dict[str, str], pods: list[dict[str, Any]], ns: str = "default"
) -> tuple[str, ...]:
    views = [Pod.from_api(p) for p in pods]
    svc = Service.from_api(service("web", ns=ns, selector=selector))
    here = PodIndex([p for p in views if p.namespace == ns])
    return did_you_mean(svc, here, LabelIndex.of(views))


# ---- the distance ----------------------------------------------------------------------------


def test_distance_counts_a_transposition_once() -> None:
    assert distance("sies", "sise") == 1  # the tutorial's typo
    assert distance("kitten", "sitting") == 3
    assert distance("", "abc") == 3
    assert distance("web", "web") == 0


@SETTINGS
@given(a=st.text(alphabet="abcd", max_size=8), b=st.text(alphabet="abcd", max_size=8))
def test_distance_is_symmetric_and_bounded(a: str, b: str) -> None:
    d = distance(a, b)
    assert d == distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)


# ---- the suggestions -------------------------------------------------------------------------


def test_value_typo_names_the_pods_with_the_right_value() -> None:
    pods = [pod(f"rcsise-{c}", labels={"app": "sise"}) for c in "ba"] + [
        pod("db", labels={"app": "postgres"})
    ]
    assert guesses({"app": "sies"}, pods) == (
        "app=sise instead of app=sies (2 pod(s): rcsise-a, rcsise-b)",
    )


def test_far_values_of_a_one_item_selector_are_not_guesses() -> None:
    """With one item every pod carries "the rest": only values close enough to be a typo."""
    assert guesses({"app": "frontend"}, [pod("db", labels={"app": "postgres"})]) == ()


def test_other_value_of_a_pod_carrying_the_rest_is_named_however_far() -> None:
    pods = [pod("web-1", labels={"app": "web", "version": "v1-legacy"})]
    assert guesses({"app": "web", "version": "v2"}, pods) == (
        "version=v1-legacy instead of version=v2 (1 pod(s): web-1)",
    )


def test_missing_key() -> None:
    pods = [pod(f"web-{i}", labels={"app": "web"}) for i in range(3)]
    assert guesses({"app": "web", "tier": "front"}, pods) == (
        "app=web without tier=front (3 pod(s): web-0, web-1 and 1 more lack label tier)",
    )


def test_key_typo() -> None:
    pods = [pod("web-1", labels={"ap": "web"}), pod("other", labels={"zone": "web"})]
    assert guesses({"app": "web"}, pods) == ("ap=web instead of app=web (1 pod(s): web-1)",)


def test_another_namespace_carrying_the_whole_selector() -> None:
    pods = [
        pod("web-1", ns="prod", labels={"app": "web", "tier": "front"}),
        pod("web-2", ns="prod", labels={"app": "web", "tier": "front"}),
        pod("half", ns="staging", labels={"app": "web"}),
        pod("db", ns="dev", labels={"app": "db"}),
    ]
    assert guesses({"app": "web", "tier": "front"}, pods, ns="dev") == (
        "namespace prod, where 2 pod(s) carry app=web,tier=front (web-1, web-2): "
        "a Service selects pods of its own namespace only",
    )


def test_at_most_three_alternating_here_and_elsewhere() -> None:
    pods = [
        pod("a", labels={"app": "webb"}),
        pod("b", labels={"app": "wep"}),
        pod("c", labels={"app": "wbe"}),
        pod("d", labels={"ap": "web"}),
        pod("x", ns="prod", labels={"app": "web"}),
        pod("y", ns="qa", labels={"app": "web"}),
    ]
    assert guesses({"app": "web"}, pods) == (
        "ap=web instead of app=web (1 pod(s): d)",  # distance 1, ties by text
        "namespace prod, where 1 pod(s) carry app=web (x): a Service selects pods of its own "
        "namespace only",
        "app=wbe instead of app=web (1 pod(s): c)",
    )


LABEL = st.sampled_from(["app", "ap", "tier"])
VALUE = st.sampled_from(["web", "wbe", "db", "front"])
PODS = st.lists(
    st.tuples(st.sampled_from(["dev", "prod"]), st.dictionaries(LABEL, VALUE, max_size=3)),
    max_size=12,
)


@SETTINGS
@given(pods=PODS, selector=st.dictionaries(LABEL, VALUE, min_size=1, max_size=2), seed=st.randoms())
def test_guesses_do_not_depend_on_input_order(
    pods: list[tuple[str, dict[str, str]]], selector: dict[str, str], seed: Any
) -> None:
    objs = [pod(f"p{i}", ns=ns, labels=labels) for i, (ns, labels) in enumerate(pods)]
    if any(
        o["metadata"]["namespace"] == "dev" and selector.items() <= o["metadata"]["labels"].items()
        for o in objs
    ):
        return  # the selector matches: no SVA-EP-101, nothing to guess
    shuffled = list(objs)
    seed.shuffle(shuffled)
    first = guesses(selector, objs, ns="dev")
    assert first == guesses(selector, shuffled, ns="dev")
    assert len(first) <= 3


# ---- the index of other namespaces -----------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["ADDED", "DELETED"]),
        st.sampled_from(["ns", "other", "third"]),
        st.sampled_from(["p1", "p2", "p3"]),
        st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]), max_size=2),
    ),
    max_size=25,
)


@SETTINGS
@given(
    events=EVENTS,
    selector=st.dictionaries(
        st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]), min_size=1, max_size=2
    ),
)
def test_store_label_index_equals_a_scan_of_its_pods(
    events: list[tuple[str, str, str, dict[str, str]]], selector: dict[str, str]
) -> None:
    """Whatever the pod events, the store's LabelIndex answers what a scan of its pods would."""
    store = Store()
    for kind, ns, name, labels in events:
        store.apply_pod(kind, pod(name, ns=ns, labels=labels))
    want = sorted(
        (ns, sorted(p.name for p in store.pod_views_in(ns) if selector.items() <= p.labels.items()))
        for ns in store.pod_views
        if ns != "ns"
    )
    want = [(ns, names) for ns, names in want if names]
    assert store.pod_labels.matching(selector, exclude="ns") == want


# ---- through the audit -----------------------------------------------------------------------


def test_audit_hint_leads_with_the_guesses_and_keeps_the_fix() -> None:
    svc = Service.from_api(service("simpleservice", selector={"app": "sies"}))
    pods = [Pod.from_api(pod(f"rcsise-{c}", labels={"app": "sise"})) for c in "ab"]
    elsewhere = LabelIndex.of([Pod.from_api(pod("x", ns="prod", labels={"app": "sies"}))])
    inputs = AuditInputs(
        service=svc, pods=pods, slices=[], nodes={}, env_services=[svc], elsewhere=elsewhere
    )
    (d,) = [d for d in audit_service(inputs, None, NOW).discrepancies if d.code == "SVA-EP-101"]
    assert d.hint == (
        "Did you mean app=sise instead of app=sies (2 pod(s): rcsise-a, rcsise-b)? "
        "Or namespace prod, where 1 pod(s) carry app=sies (x): a Service selects pods of its "
        "own namespace only? " + BASE_HINT
    )
    assert (d.expected, d.observed) == ("pods matching app=sies", "none")  # identity unchanged


def test_audit_without_guesses_keeps_the_catalogue_hint() -> None:
    svc = Service.from_api(service("web", selector={"app": "nothing-like-it"}))
    pods = [Pod.from_api(pod("a", labels={"app": "web"}))]
    inputs = AuditInputs(service=svc, pods=pods, slices=[], nodes={}, env_services=[svc])
    (d,) = [d for d in audit_service(inputs, None, NOW).discrepancies if d.code == "SVA-EP-101"]
    assert d.hint == BASE_HINT


def test_expect_document_hint_names_other_namespaces_of_the_input() -> None:
    objs = [
        service("web", ns="dev", selector={"app": "web"}),
        pod("web-1", ns="prod", labels={"app": "web"}),
        pod("db", ns="dev", labels={"app": "db"}),
    ]
    inv, errors = parse_inventory(objs)
    assert not errors
    (svc,) = expect_document(inv)["services"]
    (found,) = [f for f in svc["findings"] if f["code"] == "SVA-EP-101"]
    assert found["hint"].startswith("Did you mean namespace prod, where 1 pod(s) carry app=web")
