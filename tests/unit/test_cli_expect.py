"""`svcaudit expect`: document shape, formats, and clean failures on bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8sobjs import container, cport, endpoint, eslice, node, pod, port, service

from svcaudit.cli import build_parser

KUBE = service("kubernetes", cluster_ip="10.96.0.1", ports=[port(443, "https", target=6443)])


def objects() -> list[dict[str, Any]]:
    web = service(
        "web", selector={"app": "web"}, cluster_ip="10.96.0.20", ports=[port(80, "http", 9876)]
    )
    p = pod("web-1", containers=[container("sise", ports=[cport(9876)])], ips=["10.244.0.5"])
    return [KUBE, web, {"kind": "List", "items": [p, node()]}, {"kind": "Namespace"}]


def run(tmp_path: Path, docs: list[Any] | str, *args: str) -> tuple[int, str, str]:
    f = tmp_path / "objects.yaml"
    f.write_text(docs if isinstance(docs, str) else yaml.safe_dump_all(docs))
    ns = build_parser().parse_args(["expect", "-f", str(f), *args])
    out, err = io.StringIO(), io.StringIO()
    code = ns.func(ns, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_json_shape(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, objects(), "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    web = next(s for s in doc["services"] if s["name"] == "web")
    assert set(web) >= {"namespace", "name", "endpointSlices", "dns", "findings"}
    (sl,) = web["endpointSlices"]
    assert sl["ports"] == [{"name": "http", "port": 9876, "protocol": "TCP"}]
    ep = sl["endpoints"][0]
    assert ep["addresses"] == ["10.244.0.5"]
    assert ep["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert ep["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "web-1"}
    assert (ep["nodeName"], ep["zone"], ep["hostname"]) == ("node-1", "zone-a", None)
    assert {"name": "web.default.svc.cluster.local.", "type": "A", "data": "10.96.0.20"} in web[
        "dns"
    ]
    assert web["dns"] == sorted(web["dns"], key=lambda r: (r["name"], r["type"], r["data"]))
    (p,) = doc["pods"]
    env = p["containers"][0]["env"]
    assert env["WEB_SERVICE_PORT_HTTP"] == "80" and env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert list(env) == sorted(env)
    assert any("Namespace" in n for n in doc["notes"])


def test_yaml_and_table_outputs(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, objects(), "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["services"][1]["name"] == "web"
    code, out, _ = run(tmp_path, objects())
    assert code == 0
    assert "SERVICE default/web (ClusterIP)" in out and "WEB_SERVICE_HOST=10.96.0.20" in out


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all(objects())))
    ns = build_parser().parse_args(["expect", "-f", "-", "-o", "json"])
    out = io.StringIO()
    assert ns.func(ns, out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue())["pods"][0]["name"] == "web-1"


def test_slices_in_input_are_compared(tmp_path: Path) -> None:
    docs = [*objects(), eslice("web-abc", "web", [endpoint("10.244.0.99", "ghost")])]
    code, out, _ = run(tmp_path, docs, "-o", "json")
    assert code == 0
    web = next(s for s in json.loads(out)["services"] if s["name"] == "web")
    assert {f["code"] for f in web["findings"]} >= {"SVA-EP-001", "SVA-EP-002"}


def test_bad_yaml_exit_2(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "kind: Service\nmetadata: [unclosed\n")
    assert code == 2 and out == "" and "invalid YAML" in err


def test_malformed_objects_all_reported_exit_2(tmp_path: Path) -> None:
    bad_svc = service("web")
    bad_svc["spec"]["ports"][0]["port"] = "eighty"
    bad_pod = pod("p1")
    bad_pod["status"]["podIPs"] = [{"ip": "x"}]
    code, out, err = run(tmp_path, [KUBE, bad_svc, {"kind": "List", "items": [bad_pod]}, [1]])
    assert code == 2 and out == ""
    assert "document 2: Service default/web: spec.ports[0].port" in err
    assert "document 3 item 1: Pod default/p1: status.podIPs[0].ip" in err
    assert "document 4: not a Kubernetes object" in err


def test_missing_file_exit_2(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["expect", "-f", str(tmp_path / "nope.yaml")])
    err = io.StringIO()
    assert ns.func(ns, out=io.StringIO(), err=err) == 2
    assert "cannot read" in err.getvalue()


def test_documented_example_runs() -> None:
    example = Path(__file__).parent / "data" / "expect-example.yaml"
    ns = build_parser().parse_args(["expect", "-f", str(example), "-o", "json"])
    out = io.StringIO()
    assert ns.func(ns, out=out, err=io.StringIO()) == 0
    doc = json.loads(out.getvalue())
    peers = next(s for s in doc["services"] if s["name"] == "sise-peers")
    assert [f["code"] for f in peers["findings"]] == ["SVA-EP-102"]
    stale = doc["pods"][0]["containers"][0]["findings"]
    assert [f["code"] for f in stale] == ["SVA-ENV-001"]


def test_slice_labels_pod_dns_and_access_points(tmp_path: Path) -> None:
    headless = service("peers", selector={"app": "web"}, cluster_ip="None", ports=[port(80)])
    nodeport = service(
        "web-np",
        selector={"app": "web"},
        cluster_ip="10.96.0.30",
        type_="NodePort",
        ports=[port(80, "http", 9876, nodePort=30080), port(53, "dns", protocol="UDP")],
    )
    dual = pod("web-2", ips=["10.244.0.6", "fd00:10:244::6"])
    code, out, err = run(tmp_path, [*objects(), headless, nodeport, dual], "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    svcs = {s["name"]: s for s in doc["services"]}
    managed = {
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        "kubernetes.io/service-name": "web",
    }
    assert [sl["labels"] for sl in svcs["web"]["endpointSlices"]] == [managed]
    assert svcs["peers"]["endpointSlices"][0]["labels"] == {
        **managed,
        "kubernetes.io/service-name": "peers",
        "service.kubernetes.io/headless": "",
    }
    assert svcs["kubernetes"]["endpointSlices"] == []  # no selector: not the controller's
    pods = {p["name"]: p for p in doc["pods"]}
    assert pods["web-1"]["dns"] == [
        {"name": "10-244-0-5.default.pod.cluster.local.", "type": "A", "data": "10.244.0.5"}
    ]
    assert [(r["name"], r["type"]) for r in pods["web-2"]["dns"]] == [
        ("10-244-0-6.default.pod.cluster.local.", "A"),
        ("fd00-10-244--6.default.pod.cluster.local.", "AAAA"),
    ]
    assert svcs["web"]["accessPoints"] == [
        {"address": "10.96.0.20", "port": 80, "protocol": "TCP", "scope": "cluster"}
    ]
    assert svcs["peers"]["accessPoints"] == []
    # 53/UDP has no nodePort yet (an offline manifest): no node access point, an info finding
    assert svcs["web-np"]["accessPoints"] == [
        {"address": "10.96.0.30", "port": 80, "protocol": "TCP", "scope": "cluster"},
        {"address": "10.96.0.30", "port": 53, "protocol": "UDP", "scope": "cluster"},
        {"address": "192.168.0.10", "port": 30080, "protocol": "TCP", "scope": "node"},
    ]
    (np_finding,) = [f for f in svcs["web-np"]["findings"] if f["code"] == "SVA-EP-112"]
    assert np_finding["severity"] == "info" and np_finding["observed"] == "none for dns/UDP"
    code, table, _ = run(tmp_path, [*objects(), nodeport], "-o", "table")
    assert code == 0
    assert "  node     192.168.0.10:30080  TCP" in table
    assert " dns: 10-244-0-5.default.pod.cluster.local. A 10.244.0.5" in table
    assert "service.kubernetes.io/headless" not in table


def test_without_nodes_no_node_access_points(tmp_path: Path) -> None:
    nodeport = service(
        "web-np", cluster_ip="10.96.0.30", type_="NodePort", ports=[port(80, nodePort=30080)]
    )
    code, out, _ = run(tmp_path, [KUBE, nodeport], "-o", "json")
    assert code == 0
    doc = json.loads(out)
    np = next(s for s in doc["services"] if s["name"] == "web-np")
    assert [a["scope"] for a in np["accessPoints"]] == ["cluster"]
    assert any("node access points omitted" in n for n in doc["notes"])
