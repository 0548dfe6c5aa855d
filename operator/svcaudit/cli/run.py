"""`svcaudit run`: the operator. Every flag has an SVCAUDIT_* environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Any

from svcaudit.controller.dns_server import KUBE_DNS, parse_server, parse_service
from svcaudit.controller.settings import (
    DEFAULT_RESYNC_SECONDS,
    DEFAULT_SETTLE_SECONDS,
    ControllerSettings,
)

REPORTS = ("conditions", "serviceaudits", "events")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SVCAUDIT_{name}", default)


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    return float(raw) if raw else default


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the operator (watch the cluster, publish verdicts)",
        description="Audit every Service of the cluster (or of the chosen namespaces) and "
        "publish conditions, ServiceAudits and Events. See docs/operator.md.",
    )
    p.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=None,
        metavar="NS",
        help="audit only this namespace (repeatable; default: all; env SVCAUDIT_NAMESPACES=a,b)",
    )
    p.add_argument(
        "--reports",
        default=_env("REPORTS", ",".join(REPORTS)),
        help=f"what to write, comma-separated subset of {','.join(REPORTS)} "
        "(default all; env SVCAUDIT_REPORTS)",
    )
    p.add_argument(
        "--liveness",
        default=_env("LIVENESS"),
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT") or 0),
        help="serve Prometheus metrics on this port (default off; env SVCAUDIT_METRICS_PORT)",
    )
    p.add_argument(
        "--kubeconfig",
        default=_env("KUBECONFIG"),
        help="kubeconfig file (default: in-cluster, then $KUBECONFIG)",
    )
    _add_timing(p)
    _add_dns(p)
    _add_leader_election(p)
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    p.set_defaults(func=run)


def _add_timing(p: argparse.ArgumentParser) -> None:
    """When to audit and to report (controller/queue.py, the core's settle)."""
    g = p.add_argument_group("timing")
    g.add_argument(
        "--settle-seconds",
        type=float,
        default=_env_float("SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS),
        help="report a discrepancy only once it has lasted this long "
        f"(default {DEFAULT_SETTLE_SECONDS:g}; env SVCAUDIT_SETTLE_SECONDS)",
    )
    g.add_argument(
        "--debounce-seconds",
        type=float,
        default=_env_float("DEBOUNCE_SECONDS", 0.5),
        help="coalesce changes to one audit per service per window (default 0.5)",
    )
    g.add_argument(
        "--resync-seconds",
        type=float,
        default=_env_float("RESYNC_SECONDS", DEFAULT_RESYNC_SECONDS),
        help="re-audit every service once per period, spread over it, for DNS "
        f"(default {DEFAULT_RESYNC_SECONDS:g})",
    )
    g.add_argument(
        "--warmup-seconds",
        type=float,
        default=_env_float("WARMUP_SECONDS", 0.0),
        help="the least wait before the first audit (it also waits for every first listing)",
    )
    g.add_argument(
        "--audit-concurrency",
        type=int,
        default=int(_env("AUDIT_CONCURRENCY") or 8),
        help="services audited at once (default 8; env SVCAUDIT_AUDIT_CONCURRENCY)",
    )
    g.add_argument(
        "--api-unknown-after",
        type=float,
        default=_env_float("API_UNKNOWN_AFTER", 15.0),
        help="seconds the API server may stay unreachable before the operator stops vouching "
        "for its verdicts (metrics turn Unknown; default 15)",
    )


def _add_dns(p: argparse.ArgumentParser) -> None:
    """Which DNS server to ask and how (controller/dns_server.py, dns_probe.py)."""
    g = p.add_argument_group("DNS")
    g.add_argument(
        "--dns-server",
        default=_env("DNS_SERVER"),
        metavar="HOST[:PORT]",
        help="the one DNS server to query (default: every replica of --dns-service; "
        "env SVCAUDIT_DNS_SERVER)",
    )
    g.add_argument(
        "--dns-service",
        default=_env("DNS_SERVICE", "/".join(KUBE_DNS)),
        metavar="NAMESPACE/NAME",
        help="the cluster DNS Service whose replicas (its EndpointSlices' ready endpoints) are "
        "each asked, or its ClusterIP without slices, when --dns-server is not given "
        "(default kube-system/kube-dns; env SVCAUDIT_DNS_SERVICE)",
    )
    g.add_argument(
        "--dns-replicas",
        type=int,
        default=int(_env("DNS_REPLICAS") or 3),
        metavar="N",
        help="replicas of --dns-service asked per audit, the same ones for a service "
        "(default 3; 0: all; env SVCAUDIT_DNS_REPLICAS)",
    )
    g.add_argument(
        "--dns-port",
        type=int,
        default=int(_env("DNS_PORT") or 53),
        help="DNS port when --dns-server has none (default 53)",
    )
    g.add_argument(
        "--dns-timeout",
        type=float,
        default=_env_float("DNS_TIMEOUT", 2.0),
        help="seconds per DNS query (default 2)",
    )
    g.add_argument(
        "--dns-concurrency",
        type=int,
        default=int(_env("DNS_CONCURRENCY") or 16),
        help="DNS queries in flight at most (default 16)",
    )
    g.add_argument(
        "--no-dns",
        action="store_true",
        default=(_env("DNS_CHECK", "true") or "").lower() in ("0", "false", "no"),
        help="do not query DNS (DNSConsistent stays Unknown; env SVCAUDIT_DNS_CHECK)",
    )
    g.add_argument(
        "--cluster-domain",
        default=_env("CLUSTER_DOMAIN", "cluster.local"),
        help="DNS zone of the cluster (default cluster.local)",
    )


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def _add_leader_election(p: argparse.ArgumentParser) -> None:
    """High availability: several replicas, one leader (controller/leader.py)."""
    from svcaudit.controller import settings as leader  # the defaults, not the elector

    g = p.add_argument_group("leader election (docs/operator.md#high-availability)")
    g.add_argument(
        "--leader-elect",
        action="store_true",
        default=_truthy(_env("LEADER_ELECT")),
        help="only the holder of a coordination.k8s.io Lease writes; other replicas stand by "
        "(default off; on in deploy/ and the chart; env SVCAUDIT_LEADER_ELECT=true)",
    )
    g.add_argument(
        "--leader-election-namespace",
        default=_env("LEADER_ELECTION_NAMESPACE"),
        metavar="NS",
        help="namespace of the Lease (default: the pod's own, from its ServiceAccount, "
        "else default)",
    )
    g.add_argument(
        "--leader-election-id",
        default=_env("LEADER_ELECTION_ID", leader.DEFAULT_LEASE_NAME),
        metavar="NAME",
        help=f"name of the Lease (default {leader.DEFAULT_LEASE_NAME})",
    )
    g.add_argument(
        "--leader-election-lease-seconds",
        type=float,
        default=_env_float("LEADER_ELECTION_LEASE_SECONDS", leader.DEFAULT_LEASE_SECONDS),
        help="a Lease not renewed for this long may be taken over "
        f"(default {leader.DEFAULT_LEASE_SECONDS:g})",
    )
    g.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=_env_float("LEADER_ELECTION_RENEW_DEADLINE", leader.DEFAULT_RENEW_DEADLINE),
        help="the leader stops writing this long after its last successful renewal "
        f"(< lease seconds; default {leader.DEFAULT_RENEW_DEADLINE:g})",
    )
    g.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=_env_float("LEADER_ELECTION_RETRY_PERIOD", leader.DEFAULT_RETRY_PERIOD),
        help=f"how often the Lease is renewed or tried (default {leader.DEFAULT_RETRY_PERIOD:g})",
    )


