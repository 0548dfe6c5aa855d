"""The engine agrees with the real cluster: expected slices == the EndpointSlice controller's
slices, expected DNS records == CoreDNS's answers, compared as sets, for varied Services.

The cluster is eventually consistent, so each comparison polls until the cluster has settled
(pods Running, slices written); it fails if the two never agree within the deadline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from svcaudit.core.dns import DnsRecord, expected_dns, record_from_answer
from svcaudit.core.endpoints import CONTROLLER_NAME, expected_endpoints
from svcaudit.core.model import EndpointSlice, Node, Pod, Service
from tests.fixtures import Cluster

pytestmark = pytest.mark.cluster

# Varied objects, all on kwok nodes (pods get IPs from the nodes' podCIDRs and become Ready).
OBJECTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      nodeSelector: {type: kwok}
      containers:
      - name: main
        image: example.invalid/web:1
        ports:
        - {name: http, containerPort: 8080}
        - {name: metrics, containerPort: 9090}
        - {name: dns, containerPort: 5353, protocol: UDP}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-canary}
spec:
  replicas: 2
  selector: {matchLabels: {app: web-canary}}
  template:
    metadata: {labels: {app: web-canary, tier: front}}
    spec:
      nodeSelector: {type: kwok}
      containers:
      - name: main
        image: example.invalid/web:2
        ports:
        - {name: http, containerPort: 8081}
---
# the tutorial's service
apiVersion: v1
kind: Service
metadata: {name: simple}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
# named targetPorts, one of them (grpc) declared by no pod, one UDP
apiVersion: v1
kind: Service
metadata: {name: multi}
spec:
  selector: {app: web}
  ports:
  - {name: web, port: 80, targetPort: http}
  - {name: metrics, port: 9090, targetPort: metrics}
  - {name: grpc, port: 50051, targetPort: grpc}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
---
# two pod groups resolve the named port differently: two port sets, two slices
apiVersion: v1
kind: Service
metadata: {name: front}
spec:
  selector: {tier: front}
  ports: [{name: web, port: 80, targetPort: http}]
---
# headless with named port: per-endpoint A and SRV records
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
# headless with no pods at all: NXDOMAIN
apiVersion: v1
kind: Service
metadata: {name: nobody-headless}
spec:
  clusterIP: None
  selector: {app: nobody}
  ports: [{port: 80}]
---
# selector typo: no endpoints, a placeholder slice
apiVersion: v1
kind: Service
metadata: {name: typo}
spec:
  selector: {app: wbe}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nodeport}
spec:
  type: NodePort
  selector: {app: web-canary}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  type: ExternalName
  externalName: db.example.invalid
---
# a pod with hostname + subdomain matching a headless service
apiVersion: v1
kind: Service
metadata: {name: sub}
spec:
  clusterIP: None
  selector: {app: named}
  ports: [{name: tcp, port: 7000}]
---
apiVersion: v1
kind: Pod
metadata: {name: named-0, labels: {app: named}}
spec:
  hostname: named-0
  subdomain: sub
  nodeSelector: {type: kwok}
  containers:
  - {name: main, image: example.invalid/named:1, ports: [{containerPort: 7000}]}
"""

SERVICES = (
    "simple",
    "multi",
    "front",
    "web-headless",
    "nobody-headless",
    "typo",
    "nodeport",
    "external",
    "sub",
)


