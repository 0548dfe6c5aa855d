"""Prometheus metrics of the operator (served with --metrics-port / SVCAUDIT_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.audits = Counter("svcaudit_audits_total", "Service audits run",
                              registry=self.registry)
        self.audit_seconds = Histogram(
            "svcaudit_audit_duration_seconds", "Time for one audit (DNS queries included)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self.writes = Counter("svcaudit_writes_total", "API writes by kind",
                              ["kind"], registry=self.registry)
        self.verdict_changes = Counter(
            "svcaudit_verdict_changes_total", "Published condition status changes",
            ["condition", "status"], registry=self.registry)
        self.dns_failures = Counter("svcaudit_dns_failures_total",
                                    "Audits whose DNS observation failed",
                                    registry=self.registry)
        self.services = Gauge("svcaudit_services", "Services by published condition status",
                              ["condition", "status"], registry=self.registry)
        self.queue = Gauge("svcaudit_queue_length", "Services waiting for an audit",
                           registry=self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
