"""In-memory indexes of the watched objects, fed by the informers' events.

The store keeps the raw API bodies (the core builds its typed views from them) and the
reverse indexes that route one change to the services it can affect:

- pod -> services whose selector matched it at the last event (so a pod that stops matching
  still re-audits the service it left);
- node -> pods on it (a node's zone/addresses change re-audits the services of those pods);
- EndpointSlice -> its service (label kubernetes.io/service-name);
- namespace -> services (env vars: every pod of a namespace sees every service of it);
- namespace -> the core's PodIndex and ServiceEnvIndex, shared by its audits until a pod
  (resp. service) view of the namespace changes.

Each `apply_*` returns the set of service keys to re-audit; it never lists anything.
Events that change nothing the audit reads (heartbeats, our own status writes) return
an empty set: the body is stored, but nothing is re-audited.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import structlog

from svcaudit.controller.podaddrs import PodAddresses, named_addresses
from svcaudit.controller.settings import CONDITION_PREFIX
from svcaudit.core.audit import may_select
from svcaudit.core.endpoints import selects
from svcaudit.core.envvars import MASTER_SERVICE, ServiceEnvIndex
from svcaudit.core.model import (
    TOPOLOGY_AWARE_HINTS_ANNOTATION,
    TOPOLOGY_MODE_ANNOTATION,
    EndpointSlice,
    Node,
    Pod,
    Service,
    Unparsed,
    interpret,
)
from svcaudit.core.podindex import PodIndex
from svcaudit.core.podnet import live_ips, possible_ips
from svcaudit.core.suggest import LabelIndex

log = structlog.get_logger("svcaudit.indexes")

Body = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, name)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
TOPOLOGY_ANNOTATIONS = (TOPOLOGY_MODE_ANNOTATION, TOPOLOGY_AWARE_HINTS_ANNOTATION)


class Affected(set[Key]):
    """The services an event makes to re-audit. `ripple`: those among them re-audited only
    because their namespace's service environment changed (a Service added or removed, a
    pod started or gone: every pod's variables name every service of its namespace), not
    because anything of their own did; the queue audits them after direct changes, so that
    a Service created in a namespace of 40 is not seen 40 audits late (bench/)."""

    def __init__(self, direct: Iterable[Key] = (), ripple: Iterable[Key] = ()) -> None:
        super().__init__(direct)
        self.ripple = frozenset(k for k in ripple if k not in self)
        self.update(self.ripple)


def key_of(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _fingerprint(*parts: Any) -> bytes:
    """Canonical JSON of `parts` (keys sorted; anything unusual as str): equal when equal."""
    return orjson.dumps(parts, default=str, option=orjson.OPT_SORT_KEYS)


def _digest(fingerprint: bytes) -> bytes:
    return hashlib.blake2b(fingerprint, digest_size=16).digest()


# What the store keeps of a pod: its name and the digests of its two fingerprints, not the
# body (10k pod bodies were ~200 MB of the operator's memory; the views hold what audits
# read). These keys never occur in a Kubernetes object.
POD_DIGEST = "svcaudit:digest"
POD_ENV_DIGEST = "svcaudit:envDigest"


def slim(obj: Any) -> Any:
    """The body without metadata.managedFields, which no audit reads: about a third of a
    pod's JSON, so a third of the store's memory (bench/)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


SHARED_STRING_MAX = 64  # longer strings are rarely repeated (messages, JSON blobs)


