"""Prometheus metrics of svcaudit (documented in docs/metrics.md).

One `Metrics` object owns its collectors in its own registry, so the operator, `svcaudit
check --metrics-file` and tests never collide. The operator shell calls:

    m = Metrics()
    m.serve(port)                                   # /metrics on 0.0.0.0:port
    m.service_audited(ns, name, reported, seconds)  # after each audit (reported = settled)
    m.service_forgotten(ns, name)                   # when a Service is deleted
    m.dns_query(seconds, outcome)                   # per DNS question (see DNS_OUTCOMES);
                                                    # DnsProber(on_query=m.dns_query)
    m.dns_failed("unreachable")                     # a probe that could ask nothing
    m.api_error(resource, verb, status)             # per failed Kubernetes API call
    m.write(kind)                                   # per API write ("service-status", ...)
                                                    # (both: Kube(on_write=, on_error=))
    m.verdict_changed(condition_type, status)       # per published condition change
    m.queue_length(n)                               # services waiting for an audit
    m.audits_in_flight(n)                           # audits running now
    m.reports_waiting(n)                            # ServiceAudits waiting to be written
    m.track_leader(lambda: elector.is_leader)       # svcaudit_leader, read at each scrape
    m.api_reachable(ok)                             # the API server's /readyz answers
    m.service_unobservable(ns, name, audit)         # verdict Unknown while blind

`service_audited` reads only what the core's ServiceAudit exposes (verdicts, discrepancies),
so the numbers are exactly what the conditions and ServiceAudits say.
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
    write_to_textfile,
)

NAMESPACE = "svcaudit"
AUDIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DNS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
DNS_OUTCOMES = ("answer", "nxdomain", "timeout", "error")
VERDICTS = ("True", "False", "Unknown")


class DiscrepancyLike(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def aspect(self) -> Any: ...
    @property
    def severity(self) -> Any: ...


class AuditLike(Protocol):
    """What of the core's ServiceAudit the metrics read."""

    @property
    def verdicts(self) -> Mapping[Any, Any]: ...
    @property
    def discrepancies(self) -> tuple[Any, ...]: ...


