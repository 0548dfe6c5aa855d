"""The catalogue of discrepancy codes: stable identifiers, one entry per kind of finding.

Codes never change meaning once published (docs/discrepancies.md documents each one);
new findings get new codes. `SVA-<ASPECT>-0xx` are control-plane/observation mismatches,
`SVA-<ASPECT>-1xx` are user mistakes visible from the objects alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Aspect(StrEnum):
    ENDPOINTS = "Endpoints"
    ENVIRONMENT = "Environment"
    DNS = "DNS"
    HEALTHY = "Healthy"


class Severity(StrEnum):
    """ERROR and WARNING make an aspect False; INFO is shown but never fails a verdict."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def reportable(self) -> bool:
        return self is not Severity.INFO


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: str
    reason: str  # CamelCase, used as the verdict reason
    aspect: Aspect
    severity: Severity
    meaning: str
    cause: str
    hint: str  # one-line fix


def _c(code: str, reason: str, aspect: Aspect, severity: Severity,
       meaning: str, cause: str, hint: str) -> CodeInfo:  # fmt: skip
    return CodeInfo(code, reason, aspect, severity, meaning, cause, hint)


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO  # noqa: E741
EP, ENV, DNS = Aspect.ENDPOINTS, Aspect.ENVIRONMENT, Aspect.DNS

