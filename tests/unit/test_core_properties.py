"""Property tests of the core's invariants (hypothesis, moderate example counts)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8sobjs import container, cport, node, pod, port, service

from svcaudit.core.audit import AuditInputs, audit_service, slice_to_dict
from svcaudit.core.codes import CATALOGUE
from svcaudit.core.compare import DnsObservation, compare_slices
from svcaudit.core.dns import address_record_type, expected_dns, service_fqdn
from svcaudit.core.endpoints import expected_endpoints
from svcaudit.core.envvars import env_name, service_env, service_variables
from svcaudit.core.model import EndpointSlice, Node, Pod, Service

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- generators --------------------------------------------------------------------------------

dns1035 = st.from_regex(r"\A[a-z]([-a-z0-9]{0,14}[a-z0-9])?\Z")
port_names = st.from_regex(r"\A[a-z]([a-z0-9]|-(?=[a-z0-9])){0,13}\Z").filter(
    lambda s: "--" not in s and not s.endswith("-")
)
protocols = st.sampled_from(["TCP", "UDP", "SCTP"])
numbers = st.integers(1, 65535)
NAMES = ["http", "metrics", "dns"]


@st.composite
def svc_ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3))
    names = draw(st.lists(port_names, min_size=n, max_size=n, unique=True))
    nums = draw(st.lists(numbers, min_size=n, max_size=n, unique=True))
    out = []
    for i in range(n):
        name = names[i] if (n > 1 or draw(st.booleans())) else ""
        out.append(port(nums[i], name, protocol=draw(protocols)))
    return out


@st.composite
def ipv4(draw: st.DrawFn) -> str:
    return f"10.244.{draw(st.integers(0, 3))}.{draw(st.integers(1, 254))}"


@st.composite
def ipv6(draw: st.DrawFn) -> str:
    return f"fd00:244::{draw(st.integers(1, 0xFFFF)):x}"


@st.composite
def pods(draw: st.DrawFn, ns: str = "default") -> list[dict[str, Any]]:
    count = draw(st.integers(0, 12))
    out = []
    for i in range(count):
        family = draw(st.sampled_from(["v4", "v6", "dual", "none"]))
        ips = {"v4": [draw(ipv4())], "v6": [draw(ipv6())], "none": []}.get(
            family, [draw(ipv4()), draw(ipv6())]
        )
        cports = [
            cport(draw(numbers), draw(st.sampled_from(NAMES)), draw(protocols))
            for _ in range(draw(st.integers(0, 2)))
        ]
        ports_unique = {(p["name"], p["protocol"]): p for p in cports}
        out.append(
            pod(
                f"p{i}",
                ns,
                labels={"app": draw(st.sampled_from(["web", "db"]))},
                ips=ips,
                ready=draw(st.booleans()),
                phase=draw(st.sampled_from(["Running", "Running", "Pending", "Failed"])),
                node=draw(st.sampled_from(["node-1", "node-2"])),
                terminating=draw(st.booleans()),
                containers=[container(ports=list(ports_unique.values()))],
                hostname=draw(st.sampled_from([None, f"h{i}"])),
                subdomain=draw(st.sampled_from([None, "web"])),
            )
        )
    return out


@st.composite
def managed_services(draw: st.DrawFn) -> dict[str, Any]:
    headless = draw(st.booleans())
    fams = draw(st.sampled_from([["IPv4"], ["IPv6"], ["IPv4", "IPv6"]]))
    ports = [
        port(
            draw(numbers),
            f"p{i}",
            target=draw(st.one_of(numbers, st.sampled_from(NAMES))),
            protocol=draw(protocols),
        )
        for i in range(draw(st.integers(0 if headless else 1, 3)))
    ]
    ips = {"IPv4": "10.96.0.10", "IPv6": "fd00::a"}
    cluster_ips = None if headless else [ips[f] for f in fams]
    return service(
        "web",
        selector={"app": "web"},
        cluster_ip="None" if headless else ips[fams[0]],
        cluster_ips=cluster_ips,
        families=fams,
        ports=ports,
        publish_not_ready=draw(st.booleans()),
    )


NODES = {n: Node.from_api(node(n, z)) for n, z in (("node-1", "z1"), ("node-2", None))}

# ---- env names ----------------------------------------------------------------------------------

C_IDENT = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


@SETTINGS
@given(dns1035, svc_ports(), st.sampled_from(["10.96.0.10", "fd00::a", "FD00:1::B"]))
def test_env_names_are_c_identifiers_from_documented_mangling(
    name: str, ports: list[dict[str, Any]], ip: str
) -> None:
    svc = Service.from_api(service(name, cluster_ip=ip, ports=ports))
    pre = name.upper().replace("-", "_")
    assert env_name(name) == pre
    allowed = {f"{pre}_SERVICE_HOST", f"{pre}_SERVICE_PORT", f"{pre}_PORT"}
    for p in svc.ports:
        if p.name:
            allowed.add(f"{pre}_SERVICE_PORT_{p.name.upper().replace('-', '_')}")
        base = f"{pre}_PORT_{p.port}_{p.protocol}"
        allowed |= {base, base + "_PROTO", base + "_PORT", base + "_ADDR"}
    variables = service_variables(svc)
    assert {n for n, _ in variables} == allowed
    assert len(variables) == len(allowed)  # no duplicate within one service
    assert all(C_IDENT.match(n) for n, _ in variables)


# ---- endpoints -------------------------------------------------------------------------------


@SETTINGS
@given(managed_services(), pods(), st.randoms(use_true_random=False))
def test_endpoints_and_dns_do_not_depend_on_input_order(svc_obj, pod_objs, rnd) -> None:  # type: ignore[no-untyped-def]
    svc = Service.from_api(svc_obj)
    ps = [Pod.from_api(p) for p in pod_objs]
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    a = expected_endpoints(svc, ps, NODES, 3)
    b = expected_endpoints(svc, shuffled, NODES, 3)
    assert a == b
    assert expected_dns(svc, a.slices) == expected_dns(svc, b.slices)


@SETTINGS
@given(managed_services(), pods(), st.integers(1, 5))
def test_every_candidate_once_per_family_and_slices_bounded(svc_obj, pod_objs, max_eps) -> None:  # type: ignore[no-untyped-def]
    svc = Service.from_api(svc_obj)
    ps = [Pod.from_api(p) for p in pod_objs]
    r = expected_endpoints(svc, ps, NODES, max_eps)
    assert all(len(s.endpoints) <= max_eps for s in r.slices)
    for s in r.slices:
        assert {e.conditions.ready for e in s.endpoints} <= {True, False}
    seen = [(s.address_type, ep.target_ref) for s in r.slices for ep in s.endpoints]
    assert len(seen) == len(set(seen))
    for fam in svc.ip_families:
        assert any(s.address_type == fam for s in r.slices)  # data or placeholder


@SETTINGS
@given(managed_services(), pods())
def test_every_ready_endpoint_of_headless_service_is_in_its_address_records(
    svc_obj, pod_objs
) -> None:  # type: ignore[no-untyped-def]
    spec = svc_obj["spec"]
    svc = Service.from_api(
        service(
            "web",
            selector={"app": "web"},
            cluster_ip="None",
            families=spec["ipFamilies"],
            ports=spec["ports"],
            publish_not_ready=spec.get("publishNotReadyAddresses"),
        )
    )
    r = expected_endpoints(svc, [Pod.from_api(p) for p in pod_objs], NODES)
    dns = expected_dns(svc, r.slices)
    base = service_fqdn(svc)
    addr_records = {(rec.type, rec.data) for rec in dns.records if rec.name == base}
    ready = [ep for ep in r.endpoints if ep.conditions.ready]
    for ep in ready:
        for a in ep.addresses:
            assert (address_record_type(a), a) in addr_records
    assert len(addr_records) == len({a for ep in ready for a in ep.addresses})
    assert bool(dns.nxdomain) == (not ready)


@SETTINGS
@given(managed_services(), pods(), st.integers(1, 4))
def test_expected_slices_rendered_as_api_objects_compare_clean(svc_obj, pod_objs, max_eps) -> None:  # type: ignore[no-untyped-def]
    """The expect document's slices are valid API slices the comparison accepts as equal."""
    svc = Service.from_api(svc_obj)
    r = expected_endpoints(svc, [Pod.from_api(p) for p in pod_objs], NODES, max_eps)
    observed = []
    for i, s in enumerate(r.slices):
        d = slice_to_dict(s)
        for ep in d["endpoints"]:  # type: ignore[attr-defined]
            for k in ("hostname", "nodeName", "zone"):
                if ep[k] is None:
                    del ep[k]
        labels = d.pop("labels")
        assert labels["kubernetes.io/service-name"] == "web"  # type: ignore[index]
        observed.append(
            EndpointSlice.from_api(
                {"kind": "EndpointSlice", "metadata": {"name": f"web-{i}", "labels": labels}, **d}
            )
        )
    assert compare_slices(svc, r, observed, max_eps) == []