def share_strings(value: Any) -> Any:
    """`value` with its short strings interned: the Services' bodies repeat the same
    values (condition types, reasons, messages, protocols, "ClusterIP"), each a separate
    string as parsed. At 10k pods this halved the stored bodies (10 MB to 6 MB), for ~17 us
    a body."""
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= SHARED_STRING_MAX else value
    if isinstance(value, dict):
        return {k: share_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [share_strings(v) for v in value]
    return value


# What the store keeps of a ServiceAudit: its identity, owner, the parts of its status a later
# audit reads (conditions; each discrepancy's identity and `since`) and a digest of the whole
# status (a full status was ~30 KB of Python objects per service at 10k pods; bench/).
AUDIT_DIGEST = "svcaudit:statusDigest"
_DISCREPANCY_KEYS = ("code", "subject", "expected", "observed", "since")


def _canonical(value: Any) -> Any:
    """JSON-equal values made identical (the API server writes 1.0 back as 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def status_digest(value: Any) -> bytes:
    """16 bytes that change when a status (or anything JSON-like) changes."""
    return _digest(_fingerprint(_canonical(value)))


def audit_record(body: Body) -> Body:
    meta = body.get("metadata") or {}
    record: dict[str, Any] = {
        "metadata": {
            k: meta[k]
            for k in ("namespace", "name", "uid", "resourceVersion", "ownerReferences")
            if k in meta
        }
    }
    status = body.get("status")
    if isinstance(status, dict):
        record["status"] = {
            "conditions": status.get("conditions"),
            "discrepancies": [
                {k: d.get(k) for k in _DISCREPANCY_KEYS}
                for d in status.get("discrepancies") or ()
                if isinstance(d, dict)
            ],
        }
        record[AUDIT_DIGEST] = status_digest(status)
    return share_strings(record)  # type: ignore[no-any-return]


def rv_of(body: Body) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


def pod_record(body: Body) -> Body:
    meta = body.get("metadata") or {}
    return {
        "metadata": {"namespace": meta.get("namespace"), "name": meta.get("name")},
        POD_DIGEST: _digest(pod_fingerprint(body)),
        POD_ENV_DIGEST: _digest(pod_env_fingerprint(body)),
    }


def selector_of(service: Body) -> Mapping[str, str]:
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    return selector if isinstance(selector, Mapping) else {}


def labels_of(body: Body) -> Mapping[str, str]:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, Mapping) else {}


def log_uninterpretable(view: Unparsed) -> None:
    """The operator's default: one warning line per object it cannot interpret."""
    log.warning(
        "uninterpretable object: what it feeds is Unknown",
        kind=view.kind,
        namespace=view.namespace,
        name=view.name,
        field=view.field,
        reason=view.reason,
    )


def _same_content(a: EndpointSlice, b: EndpointSlice) -> bool:
    """The same slice but for the order of its endpoints. The EndpointSlice controller
    rewrites, reordered, the slices of a Service whose named targetPort no pod declares at
    each sync (its ports resolve to none); audits read endpoints as a set (bench/: ~50
    audits per pass at 10k pods were for that alone)."""
    return (
        a.address_type == b.address_type
        and a.ports == b.ports
        and a.labels == b.labels
        and len(a.endpoints) == len(b.endpoints)
        and collections.Counter(a.endpoints) == collections.Counter(b.endpoints)
    )


def _routes_to(service: Service | None, pod: Pod | None) -> bool:
    """Which audits to re-run is routing, membership is the core's rule (`selects`)."""
    return service is not None and pod is not None and selects(service, pod)


def service_fingerprint(body: Body) -> bytes:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations")
    # the topology annotations decide the slices' hints (core: endpoints.hints_policy)
    topology = (
        [annotations.get(k) for k in TOPOLOGY_ANNOTATIONS]
        if isinstance(annotations, Mapping)
        else annotations
    )
    return _fingerprint(
        meta.get("uid"),
        meta.get("generation"),
        meta.get("creationTimestamp"),
        meta.get("deletionTimestamp"),
        body.get("spec"),
        topology,
    )


def service_env_fingerprint(body: Body) -> bytes:
    """What other services' env audits read of this service (name, IP, ports, existence)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return _fingerprint(
        meta.get("uid"),
        meta.get("creationTimestamp"),
        spec.get("clusterIP"),
        spec.get("clusterIPs"),
        spec.get("ports"),
        spec.get("type"),
    )


def pod_fingerprint(body: Body) -> bytes:
    """Everything of a pod an audit reads, minus noise (managedFields, resourceVersion)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return _fingerprint(
        meta.get("uid"),
        meta.get("labels"),
        meta.get("deletionTimestamp"),
        body.get("spec"),
        status.get("phase"),
        status.get("podIPs"),
        status.get("podIP"),
        [(c.get("type"), c.get("status")) for c in status.get("conditions") or []],
        status.get("containerStatuses"),
        status.get("initContainerStatuses"),
    )


def pod_env_fingerprint(body: Body) -> bytes:
    """What env audits of *every* service of the namespace read: containers and start times."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    starts = [
        (c.get("name"), (c.get("state") or {}).get("running", {}).get("startedAt"))
        for c in status.get("containerStatuses") or []
    ]
    return _fingerprint(
        meta.get("uid"),
        meta.get("deletionTimestamp"),
        spec.get("enableServiceLinks"),
        [(c.get("name"), c.get("env"), c.get("envFrom")) for c in spec.get("containers") or []],
        starts,
        status.get("phase"),
    )


def our_conditions(body: Body) -> list[Any]:
    """The svcaudit.dev/ conditions of a Service: nobody but us should change them."""
    conditions = (body.get("status") or {}).get("conditions") or []
    return [
        c
        for c in conditions
        if isinstance(c, Mapping) and str(c.get("type", "")).startswith(CONDITION_PREFIX)
    ]


def node_fingerprint(body: Body) -> bytes:
    status = body.get("status") or {}
    return _fingerprint(
        labels_of(body).get(ZONE_LABEL), status.get("addresses"), pod_cidrs_of(body)
    )


def pod_cidrs_of(body: Body | None) -> Any:
    """A node's pod ranges as written (spec.podCIDRs, spec.podCIDR): judged by the core."""
    spec = (body or {}).get("spec") or {}
    return (spec.get("podCIDRs"), spec.get("podCIDR")) if isinstance(spec, Mapping) else spec


@dataclasses.dataclass
class Store:
    """Raw bodies and the core's views by key, plus reverse indexes. Event-loop only.

    Filled by the operator's informers (one event at a time) and by `svcaudit check` (its
    listing, every object as ADDED): both front ends audit from the same store."""

    # told of every object the core cannot interpret (the audits it feeds turn Unknown)
    on_uninterpretable: Callable[[Unparsed], None] = log_uninterpretable
    # whether it is fed the pods of every namespace (no namespace restriction): only then
    # are `pod_addresses.live` all the cluster's pod IPs, which the core needs (SVA-EP-017)
    sees_all_pods: bool = False
    pod_addresses: PodAddresses = dataclasses.field(default_factory=PodAddresses)

    services: dict[Key, Body] = dataclasses.field(default_factory=dict)
    service_views: dict[Key, Service | None] = dataclasses.field(default_factory=dict)
    pods: dict[str, dict[str, Body]] = dataclasses.field(default_factory=lambda: defaultdict(dict))
    pod_views: dict[str, dict[str, Pod | None]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )
    slices: dict[Key, dict[str, EndpointSlice | None]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )
    nodes: dict[str, Body] = dataclasses.field(default_factory=dict)
    node_views: dict[str, Node | None] = dataclasses.field(default_factory=dict)
    audits: dict[Key, Body] = dataclasses.field(default_factory=dict)

    services_by_ns: dict[str, set[str]] = dataclasses.field(
        default_factory=lambda: defaultdict(set)
    )
    pod_routes: dict[Key, set[str]] = dataclasses.field(default_factory=dict)
    # namespace -> selector item (label, value) -> services whose selector has it: a pod is
    # matched only against services sharing one of its labels, not every service of its
    # namespace (10k pods x 40 services was ~1.4 s of the operator's first listing).
    selector_items: dict[str, dict[tuple[str, str], set[str]]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )
    pods_by_node: dict[str, set[Key]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    pod_node: dict[Key, str] = dataclasses.field(default_factory=dict)
    slice_owner: dict[Key, str] = dataclasses.field(default_factory=dict)  # (ns, slice) -> svc
    # What the core could not interpret (its views above are None): passed to the audits.
    service_errors: dict[Key, Unparsed] = dataclasses.field(default_factory=dict)
    pod_errors: dict[str, dict[str, Unparsed]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )
    slice_errors: dict[Key, dict[str, Unparsed]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )  # service key -> slice name -> error
    # (kind, key) -> monotonic time of the last event: what a resync may call a ghost
    last_event: dict[tuple[str, Key], float] = dataclasses.field(default_factory=dict)
    # (kind, key) -> resourceVersions of our own last writes, oldest first, until their watch
    # events (echoes) have come back: an echo is no change to audit for.
    echoes: dict[tuple[str, Key], list[str]] = dataclasses.field(default_factory=dict)
    # (kind, key) -> digest of the status we are writing, until the API server's answer is
    # stored by wrote(): the watch may bring the write back before that answer arrives.
    in_flight: dict[tuple[str, Key], bytes] = dataclasses.field(default_factory=dict)
    # namespace -> the core's indexes of its pods / of its services' environment (with the
    # default/kubernetes view they were built with), shared by the audits of the namespace
    # until a pod (resp. a service) view of it changes.
    _pod_indexes: dict[str, PodIndex] = dataclasses.field(default_factory=dict)
    _env_indexes: dict[str, tuple[Service | None, ServiceEnvIndex]] = dataclasses.field(
        default_factory=dict
    )
    # every interpretable pod of every namespace by label, kept up to date pod by pod: where
    # a selector that matches nothing in its own namespace would match (the core's hint)
    pod_labels: LabelIndex = dataclasses.field(default_factory=LabelIndex)

    # ---- our own writes ------------------------------------------------------------------
    def _view(self, cls: Any, body: Body) -> tuple[Any, Unparsed | None]:
        """The core's typed view of a body, or (None, what failed) when the core cannot
        interpret it: the audits it feeds turn Unknown ("Uninterpretable") naming the field."""
        view = interpret(cls.from_api, body)
        if isinstance(view, Unparsed):
            self.on_uninterpretable(view)
            return None, view
        return view, None

    def load(self, kind: str, bodies: Iterable[Body]) -> None:
        """A listing of one kind into the store, as if each object had just been added."""
        apply = self.applier(kind)
        for body in bodies:
            apply("ADDED", body)

    def writing(self, kind: str, key: Key, digest: bytes | None) -> None:
        """Announce (digest) or end (None) a write of ours: our status conditions of a Service
        (kind "services") or a ServiceAudit's status ("serviceaudits"), by status_digest."""
        if digest is None:
            self.in_flight.pop((kind, key), None)
        else:
            self.in_flight[(kind, key)] = digest

    def _ours_in_flight(self, kind: str, key: Key, digest: bytes | None) -> bool:
        """Whether the status digested `digest` is what we are writing: the watch brought our
        write back before the API server's answer to it (its resourceVersion is not known
        as ours yet)."""
        return digest is not None and self.in_flight.get((kind, key)) == digest

    def wrote(self, kind: str, body: Body) -> None:
        """Store what the API server answered to our write (services or serviceaudits) and
        remember its resourceVersion: the watch will bring the same body back later."""
        body = slim(body)
        key = key_of(body)
        if kind == "services":
            old = self.services.get(key)
            if old is None or (
                service_fingerprint(old),
                service_env_fingerprint(old),
            ) != (service_fingerprint(body), service_env_fingerprint(body)):
                return  # the answer shows a change the watch has not brought yet: let it
            self.services[key] = share_strings(body)
        else:
            self.audits[key] = audit_record(body)
        seq = self.echoes.setdefault((kind, key), [])
        seq.append(rv_of(body))
        del seq[:-4]

    def _echo(self, kind: str, old: Body | None, body: Body) -> str:
        """ "" when `body` is not one of our writes; "stale" when the store already holds a
        later write of ours; "echo" otherwise (the store catches up, nothing changed)."""
        seq = self.echoes.get((kind, key_of(body)))
        rv = rv_of(body)
        if not seq or rv not in seq:
            return ""
        held = rv_of(old) if old is not None else ""
        if held in seq and seq.index(held) > seq.index(rv):
            return "stale"
        if rv == seq[-1]:
            del self.echoes[(kind, key_of(body))]  # caught up with our last write
        return "echo"

    def applier(self, kind: str) -> Callable[[str | None, Body], set[Key]]:
        """The `apply_*` of a kind: a watch event (or a listed object, type None) in, the
        services to re-audit out."""
        return {
            "services": self.apply_service,
            "pods": self.apply_pod,
            "endpointslices": self.apply_slice,
            "nodes": self.apply_node,
            "serviceaudits": self.apply_audit,
        }[kind]

    # ---- resync after a watch gap --------------------------------------------------------
    def touch(self, kind: str, event_type: str | None, body: Body, when: float) -> None:
        if event_type == "DELETED":
            self.last_event.pop((kind, key_of(body)), None)
        else:
            self.last_event[(kind, key_of(body))] = when

    def keys_of(self, kind: str) -> list[Key]:
        if kind == "services":
            return list(self.services)
        if kind == "pods":
            return [(ns, name) for ns, pods in self.pods.items() for name in pods]
        if kind == "endpointslices":
            return list(self.slice_owner)
        if kind == "nodes":
            return [("", name) for name in self.nodes]
        if kind == "serviceaudits":
            return list(self.audits)
        raise ValueError(f"unknown kind {kind!r}")

    def prune(
        self, kind: str, live: set[Key], listed_at: float, namespace: str | None = None
    ) -> tuple[set[Key], set[Key]]:
        """Forget objects of `kind` (in `namespace`, or all) missing from a fresh listing of
        them: deleted while a watch was down (a re-list brings no DELETED events). Objects
        with an event after the listing started are kept (created since). Returns (ghosts,
        services to re-audit)."""
        ghosts = {
            k
            for k in self.keys_of(kind)
            if k not in live
            and (namespace is None or k[0] == namespace)
            and self.last_event.get((kind, k), 0.0) < listed_at
        }
        affected: set[Key] = set()
        apply = self.applier(kind)
        for ns, name in ghosts:
            stored: Body | None = None
            if kind == "services":
                stored = self.services.get((ns, name))
            elif kind == "pods":
                stored = self.pods.get(ns, {}).get(name)
            elif kind == "nodes":
                stored = self.nodes.get(name)
            elif kind == "serviceaudits":
                stored = self.audits.get((ns, name))
            body = stored or {"metadata": {"namespace": ns or None, "name": name}}
            affected |= apply("DELETED", body)
            self.last_event.pop((kind, (ns, name)), None)
        return ghosts, affected

    # ---- services ------------------------------------------------------------------------
    def apply_service(self, event_type: str | None, body: Body) -> set[Key]:
        key = key_of(body)
        ns, name = key
        old = self.services.get(key)
        if event_type == "DELETED":
            self.echoes.pop(("services", key), None)
            self.services.pop(key, None)
            self._service_views_changed(key)
            self._index_selector(key, self.service_views.pop(key, None), None)
            self.service_errors.pop(key, None)
            self.services_by_ns[ns].discard(name)
            self._drop_service_routes(key)
            return Affected({key}, self.services_in(ns))
        echo = self._echo("services", old, body)
        if echo == "stale":
            return set()
        body = share_strings(body)
        self.services[key] = body
        self.services_by_ns[ns].add(name)
        if old is None or service_fingerprint(old) != service_fingerprint(body):
            view, error = self._view(Service, body)
            self._index_selector(key, self.service_views.get(key), view)
            self.service_views[key] = view
            self._service_views_changed(key)
            self._set_error(self.service_errors, key, error)
            self._route_service_to_pods(key)
        if old is None or service_env_fingerprint(old) != service_env_fingerprint(body):
            return Affected({key}, self.services_in(ns))  # env vars of the namespace changed
        if service_fingerprint(old) != service_fingerprint(body):
            return {key}
        ours = our_conditions(body)
        if (
            not echo
            and our_conditions(old) != ours
            and not self._ours_in_flight("services", key, status_digest(ours))
        ):
            return {key}  # someone else's edit of our conditions: overwritten with the truth
        return set()  # status/metadata only, or the echo of our own write

    def _index_selector(self, key: Key, old: Service | None, new: Service | None) -> None:
        items = self.selector_items[key[0]]
        for item in old.selector.items() if old is not None else ():
            names = items.get(item)
            if names is not None:
                names.discard(key[1])
                if not names:
                    del items[item]
        for item in new.selector.items() if new is not None else ():
            items.setdefault(item, set()).add(key[1])

    def _may_select(self, namespace: str, pod: Pod | None) -> Iterable[str]:
        """Services of the namespace that may select `pod`: those whose selector shares one
        of its labels (`selects` decides); every service for an uninterpretable pod."""
        if pod is None:
            return self.services_by_ns.get(namespace, ())
        items = self.selector_items.get(namespace)
        if not items:
            return ()
        found: set[str] = set()
        for item in pod.labels.items():
            found.update(items.get(item, ()))
        return found

    def _service_views_changed(self, key: Key) -> None:
        if key == MASTER_SERVICE:
            self._env_indexes.clear()  # every namespace's environment has its variables
        else:
            self._env_indexes.pop(key[0], None)

    def env_index(self, namespace: str, master: Service | None) -> ServiceEnvIndex:
        """ServiceEnvIndex of the namespace's service views plus `master` (default/kubernetes
        for other namespaces, None in default), kept until one of them changes."""
        cached = self._env_indexes.get(namespace)
        if cached is not None and cached[0] == master:  # by value: GET bodies are re-read
            return cached[1]
        services = self.service_views_in(namespace) + ([master] if master is not None else [])
        index = ServiceEnvIndex(services)
        self._env_indexes[namespace] = (master, index)
        return index

    def services_in(self, namespace: str) -> set[Key]:
        return {(namespace, n) for n in self.services_by_ns.get(namespace, ())}

    def service_views_in(self, namespace: str) -> list[Service]:
        views = (
            self.service_views.get((namespace, n)) for n in self.services_by_ns.get(namespace, ())
        )
        return [v for v in views if v is not None]

    def _drop_service_routes(self, key: Key) -> None:
        for pod_name in self.pods.get(key[0], {}):
            self.pod_routes.get((key[0], pod_name), set()).discard(key[1])

    def _route_service_to_pods(self, key: Key) -> None:
        ns, name = key
        service = self.service_views.get(key)
        for pod_name, pod in self.pod_views.get(ns, {}).items():
            routes = self.pod_routes.setdefault((ns, pod_name), set())
            if _routes_to(service, pod) or self._routes_unparsed(service, ns, pod_name):
                routes.add(name)
            else:
                routes.discard(name)

    # ---- pods ----------------------------------------------------------------------------
    def apply_pod(self, event_type: str | None, body: Body) -> set[Key]:
        key = key_of(body)
        ns, name = key
        old = self.pods[ns].get(name)
        before = self.pod_routes.get(key, set())
        if event_type == "DELETED":
            self._pod_indexes.pop(ns, None)
            self.pod_labels.discard(ns, name)
            self.pods[ns].pop(name, None)
            self.pod_views[ns].pop(name, None)
            self.pod_errors[ns].pop(name, None)
            self.pod_routes.pop(key, None)
            node = self.pod_node.pop(key, None)
            if node is not None:
                self.pods_by_node[node].discard(key)
            naming = self.pod_addresses.set_pod(key, frozenset())
            return Affected({(ns, s) for s in before} | naming, self.services_in(ns))
        record = pod_record(body)
        self.pods[ns][name] = record
        changed = old is None or old[POD_DIGEST] != record[POD_DIGEST]
        if not changed:
            return set()  # resourceVersion/managedFields only
        view, error = self._view(Pod, body)
        self.pod_views[ns][name] = view
        self._pod_indexes.pop(ns, None)
        if view is not None:
            self.pod_labels.put(ns, name, view.labels)
        else:
            self.pod_labels.discard(ns, name)
        self._set_error(self.pod_errors[ns], name, error)
        held = live_ips(view) if view is not None else possible_ips(body)
        naming = self.pod_addresses.set_pod(key, held)  # services naming its old or new IPs
        after = {
            s
            for s in self._may_select(ns, view)
            if _routes_to(self.service_views.get((ns, s)), view)
            or self._routes_unparsed(self.service_views.get((ns, s)), ns, name)
        }
        self.pod_routes[key] = after
        node = (body.get("spec") or {}).get("nodeName")
        old_node = self.pod_node.get(key)
        if old_node != node:
            if old_node is not None:
                self.pods_by_node[old_node].discard(key)
            if node:
                self.pods_by_node[node].add(key)
                self.pod_node[key] = node
            else:
                self.pod_node.pop(key, None)
        if old is None or old[POD_ENV_DIGEST] != record[POD_ENV_DIGEST]:
            return Affected({(ns, s) for s in before | after} | naming, self.services_in(ns))
        return {(ns, s) for s in before | after} | naming

    def pod_views_in(self, namespace: str) -> list[Pod]:
        return [v for v in self.pod_views.get(namespace, {}).values() if v is not None]

    def pod_index(self, namespace: str) -> PodIndex:
        """The namespace's pod views indexed (PodIndex.pods: the views themselves), kept
        until one of them changes: built once per namespace in a pass, not per audit."""
        index = self._pod_indexes.get(namespace)
        if index is None:
            index = self._pod_indexes[namespace] = PodIndex(self.pod_views_in(namespace))
        return index

    # ---- what the core could not interpret -------------------------------------------------
    @staticmethod
    def _set_error(errors: dict[Any, Unparsed], key: Any, error: Unparsed | None) -> None:
        if error is None:
            errors.pop(key, None)
        else:
            errors[key] = error

    def _routes_unparsed(self, service: Service | None, ns: str, pod_name: str) -> bool:
        """An uninterpretable pod re-audits the services that may select it (core's rule)."""
        error = self.pod_errors.get(ns, {}).get(pod_name)
        return service is not None and error is not None and may_select(service, error)

    def unparsed_for(self, key: Key) -> list[Unparsed]:
        """What an audit of service `key` gets as `unparsed`: the uninterpretable pods of
        its namespace and EndpointSlices labelled with its name (the core decides the rest)."""
        return [*self.pod_errors.get(key[0], {}).values(), *self.slice_errors.get(key, {}).values()]

    # ---- endpoint slices -----------------------------------------------------------------
    def apply_slice(self, event_type: str | None, body: Body) -> set[Key]:
        ns, slice_name = key_of(body)
        old_owner = self.slice_owner.get((ns, slice_name))
        owner = labels_of(body).get(SERVICE_NAME_LABEL)
        parsed = self._view(EndpointSlice, body) if event_type != "DELETED" and owner else None
        if parsed is not None and old_owner is not None and owner == old_owner:
            old = self.slices[(ns, old_owner)].get(slice_name)
            if old is not None and parsed[0] is not None and _same_content(old, parsed[0]):
                self.slices[(ns, old_owner)][slice_name] = parsed[0]
                return set()  # its endpoints reordered: nothing to audit again
        affected: set[Key] = set()
        if old_owner is not None:
            self.slices[(ns, old_owner)].pop(slice_name, None)
            self.slice_errors[(ns, old_owner)].pop(slice_name, None)
            self.slice_owner.pop((ns, slice_name), None)
            self.pod_addresses.set_slice((ns, slice_name), None, frozenset())
            affected.add((ns, old_owner))
        if parsed is not None and owner:
            view, error = parsed
            self.slices[(ns, owner)][slice_name] = view
            self._set_error(self.slice_errors[(ns, owner)], slice_name, error)
            self.slice_owner[(ns, slice_name)] = owner
            self.pod_addresses.set_slice((ns, slice_name), (ns, owner), named_addresses(view))
            affected.add((ns, owner))
        return affected

    def slice_views_of(self, key: Key) -> list[EndpointSlice]:
        return [v for v in self.slices.get(key, {}).values() if v is not None]

    # ---- nodes ---------------------------------------------------------------------------
    def apply_node(self, event_type: str | None, body: Body) -> set[Key]:
        name = str((body.get("metadata") or {}).get("name") or "")
        old = self.nodes.get(name)
        if event_type == "DELETED":
            self.nodes.pop(name, None)
            self.node_views.pop(name, None)
        else:
            self.nodes[name] = body
            if old is not None and node_fingerprint(old) == node_fingerprint(body):
                return set()  # heartbeats and conditions: nothing an audit reads
            self.node_views[name] = self._view(Node, body)[0]
        affected: set[Key] = set()
        if pod_cidrs_of(old) != pod_cidrs_of(None if event_type == "DELETED" else body):
            affected |= self.pod_addresses.naming_any()  # a pod range came, went or moved
        for pod_key in self.pods_by_node.get(name, ()):
            affected |= {(pod_key[0], s) for s in self.pod_routes.get(pod_key, ())}
        return affected

    def node_views_by_name(self) -> dict[str, Node]:
        return {n: v for n, v in self.node_views.items() if v is not None}

    # ---- ServiceAudits (ours) ------------------------------------------------------------
    def apply_audit(self, event_type: str | None, body: Body) -> set[Key]:
        key = key_of(body)
        if event_type == "DELETED":
            current = self.audits.get(key)
            if current is not None and (current.get("metadata") or {}).get("uid") != (
                body.get("metadata") or {}
            ).get("uid"):
                return set()  # an older incarnation went away; ours is already stored
            self.audits.pop(key, None)
            self.echoes.pop(("serviceaudits", key), None)
            # Deleted by hand (or by the GC of a previous incarnation): re-create if needed.
            return {key} if key in self.services else set()
        old = self.audits.get(key)
        echo = self._echo("serviceaudits", old, body)
        if echo == "stale":
            return set()
        if echo and old is not None and rv_of(old) == rv_of(body):
            return set()  # our write's answer, already stored: no second digest of it
        record = audit_record(body)
        self.audits[key] = record
        digest = record.get(AUDIT_DIGEST)
        if (
            not echo
            and old is not None
            and old.get(AUDIT_DIGEST) != digest
            and not self._ours_in_flight("serviceaudits", key, digest)
        ):
            return {key}  # someone else's edit of our status: overwritten with the truth
        return set()

    def all_service_keys(self) -> Iterable[Key]:
        return list(self.services)