def get_items(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("get", *args, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def endpoint_key(ep: Any) -> tuple[Any, ...]:
    ref = ep.target_ref
    return (
        tuple(sorted(ep.addresses)),
        ep.conditions.ready,
        ep.conditions.serving,
        ep.conditions.terminating,
        ep.hostname,
        ep.node_name,
        ep.zone,
        (ref.kind, ref.namespace, ref.name) if ref else None,
    )


def slice_set(slices: Any) -> frozenset[tuple[Any, ...]]:
    """Slices as a set of (addressType, port set, endpoint set); names and order ignored,
    empty placeholder slices merged by port set."""
    grouped: dict[tuple[str, frozenset[Any]], set[Any]] = {}
    for s in slices:
        key = (s.address_type, frozenset((p.name, p.port, p.protocol) for p in s.ports))
        grouped.setdefault(key, set()).update(endpoint_key(ep) for ep in s.endpoints)
    return frozenset((k[0], k[1], frozenset(v)) for k, v in grouped.items())


def snapshot(
    cluster: Cluster, namespace: str
) -> tuple[list[Service], list[Pod], dict[str, Node], list[EndpointSlice]]:
    services = [Service.from_api(o) for o in get_items(cluster, "svc", "-n", namespace)]
    pods = [Pod.from_api(o) for o in get_items(cluster, "pods", "-n", namespace)]
    nodes = {n.name: n for n in (Node.from_api(o) for o in get_items(cluster, "nodes"))}
    slices = [
        EndpointSlice.from_api(o) for o in get_items(cluster, "endpointslices", "-n", namespace)
    ]
    return services, pods, nodes, slices


def compare_slices_once(cluster: Cluster, namespace: str) -> dict[str, tuple[Any, Any]]:
    """Per service: (expected, observed) where they differ; empty when all agree."""
    services, pods, nodes, slices = snapshot(cluster, namespace)
    if len(pods) != 6 or any(p.phase != "Running" for p in pods):
        return {"(pods)": ("6 Running", [(p.name, p.phase) for p in pods])}
    differ = {}
    for svc in services:
        expected = expected_endpoints(svc, pods, nodes)
        managed = [
            s for s in slices if s.service_name == svc.name and s.managed_by == CONTROLLER_NAME
        ]
        if not expected.managed:
            if managed:
                differ[svc.name] = ("no managed slices", managed)
            continue
        want, got = slice_set(expected.slices), slice_set(managed)
        if want != got:
            differ[svc.name] = (want, got)
    return differ


def test_expected_slices_equal_the_controllers(cluster: Cluster, namespace: str) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    deadline = time.monotonic() + 60
    differ = compare_slices_once(cluster, namespace)
    while differ and time.monotonic() < deadline:
        time.sleep(0.5)
        differ = compare_slices_once(cluster, namespace)
    assert differ == {}
    # The cases the objects were chosen for really happened:
    services, pods, nodes, _slices = snapshot(cluster, namespace)
    by_name = {s.name: s for s in services}
    multi = expected_endpoints(by_name["multi"], pods, nodes)
    assert {d.service_port.name for d in multi.dropped_ports} == {"grpc"}
    front = expected_endpoints(by_name["front"], pods, nodes)
    assert len({s.port_set for s in front.slices}) == 2
    typo = expected_endpoints(by_name["typo"], pods, nodes)
    assert typo.endpoints == ()
    sub = expected_endpoints(by_name["sub"], pods, nodes)
    assert [ep.hostname for ep in sub.endpoints] == ["named-0"]
    assert all(ep.zone for ep in expected_endpoints(by_name["simple"], pods, nodes).endpoints)


def ask(cluster: Cluster, name: str, rtype: str) -> tuple[int, set[DnsRecord]]:
    query = dns.message.make_query(name, rtype)
    reply = dns.query.udp(query, cluster.dns_host, port=cluster.dns_port, timeout=3)
    records = {
        record_from_answer(
            rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text()
        )
        for rrset in reply.answer
        for rdata in rrset
        if dns.rdatatype.to_text(rrset.rdtype) == rtype
    }
    return reply.rcode(), records


def compare_dns_once(cluster: Cluster, namespace: str) -> dict[str, Any]:
    services, pods, nodes, _slices = snapshot(cluster, namespace)
    differ: dict[str, Any] = {}
    for svc in services:
        # Headless answers come from the slices CoreDNS reads; the slices test above proves
        # those equal the expected ones, so DNS is compared against the engine's own slices.
        ep_slices = expected_endpoints(svc, pods, nodes).slices
        want = expected_dns(svc, ep_slices)
        got: set[DnsRecord] = set()
        for question in want.questions:
            rcode, records = ask(cluster, question.name, question.type)
            if question in want.nxdomain and rcode != dns.rcode.NXDOMAIN:
                differ[f"{svc.name} {question}"] = ("NXDOMAIN", dns.rcode.to_text(rcode))
            got |= records
        if got != set(want.records):
            differ[svc.name] = (sorted(want.records - got), sorted(got - want.records))
    return differ


def test_expected_dns_equals_coredns(cluster: Cluster, namespace: str) -> None:
    if not cluster.dns_host:
        pytest.fail("this provider gives no DNS address to query (set SVCAUDIT_DNS_SERVER)")
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    deadline = time.monotonic() + 60
    while compare_slices_once(cluster, namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    differ = compare_dns_once(cluster, namespace)
    while differ and time.monotonic() < deadline + 15:  # CoreDNS answers with a 5 s TTL
        time.sleep(1)
        differ = compare_dns_once(cluster, namespace)
    assert differ == {}
    services, pods, nodes, _ = snapshot(cluster, namespace)
    kinds = {
        r.type
        for svc in services
        for r in expected_dns(svc, expected_endpoints(svc, pods, nodes).slices).records
    }
    assert {"A", "SRV", "PTR", "CNAME"} <= kinds
