"""Expected service environment variables: the kubelet's rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from k8sobjs import AFTER, BEFORE, T0, container, pod, port, service

from svcaudit.core.envvars import (
    Freshness,
    container_env,
    env_name,
    freshness,
    pod_env,
    service_env,
    service_variables,
    visible_services,
)
from svcaudit.core.model import Pod, Service


def svc(*args: Any, **kw: Any) -> Service:
    return Service.from_api(service(*args, **kw))


KUBE = service(
    "kubernetes", "default", cluster_ip="10.96.0.1", ports=[port(443, "https", target=6443)]
)


def test_reference_foo_bar_example_exactly_seven_variables() -> None:
    s = svc("foo-bar", cluster_ip="1.2.3.4", ports=[port(8080)])
    assert dict(service_variables(s)) == {
        "FOO_BAR_SERVICE_HOST": "1.2.3.4",
        "FOO_BAR_SERVICE_PORT": "8080",
        "FOO_BAR_PORT": "tcp://1.2.3.4:8080",
        "FOO_BAR_PORT_8080_TCP": "tcp://1.2.3.4:8080",
        "FOO_BAR_PORT_8080_TCP_PROTO": "tcp",
        "FOO_BAR_PORT_8080_TCP_PORT": "8080",
        "FOO_BAR_PORT_8080_TCP_ADDR": "1.2.3.4",
    }
    assert len(service_variables(s)) == 7


def test_mangling_only_uppercase_and_dash() -> None:
    assert env_name("my-svc-2") == "MY_SVC_2"


def test_multi_port_named_udp_sctp() -> None:
    s = svc(
        "dns",
        cluster_ip="10.96.0.10",
        ports=[port(53, "dns", protocol="UDP"), port(53, "dns-tcp"), port(9, "x", protocol="SCTP")],
    )
    env = dict(service_variables(s))
    assert env["DNS_SERVICE_PORT"] == "53"
    assert env["DNS_SERVICE_PORT_DNS"] == "53"
    assert env["DNS_SERVICE_PORT_DNS_TCP"] == "53"
    assert env["DNS_SERVICE_PORT_X"] == "9"
    assert env["DNS_PORT"] == "udp://10.96.0.10:53"  # first port only
    assert env["DNS_PORT_53_UDP"] == "udp://10.96.0.10:53"
    assert env["DNS_PORT_53_TCP_PROTO"] == "tcp"
    assert env["DNS_PORT_9_SCTP"] == "sctp://10.96.0.10:9"
    assert env["DNS_PORT_9_SCTP_ADDR"] == "10.96.0.10"
    assert len(env) == 2 + 3 + 1 + 3 * 4


def test_ipv6_brackets_only_in_urls_and_case_kept() -> None:
    env = dict(service_variables(svc("v6", cluster_ip="FD00::A", ports=[port(80)])))
    assert env["V6_SERVICE_HOST"] == "FD00::A"
    assert env["V6_PORT"] == "tcp://[FD00::A]:80"
    assert env["V6_PORT_80_TCP_ADDR"] == "FD00::A"


def test_only_primary_cluster_ip_in_dual_stack() -> None:
    s = svc("ds", cluster_ips=["10.96.0.10", "fd00::a"], families=["IPv4", "IPv6"])
    assert "fd00::a" not in "".join(v for _, v in service_variables(s))


def test_node_port_and_load_balancer_same_variables_as_cluster_ip() -> None:
    base = dict(service_variables(svc("w", ports=[port(80)])))
    for t in ("NodePort", "LoadBalancer"):
        assert dict(service_variables(svc("w", type_=t, ports=[port(80, nodePort=30080)]))) == base


def test_headless_and_external_name_contribute_nothing() -> None:
    assert service_variables(svc("h", cluster_ip="None")) == ()
    ext = svc("e", type_="ExternalName", external_name="x.example", cluster_ip=None, ports=[])
    assert service_variables(ext) == ()


def _names(p: dict[str, Any], services: list[dict[str, Any]]) -> set[str]:
    (c,) = pod_env(Pod.from_api(p), [Service.from_api(s) for s in services])
    return set(c.env)


def test_default_kubernetes_always_seen_even_without_service_links() -> None:
    other = service("web", "shop", cluster_ip="10.96.0.20")
    p = pod("p", "shop", enable_service_links=False)
    names = _names(p, [KUBE, other])
    assert "KUBERNETES_SERVICE_HOST" in names and "WEB_SERVICE_HOST" not in names


def test_same_namespace_only() -> None:
    names = _names(pod("p", "shop"), [KUBE, service("web", "shop"), service("db", "other")])
    assert "WEB_SERVICE_HOST" in names and "DB_SERVICE_HOST" not in names


def test_kubernetes_service_in_own_namespace_replaces_default_one() -> None:
    local = service("kubernetes", "shop", cluster_ip="10.96.0.99", ports=[port(8443)])
    (c,) = pod_env(
        Pod.from_api(pod("p", "shop")), [Service.from_api(KUBE), Service.from_api(local)]
    )
    assert c.env["KUBERNETES_SERVICE_HOST"] == "10.96.0.99"
    assert "KUBERNETES_SERVICE_PORT_HTTPS" not in c.env
    # ...but not when service links are disabled: then default/kubernetes is seen.
    (c2,) = pod_env(
        Pod.from_api(pod("p", "shop", enable_service_links=False)),
        [Service.from_api(KUBE), Service.from_api(local)],
    )
    assert c2.env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_local_kubernetes_in_default_namespace_is_the_default_one() -> None:
    vis = visible_services("default", True, [Service.from_api(KUBE)])
    assert [s.key for s in vis] == [("default", "kubernetes")]


def test_explicit_env_shadows_service_variable() -> None:
    c = container(
        env=[
            {"name": "WEB_SERVICE_HOST", "value": "1.1.1.1"},
            {"name": "WEB_SERVICE_PORT", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},
            {"name": "OTHER", "value": "x"},
        ]
    )
    p = Pod.from_api(pod("p", containers=[c]))
    senv = service_env("default", True, [svc("web", cluster_ip="10.96.0.20")])
    ce = container_env(p.containers[0], senv)
    assert "WEB_SERVICE_HOST" not in ce.env and "WEB_SERVICE_PORT" not in ce.env
    assert "OTHER" not in ce.env  # only service-derived variables are listed
    assert {(s.name, s.explicit_value) for s in ce.shadowed} == {
        ("WEB_SERVICE_HOST", "1.1.1.1"),
        ("WEB_SERVICE_PORT", None),
    }


def test_env_from_is_reported_unresolved() -> None:
    c = container(env_from=[{"configMapRef": {"name": "cfg"}, "prefix": "P_"}])
    p = Pod.from_api(pod("p", containers=[c]))
    ce = container_env(p.containers[0], service_env("default", True, [svc("web")]))
    assert ce.unresolved_env_from[0].name == "cfg" and "WEB_SERVICE_HOST" in ce.env


def test_collision_between_services_is_detected_and_deterministic() -> None:
    a = svc("foo", cluster_ip="10.96.0.1", ports=[port(8080)])
    b = svc("foo-port-8080-tcp", cluster_ip="10.96.0.2", ports=[port(80)])
    senv = service_env("default", True, [b, a])
    names = {c.name for c in senv.collisions}
    assert "FOO_PORT_8080_TCP_PORT" in names
    assert senv.possible_values("FOO_PORT_8080_TCP_PORT") == {"8080", "tcp://10.96.0.2:80"}
    assert service_env("default", True, [a, b]).values == senv.values


def test_init_containers_get_the_environment_too() -> None:
    p = Pod.from_api(pod("p", init_containers=[container("init")]))
    assert [c.container for c in pod_env(p, [svc("web")])] == ["init", "app"]


@pytest.mark.parametrize(
    ("created", "started", "want"),
    [
        (T0, BEFORE, Freshness.STALE),
        (T0, AFTER, Freshness.CURRENT),
        (T0, "2025-01-01T10:00:03Z", Freshness.UNCERTAIN),
        (T0, "2025-01-01T09:59:57Z", Freshness.UNCERTAIN),
        (T0, None, Freshness.NOT_RUNNING),
        (None, AFTER, Freshness.UNKNOWN),
    ],
)
def test_freshness(created: str | None, started: str | None, want: Freshness) -> None:
    s = svc("web", created=created)
    p = Pod.from_api(pod("p", started=started))
    assert freshness(p, "app", s, timedelta(seconds=5)) is want


def test_freshness_spec_change_after_start_is_only_possible_staleness() -> None:
    mf = [
        {
            "manager": "kubectl",
            "operation": "Update",
            "time": "2025-01-01T12:00:00Z",
            "fieldsV1": {"f:spec": {"f:ports": {}}},
        }
    ]
    s = svc("web", managed_fields=mf)
    assert freshness(Pod.from_api(pod("p", started=AFTER)), "app", s) is Freshness.SPEC_CHANGED


def test_freshness_waiting_container_gets_current_values_next_start() -> None:
    obj = pod("p")
    obj["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert freshness(Pod.from_api(obj), "app", svc("web")) is Freshness.NOT_RUNNING
