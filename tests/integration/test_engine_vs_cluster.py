"""The engine agrees with the real cluster: expected slices (and their labels) == the
EndpointSlice controller's slices, expected DNS records (services' and pods') == CoreDNS's
answers, compared as sets, for varied Services; `svcaudit expect`'s node access points ==
the node ports the apiserver allocated, on every node's InternalIP.

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

from svcaudit.core.dns import DnsRecord, expected_dns, names_service, pod_dns, record_from_answer
from svcaudit.core.endpoints import (
    CONTROLLER_NAME,
    RESERVED_SLICE_LABELS,
    expected_endpoints,
)
from svcaudit.core.expect import expect_document, parse_inventory
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
# named targetPorts, one of them (grpc) declared by no pod, one UDP; a label the
# controller copies onto the slices
apiVersion: v1
kind: Service
metadata: {name: multi, labels: {team: shop}}
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
# one number, two protocols: the apiserver gives both the same node port
apiVersion: v1
kind: Service
metadata: {name: dns-np}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: dns-udp, port: 53, targetPort: dns, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 5353}
---
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  type: ExternalName
  externalName: db.example.invalid
---
# appProtocol: the controller copies each service port's onto the slice's port
apiVersion: v1
kind: Service
metadata: {name: proto}
spec:
  selector: {app: web}
  ports:
  - {name: web, port: 80, targetPort: http, appProtocol: kubernetes.io/h2c}
  - {name: metrics, port: 9090, targetPort: metrics, appProtocol: http}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
---
# trafficDistribution: hints on ready endpoints, forZones = the endpoint's zone (PreferClose
# is PreferSameZone's older name); PreferSameNode adds forNodes = its node
apiVersion: v1
kind: Service
metadata: {name: close}
spec:
  selector: {tier: front}
  trafficDistribution: PreferClose
  ports: [{name: web, port: 80, targetPort: http, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: same-zone}
spec:
  selector: {app: web}
  trafficDistribution: PreferSameZone
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: same-node}
spec:
  clusterIP: None
  selector: {app: web-canary}
  trafficDistribution: PreferSameNode
  ports: [{name: http, port: 8081}]
---
# no trafficDistribution: no hints at all
apiVersion: v1
kind: Service
metadata: {name: no-preference}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
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
    "dns-np",
    "external",
    "sub",
    "proto",
    "close",
    "same-zone",
    "same-node",
    "no-preference",
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
        ep.hints,  # forZones / forNodes (trafficDistribution), None without
    )


def slice_set(slices: Any) -> frozenset[tuple[Any, ...]]:
    """Slices as a set of (addressType, port set, endpoint set); names and order ignored,
    empty placeholder slices merged by port set. Ports with their appProtocol, endpoints
    with their hints."""
    grouped: dict[tuple[str, frozenset[Any]], set[Any]] = {}
    for s in slices:
        ports = frozenset((p.name, p.port, p.protocol, p.app_protocol) for p in s.ports)
        key = (s.address_type, ports)
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
        want_labels = {reserved_labels(s.labels) for s in expected.slices}
        got_labels = {reserved_labels(s.labels) for s in managed}
        if want_labels != got_labels:
            differ[f"{svc.name} labels"] = (want_labels, got_labels)
    return differ


def reserved_labels(labels: Any) -> frozenset[tuple[str, str]]:
    """service-name, managed-by and headless: the labels the controller owns on a slice."""
    return frozenset((k, v) for k, v in labels.items() if k in RESERVED_SLICE_LABELS)


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
    # labels: the headless one really is on the headless services' slices, and the
    # service's own label is copied (so the whole label set is predicted, not only three keys)
    assert_hints_and_app_protocol_were_published(by_name, pods, nodes, _slices)
    managed = {s.service_name: dict(s.labels) for s in _slices if s.managed_by == CONTROLLER_NAME}
    assert managed["web-headless"]["service.kubernetes.io/headless"] == ""
    assert "service.kubernetes.io/headless" not in managed["simple"]
    assert managed["multi"] == dict(
        expected_endpoints(by_name["multi"], pods, nodes).slices[0].labels
    )
    assert managed["multi"]["team"] == "shop"


def assert_hints_and_app_protocol_were_published(
    by_name: dict[str, Service], pods: list[Pod], nodes: dict[str, Node], slices: Any
) -> None:
    """The issue-19 cases really happened: the controller wrote appProtocol and hints (so the
    equality above compared something), of the shapes the engine predicts."""
    published = {s.service_name: s for s in slices if s.managed_by == CONTROLLER_NAME}
    assert {p.app_protocol for p in published["proto"].ports} == {"kubernetes.io/h2c", "http", None}
    for name, with_nodes in (("close", False), ("same-zone", False), ("same-node", True)):
        eps = [ep for s in slices if s.service_name == name for ep in s.endpoints]
        assert eps and all(ep.hints is not None for ep in eps), name
        assert all(ep.hints.for_zones == (ep.zone,) for ep in eps if ep.hints), name
        assert all(bool(ep.hints.for_nodes) is with_nodes for ep in eps if ep.hints), name
        assert expected_endpoints(by_name[name], pods, nodes).hints_policy != "None"
    assert all(
        ep.hints is None for s in slices if s.service_name == "no-preference" for ep in s.endpoints
    )


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
            if question in want.shared:  # an endpoint's PTR: one record per service there
                records = {r for r in records if names_service(r.data, svc)}
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


def expect_doc(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """`svcaudit expect`'s document for the namespace's services and pods and the nodes, as
    `kubectl get -o json` lists them."""
    lists = [
        json.loads(cluster.run_kubectl("get", *kind, "-o", "json").stdout)
        for kind in (("svc", "-n", namespace), ("pods", "-n", namespace), ("nodes",))
    ]
    inventory, errors = parse_inventory(lists)
    assert errors == ()
    return expect_document(inventory)


def running_pods_with_ip(cluster: Cluster, namespace: str) -> list[Pod]:
    pods = [Pod.from_api(o) for o in get_items(cluster, "pods", "-n", namespace)]
    return [p for p in pods if p.phase == "Running" and p.pod_ips]


def test_expected_pod_records_answered_by_coredns(cluster: Cluster, namespace: str) -> None:
    if not cluster.dns_host:
        pytest.fail("this provider gives no DNS address to query (set SVCAUDIT_DNS_SERVER)")
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    deadline = time.monotonic() + 60
    while len(running_pods_with_ip(cluster, namespace)) < 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    pods = sorted(running_pods_with_ip(cluster, namespace), key=lambda p: p.name)
    assert len(pods) == 6
    doc_pods = {p["name"]: p for p in expect_doc(cluster, namespace)["pods"]}
    for pod in (pods[0], pods[-1]):
        want = set(pod_dns(pod))
        assert [(r.name, r.type, r.data) for r in sorted(want)] == [
            (r["name"], r["type"], r["data"]) for r in doc_pods[pod.name]["dns"]
        ]
        assert {r.type for r in want} == {"A"}  # the local cluster is IPv4 only
        got: set[DnsRecord] = set()
        for r in want:
            rcode, records = ask(cluster, r.name, r.type)
            assert rcode == dns.rcode.NOERROR, (r.name, dns.rcode.to_text(rcode))
            got |= records
        assert got == want
        (record,) = want
        assert record.name.startswith(record.data.replace(".", "-") + f".{namespace}.pod.")
    # IPv6 names, whose spelling CoreDNS must read back (insecure mode answers without a
    # pod, so the IPv4-only cluster can still check them): colons as dashes, '::' edges padded
    for ips in (["fd00:10:244::6"], ["::1"], ["fd00::"], ["10.1.2.3", "2001:db8::1:0:0:1"]):
        synthetic = Pod(namespace=namespace, name="v6", pod_ips=tuple(ips))
        for r in pod_dns(synthetic):
            rcode, records = ask(cluster, r.name, r.type)
            assert (rcode, records) == (dns.rcode.NOERROR, {r}), r


def test_node_port_access_points_follow_the_apiservers_allocation(
    cluster: Cluster, namespace: str
) -> None:
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=OBJECTS)
    raw = {o["metadata"]["name"]: o for o in get_items(cluster, "svc", "-n", namespace)}
    internal_ips = sorted(
        a["address"]
        for n in get_items(cluster, "nodes")
        for a in n["status"].get("addresses", [])
        if a["type"] == "InternalIP"
    )
    assert len(internal_ips) >= 2
    doc = {s["name"]: s for s in expect_doc(cluster, namespace)["services"]}
    for name in ("nodeport", "dns-np"):
        spec = raw[name]["spec"]
        allocated = [(p["nodePort"], p["protocol"]) for p in spec["ports"]]
        assert all(30000 <= n <= 32767 for n, _ in allocated)
        points = doc[name]["accessPoints"]
        node_points = sorted(
            (a["address"], a["port"], a["protocol"]) for a in points if a["scope"] == "node"
        )
        assert node_points == sorted((ip, n, pr) for ip in internal_ips for n, pr in allocated)
        cluster_points = [(a["address"], a["port"]) for a in points if a["scope"] == "cluster"]
        assert cluster_points == [(spec["clusterIP"], p["port"]) for p in spec["ports"]]
        assert "SVA-EP-112" not in {f["code"] for f in doc[name]["findings"]}
    # 53/UDP and 53/TCP share one node port
    assert len({p["nodePort"] for p in raw["dns-np"]["spec"]["ports"]}) == 1
    assert [a["scope"] for a in doc["simple"]["accessPoints"]] == ["cluster"]
    assert doc["web-headless"]["accessPoints"] == doc["external"]["accessPoints"] == []
