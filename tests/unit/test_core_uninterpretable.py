"""Objects the core cannot interpret: Unknown ("Uninterpretable") naming the object and field,
never a False guessed from their absence (issue 9, bad input)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from k8sobjs import endpoint, eslice, node, pod, port, service

from svcaudit.core.audit import (
    UNINTERPRETABLE,
    AuditInputs,
    DnsObservation,
    ServiceAudit,
    audit_service,
    audit_uninterpretable,
    settle,
)
from svcaudit.core.codes import Aspect
from svcaudit.core.dns import DnsRecord
from svcaudit.core.model import (
    EndpointSlice,
    MalformedObjectError,
    Node,
    Pod,
    Service,
    Unparsed,
    interpret,
)

NOW = datetime(2025, 1, 2, tzinfo=UTC)
SEL = {"app": "web"}
BASE = "web.default.svc.cluster.local."
GOOD_DNS = DnsObservation(
    frozenset(
        {
            DnsRecord(BASE, "A", "10.96.0.10"),
            DnsRecord("10.0.96.10.in-addr.arpa.", "PTR", BASE),
        }
    )
)
# What the apiserver accepts (with a warning) but the core refuses to guess: a leading zero
# is octal to some parsers and decimal to others.
BAD_IP = "010.244.0.7"


def bad_pod(name: str = "odd", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return pod(name, labels=labels or dict(SEL), ips=[BAD_IP])


def run(
    svc: dict[str, Any],
    pods: list[dict[str, Any]],
    slices: list[dict[str, Any]],
    *,
    dns: DnsObservation | None = GOOD_DNS,
) -> ServiceAudit:
    """audit_service the way the shell calls it: every body through model.interpret."""
    s = Service.from_api(svc)
    pod_views = [interpret(Pod.from_api, p) for p in pods]
    slice_views = [interpret(EndpointSlice.from_api, x) for x in slices]
    inputs = AuditInputs(
        service=s,
        pods=[p for p in pod_views if isinstance(p, Pod)],
        slices=[x for x in slice_views if isinstance(x, EndpointSlice)],
        nodes={"node-1": Node.from_api(node())},
        env_services=[s],
        unparsed=[u for u in [*pod_views, *slice_views] if isinstance(u, Unparsed)],
    )
    return audit_service(inputs, dns=dns, now=NOW)


def verdicts(r: ServiceAudit) -> dict[str, tuple[str, str]]:
    return {str(a): (v.status, v.reason) for a, v in r.verdicts.items()}


def test_interpret_returns_the_view_or_what_failed() -> None:
    assert isinstance(interpret(Pod.from_api, pod("a")), Pod)
    u = interpret(Pod.from_api, bad_pod())
    assert isinstance(u, Unparsed)
    assert (u.kind, u.namespace, u.name, u.field) == (
        "Pod",
        "default",
        "odd",
        "status.podIPs[0].ip",
    )
    assert u.labels == SEL
    assert u.message == f"Pod default/odd: status.podIPs[0].ip: not an IP address: '{BAD_IP}'"
    with pytest.raises(MalformedObjectError):
        Pod.from_api(bad_pod())  # from_api itself still raises


def test_unparsed_labels_none_when_unreadable_and_cluster_scoped_ref() -> None:
    body = pod("odd")
    body["metadata"]["labels"] = {"app": 7}
    u = interpret(Pod.from_api, body)
    assert isinstance(u, Unparsed) and u.labels is None
    assert u.field == "metadata.labels.app"
    n = interpret(Node.from_api, {"metadata": {"name": "n1", "labels": []}})
    assert isinstance(n, Unparsed)
    assert n.message == "Node n1: metadata.labels: must be an object, got list"


def test_uninterpretable_service_is_unknown_everywhere_naming_the_field() -> None:
    body = service("web", selector=SEL, cluster_ip="10.96.010.7")
    u = interpret(Service.from_api, body)
    assert isinstance(u, Unparsed)
    r = audit_uninterpretable(u)
    for aspect in ("Endpoints", "Environment", "DNS", "Healthy"):
        v = r.verdicts[Aspect(aspect)]
        assert (v.status, v.reason) == ("Unknown", UNINTERPRETABLE), aspect
        assert "Service default/web: spec.clusterIPs[0]: not an IP address" in v.message
    assert r.discrepancies == ()
    # settle() keeps the reason (it recomputes verdicts from `unknown` and its reasons)
    reported, state = settle(r, None, NOW, 45)
    assert verdicts(reported) == verdicts(r)
    assert state.published[Aspect.DNS] == "Unknown"


def test_selected_pod_uninterpretable_makes_endpoints_unknown_not_false() -> None:
    # The controller did publish the odd pod (as it reads 010 leniently): without the pod the
    # core would call that endpoint unexpected (SVA-EP-002) and the selector empty (101).
    slices = [eslice("web-1", "web", [endpoint("10.244.0.7", "odd")])]
    r = run(service("web", selector=SEL), [bad_pod()], slices)
    v = verdicts(r)
    assert v["Endpoints"] == ("Unknown", UNINTERPRETABLE)
    assert v["Environment"] == ("Unknown", UNINTERPRETABLE)  # its containers cannot be judged
    assert v["DNS"] == ("True", "Consistent")  # a ClusterIP service's DNS needs no pod
    assert v["Healthy"] == ("Unknown", UNINTERPRETABLE)
    msg = r.verdicts[Aspect.ENDPOINTS].message
    assert msg.startswith("Pod default/odd: status.podIPs[0].ip: not an IP address")
    assert not {"SVA-EP-002", "SVA-EP-101", "SVA-EP-107"} & {d.code for d in r.discrepancies}


def test_unselected_uninterpretable_pod_leaves_endpoints_alone() -> None:
    slices = [eslice("web-1", "web", [endpoint("10.244.0.5", "a")])]
    r = run(service("web", selector=SEL), [pod("a"), bad_pod(labels={"app": "other"})], slices)
    v = verdicts(r)
    assert v["Endpoints"] == ("True", "Consistent")
    assert v["Environment"] == ("Unknown", UNINTERPRETABLE)  # every pod of the ns sees web
    assert "Pod default/odd" in r.verdicts[Aspect.ENVIRONMENT].message


def test_real_failures_still_win_over_uninterpretable() -> None:
    # Another selected pod's endpoint is missing from the slices: a selector pointing at a bad
    # pod must not hide a port finding about the good ones (SVA-EP-104 is per listed pod).
    svc = service("web", selector=SEL, ports=[port(80, target="http")])
    good = pod("a")  # declares no port named http
    r = run(svc, [good, bad_pod()], [eslice("web-1", "web", [endpoint("10.244.0.5", "a")])])
    assert "SVA-EP-104" not in {d.code for d in r.discrepancies}  # odd may declare it
    assert verdicts(r)["Endpoints"] == ("Unknown", UNINTERPRETABLE)
    # An explicit variable shadowing the service's is a real environment finding.
    shadow = pod(
        "b", containers=[{"name": "c", "env": [{"name": "WEB_SERVICE_HOST", "value": "x"}]}]
    )
    r = run(service("web", selector=SEL), [shadow, bad_pod(labels={"app": "no"})], [])
    assert verdicts(r)["Environment"][0] == "False"
    assert r.verdicts[Aspect.ENVIRONMENT].reason == "EnvVarShadowed"


def test_service_without_variables_ignores_pods_for_environment() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", ports=[])
    sl = [eslice("web-1", "web", [], headless=True)]
    r = run(svc, [bad_pod(labels={"app": "no"})], sl, dns=None)
    assert verdicts(r)["Environment"] == ("True", "Consistent")
    # the odd pod is not selected (labels readable): no pod matches, which is a real finding
    assert verdicts(r)["Endpoints"] == ("False", "SelectorMatchesNoPod")


def test_uninterpretable_slice_of_selectorless_service() -> None:
    svc = service("web")  # no selector: someone writes the slices by hand
    bad = eslice("web-1", "web", [{"addresses": [BAD_IP]}], [port(80)], managed_by="me")
    r = run(svc, [], [bad])
    v = verdicts(r)
    assert v["Endpoints"] == ("Unknown", UNINTERPRETABLE)
    assert "SVA-EP-108" not in {d.code for d in r.discrepancies}  # the slice exists
    assert r.verdicts[Aspect.ENDPOINTS].message == (
        f"EndpointSlice default/web-1: endpoints[0].addresses[0]: not an IP address: '{BAD_IP}'"
    )
    assert v["DNS"] == ("True", "Consistent")  # ClusterIP DNS does not read slices
    assert v["Environment"] == ("True", "Consistent")
    assert v["Healthy"] == ("Unknown", UNINTERPRETABLE)


def test_uninterpretable_slice_of_headless_selectorless_service_blinds_dns() -> None:
    svc = service("web", cluster_ip="None", ports=[])
    good = eslice("web-2", "web", [{"addresses": ["10.0.0.1"]}], [], managed_by="me")
    bad = eslice("web-1", "web", [{"addresses": [BAD_IP]}], [], managed_by="me")
    r = run(svc, [], [good, bad], dns=DnsObservation(frozenset()))
    v = verdicts(r)
    assert v["DNS"] == ("Unknown", UNINTERPRETABLE)
    assert not [d for d in r.discrepancies if d.aspect is Aspect.DNS]
    # the other service's slice does not concern this one
    other = eslice("x-1", "other", [{"addresses": [BAD_IP]}], [], managed_by="me")
    r = run(svc, [], [good, other], dns=DnsObservation(frozenset()))
    assert verdicts(r)["Endpoints"] == ("True", "Consistent")


def test_headless_managed_service_with_uninterpretable_pod_blinds_dns() -> None:
    svc = service("web", selector=SEL, cluster_ip="None", ports=[])
    r = run(svc, [bad_pod()], [eslice("web-1", "web", [])], dns=DnsObservation(frozenset()))
    v = verdicts(r)
    assert v["DNS"] == ("Unknown", UNINTERPRETABLE)
    assert "SVA-DNS-101" not in {d.code for d in r.discrepancies}


def test_selectorless_slice_naming_an_uninterpretable_pod() -> None:
    svc = service("web")
    sl = eslice("web-1", "web", [endpoint("10.244.0.7", "odd")], [port(80)], managed_by="me")
    r = run(svc, [bad_pod(labels={"app": "x"})], [sl])
    assert "SVA-EP-015" not in {d.code for d in r.discrepancies}  # it exists, unreadable
    assert verdicts(r)["Endpoints"] == ("Unknown", UNINTERPRETABLE)


def test_many_culprits_are_counted_and_other_unknowns_kept() -> None:
    pods = [bad_pod(f"odd-{i}") for i in range(5)]
    r = run(service("web", selector=SEL), pods, [], dns=None)
    msg = r.verdicts[Aspect.ENDPOINTS].message
    assert msg.count("Pod default/odd-") == 3 and "and 2 more" in msg
    dns = r.verdicts[Aspect.DNS]
    assert (dns.status, dns.reason) == ("Unknown", "DnsNotObserved")
    assert r.verdicts[Aspect.HEALTHY].reason == "IncompleteAudit"  # not only unparseable input


def test_external_name_service_ignores_pods_and_slices() -> None:
    svc = service("web", type_="ExternalName", external_name="example.com.", ports=[])
    svc["spec"].pop("clusterIP")
    bad = eslice("web-1", "web", [{"addresses": [BAD_IP]}], [], managed_by="me")
    r = run(svc, [bad_pod()], [bad], dns=None)
    assert verdicts(r)["Endpoints"][0] == "True"
    assert verdicts(r)["Environment"][0] == "True"


def test_settle_keeps_uninterpretable_reason_after_a_lasting_period() -> None:
    r = run(service("web", selector=SEL), [bad_pod()], [])
    first, state = settle(r, None, NOW, 2)
    later, _ = settle(r, state, NOW + timedelta(seconds=10), 2)
    assert verdicts(later)["Endpoints"] == ("Unknown", UNINTERPRETABLE)
    assert verdicts(first) == verdicts(later)