def _healthy(audit: AuditLike) -> str:
    for aspect, verdict in audit.verdicts.items():
        if str(aspect).lower() == "healthy" or getattr(aspect, "name", "") == "HEALTHY":
            return str(verdict.status)
    return "Unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._add_audit_series()
        self._add_dns_and_api_series()
        self._add_operator_series()
        # (ns, name) -> (healthy verdict, Tally of (code, aspect, severity))
        self._last: dict[tuple[str, str], tuple[str, Tally[tuple[str, str, str]]]] = {}
        # (ns, code, aspect, severity) -> count: the value of each live discrepancy series
        self._totals: Tally[tuple[str, str, str, str]] = Tally()

    def _add_audit_series(self) -> None:
        """What the audits found: the series dashboards and alerts read."""
        self.discrepancies = Gauge(
            "discrepancies",
            "Reported (settled) discrepancies, by code.",
            ["namespace", "code", "aspect", "severity"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.services = Gauge(
            "services",
            "Audited services, by DiscoveryHealthy verdict.",
            ["namespace", "healthy"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.audits = Counter(
            "audits",
            "Service audits performed, by DiscoveryHealthy verdict.",
            ["healthy"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.audit_duration = Histogram(
            "audit_duration_seconds",
            "Time to audit one service (DNS queries included).",
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=AUDIT_BUCKETS,
        )

    def _add_dns_and_api_series(self) -> None:
        """How the operator's two sources answer: cluster DNS and the Kubernetes API."""
        self.dns_duration = Histogram(
            "dns_query_duration_seconds",
            "Latency of one cluster DNS question, by outcome.",
            ["outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=DNS_BUCKETS,
        )
        self.dns_failures = Counter(
            "dns_query_failures",
            "DNS questions that got no usable answer (timeout, "
            "refused, SERVFAIL...); NXDOMAIN is an answer, not a failure.",
            ["reason"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.api_errors = Counter(
            "api_errors",
            "Failed Kubernetes API calls.",
            ["resource", "verb", "code"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def _add_operator_series(self) -> None:
        """The operator's own state: writes, verdict changes, backlog, API reachability (1
        until a /readyz fails) and leadership (1, as without leader election, until
        track_leader)."""
        self.writes = Counter(
            "writes",
            "API writes, by kind (service-status, serviceaudit, event).",
            ["kind"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.verdict_changes = Counter(
            "verdict_changes",
            "Published condition status changes.",
            ["condition", "status"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.api_up = Gauge(
            "api_reachable",
            "1 while the API server answers /readyz, 0 while it does not (verdicts then "
            "turn Unknown after --api-unknown-after seconds).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.api_up.set(1)
        self.queue = Gauge(
            "queue_length",
            "Services waiting for an audit.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "audits_in_flight",
            "Audits running now (at most --audit-concurrency, with the report writes).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.reports = Gauge(
            "reports_waiting",
            "ServiceAudit reports waiting to be written (after the audits waiting, 30 s at most).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.leader = Gauge(
            "leader",
            "1 while this replica leads (audits and writes), 0 while it stands by; "
            "1 without leader election.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.leader.set(1)

    # ---- audits ----------------------------------------------------------------------------
    def service_audited(
        self, namespace: str, name: str, reported: AuditLike, duration_seconds: float | None = None
    ) -> None:
        """Record one audit of a service; `reported` is what was published (settled)."""
        healthy = _healthy(reported)
        tally: Tally[tuple[str, str, str]] = Tally(
            (d.code, str(d.aspect), str(d.severity)) for d in reported.discrepancies
        )
        self._replace((namespace, name), (healthy, tally))
        self.audits.labels(healthy).inc()
        if duration_seconds is not None:
            self.audit_duration.observe(duration_seconds)

    def service_unobservable(self, namespace: str, name: str, reported: AuditLike) -> None:
        """The verdict can no longer be vouched for (API unreachable): not an audit."""
        self._replace((namespace, name), (_healthy(reported), Tally()))

    def api_reachable(self, reachable: bool) -> None:
        self.api_up.set(1 if reachable else 0)

    def service_forgotten(self, namespace: str, name: str) -> None:
        """The service is gone: drop its contribution to the gauges."""
        self._replace((namespace, name), None)

    def _replace(
        self, key: tuple[str, str], new: tuple[str, Tally[tuple[str, str, str]]] | None
    ) -> None:
        """Swap one service's contribution. Costs O(its discrepancies), not O(all series):
        the operator calls this for every Service at every resync."""
        ns = key[0]
        old = self._last.pop(key, None)
        if new is not None:
            self._last[key] = new
        if old == new:
            return
        if old is not None:
            self.services.labels(ns, old[0]).dec()
        if new is not None:
            self.services.labels(ns, new[0]).inc()
        delta: Tally[tuple[str, str, str, str]] = Tally()
        for labels, n in (old[1] if old is not None else {}).items():
            delta[(ns, *labels)] -= n
        for labels, n in (new[1] if new is not None else {}).items():
            delta[(ns, *labels)] += n
        for series, d in delta.items():
            if d == 0:
                continue
            total = self._totals[series] + d
            if total > 0:
                self._totals[series] = total
                self.discrepancies.labels(*series).set(total)
            else:
                # A fixed problem leaves no 0-valued series behind forever (dashboards then
                # show only what is wrong).
                self._totals.pop(series, None)
                with contextlib.suppress(KeyError):
                    self.discrepancies.remove(*series)

    # ---- DNS and API -----------------------------------------------------------------------
    def dns_query(self, duration_seconds: float, outcome: str) -> None:
        """One DNS question: outcome "answer", "nxdomain", "timeout" or "error"."""
        if outcome not in DNS_OUTCOMES:
            outcome = "error"
        self.dns_duration.labels(outcome).observe(duration_seconds)
        if outcome in ("timeout", "error"):
            self.dns_failures.labels(outcome).inc()

    def dns_failed(self, reason: str, count: int = 1) -> None:
        """DNS failures not tied to one question: "unreachable" = a whole probe that got
        nowhere (check: the reachability question failed; operator: no server known)."""
        self.dns_failures.labels(reason).inc(count)

    def api_error(self, resource: str, verb: str, status: int | str) -> None:
        """A failed API call; status is the HTTP code, 0 when no response was received."""
        self.api_errors.labels(resource, verb, str(status)).inc()

    # ---- operator bookkeeping ----------------------------------------------------------------
    def write(self, kind: str) -> None:
        self.writes.labels(kind).inc()

    def verdict_changed(self, condition: str, status: str) -> None:
        self.verdict_changes.labels(condition, status).inc()

    def queue_length(self, n: int) -> None:
        self.queue.set(n)

    def audits_in_flight(self, n: int) -> None:
        self.in_flight.set(n)

    def reports_waiting(self, n: int) -> None:
        self.reports.set(n)

    def track_leader(self, is_leader: Callable[[], bool]) -> None:
        """svcaudit_leader follows `is_leader()` at every scrape (never a stale value)."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)

    # ---- exposition ------------------------------------------------------------------------
    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def write_textfile(self, path: str) -> None:
        """Prometheus text format, atomically (node_exporter textfile collector style)."""
        write_to_textfile(path, self.registry)

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        for family in self.registry.collect():
            for s in family.samples:
                yield s.name, dict(s.labels), s.value
