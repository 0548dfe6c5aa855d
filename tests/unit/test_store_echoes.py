"""The store tells the echoes of our own writes from changes: a write's watch event must not
re-audit the service it came from (at 2,000 services that doubled the initial audit), while a
user's edit of our status still does (it is overwritten with the truth)."""

from __future__ import annotations

from typing import Any

from svcaudit.controller.indexes import Store


def _svc(rv: str, conditions: list[dict[str, Any]] | None = None, port: int = 80) -> dict:
    return {
        "metadata": {"namespace": "ns", "name": "web", "uid": "u-web", "resourceVersion": rv},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": port, "protocol": "TCP", "targetPort": 8080}],
        },
        "status": {"conditions": conditions or []},
    }


def _cond(status: str) -> list[dict[str, Any]]:
    return [{"type": "svcaudit.dev/DiscoveryHealthy", "status": status, "reason": "R"}]


def _audit(rv: str, status: dict[str, Any] | None = None) -> dict:
    body: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "web", "uid": "u-sva", "resourceVersion": rv},
        "spec": {},
    }
    if status is not None:
        body["status"] = status
    return body


def test_echoes_of_a_created_and_then_applied_serviceaudit_change_nothing() -> None:
    store = Store()
    store.apply_service("ADDED", _svc("1"))
    store.wrote("serviceaudits", _audit("10"))  # apply: created
    store.wrote("serviceaudits", _audit("11", {"summary": {"healthy": "True"}}))  # status
    # The watch brings the creation after we already hold the status: not a regression.
    assert store.apply_audit("ADDED", _audit("10")) == set()
    assert store.audits[("ns", "web")]["metadata"]["resourceVersion"] == "11"
    assert store.apply_audit("MODIFIED", _audit("11", {"summary": {"healthy": "True"}})) == set()
    assert store.echoes == {}
    # A user's edit of our status is a change: re-audit (and overwrite).
    edited = _audit("12", {"summary": {"healthy": "False"}})
    assert store.apply_audit("MODIFIED", edited) == {("ns", "web")}


def test_echo_of_our_service_status_write_is_not_a_change_but_an_edit_is() -> None:
    store = Store()
    store.apply_service("ADDED", _svc("1"))
    store.wrote("services", _svc("2", _cond("True")))
    assert store.apply_service("MODIFIED", _svc("2", _cond("True"))) == set()
    assert store.echoes == {}
    assert store.apply_service("MODIFIED", _svc("3", _cond("False"))) == {("ns", "web")}


def test_an_event_older_than_our_write_does_not_roll_the_store_back() -> None:
    store = Store()
    store.apply_service("ADDED", _svc("1"))
    store.wrote("services", _svc("3", _cond("True")))
    # Not ours (someone's write just before ours): taken as a change, audited again.
    assert store.apply_service("MODIFIED", _svc("2")) == {("ns", "web")}
    # ... but an older echo of ours never replaces a later one.
    store.wrote("services", _svc("4", _cond("False")))
    store.wrote("services", _svc("5", _cond("True")))
    assert store.apply_service("MODIFIED", _svc("4", _cond("False"))) == set()
    assert store.services[("ns", "web")]["metadata"]["resourceVersion"] == "5"


def test_an_answer_showing_an_unseen_spec_change_is_left_to_the_watch() -> None:
    store = Store()
    store.apply_service("ADDED", _svc("1"))
    store.wrote("services", _svc("3", _cond("True"), port=81))  # someone changed the port
    assert store.services[("ns", "web")]["metadata"]["resourceVersion"] == "1"
    assert store.echoes == {}
    # The watch then brings the change, and it is audited.
    assert ("ns", "web") in store.apply_service("MODIFIED", _svc("2", port=81))


def test_the_store_keeps_a_compact_serviceaudit_and_a_digest_of_its_status() -> None:
    from svcaudit.controller.indexes import AUDIT_DIGEST, status_digest

    status = {
        "conditions": [{"type": "svcaudit.dev/DiscoveryHealthy", "status": "True"}],
        "discrepancies": [
            {"code": "SVA-EP-101", "subject": "s", "since": "2026-01-01T00:00:00Z", "hint": "h"}
        ],
        "endpoints": {"expected": [{"addresses": ["10.0.0.1"]}] * 50},
        "summary": {"seconds": 1.0},
    }
    store = Store()
    store.apply_audit("ADDED", _audit("10", status))
    held = store.audits[("ns", "web")]
    assert set(held["status"]) == {"conditions", "discrepancies"}
    assert held["status"]["discrepancies"][0]["since"] == "2026-01-01T00:00:00Z"
    assert "hint" not in held["status"]["discrepancies"][0]
    assert held[AUDIT_DIGEST] == status_digest(status)
    # The API server writes 1.0 back as 1: the same status, the same digest.
    assert status_digest({**status, "summary": {"seconds": 1}}) == status_digest(status)
    assert status_digest({**status, "summary": {"seconds": 2}}) != status_digest(status)


def test_a_write_echoed_before_its_answer_is_not_a_change() -> None:
    """The watch can deliver our write before the API server's answer to it reaches us: its
    resourceVersion is not known as ours yet, but its content is what we are writing."""
    from svcaudit.controller.indexes import status_digest

    store = Store()
    store.apply_service("ADDED", _svc("1"))
    store.writing("services", ("ns", "web"), status_digest(_cond("True")))
    assert store.apply_service("MODIFIED", _svc("2", _cond("True"))) == set()
    # someone else's different conditions while ours is in flight: still a change
    assert store.apply_service("MODIFIED", _svc("3", _cond("False"))) == {("ns", "web")}
    store.writing("services", ("ns", "web"), None)
    assert store.in_flight == {}
    # with nothing in flight, the same content under an unknown version is a change again
    assert store.apply_service("MODIFIED", _svc("4", _cond("True"))) == {("ns", "web")}

    status = {"summary": {"healthy": "True"}}
    store.apply_audit("ADDED", _audit("5", {"summary": {"healthy": "False"}}))
    store.writing("serviceaudits", ("ns", "web"), status_digest(status))
    assert store.apply_audit("MODIFIED", _audit("6", status)) == set()
    assert store.apply_audit("MODIFIED", _audit("7", {"summary": {}})) == {("ns", "web")}