CATALOGUE: Mapping[str, CodeInfo] = {
    c.code: c
    for c in (
        # ---- EndpointSlices vs the controller's rules ----
        _c(
            "SVA-EP-001",
            "EndpointMissing",
            EP,
            E,
            "An endpoint the EndpointSlice controller should publish is in no slice.",
            "Controller lag or failure; slices edited by hand; node missing from the cache.",
            "Check kube-controller-manager logs and that the pod's node exists.",
        ),
        _c(
            "SVA-EP-002",
            "EndpointUnexpected",
            EP,
            E,
            "A slice holds an endpoint the controller should not publish.",
            "A deleted/relabelled pod still listed (lag), or a hand-written slice.",
            "Check the pod's labels/phase/IPs; delete foreign slices labelled with this service.",
        ),
        _c(
            "SVA-EP-003",
            "EndpointReadinessMismatch",
            EP,
            E,
            "An endpoint's ready condition differs from the pod's readiness.",
            "Controller lag after a readiness change, or publishNotReadyAddresses changed.",
            "Wait for the controller; if it persists, check kube-controller-manager.",
        ),
        _c(
            "SVA-EP-004",
            "EndpointConditionMismatch",
            EP,
            W,
            "An endpoint's serving or terminating condition differs from the pod.",
            "Controller lag around pod deletion or readiness flaps.",
            "Wait for the controller; if it persists, check kube-controller-manager.",
        ),
        _c(
            "SVA-EP-005",
            "EndpointPortsMismatch",
            EP,
            E,
            "An endpoint sits in a slice whose port set is not the one its pod resolves to.",
            "Named targetPort resolution changed (pod ports, service ports) and slices lag; "
            "or a slice port's appProtocol is not the service port's (the controller copies "
            "it).",
            "Compare the pod's containerPorts with the service's targetPorts.",
        ),
        _c(
            "SVA-EP-006",
            "EndpointHostnameMismatch",
            EP,
            W,
            "An endpoint's hostname differs (set only when pod hostname and subdomain=service).",
            "Pod spec.hostname/subdomain changed or slices hand-written.",
            "Set pod spec.subdomain to the service name and spec.hostname to the wanted label.",
        ),
        _c(
            "SVA-EP-007",
            "EndpointNodeNameMismatch",
            EP,
            W,
            "An endpoint's nodeName differs from the pod's spec.nodeName.",
            "Hand-written or stale slices.",
            "Let the controller rewrite the slice.",
        ),
        _c(
            "SVA-EP-008",
            "EndpointZoneMismatch",
            EP,
            W,
            "An endpoint's zone differs from its node's topology.kubernetes.io/zone label.",
            "Node relabelled after the slice was written (the controller does not resync).",
            "Touch the pod or service to make the controller rewrite the slice.",
        ),
        _c(
            "SVA-EP-009",
            "EndpointDuplicated",
            EP,
            W,
            "One endpoint appears in more than one slice of the service.",
            "Transient controller state or hand-written slices.",
            "Remove foreign slices; if the controller's own, it should converge.",
        ),
        _c(
            "SVA-EP-010",
            "SliceOverCapacity",
            EP,
            W,
            "A slice holds more endpoints than max-endpoints-per-slice.",
            "Hand-written slice or a different --max-endpoints-per-slice than configured here.",
            "Align the auditor's max_endpoints_per_slice with kube-controller-manager.",
        ),
        _c(
            "SVA-EP-011",
            "SliceAddressTypeUnexpected",
            EP,
            W,
            "A controller-managed slice has an address type not in spec.ipFamilies.",
            "ipFamilies changed and stale slices were not deleted.",
            "Delete the stale slice; check kube-controller-manager.",
        ),
        _c(
            "SVA-EP-012",
            "PlaceholderSliceMissing",
            EP,
            I,
            "No slice at all for an address family where the controller keeps an empty one.",
            "Controller lag right after service creation.",
            "Usually resolves by itself; nothing routes through a placeholder.",
        ),
        _c(
            "SVA-EP-013",
            "SliceForUnmanagedService",
            EP,
            W,
            "A slice claims to be managed by the EndpointSlice controller for a service it does "
            "not manage (ExternalName or no selector).",
            "The selector was removed and old slices remain, or a copied label.",
            "Delete the slice or fix its endpointslice.kubernetes.io/managed-by label.",
        ),
        _c(
            "SVA-EP-014",
            "EndpointAddressNotPodIP",
            EP,
            E,
            "An endpoint of a hand-written slice (service without selector) points at a pod "
            "(targetRef) but lists an address that is not among the pod's status.podIPs.",
            "The pod was recreated with a new IP and the slice's writer did not follow, or a "
            "typo in the slice.",
            "Update the slice's addresses to the pod's current IPs (kubectl get pod -o wide).",
        ),
        _c(
            "SVA-EP-015",
            "EndpointTargetPodMissing",
            EP,
            E,
            "An endpoint of a hand-written slice (service without selector) has a targetRef to "
            "a pod that does not exist in the service's namespace.",
            "The pod was deleted (or renamed by a new rollout) and the slice was not updated.",
            "Point the endpoint at an existing pod (or drop its targetRef if it is external).",
        ),
        _c(
            "SVA-EP-016",
            "SliceHeadlessLabelMismatch",
            EP,
            W,
            "A controller-managed slice carries service.kubernetes.io/headless while its "
            "service has a clusterIP, or lacks it while the service is headless. kube-proxy "
            "ignores slices with that label, so a labelled slice of a ClusterIP service "
            "does not route.",
            "The slice's labels were edited by hand (the controller rewrites its reserved "
            "labels only when it updates the slice for another reason).",
            "Delete the slice (the controller recreates it) or restore the label.",
        ),
        _c(
            "SVA-EP-017",
            "EndpointAddressNoPod",
            EP,
            E,
            "An endpoint without targetRef of a hand-written slice (service without selector) "
            "lists an address in a node's pod range (spec.podCIDRs) that no live pod of the "
            "cluster holds: traffic sent there reaches nobody.",
            "The slice was written for a pod that has since been deleted or rescheduled (a new "
            "pod gets a new IP), or an address typo.",
            "Point the endpoint at the current pod IP (kubectl get pods -A -o wide), or give "
            "the service a selector so the EndpointSlice controller follows the pods.",
        ),
        _c(
            "SVA-EP-018",
            "EndpointHintsMismatch",
            EP,
            W,
            "An endpoint of a controller-managed slice carries other topology hints than the "
            "controller gives it: for trafficDistribution, a ready endpoint gets forZones = "
            "its zone (and forNodes = its node for PreferSameNode); without, no endpoint has "
            "any. Not judged under the topology-mode Auto annotation.",
            "The slice was edited by hand, or trafficDistribution changed and the slice was "
            "not rewritten; kube-proxy then routes by the wrong (or stale) preference.",
            "Delete the slice (the controller recreates it with the right hints).",
        ),
        # ---- user mistakes visible in the objects ----
        _c(
            "SVA-EP-101",
            "SelectorMatchesNoPod",
            EP,
            W,
            "The service's selector matches no pod of its namespace.",
            "Selector typo, labels changed on the pods, or pods in another namespace.",
            "Compare `kubectl get pods --show-labels` with the service's spec.selector.",
        ),
        _c(
            "SVA-EP-102",
            "NamedTargetPortNotDeclared",
            EP,
            W,
            "A named targetPort is declared by no selected pod, so that port has no endpoint.",
            "Port name typo or the containerPort has no name.",
            "Name the containerPort exactly like the service's targetPort (and same protocol).",
        ),
        _c(
            "SVA-EP-103",
            "NamedTargetPortWrongProtocol",
            EP,
            W,
            "Pods declare the targetPort name, but only with another protocol.",
            "Service port protocol differs from the containerPort protocol (TCP default).",
            "Make the service port's protocol match the named containerPort.",
        ),
        _c(
            "SVA-EP-104",
            "NamedTargetPortMissingOnSomePods",
            EP,
            W,
            "Some selected pods do not declare the named targetPort: they get no endpoint port.",
            "Mixed pod templates (rollout, two workloads under one selector).",
            "Declare the named port in every pod template the selector matches.",
        ),
        _c(
            "SVA-EP-105",
            "NumericTargetPortNotDeclared",
            EP,
            W,
            "Selected pods declare container ports, but none is the numeric targetPort.",
            "targetPort typo, or targetPort left to default (= port) while the app listens "
            "elsewhere.",
            "Set targetPort to the port the container listens on.",
        ),
        _c(
            "SVA-EP-106",
            "NumericTargetPortUndeclared",
            EP,
            I,
            "Selected pods declare no container ports at all; the targetPort cannot be checked.",
            "containerPorts are informational and often omitted.",
            "Declare containerPorts so the target port can be verified.",
        ),
        _c(
            "SVA-EP-107",
            "NoReadyEndpoint",
            EP,
            W,
            "The selector matches pods, but none is a ready endpoint.",
            "Pods not ready (probes failing), pending without IP, or terminating.",
            "Check `kubectl describe pod` for readiness probe failures and events.",
        ),
        _c(
            "SVA-EP-108",
            "SelectorlessServiceWithoutSlices",
            EP,
            W,
            "A service without selector has no EndpointSlice: it routes nowhere.",
            "Nobody wrote the manual slice (or it lacks the kubernetes.io/service-name label).",
            "Create an EndpointSlice labelled kubernetes.io/service-name=<service>.",
        ),
        _c(
            "SVA-EP-109",
            "PodWithoutIP",
            EP,
            I,
            "A selected pod has no IP yet and cannot be an endpoint.",
            "Pod pending scheduling or sandbox creation.",
            "Wait, or check the pod's events.",
        ),
        _c(
            "SVA-EP-110",
            "PodNodeNotFound",
            EP,
            I,
            "A selected pod's node is not known, so the controller skips the pod.",
            "Node deleted while pods remain (the pod GC will remove them).",
            "Check `kubectl get node <name>`; delete orphaned pods.",
        ),
        _c(
            "SVA-EP-111",
            "ClusterIPNotAllocated",
            EP,
            I,
            "The service has no clusterIP in the input: no VIP, env vars or A record expected.",
            "An offline manifest before the apiserver allocated the IP.",
            "Feed the object as read from the cluster (kubectl get -o yaml).",
        ),
        _c(
            "SVA-EP-112",
            "NodePortNotAllocated",
            EP,
            I,
            "A NodePort (or LoadBalancer) service port has no nodePort in the input: its "
            "node access points cannot be predicted.",
            "An offline manifest before the apiserver allocated the node ports.",
            "Feed the object as read from the cluster (kubectl get -o yaml).",
        ),
        # ---- environment variables ----
        _c(
            "SVA-ENV-001",
            "EnvStale",
            ENV,
            W,
            "A running container started before the service was (re)created: it lacks the "
            "service's variables or holds those of the old incarnation.",
            "Service created or recreated after the pod; the kubelet never refreshes env.",
            "Restart the pod (kubectl rollout restart) or use DNS instead of env vars.",
        ),
        _c(
            "SVA-ENV-002",
            "EnvPossiblyStale",
            ENV,
            I,
            "Running containers started close to the service's creation or before a spec "
            "change that may have touched its ports/IP (one summary per service and cause).",
            "Creation within the grace window, or a managedFields time after the start.",
            "Read the container's env to be sure; restart the pod if it is stale.",
        ),
        _c(
            "SVA-ENV-003",
            "EnvVarCollision",
            ENV,
            W,
            "Two services produce the same variable name with different values; which one a "
            "container gets is undefined.",
            "Service names/port names that mangle to the same variable.",
            "Rename one of the services or its port.",
        ),
        _c(
            "SVA-ENV-004",
            "EnvVarShadowed",
            ENV,
            W,
            "An explicit container env variable hides a service variable with another value.",
            "A hard-coded *_SERVICE_HOST/PORT left from another environment.",
            "Remove the explicit variable or make it refer to the service's DNS name.",
        ),
        _c(
            "SVA-ENV-005",
            "EnvVarOverriddenSameValue",
            ENV,
            I,
            "An explicit env variable (or valueFrom) sets a service variable's name.",
            "Intentional pinning; harmless while values agree.",
            "Nothing to do unless the service's IP or port changes.",
        ),
        _c(
            "SVA-ENV-006",
            "EnvFromUnresolved",
            ENV,
            I,
            "The container has envFrom sources whose keys the auditor does not read; they may "
            "shadow service variables.",
            "ConfigMap/Secret contents are not part of the audit input.",
            "Check the ConfigMap/Secret keys for *_SERVICE_* / *_PORT* names.",
        ),
        _c(
            "SVA-ENV-010",
            "EnvVarMissing",
            ENV,
            E,
            "The container's observed environment lacks a variable of the service.",
            "Container started before the service existed.",
            "Restart the pod.",
        ),
        _c(
            "SVA-ENV-011",
            "EnvVarValueMismatch",
            ENV,
            E,
            "The container's observed value differs from the service's current one.",
            "Service recreated (new ClusterIP) or ports changed after the container started.",
            "Restart the pod.",
        ),
        _c(
            "SVA-ENV-012",
            "EnvTooLarge",
            ENV,
            W,  # an error once past the limit (envsize.py): the container cannot start
            "The service variables the kubelet gives the namespace's containers (with their "
            "own env) take half or more of what execve accepts for argv+envp (2 MiB under an "
            "8 MiB stack rlimit); past it, error: the container cannot start.",
            "Thousands of services, or services with many ports, in one namespace: every "
            "container with enableServiceLinks (the default) gets ~7 variables per port.",
            "Set enableServiceLinks: false in the pod specs (find services by DNS name), or "
            "spread the services over more namespaces.",
        ),
        # ---- DNS ----
        _c(
            "SVA-DNS-001",
            "DnsRecordMissing",
            DNS,
            E,
            "Cluster DNS does not answer a record the DNS spec requires.",
            "CoreDNS lag or not watching EndpointSlices/Services; wrong zone.",
            "Check CoreDNS logs and its kubernetes plugin zone; query it directly.",
        ),
        _c(
            "SVA-DNS-002",
            "DnsRecordUnexpected",
            DNS,
            E,
            "Cluster DNS answers a record the DNS spec does not produce for this service.",
            "Stale CoreDNS cache, not-ready endpoints published, or a rewrite/hosts plugin.",
            "Check the Corefile for rewrite/hosts rules and CoreDNS's cache TTL.",
        ),
        _c(
            "SVA-DNS-003",
            "DnsNameShouldNotExist",
            DNS,
            E,
            "A headless service with no ready endpoint should answer NXDOMAIN but does not.",
            "Stale cache, or unready endpoints published as ready.",
            "Check the slices' ready conditions and CoreDNS's cache.",
        ),
        _c(
            "SVA-DNS-004",
            "DnsReplicaDisagrees",
            DNS,
            E,
            "One replica of the cluster DNS (an endpoint of its Service) answers this "
            "service's questions unlike the spec and the other replicas: the clients whose "
            "queries kube-proxy sends there get wrong answers, some of the time.",
            "A replica with another Corefile (zone, rewrite, hosts), one whose API watch is "
            "stuck or lagging (stale records), or a stray process listed in the DNS slices.",
            "Compare the replica's Corefile and logs with the others'; delete its pod so it "
            "restarts with a fresh watch.",
        ),
        _c(
            "SVA-DNS-005",
            "DnsReplicaNotAnswering",
            DNS,
            W,
            "A ready replica of the cluster DNS does not answer (timeout, refused, SERVFAIL) "
            "while the others do: queries kube-proxy sends there fail or wait for a retry.",
            "The replica hangs or is overloaded, its readiness probe does not test DNS, or a "
            "network policy lets the auditor (and maybe clients) reach only some replicas.",
            "Check the replica's logs and readiness probe; query it directly "
            "(dig @<address> -p <port>).",
        ),
        _c(
            "SVA-DNS-101",
            "HeadlessNoReadyEndpoint",
            DNS,
            I,
            "A headless service has no ready endpoint: its name answers NXDOMAIN.",
            "No ready pod behind the service.",
            "Make a selected pod ready, or set publishNotReadyAddresses if intended.",
        ),
    )
}


