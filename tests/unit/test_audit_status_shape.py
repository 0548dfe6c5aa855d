"""The ServiceAudit status document's `endpoints` and `dns` subtrees: the CRD documents them
but does not validate them field by field (x-kubernetes-preserve-unknown-fields, for the API
server's CPU), so this pins their shape to what the CRD's descriptions and docs/operator.md
promise: only those fields, with those JSON types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from k8sobjs import container, cport, endpoint, eslice, node, pod, port, service

from svcaudit.controller.conditions import render_conditions
from svcaudit.controller.settings import ControllerSettings
from svcaudit.controller.translate import Outcome, Prepared, audit, audit_status, settle_result
from svcaudit.core.audit import DnsObservation
from svcaudit.core.dns import DnsRecord
from svcaudit.core.model import EndpointSlice, Node, Pod, Service

NOW = datetime(2025, 1, 2, tzinfo=UTC)
TARGET_REF = {"kind": str, "namespace": str, "name": str}
PORT = {"name": str, "port": int, "protocol": str, "appProtocol": str}
ENDPOINT: dict[str, Any] = {
    "addressType": str,
    "addresses": list,
    "ready": bool,
    "serving": bool,
    "terminating": bool,
    "nodeName": str,
    "zone": str,
    "hostname": str,
    "targetRef": dict,
    "ports": list,
    "hints": (dict, str),  # {forZones, forNodes}, or "unpredicted" (expected side only)
}
RECORD = {"name": str, "type": str, "value": str}
DNS = {"server": str, "error": str, "expected": list, "observed": list, "absent": list}


def _typed(entry: dict[str, Any], fields: dict[str, Any], what: str) -> None:
    assert set(entry) <= set(fields), f"{what}: undocumented fields {set(entry) - set(fields)}"
    for key, value in entry.items():
        assert isinstance(value, fields[key]), f"{what}.{key}: {value!r}"


def _status(traffic_distribution: str | None = None) -> dict[str, Any]:
    """`traffic_distribution`: the service asks for hints; web-0's endpoint carries them and
    web-1 is not ready (its expected hints are "unpredicted")."""
    body = service("web", selector={"app": "web"}, ports=[port(80, "http", target="http")])
    published = endpoint("10.244.0.5", "web-0")
    if traffic_distribution:
        body["spec"]["trafficDistribution"] = traffic_distribution
        published["hints"] = {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]}
    web = Service.from_api(body)
    pods = [
        Pod.from_api(
            pod(
                f"web-{i}",
                labels={"app": "web"},
                ips=[f"10.244.0.{i + 5}"],
                containers=[container(ports=[cport(8080, "http")])],
                ready=not (traffic_distribution and i == 1),
            )
        )
        for i in range(2)
    ]
    slices = [
        EndpointSlice.from_api(
            eslice(
                "web-abc",
                "web",
                [published],  # web-1 missing: a discrepancy
                [{"name": "http", "port": 8080, "protocol": "TCP"}],
            )
        )
    ]
    prepared = Prepared(
        key=("default", "web"),
        body={},
        service=web,
        pods=pods,
        slices=slices,
        nodes={"node-1": Node.from_api(node("node-1", "zone-a"))},
        env_services=[web],
    )
    dns = DnsObservation(
        frozenset({DnsRecord("web.default.svc.cluster.local.", "A", "10.96.0.10")})
    )
    settings = ControllerSettings()
    result = audit(prepared, dns, NOW, settings)
    reported, state, _ = settle_result(result, None, NOW, 0.0, {}, {})
    conditions = render_conditions(reported.verdicts, 1, [], NOW)
    outcome = Outcome(prepared, result, reported, state, dns, "10.96.0.10:53", NOW)
    return audit_status(outcome, conditions, 1, {})


def test_endpoints_subtree_has_only_documented_fields() -> None:
    status = _status()
    endpoints = status["endpoints"]
    _typed(endpoints, {"managed": bool, "expected": list, "observed": list}, "endpoints")
    assert endpoints["managed"] is True
    assert len(endpoints["expected"]) == 2 and len(endpoints["observed"]) == 1
    for side in ("expected", "observed"):
        for entry in endpoints[side]:
            fields = {**ENDPOINT, "slice": str} if side == "observed" else ENDPOINT
            _typed(entry, fields, f"endpoints.{side}[]")
            _typed(entry["targetRef"], TARGET_REF, "targetRef")
            for p in entry["ports"]:
                _typed(p, PORT, "ports[]")
            assert all(isinstance(a, str) for a in entry["addresses"])
    assert endpoints["observed"][0]["slice"] == "web-abc"
    assert status["summary"]["endpointsExpected"] == 2
    assert status["summary"]["endpointsObserved"] == 1


def test_endpoint_hints_have_the_slices_shape() -> None:
    endpoints = _status("PreferSameNode")["endpoints"]
    for side in ("expected", "observed"):
        for entry in endpoints[side]:
            fields = {**ENDPOINT, "slice": str} if side == "observed" else ENDPOINT
            _typed(entry, fields, f"endpoints.{side}[]")
    hints = {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]}
    by_ip = {e["addresses"][0]: e.get("hints") for e in endpoints["expected"]}
    assert by_ip == {"10.244.0.5": hints, "10.244.0.6": "unpredicted"}
    assert [e["hints"] for e in endpoints["observed"]] == [hints]


def test_dns_subtree_has_only_documented_fields() -> None:
    dns = _status()["dns"]
    _typed(dns, DNS, "dns")
    assert dns["server"] == "10.96.0.10:53"
    for side in ("expected", "observed"):
        for record in dns[side]:
            _typed(record, RECORD, f"dns.{side}[]")
    assert {"name": "web.default.svc.cluster.local.", "type": "A", "value": "10.96.0.10"} in dns[
        "observed"
    ]
    assert all(isinstance(n, str) for n in dns["absent"])