def settings_from_args(args: argparse.Namespace) -> ControllerSettings:
    namespaces = args.namespaces if args.namespaces else _split(_env("NAMESPACES"))
    reports = set(_split(args.reports))
    unknown = reports - set(REPORTS)
    if unknown:
        raise SystemExit(f"svcaudit run: unknown --reports {sorted(unknown)}; use {REPORTS}")
    host: str | None = None
    port = args.dns_port
    if args.dns_server:
        try:
            host, port = parse_server(args.dns_server, args.dns_port)
        except ValueError as exc:
            raise SystemExit(f"svcaudit run: --dns-server {args.dns_server!r}: {exc}") from exc
    try:
        dns_service = parse_service(args.dns_service)
    except ValueError as exc:
        raise SystemExit(f"svcaudit run: --dns-service: {exc}") from exc
    if args.settle_seconds < 0 or args.debounce_seconds < 0 or args.resync_seconds <= 0:
        raise SystemExit("svcaudit run: times must be non-negative (resync positive)")
    if args.audit_concurrency < 1:
        raise SystemExit("svcaudit run: --audit-concurrency must be at least 1")
    return ControllerSettings(
        namespaces=tuple(namespaces),
        settle_seconds=args.settle_seconds,
        debounce_seconds=args.debounce_seconds,
        resync_seconds=args.resync_seconds,
        warmup_seconds=args.warmup_seconds,
        audit_concurrency=args.audit_concurrency,
        api_unknown_after_seconds=args.api_unknown_after,
        dns_check=not args.no_dns,
        dns_server=host or None,
        dns_service=dns_service,
        dns_replicas=max(0, args.dns_replicas),
        dns_port=port,
        dns_timeout_seconds=args.dns_timeout,
        dns_concurrency=args.dns_concurrency,
        cluster_domain=args.cluster_domain.strip("."),
        write_service_conditions="conditions" in reports,
        write_serviceaudits="serviceaudits" in reports,
        write_events="events" in reports,
        liveness_endpoint=args.liveness,
        kubeconfig=args.kubeconfig,
    )


def configure_logging(level: str) -> None:
    """One JSON object per line, for our structlog loggers and kopf's stdlib ones alike.

    Our lines skip the stdlib machinery (structlog's own filtering logger, orjson, bytes
    straight to stdout): a first pass over 2,000 services logs 8,000 "verdict changed"
    lines, and the stdlib route cost five times as much CPU. Both routes flush every line."""
    import structlog

    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ],
        logger_factory=_NamedLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_json_text),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kopf is chatty at INFO about every watch; keep its warnings and errors.
    logging.getLogger("kopf").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # liveness probes