def info(code: str) -> CodeInfo:
    """Catalogue entry; KeyError for an unknown code is a programming error."""
    return CATALOGUE[code]


@dataclass(frozen=True, slots=True, order=True)
class Discrepancy:
    """One finding: what was expected, what was seen, and how to fix it.

    aspect/severity/hint come from the catalogue so a code always means the same thing.
    `subject` names the main object ("Pod ns/name"), `related` any other involved ones;
    `pod`/`container` repeat the pod and container names of per-pod findings (every
    per-container environment finding, and endpoint findings about one pod).
    """

    code: str
    aspect: Aspect
    severity: Severity
    subject: str
    expected: str
    observed: str
    hint: str
    related: tuple[str, ...] = ()
    # Structured subject (so callers need not parse `subject`): the pod's name (in the
    # audited service's namespace) and container the finding is about; None when the
    # finding is not about one pod/container (e.g. a collision between services).
    pod: str | None = None
    container: str | None = None

    @property
    def reason(self) -> str:
        return CATALOGUE[self.code].reason

    @property
    def key(self) -> tuple[str, str]:
        """Identity over time (for flap suppression): the code and its subject."""
        return (self.code, self.subject + "|" + ",".join(self.related))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "code": self.code,
            "reason": self.reason,
            "aspect": str(self.aspect),
            "severity": str(self.severity),
            "subject": self.subject,
            "expected": self.expected,
            "observed": self.observed,
            "hint": self.hint,
        }
        if self.related:
            out["related"] = list(self.related)
        if self.pod is not None:
            out["pod"] = self.pod
        if self.container is not None:
            out["container"] = self.container
        return out


def discrepancy(
    code: str,
    subject: str,
    expected: str,
    observed: str,
    related: tuple[str, ...] = (),
    *,
    pod: str | None = None,
    container: str | None = None,
) -> Discrepancy:
    """Build a Discrepancy whose aspect, severity and hint come from the catalogue."""
    c = CATALOGUE[code]
    return Discrepancy(
        code, c.aspect, c.severity, subject, expected, observed, c.hint, related, pod, container
    )


def ref(kind: str, namespace: str, name: str) -> str:
    """How objects are named in subjects: `Kind ns/name`."""
    return f"{kind} {namespace}/{name}"
