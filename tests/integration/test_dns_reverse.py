"""PTR records of endpoint addresses: the engine's expectation equals what the real CoreDNS
answers (reverse.go serviceRecordForIP), for a ClusterIP service, two services sharing their
pods' addresses, a headless service with hostnames, and hand-written slices (ready and not,
IPv4 and IPv6); and `svcaudit check` finds all of them consistent.

CoreDNS answers a PTR for an address that is no ClusterIP with one record per service having
a ready endpoint there, so each service is compared on the records naming it (as the audit
does): other tests may publish the same hand-written addresses meanwhile."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from svcaudit.core.compare import DnsObservation, compare_dns
from svcaudit.core.dns import (
    DnsQuestion,
    DnsRecord,
    ExpectedDns,
    expected_dns,
    names_service,
    record_from_answer,
    reverse_name,
)
from svcaudit.core.endpoints import expected_endpoints
from svcaudit.core.expect import expect_document, parse_inventory
from svcaudit.core.model import EndpointSlice, Node, Pod, Service
from tests.fixtures import Cluster
from tests.integration.test_check_helpers import by_name, check_json

pytestmark = pytest.mark.cluster

OCTET = random.randint(1, 254)  # hand-written addresses of this run: 10.250.<OCTET>.x
V6 = f"fd00:250:{OCTET:x}::"
OBJECTS = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{type: kwok}}
      containers: [{{name: main, image: example.invalid/web:1, ports: [{{containerPort: 8080}}]}}]
---
# a ClusterIP service: its pods' addresses answer PTR <dashed ip>.web.<ns>.svc.cluster.local
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
# the same pods behind a second service: their PTR answers hold both services
apiVersion: v1
kind: Service
metadata: {{name: web-alias}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
---
# headless, one pod with hostname + subdomain, one without
apiVersion: v1
kind: Service
metadata: {{name: peers}}
spec:
  clusterIP: None
  selector: {{app: peer}}
  ports: [{{name: tcp, port: 7000}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: peer-0, labels: {{app: peer}}}}
spec:
  hostname: peer-0
  subdomain: peers
  nodeSelector: {{type: kwok}}
  containers: [{{name: main, image: example.invalid/peer:1}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: peer-x, labels: {{app: peer}}}}
spec:
  nodeSelector: {{type: kwok}}
  containers: [{{name: main, image: example.invalid/peer:1}}]
---
# hand-written slices of a selectorless ClusterIP service: a ready address, a not-ready one
# (no PTR), one with a hostname; IPv6 too (the API server refuses a non-canonical IPv6
# spelling in a new slice since 1.33: the core's rule for it cannot be shown here)
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec:
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-v4, labels: {{kubernetes.io/service-name: ext}}}}
addressType: IPv4
ports: [{{name: pg, port: 5432, protocol: TCP}}]
endpoints:
- addresses: [10.250.{OCTET}.1]
- addresses: [10.250.{OCTET}.2]
  conditions: {{ready: false}}
- addresses: [10.250.{OCTET}.3]
  hostname: db
  conditions: {{ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-v6, labels: {{kubernetes.io/service-name: ext}}}}
addressType: IPv6
ports: [{{name: pg, port: 5432, protocol: TCP}}]
endpoints:
- addresses: ["{V6}1"]
---
# a hand-written slice pointing at the API server's ClusterIP (10.96.0.1): CoreDNS answers
# that address's PTR with the Service kubernetes, and no endpoint PTR at all
apiVersion: v1
kind: Service
metadata: {{name: proxy}}
spec:
  ports: [{{name: https, port: 443}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: proxy-1, labels: {{kubernetes.io/service-name: proxy}}}}
addressType: IPv4
ports: [{{name: https, port: 443, protocol: TCP}}]
endpoints:
- addresses: [10.96.0.1]
---
# a selectorless headless service with its own slice
apiVersion: v1
kind: Service
metadata: {{name: ext-peers}}
spec:
  clusterIP: None
  ports: [{{name: tcp, port: 7000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-peers-1, labels: {{kubernetes.io/service-name: ext-peers}}}}
addressType: IPv4
ports: [{{name: tcp, port: 7000, protocol: TCP}}]
endpoints:
- addresses: [10.250.{OCTET}.11]
  hostname: a
- addresses: [10.250.{OCTET}.12]
"""
SERVICES = ("web", "web-alias", "peers", "ext", "ext-peers", "proxy")
KUBERNETES_IP = "10.96.0.1"  # the local cluster's first service address (SERVICE_CIDR)