def _json_line(event: Any, **_: Any) -> bytes:
    import orjson

    return orjson.dumps(event, default=str)


def _json_text(event: Any, **_: Any) -> str:
    return _json_line(event).decode()


class _NamedLoggerFactory:
    """structlog's BytesLogger on stdout, named after the module's logger (the "logger" key)."""

    def __call__(self, *args: Any) -> Any:
        import structlog

        logger = structlog.BytesLogger(sys.stdout.buffer)
        logger.name = str(args[0]) if args else "svcaudit"
        return logger


def _stop_at_once_until_kopf_listens() -> None:
    """As PID 1 of a container, a signal without a handler is ignored: a SIGTERM that comes
    while we start (a pod deleted at once) would be lost, and the pod would hold its Lease
    until the kubelet's SIGKILL. Until kopf installs its graceful handler, exit at once."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def run(args: argparse.Namespace) -> int:
    _stop_at_once_until_kopf_listens()
    settings = settings_from_args(args)
    configure_logging(args.log_level)
    from svcaudit.cli.memory import freeze_long_lived, tune_garbage_collector

    tune_garbage_collector()

    from svcaudit.controller.login import credentials, without_client_libraries

    with without_client_libraries():  # kopf would import them for nothing (login.py)
        import kopf

        from svcaudit.controller.handlers import build_registry, kopf_settings
    import structlog

    from svcaudit.controller.indexes import Store
    from svcaudit.controller.kube import Kube
    from svcaudit.controller.publish import Publisher
    from svcaudit.controller.reconcile import Reconciler
    from svcaudit.controller.transport import Transport
    from svcaudit.metrics import Metrics

    log = structlog.get_logger("svcaudit.run")
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # kopf's own login reads it
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    transport = Transport(credentials(settings.kubeconfig))  # every call of ours
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    elector = _leader_elector(args, transport, instance, metrics)
    kube = Kube(
        transport,
        settings.field_manager,
        on_write=metrics.write,
        on_error=metrics.api_error,
        may_write=(lambda: elector.is_leader) if elector is not None else None,
    )
    store = Store(sees_all_pods=not settings.namespaces)  # every namespace: SVA-EP-017
    prober = _dns_prober(settings, kube, metrics) if settings.dns_check else None
    reconciler = Reconciler(
        settings,
        store,
        kube,
        prober,
        Publisher(settings, store, kube, instance, metrics),
        metrics=metrics,
        leader=elector,
        on_ready=freeze_long_lived,
    )
    registry = build_registry(settings, store, reconciler, leader=elector)
    log.info(
        "starting",
        namespaces=list(settings.namespaces) or "all",
        settle_seconds=settings.settle_seconds,
        dns_server=settings.dns_server,
        dns_port=settings.dns_port,
        reports=sorted(_split(args.reports)),
    )
    kopf.run(
        registry=registry,
        settings=kopf_settings(),
        standalone=True,
        clusterwide=True,  # kopf watches nothing; the informers honour --namespaces
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0


def _dns_prober(settings: ControllerSettings, kube: Any, metrics: Any) -> Any:
    """The prober of every audit: the --dns-server, else the DNS Service's replicas (read
    through `kube` now and then, and again once one of them falls silent)."""
    from svcaudit.controller.dns_probe import DnsProber
    from svcaudit.controller.dns_server import DnsServerSource

    source = DnsServerSource(
        settings.dns_server,
        settings.dns_port,
        lambda: kube.get_service(*settings.dns_service),
        lambda: kube.list_endpointslices(*settings.dns_service),
        settings.dns_service,
    )
    return DnsProber(
        source,
        timeout=settings.dns_timeout_seconds,
        concurrency=settings.dns_concurrency,
        on_query=metrics.dns_query,
        on_down=lambda _replica: source.invalidate(),
        max_replicas=settings.dns_replicas,
    )


def _leader_elector(args: argparse.Namespace, transport: Any, instance: str, metrics: Any) -> Any:
    """The Lease elector when --leader-elect is on (else None: always the leader). Every
    write of Kube is gated on it, and svcaudit_leader follows it."""
    if not args.leader_elect:
        return None
    from svcaudit.controller.leader import (
        KubeLeaseApi,
        LeaderElector,
        check_timing,
        default_identity,
        default_namespace,
    )

    try:
        check_timing(
            args.leader_election_lease_seconds,
            args.leader_election_renew_deadline,
            args.leader_election_retry_period,
        )
    except ValueError as exc:
        raise SystemExit(f"svcaudit run: {exc}") from exc
    api = KubeLeaseApi(
        transport,
        args.leader_election_namespace or default_namespace(),
        args.leader_election_id,
        timeout=args.leader_election_retry_period * 2,
        on_error=metrics.api_error,
    )
    elector = LeaderElector(
        api,
        default_identity(instance),
        lease_seconds=args.leader_election_lease_seconds,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
    )
    metrics.track_leader(lambda: elector.is_leader)
    return elector
