"""The prober encodes its questions itself (dnspython's builder was a third of check's DNS
time): byte for byte what dnspython's make_query builds, for every name form svcaudit asks."""

from __future__ import annotations

import dns.message
import pytest

from svcaudit.controller.dns_probe import _query_wire

CASES = [
    ("web.shop.svc.cluster.local.", "A"),
    ("web.shop.svc.cluster.local", "AAAA"),
    ("_http._tcp.web.shop.svc.cluster.local.", "SRV"),
    ("web-0.web.shop.svc.cluster.local.", "A"),
    ("12.0.96.10.in-addr.arpa.", "PTR"),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR"),
    ("ext.shop.svc.my.zone.", "CNAME"),
    ("a" * 63 + ".shop.svc.cluster.local.", "A"),
    ("odd name.shop.svc.cluster.local.", "A"),  # not a Kubernetes name: dnspython builds it
    ("ünïcode.shop.svc.cluster.local.", "A"),
]


@pytest.mark.parametrize(("name", "rtype"), CASES)
def test_the_question_is_what_dnspython_builds(name: str, rtype: str) -> None:
    query = dns.message.make_query(name if name.endswith(".") else name + ".", rtype)
    query.id = 0
    assert _query_wire(name, rtype) == query.to_wire()