def items(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(cluster.run_kubectl("get", *args, "-o", "json").stdout)[
        "items"
    ]
    return out


def ask(cluster: Cluster, q: DnsQuestion) -> tuple[int, set[DnsRecord]]:
    reply = dns.query.udp(
        dns.message.make_query(q.name, q.type), cluster.dns_host, port=cluster.dns_port, timeout=3
    )
    records = {
        record_from_answer(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype), rd.to_text())
        for rr in reply.answer
        for rd in rr
    }
    return reply.rcode(), records


def expectations(cluster: Cluster, namespace: str) -> dict[str, tuple[Service, ExpectedDns]]:
    """Per service: the engine's expected records, from its expected slices when the
    controller manages it, else from the slices in the cluster (as the audit does)."""
    services = [Service.from_api(o) for o in items(cluster, "svc", "-n", namespace)]
    pods = [Pod.from_api(o) for o in items(cluster, "pods", "-n", namespace)]
    nodes = {n.name: n for n in (Node.from_api(o) for o in items(cluster, "nodes"))}
    slices = [EndpointSlice.from_api(o) for o in items(cluster, "endpointslices", "-n", namespace)]
    out = {}
    for svc in services:
        exp = expected_endpoints(svc, pods, nodes)
        own = exp.slices if exp.managed else [s for s in slices if s.service_name == svc.name]
        out[svc.name] = (svc, expected_dns(svc, own))
    return out