# ---- env ------------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.tuples(dns1035, svc_ports()), max_size=6, unique_by=lambda t: t[0]),
       st.randoms(use_true_random=False))  # fmt: skip
def test_service_env_does_not_depend_on_service_order(specs, rnd) -> None:  # type: ignore[no-untyped-def]
    services = [
        Service.from_api(service(n, cluster_ip=f"10.96.0.{i + 1}", ports=p))
        for i, (n, p) in enumerate(specs)
    ]
    shuffled = list(services)
    rnd.shuffle(shuffled)
    a, b = service_env("default", True, services), service_env("default", True, shuffled)
    assert a.values == b.values and a.collisions == b.collisions


@SETTINGS
@given(managed_services(), pods(), st.randoms(use_true_random=False))
def test_audit_codes_catalogued_and_order_independent(svc_obj, pod_objs, rnd) -> None:  # type: ignore[no-untyped-def]
    svc = Service.from_api(svc_obj)
    ps = [Pod.from_api(p) for p in pod_objs]
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    now = datetime(2025, 1, 2, tzinfo=UTC)
    obs = DnsObservation(frozenset())
    a = audit_service(AuditInputs(svc, ps, [], NODES, [svc]), obs, now)
    b = audit_service(AuditInputs(svc, shuffled, [], NODES, [svc]), obs, now)
    assert set(a.discrepancies) == set(b.discrepancies)
    assert a.verdicts == b.verdicts
    assert all(d.code in CATALOGUE for d in a.discrepancies)
    for d in a.discrepancies:
        assert d.aspect is CATALOGUE[d.code].aspect
