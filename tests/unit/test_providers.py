"""E2E provider selection and the kind configuration (the parts testable without Docker)."""

from __future__ import annotations

import pytest
import yaml

from e2e import providers


def test_explicit_choice_wins() -> None:
    for name in providers.PROVIDERS:
        assert providers.select_provider({"E2E_CLUSTER": name}) == name


def test_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="E2E_CLUSTER='kinder'"):
        providers.select_provider({"E2E_CLUSTER": "kinder"})


def test_default_is_the_local_cluster_even_where_docker_answers() -> None:
    """`make test` keeps its meaning on a machine where `make image` started a Docker engine
    (as on this one): kind only when asked for."""
    assert providers.select_provider({}) == "local"
    assert providers.select_provider({"E2E_CLUSTER": ""}) == "local"


def test_real_node_per_provider() -> None:
    assert providers.has_real_node("kind", {})
    assert not providers.has_real_node("local", {})
    assert providers.has_real_node("local", {"NODE": "real"})


def test_kind_config_matches_local_cluster_ranges() -> None:
    import importlib.util
    import sys

    from tests.fixtures import REPO

    config = yaml.safe_load(providers.KIND_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    spec = importlib.util.spec_from_file_location("local_cluster", REPO / "e2e/cluster/cluster.py")
    assert spec and spec.loader
    local = importlib.util.module_from_spec(spec)
    sys.modules["local_cluster"] = local
    spec.loader.exec_module(local)
    assert config["networking"]["serviceSubnet"] == local.SERVICE_CIDR
    assert config["networking"]["podSubnet"] == local.CLUSTER_CIDR
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1
    kube_minor = local.VERSIONS["KUBE_VERSION"].rsplit(".", 1)[0]  # v1.34
    assert all(n["image"].startswith(f"kindest/node:{kube_minor}.") for n in config["nodes"])
    assert all("@sha256:" in n["image"] for n in config["nodes"])  # kind asks for digests


def test_kind_cluster_can_run_the_tutorial_and_reach_its_dns_from_the_host() -> None:
    config = yaml.safe_load(providers.KIND_CONFIG.read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    # The tutorial's pods select the real node by `type: real`, as on the local cluster.
    assert all(n["labels"]["type"] == "real" for n in workers)
    assert len({n["labels"]["topology.kubernetes.io/zone"] for n in workers}) == 2
    # The operator on the host asks DNS at 127.0.0.1:KIND_DNS_PORT, which kind maps to the
    # node port of the DNS Service the fixture applies, over UDP and TCP.
    (plane,) = [n for n in config["nodes"] if n["role"] == "control-plane"]
    mapped = {
        (m["protocol"], m["hostPort"])
        for m in plane["extraPortMappings"]
        if m["listenAddress"] == "127.0.0.1"
    }
    assert mapped == {("UDP", providers.KIND_DNS_PORT), ("TCP", providers.KIND_DNS_PORT)}
    svc = yaml.safe_load(providers.KIND_DNS_MANIFEST.read_text())
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
    ports = {(p["protocol"], p["nodePort"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {("UDP", providers.KIND_DNS_PORT, 53), ("TCP", providers.KIND_DNS_PORT, 53)}
    assert all(m["containerPort"] == providers.KIND_DNS_PORT for m in plane["extraPortMappings"])


def test_local_kind_config_agrees_with_the_node_image_it_runs() -> None:
    """kind-config-local.yaml (our node image) and the files baked into that image must name
    the same ranges and images: a change to one without the other breaks only at run time."""
    import ipaddress
    import json

    from e2e.kind import node_image

    config = yaml.safe_load(node_image.KIND_CONFIG.read_text())
    net = config["networking"]
    pods, services = (
        ipaddress.ip_network(net["podSubnet"]),
        ipaddress.ip_network(net["serviceSubnet"]),
    )
    # Not the local cluster's ranges: both clusters can run on one machine.
    assert not pods.overlaps(ipaddress.ip_network("10.244.0.0/16"))
    assert not services.overlaps(ipaddress.ip_network("10.96.0.0/16"))
    assert net["disableDefaultCNI"] is True  # kindnetd cannot be pulled here
    conflist = json.loads(
        (node_image.NODE_FILES / "etc/cni/net.d/10-svcaudit-ptp.conflist").read_text()
    )
    ranges = [
        r["subnet"]
        for p in conflist["plugins"]
        for rs in p.get("ipam", {}).get("ranges", [])
        for r in rs
    ]
    assert ranges == [str(next(pods.subnets(new_prefix=24)))]  # the single node's podCIDR
    unit = (node_image.NODE_FILES / "etc/systemd/system/svcaudit-service-range.service").read_text()
    assert f"-s {pods} -d {services}" in unit
    (plane,) = config["nodes"]
    assert plane["role"] == "control-plane" and plane["labels"]["type"] == "real"
    mapped = {(m["protocol"], m["hostPort"]) for m in plane["extraPortMappings"]}
    assert mapped == {("UDP", providers.KIND_DNS_PORT), ("TCP", providers.KIND_DNS_PORT)}
    patches = "\n".join(config["kubeadmConfigPatches"])
    for version in (node_image.ETCD, node_image.COREDNS):
        assert f"imageTag: {version}" in patches
    assert "imageRepository: svcaudit.local" in patches
    assert "registry.k8s.io" not in patches
    assert set(node_image.component_images()) >= {
        f"svcaudit.local/kube-apiserver:{node_image.KUBE}",
        f"svcaudit.local/etcd:{node_image.ETCD}",
        f"svcaudit.local/coredns:{node_image.COREDNS}",
    }