def differences(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """Per service: the core's findings (compare_dns) about its endpoint PTRs, compared with
    CoreDNS's answers: the expected records naming it against the answered ones naming it,
    the others left to their own services (and an address that is a ClusterIP left alone)."""
    differ: dict[str, Any] = {}
    for name, (svc, want) in expectations(cluster, namespace).items():
        answers: set[DnsRecord] = set()
        nxdomain: set[DnsQuestion] = set()
        for q in want.shared:
            rcode, got = ask(cluster, q)
            answers |= got
            if rcode == dns.rcode.NXDOMAIN:
                nxdomain.add(q)
        ptrs = ExpectedDns(
            frozenset(r for r in want.records if r.question in want.shared),
            frozenset(),
            want.shared,
        )
        found = compare_dns(
            svc, ptrs, DnsObservation(frozenset(answers), None, frozenset(nxdomain))
        )
        if found:
            differ[name] = [(d.code, d.expected, d.observed) for d in found]
    return differ


def settled(cluster: Cluster, namespace: str) -> bool:
    pods = [Pod.from_api(o) for o in items(cluster, "pods", "-n", namespace)]
    return len(pods) == 4 and all(p.phase == "Running" and p.pod_ips for p in pods)


def test_expected_endpoint_ptrs_equal_corednss_answers(cluster: Cluster, namespace: str) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    deadline = time.monotonic() + 60
    while not settled(cluster, namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    differ = differences(cluster, namespace)
    while differ and time.monotonic() < deadline + 15:  # slices written, CoreDNS's 5 s TTL
        time.sleep(1)
        differ = differences(cluster, namespace)
    assert differ == {}
    wanted = expectations(cluster, namespace)
    ptrs = {n: {r for r in w.records if r.type == "PTR"} for n, (_, w) in wanted.items()}
    assert all(wanted[n][1].shared for n in SERVICES), "every service has some"
    # the cases the objects were chosen for really happened
    peer = {r.data.split(".")[0] for r in ptrs["peers"]}
    assert "peer-0" in peer and len(peer) == 2  # a hostname, and a dashed IP
    ext = {r.name: r.data.split(".")[0] for r in ptrs["ext"] if r.name.endswith(".arpa.")}
    assert ext[reverse_name(f"10.250.{OCTET}.3")] == "db"
    assert reverse_name(f"10.250.{OCTET}.2") not in ext  # not ready: CoreDNS has none
    assert ext[reverse_name(f"{V6}1")] == f"{V6.replace(':', '-')}1"
    rcode, records = ask(cluster, DnsQuestion(reverse_name(f"10.250.{OCTET}.2"), "PTR"))
    assert not any(names_service(r.data, wanted["ext"][0]) for r in records)
    assert rcode == dns.rcode.NXDOMAIN or records  # NXDOMAIN, unless another test uses it
    # an endpoint at a ClusterIP: CoreDNS answers the Service owning it, and nothing else
    rcode, owner = ask(cluster, DnsQuestion(reverse_name(KUBERNETES_IP), "PTR"))
    assert {r.data for r in owner} == {"kubernetes.default.svc.cluster.local."}
    assert DnsQuestion(reverse_name(KUBERNETES_IP), "PTR") in wanted["proxy"][1].shared
    # a pod of both services: one PTR answer naming each (several PTR records)
    web_q = next(iter(wanted["web"][1].shared))
    _, both = ask(cluster, web_q)
    named = {r.data.split(".", 2)[1] for r in both}
    assert {"web", "web-alias"} <= named


def test_check_finds_every_endpoint_ptr_consistent(cluster: Cluster, namespace: str) -> None:
    """No false positive: the same services through `svcaudit check` (the operator's
    assembly): DNS True everywhere, although the shared answers hold other services."""
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    deadline = time.monotonic() + 75
    while True:
        _, doc = check_json(cluster, "-n", namespace)
        services = by_name(doc, namespace)
        dns_of = {n: services.get(n, {}).get("verdicts", {}).get("DNS", {}) for n in SERVICES}
        if all(v.get("status") == "True" for v in dns_of.values()) and settled(cluster, namespace):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"DNS not consistent: {dns_of}")
        time.sleep(1)
    codes = {d["code"] for s in services.values() for d in s["discrepancies"]}
    assert not {c for c in codes if c.startswith("SVA-DNS-00")}
    # `svcaudit expect` lists the same PTRs for these objects
    lists = [
        json.loads(cluster.run_kubectl("get", *k, "-o", "json").stdout)
        for k in (
            ("svc,pods,endpointslices", "-n", namespace),
            ("nodes",),
        )
    ]
    inventory, errors = parse_inventory(lists)
    assert errors == ()
    document = {s["name"]: s for s in expect_document(inventory)["services"]}
    for name, (_, want) in expectations(cluster, namespace).items():
        listed = {(r["name"], r["type"], r["data"]) for r in document[name]["dns"]}
        assert {(r.name, r.type, r.data) for r in want.records} == listed, name


def test_an_external_name_that_is_an_address_has_no_record(
    cluster: Cluster, namespace: str
) -> None:
    """CoreDNS answers an ExternalName only when it is a name (findServices: a CNAME); an
    address there answers NXDOMAIN, and the engine expects nothing of it."""
    cluster.run_kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=(
            "apiVersion: v1\nkind: Service\nmetadata: {name: by-ip}\n"
            "spec: {type: ExternalName, externalName: 192.0.2.7}\n"
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: by-name}\n"
            "spec: {type: ExternalName, externalName: db.example.invalid}\n"
        ),
    )
    wanted = expectations(cluster, namespace)
    assert wanted["by-ip"][1].questions == ()
    base = f"by-ip.{namespace}.svc.cluster.local."
    deadline = time.monotonic() + 20
    while True:  # CoreDNS picks the services up from its watch
        named = ask(cluster, DnsQuestion(f"by-name.{namespace}.svc.cluster.local.", "CNAME"))
        if named[1] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert named[1] == set(wanted["by-name"][1].records)
    for rtype in ("CNAME", "A"):
        rcode, records = ask(cluster, DnsQuestion(base, rtype))
        assert (rcode, records) == (dns.rcode.NXDOMAIN, set()), rtype
