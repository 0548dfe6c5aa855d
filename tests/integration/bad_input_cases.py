"""The table of unusual but valid objects for test_bad_input.py (issue 9, item 2).

Each case is a Service plus the objects around it, created in one of a few namespaces, and
the verdicts the operator must publish: (Endpoints, Environment, DNS, Healthy) statuses,
codes that must be among the settled discrepancies, and reasons/messages where they matter.
Verdicts follow what the real control plane does (../shared/reference/kubernetes-semantics.md,
the EndpointSlice controller, the kubelet's envvars, CoreDNS' kubernetes plugin).

Pods run on kwok nodes (`type: kwok`): kwok marks them Running and Ready with an IP and a
container startedAt, which is all the auditor reads (the environment audit predicts from
start times, as the operator does for every pod).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

T, F, U = "True", "False", "Unknown"
KWOK = {"type": "kwok"}
IMAGE = "quay.io/openshiftlabs/simpleservice:0.5.0"
HOLD = "svcaudit.test/hold"  # finalizer that keeps a deleted pod terminating
N63 = "n" * 20 + "-sixty-three-characters-long-service-name-x"  # 63 characters
H63 = "h" * 19 + "-sixty-three-characters-long-headless-name-x"  # 63 characters
P63 = "p" * 20 + "-sixty-three-characters-long-pod-name-and-hostname"[:43]


@dataclass
class Case:
    id: str
    service: str
    objects: list[dict[str, Any]]  # Services, EndpointSlices, ConfigMaps, Pods, ReplicaSets
    expect: tuple[str, str, str, str]  # Endpoints, Environment, DNS, Healthy
    ns: str = "main"
    codes: frozenset[str] = frozenset()  # must be among the settled discrepancies
    reasons: dict[str, str] = field(default_factory=dict)  # aspect -> condition reason
    messages: dict[str, str] = field(default_factory=dict)  # aspect -> substring of message
    endpoints: int | None = None  # observed endpoints in the ServiceAudit summary
    not_ready: tuple[str, ...] = ()  # pods whose Ready condition is patched False
    succeeded: tuple[str, ...] = ()  # pods whose phase is patched Succeeded
    terminating: tuple[str, ...] = ()  # pods deleted while a finalizer holds them
    odd_ip: tuple[str, ...] = ()  # pods whose status IP is rewritten with leading zeros
    early: list[dict[str, Any]] = field(default_factory=list)  # pods created >5 s before
    foreign: list[dict[str, Any]] = field(default_factory=list)  # in "main", not in `ns`


def svc(name: str, ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}
    s: dict[str, Any] = dict(spec)
    if ports is not None:
        s["ports"] = ports
    body["spec"] = s
    return body


def pod(
    name: str,
    labels: dict[str, str],
    ports: list[dict[str, Any]] | None = None,
    *,
    node_selector: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "app", "image": IMAGE, **(container or {})}
    if ports:
        c["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeSelector": node_selector or KWOK, "containers": [c], **spec},
    }


def eps(name: str, service: str, addresses: list[str], family: str = "IPv4") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "svcaudit-test",
            },
        },
        "addressType": family,
        "ports": [{"name": "", "port": 5432, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def p(port: int, target: int | str | None = None, name: str = "", proto: str = "TCP") -> dict:
    out: dict[str, Any] = {"port": port, "protocol": proto}
    if target is not None:
        out["targetPort"] = target
    if name:
        out["name"] = name
    return out


def cp(port: int, name: str = "", proto: str = "TCP") -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": port, "protocol": proto}
    if name:
        out["name"] = name
    return out


def app(name: str) -> dict[str, str]:
    return {"case": name}


HTTP = [p(80, 9876)]
WEB = [cp(9876)]
ALL_TRUE = (T, T, T, T)


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append

    # ---- selectors ---------------------------------------------------------------------------
    add(
        Case(
            "selector-empty",
            "sel-empty",
            [svc("sel-empty", HTTP, selector={})],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-108"}),
            reasons={"EndpointsConsistent": "SelectorlessServiceWithoutSlices"},
        )
    )
    add(
        Case(
            "selector-absent-with-manual-slice",
            "sel-manual",
            [svc("sel-manual", [p(5432, 5432)]), eps("sel-manual-1", "sel-manual", ["10.201.9.9"])],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "selector-absent-no-slice",
            "sel-none",
            [svc("sel-none", [p(5432)])],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-108"}),
        )
    )
    add(
        Case(
            "selector-matches-pods-of-another-namespace-only",
            "other-ns",
            [svc("other-ns", HTTP, selector=app("other-ns"))],
            (F, T, T, F),
            ns="long",
            codes=frozenset({"SVA-EP-101"}),
            foreign=[pod("other-ns-0", app("other-ns"), WEB)],  # in the "main" namespace
        )
    )
    add(
        Case(
            "selector-empty-label-value",
            "empty-value",
            [
                svc("empty-value", HTTP, selector={"tier": ""}),
                pod("empty-value-0", {"tier": ""}, WEB),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "two-services-one-pod",
            "shared-b",
            [
                svc("shared-a", HTTP, selector=app("shared")),
                svc("shared-b", HTTP, selector=app("shared")),
                pod("shared-0", app("shared"), WEB),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )

    # ---- names at the limit (a 63-character namespace, service, pod, hostname) -------------
    add(
        Case(
            "name-63-characters",
            N63,
            [svc(N63, [p(80, 9876, "http")], selector=app("n63")), pod(P63, app("n63"), WEB)],
            ALL_TRUE,
            ns="long",
            endpoints=1,
        )
    )
    add(
        Case(
            "headless-63-characters-hostname-subdomain",
            H63,
            [
                svc(H63, [p(80, 9876, "http")], selector=app("h63"), clusterIP="None"),
                pod("h63-0", app("h63"), WEB, hostname="h" * 63, subdomain=H63),
            ],
            ALL_TRUE,
            ns="long",
            endpoints=1,
        )
    )

    # ---- protocols -------------------------------------------------------------------------
    add(
        Case(
            "udp",
            "udp",
            [
                svc("udp", [p(53, 5353, "dns", "UDP")], selector=app("udp")),
                pod("udp-0", app("udp"), [cp(5353, "dns", "UDP")]),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "sctp",
            "sctp",
            [
                svc("sctp", [p(9999, "sc", "sc", "SCTP")], selector=app("sctp")),
                pod("sctp-0", app("sctp"), [cp(7777, "sc", "SCTP")]),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "same-port-tcp-and-udp",
            "dns53",
            [
                svc(
                    "dns53",
                    [p(53, 53, "dns-tcp", "TCP"), p(53, 53, "dns", "UDP")],
                    selector=app("dns53"),
                ),
                pod("dns53-0", app("dns53"), [cp(53, "dns-tcp"), cp(53, "dns", "UDP")]),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "app-protocol",
            "approto",
            [
                svc(
                    "approto",
                    [{**p(80, 9876, "web"), "appProtocol": "kubernetes.io/h2c"}],
                    selector=app("approto"),
                ),
                pod("approto-0", app("approto"), WEB),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )

    # ---- headless ----------------------------------------------------------------------------
    add(
        Case(
            "headless-without-ports",
            "hl-noports",
            [
                svc("hl-noports", None, selector=app("hl-noports"), clusterIP="None"),
                pod("hl-noports-0", app("hl-noports")),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "headless-named-port-two-pods",
            "hl-named",
            [
                svc("hl-named", [p(80, 9876, "http")], selector=app("hl-named"), clusterIP="None"),
                pod("hl-named-0", app("hl-named"), WEB),
                pod("hl-named-1", app("hl-named"), WEB),
            ],
            ALL_TRUE,
            endpoints=2,
        )
    )
    add(
        Case(
            "headless-no-ready-endpoint",
            "hl-noip",
            [
                svc("hl-noip", HTTP, selector=app("hl-noip"), clusterIP="None"),
                pod("hl-noip-0", app("hl-noip"), WEB, node_selector={"type": "nowhere"}),
            ],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-107", "SVA-DNS-101"}),
        )
    )
    add(
        Case(
            "headless-selectorless-dual-stack-manual-slices",
            "hl-dual",
            [
                svc("hl-dual", None, clusterIP="None"),
                eps("hl-dual-4", "hl-dual", ["10.201.9.10"]),
                eps("hl-dual-6", "hl-dual", ["fd00:10:201::10"], "IPv6"),
            ],
            ALL_TRUE,
            endpoints=2,
        )
    )

    # ---- families ----------------------------------------------------------------------------
    add(
        Case(
            "prefer-dual-stack-on-single-stack-cluster",
            "dual",
            [
                svc("dual", HTTP, selector=app("dual"), ipFamilyPolicy="PreferDualStack"),
                pod("dual-0", app("dual"), WEB),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )

    # ---- readiness, termination, odd pods ------------------------------------------------------
    add(
        Case(
            "publish-not-ready-addresses",
            "pnra",
            [
                svc("pnra", HTTP, selector=app("pnra"), publishNotReadyAddresses=True),
                pod("pnra-0", app("pnra"), WEB),
            ],
            ALL_TRUE,
            endpoints=1,
            not_ready=("pnra-0",),
        )
    )
    add(
        Case(
            "headless-publish-not-ready-addresses",
            "hl-pnra",
            [
                svc(
                    "hl-pnra",
                    [p(80, 9876, "http")],
                    selector=app("hl-pnra"),
                    clusterIP="None",
                    publishNotReadyAddresses=True,
                ),
                pod("hl-pnra-0", app("hl-pnra"), WEB),
            ],
            ALL_TRUE,
            endpoints=1,
            not_ready=("hl-pnra-0",),
        )
    )
    add(
        Case(
            "not-ready-pod",
            "notready",
            [
                svc("notready", HTTP, selector=app("notready")),
                pod("notready-0", app("notready"), WEB),
            ],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-107"}),
            endpoints=1,
            not_ready=("notready-0",),
        )
    )
    add(
        Case(
            "terminating-pod-beside-a-ready-one",
            "term",
            [
                svc("term", HTTP, selector=app("term")),
                pod("term-0", app("term"), WEB),
                {**pod("term-1", app("term"), WEB)},
            ],
            ALL_TRUE,
            endpoints=2,
            terminating=("term-1",),
        )
    )
    add(
        Case(
            "terminating-pod-only",
            "term-only",
            [
                svc("term-only", HTTP, selector=app("term-only")),
                pod("term-only-0", app("term-only"), WEB),
            ],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-107"}),
            endpoints=1,
            terminating=("term-only-0",),
        )
    )
    add(
        Case(
            "host-network-pods-sharing-the-node-ip",
            "hostnet",
            [
                svc("hostnet", [p(80, 19876)], selector=app("hostnet")),
                pod(
                    "hostnet-0",
                    app("hostnet"),
                    [cp(19876)],
                    hostNetwork=True,
                    nodeName="kwok-node-0",
                ),
                pod(
                    "hostnet-1",
                    app("hostnet"),
                    [cp(19877)],
                    hostNetwork=True,
                    nodeName="kwok-node-0",
                ),
            ],
            ALL_TRUE,
            endpoints=2,
        )
    )
    add(
        Case(
            "pod-without-ip-beside-a-ready-one",
            "noip",
            [
                svc("noip", HTTP, selector=app("noip")),
                pod("noip-0", app("noip"), WEB),
                pod("noip-1", app("noip"), WEB, node_selector={"type": "nowhere"}),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "succeeded-pod-beside-a-ready-one",
            "done",
            [
                svc("done", HTTP, selector=app("done")),
                pod("done-0", app("done"), WEB),
                pod("done-1", app("done"), WEB, restartPolicy="Never"),
            ],
            ALL_TRUE,
            endpoints=1,
            succeeded=("done-1",),
        )
    )
    add(
        Case(
            "sidecar-declares-the-named-port",
            "sidecar",
            [
                svc("sidecar", [p(80, "metrics", "metrics")], selector=app("sidecar")),
                {**pod("sidecar-0", app("sidecar"), WEB)},
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    c[-1].objects[1]["spec"]["initContainers"] = [
        {"name": "side", "image": IMAGE, "restartPolicy": "Always", "ports": [cp(9090, "metrics")]}
    ]

    # ---- target ports ------------------------------------------------------------------------
    add(
        Case(
            "named-target-port",
            "named",
            [
                svc("named", [p(80, "web", "web"), p(81, 9876, "plain")], selector=app("named")),
                pod("named-0", app("named"), [cp(9876, "web")]),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "named-target-port-undeclared",
            "named-missing",
            [
                svc("named-missing", [p(80, "nope")], selector=app("named-missing")),
                pod("named-missing-0", app("named-missing"), [cp(9876, "web")]),
            ],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-102"}),
            endpoints=1,
        )
    )
    add(
        Case(
            "named-target-port-wrong-protocol",
            "named-proto",
            [
                svc("named-proto", [p(80, "web", "", "UDP")], selector=app("named-proto")),
                pod("named-proto-0", app("named-proto"), [cp(9876, "web")]),
            ],
            (F, T, T, F),
            codes=frozenset({"SVA-EP-103"}),
            endpoints=1,
        )
    )

    # ---- service types -----------------------------------------------------------------------
    add(
        Case(
            "node-port",
            "np",
            [svc("np", HTTP, selector=app("np"), type="NodePort"), pod("np-0", app("np"), WEB)],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "load-balancer-without-controller",
            "lb",
            [svc("lb", HTTP, selector=app("lb"), type="LoadBalancer"), pod("lb-0", app("lb"), WEB)],
            ALL_TRUE,
            endpoints=1,
        )
    )
    add(
        Case(
            "external-name-trailing-dot",
            "xn-dot",
            [
                svc(
                    "xn-dot",
                    None,
                    type="ExternalName",
                    externalName="kubernetes.default.svc.cluster.local.",
                )
            ],
            ALL_TRUE,
        )
    )
    add(
        Case(
            "external-name",
            "xn",
            [svc("xn", None, type="ExternalName", externalName="db.example.invalid")],
            ALL_TRUE,
        )
    )

    # ---- environment -------------------------------------------------------------------------
    add(
        Case(
            "kubernetes-service-in-a-user-namespace",
            "kubernetes",
            [
                svc("kubernetes", [p(443, 9876, "https")], selector=app("kubernetes")),
                pod("kubernetes-0", app("kubernetes"), WEB),
            ],
            ALL_TRUE,
            endpoints=1,
        )
    )
    coll = [
        svc("coll", HTTP, selector=app("coll")),
        pod("coll-0", app("coll"), WEB),
        svc("coll-port-80-tcp", HTTP, selector=app("coll")),
    ]
    add(
        Case(
            "env-collision-a",
            "coll",
            coll,
            (T, F, T, F),
            codes=frozenset({"SVA-ENV-003"}),
            reasons={"EnvironmentConsistent": "EnvVarCollision"},
        )
    )
    add(
        Case(
            "env-collision-b",
            "coll-port-80-tcp",
            [],
            (T, F, T, F),
            codes=frozenset({"SVA-ENV-003"}),
        )
    )
    add(
        Case(
            "explicit-env-shadows-service-variable",
            "shadow",
            [
                svc("shadow", HTTP, selector=app("shadow")),
                pod(
                    "shadow-0",
                    app("shadow"),
                    WEB,
                    container={"env": [{"name": "SHADOW_SERVICE_HOST", "value": "10.0.0.1"}]},
                ),
            ],
            (T, F, T, F),
            codes=frozenset({"SVA-ENV-004"}),
        )
    )
    add(
        Case(
            "env-value-from-sets-service-variable",
            "valuefrom",
            [
                svc("valuefrom", HTTP, selector=app("valuefrom")),
                pod(
                    "valuefrom-0",
                    app("valuefrom"),
                    WEB,
                    container={
                        "env": [
                            {
                                "name": "VALUEFROM_SERVICE_HOST",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                            }
                        ]
                    },
                ),
            ],
            ALL_TRUE,
            codes=frozenset({"SVA-ENV-005"}),
        )
    )
    add(
        Case(
            "env-from-may-shadow",
            "envfrom",
            [
                svc("envfrom", HTTP, selector=app("envfrom")),
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "envfrom-cm"},
                    "data": {"ENVFROM_SERVICE_HOST": "10.0.0.2"},
                },
                pod(
                    "envfrom-0",
                    app("envfrom"),
                    WEB,
                    container={"envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]},
                ),
            ],
            ALL_TRUE,
            codes=frozenset({"SVA-ENV-006"}),
        )
    )
    add(
        Case(
            "enable-service-links-false-pod-started-before-service",
            "links-off",
            [svc("links-off", HTTP, selector=app("links-off"))],
            ALL_TRUE,
            ns="links",
            endpoints=1,
            early=[pod("links-off-0", app("links-off"), WEB, enableServiceLinks=False)],
        )
    )

    # ---- size ----------------------------------------------------------------------------------
    add(
        Case(
            "more-than-1000-endpoints",
            "big",
            [
                svc("big", HTTP, selector=app("big")),
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {"name": "big"},
                    "spec": {
                        "replicas": 1001,
                        "selector": {"matchLabels": app("big")},
                        "template": {
                            "metadata": {"labels": app("big")},
                            "spec": pod("x", {}, WEB)["spec"],
                        },
                    },
                },
            ],
            ALL_TRUE,
            ns="big",
            endpoints=1001,
        )
    )

    # ---- objects the operator cannot interpret (accepted by the apiserver, with a warning) ----
    add(
        Case(
            "uninterpretable-service-cluster-ip",
            "odd-svc",
            [svc("odd-svc", HTTP, selector=app("odd-svc"), clusterIP="@ODD_CLUSTER_IP@")],
            (U, U, U, U),
            ns="bad",
            reasons={
                a: "Uninterpretable"
                for a in (
                    "EndpointsConsistent",
                    "EnvironmentConsistent",
                    "DNSConsistent",
                    "DiscoveryHealthy",
                )
            },
            messages={"EndpointsConsistent": "spec.clusterIPs[0]: not an IP address"},
        )
    )
    add(
        Case(
            "uninterpretable-endpointslice-address",
            "odd-slice",
            [
                svc("odd-slice", [p(5432, 5432)]),
                eps("odd-slice-1", "odd-slice", ["010.201.009.011"]),
            ],
            (U, T, T, U),
            ns="bad",
            reasons={
                "EndpointsConsistent": "Uninterpretable",
                "DiscoveryHealthy": "Uninterpretable",
            },
            messages={
                "EndpointsConsistent": "/odd-slice-1: endpoints[0].addresses[0]: not an IP address"
            },
        )
    )
    add(
        Case(
            "uninterpretable-pod-ip",
            "odd-pod",
            [svc("odd-pod", HTTP, selector=app("odd-pod")), pod("odd-pod-0", app("odd-pod"), WEB)],
            (U, U, T, U),
            ns="badpod",
            odd_ip=("odd-pod-0",),
            reasons={
                "EndpointsConsistent": "Uninterpretable",
                "EnvironmentConsistent": "Uninterpretable",
            },
            messages={"EnvironmentConsistent": "/odd-pod-0: status.podIPs[0].ip"},
        )
    )
    return c
