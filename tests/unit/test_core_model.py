"""Typed views: apiserver defaults and clear errors on malformed input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from k8sobjs import container, cport, eslice, node, pod, port, service

from svcaudit.core.model import (
    EndpointSlice,
    MalformedObjectError,
    Node,
    Pod,
    Service,
)


def test_service_defaults() -> None:
    svc = Service.from_api(service("web", ports=[{"port": 80}]))
    p = svc.ports[0]
    assert (p.protocol, p.target_port, p.name) == ("TCP", 80, "")
    assert svc.type == "ClusterIP"
    assert svc.cluster_ips == ("10.96.0.10",)
    assert svc.ip_families == ("IPv4",)
    assert not svc.publish_not_ready_addresses
    assert svc.creation_timestamp == datetime(2025, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("target", [0, ""])
def test_zero_or_empty_target_port_defaults_to_port(target: int | str) -> None:
    svc = Service.from_api(service("web", ports=[port(80, target=target)]))
    assert svc.ports[0].target_port == 80


def test_named_target_port_kept_as_name() -> None:
    svc = Service.from_api(service("web", ports=[port(80, target="http")]))
    assert svc.ports[0].target_port == "http"


def test_ipv6_cluster_ip_family_derived() -> None:
    svc = Service.from_api(service("web", cluster_ip="fd00:10:96::a"))
    assert svc.ip_families == ("IPv6",)


def test_dual_stack_service() -> None:
    svc = Service.from_api(
        service(
            "web",
            cluster_ip="10.96.0.10",
            cluster_ips=["10.96.0.10", "fd00::a"],
            families=["IPv4", "IPv6"],
        )
    )
    assert svc.cluster_ips == ("10.96.0.10", "fd00::a")
    assert svc.has_cluster_ip and not svc.is_headless


def test_external_name_has_no_cluster_ip() -> None:
    svc = Service.from_api(
        service("ext", type_="ExternalName", external_name="example.com", cluster_ip=None, ports=[])
    )
    assert svc.is_external_name and not svc.has_cluster_ip and svc.ip_families == ()


def test_yaml_datetime_accepted() -> None:
    obj = service("web")
    obj["metadata"]["creationTimestamp"] = datetime(2025, 1, 1, 10)  # as PyYAML loads it
    assert Service.from_api(obj).creation_timestamp == datetime(2025, 1, 1, 10, tzinfo=UTC)


def test_managed_fields_spec_time_only_for_env_relevant_fields() -> None:
    mf = [
        {
            "manager": "kubectl",
            "operation": "Update",
            "time": "2025-01-01T12:00:00Z",
            "fieldsV1": {"f:spec": {"f:ports": {}}},
        },
        {
            "manager": "other",
            "operation": "Update",
            "time": "2025-01-01T13:00:00Z",
            "fieldsV1": {"f:metadata": {"f:labels": {}}},
        },
        {
            "manager": "x",
            "operation": "Update",
            "subresource": "status",
            "time": "2025-01-01T14:00:00Z",
            "fieldsV1": {"f:spec": {"f:ports": {}}},
        },
    ]
    svc = Service.from_api(service("web", managed_fields=mf))
    assert svc.env_spec_touched_at == datetime(2025, 1, 1, 12, tzinfo=UTC)


def test_pod_defaults() -> None:
    p = Pod.from_api(pod("p", containers=[container(ports=[cport(80, "http")])]))
    assert p.enable_service_links is True
    assert p.containers[0].ports[0].protocol == "TCP"
    assert p.ready and p.pod_ips == ("10.244.0.5",)
    assert p.container_states["app"].running


def test_pod_ip_without_pod_ips_is_used() -> None:
    obj = pod("p")
    del obj["status"]["podIPs"]
    assert Pod.from_api(obj).pod_ips == ("10.244.0.5",)


def test_sidecar_detection() -> None:
    p = Pod.from_api(
        pod("p", init_containers=[container("side", restart_policy="Always"), container("init")])
    )
    assert [c.is_sidecar for c in p.init_containers] == [True, False]


def test_slice_nil_conditions_read_as_ready() -> None:
    obj = eslice("s", "web", [{"addresses": ["10.0.0.1"]}])
    ep = EndpointSlice.from_api(obj).endpoints[0]
    assert (ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating) == (
        True,
        True,
        False,
    )


def test_node_zone() -> None:
    assert Node.from_api(node(zone="z")).zone == "z"
    assert Node.from_api(node(zone=None)).zone is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o["spec"]["ports"][0].update(port="80"), "spec.ports[0].port"),
        (lambda o: o["spec"]["ports"][0].update(port=70000), "spec.ports[0].port"),
        (lambda o: o["spec"]["ports"][0].update(protocol="HTTP"), "spec.ports[0].protocol"),
        (lambda o: o["spec"]["ports"][0].update(targetPort="8080"), "spec.ports[0].targetPort"),
        (lambda o: o["spec"].update(ports="x"), "spec.ports"),
        (lambda o: o["spec"].update(ports=[]), "spec.ports"),
        (lambda o: o["spec"].update(selector=["a"]), "spec.selector"),
        (lambda o: o["spec"].update(clusterIP="300.1.1.1"), "spec.clusterIPs[0]"),
        (lambda o: o["spec"].update(type="Weird"), "spec.type"),
        (
            lambda o: o["metadata"].update(creationTimestamp="yesterday"),
            "metadata.creationTimestamp",
        ),
        (lambda o: o["metadata"].pop("name"), "metadata.name"),
        (lambda o: o.update(spec=[1]), "spec"),
    ],
)
def test_malformed_service_names_object_and_field(mutate, field) -> None:  # type: ignore[no-untyped-def]
    obj = service("web", ns="shop")
    mutate(obj)
    with pytest.raises(MalformedObjectError) as info:
        Service.from_api(obj)
    assert info.value.field == field
    assert info.value.kind == "Service"
    assert field in str(info.value)


def test_malformed_pod_error_names_pod() -> None:
    obj = pod("p1", ns="shop")
    obj["status"]["podIPs"] = [{"ip": "not-an-ip"}]
    with pytest.raises(MalformedObjectError, match=r"Pod shop/p1: status.podIPs\[0\].ip"):
        Pod.from_api(obj)


def test_malformed_container_port() -> None:
    obj = pod("p1", containers=[container(ports=[{"containerPort": "http"}])])
    with pytest.raises(
        MalformedObjectError, match=r"spec.containers\[0\].ports\[0\].containerPort"
    ):
        Pod.from_api(obj)


def test_malformed_slice_address() -> None:
    obj = eslice("s", "web", [{"addresses": ["nope"]}])
    with pytest.raises(MalformedObjectError, match=r"endpoints\[0\].addresses\[0\]"):
        EndpointSlice.from_api(obj)


def test_not_a_mapping() -> None:
    with pytest.raises(MalformedObjectError):
        Service.from_api("nope")  # type: ignore[arg-type]
