"""Settings of the operator shell (`svcaudit run`); defaults are documented in docs/operator.md."""

from __future__ import annotations

import dataclasses

FIELD_MANAGER = "svcaudit"
CONDITION_PREFIX = "svcaudit.dev/"
CRD_GROUP = "svcaudit.dev"
CRD_VERSION = "v1alpha1"
CRD_PLURAL = "serviceaudits"
CRD_KIND = "ServiceAudit"
EVENT_COMPONENT = "svcaudit"

# Why 45 s: the EndpointSlice controller publishes within a second or two, but CoreDNS
# answers from its `cache` plugin for up to 30 s (and the kubernetes plugin's TTL is 5 s),
# so a DNS answer can legitimately lag a Service change by ~35 s.
DEFAULT_SETTLE_SECONDS = 45.0

# Why 300 s: the resync only re-asks DNS (every change is audited when it happens), and it is
# spread over the period (controller/resync.py), so a DNS failure shows in the first services
# re-audited within seconds. Every 60 s it was 2,000 audits a minute at 10k pods, most of the
# operator's quiet CPU (bench/).
DEFAULT_RESYNC_SECONDS = 300.0

# Leader election (controller/leader.py); here so that `svcaudit --help` and `check` do not
# import the operator's HTTP stack to print them.
DEFAULT_LEASE_NAME = "svcaudit-leader"
DEFAULT_LEASE_SECONDS = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    """Everything the shell needs to know; built by `svcaudit run` from flags and SVCAUDIT_*."""

    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    debounce_seconds: float = 0.5
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    warmup_seconds: float = 0.0
    audit_concurrency: int = 8  # services audited at once (each one by one task at a time)
    # A ServiceAudit report waits while audits wait for a slot (controller/reports.py), but
    # never longer than this.
    report_max_delay_seconds: float = 30.0
    api_check_seconds: float = 5.0  # how often /readyz is asked
    api_unknown_after_seconds: float = 15.0  # unreachable this long: verdicts go Unknown
    dns_check: bool = True
    dns_server: str | None = None  # None: ask the DNS Service's replicas (or its ClusterIP)
    dns_service: tuple[str, str] = ("kube-system", "kube-dns")  # the cluster DNS Service
    dns_replicas: int = 3  # replicas of it asked per audit (0: all); see dns_probe.py
    dns_port: int = 53
    dns_timeout_seconds: float = 2.0
    dns_concurrency: int = 16
    cluster_domain: str = "cluster.local"
    write_service_conditions: bool = True
    write_serviceaudits: bool = True
    write_events: bool = True
    field_manager: str = FIELD_MANAGER
    liveness_endpoint: str | None = None
    kubeconfig: str | None = None
