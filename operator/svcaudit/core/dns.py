"""Expected cluster DNS records: kubernetes/dns specification 1.1.0 as CoreDNS serves it.

Records are value objects in one canonical text form so that expected and observed
answers compare as sets: names lower-case and fully qualified (trailing dot); A/AAAA data
the compressed address; SRV data "<port> <target>" (priority and weight are CoreDNS's
load-spreading arithmetic, not part of the spec, and are ignored).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from svcaudit.core.model import IPV4, IPV6, Endpoint, EndpointPort, Pod, Service

DEFAULT_ZONE = "cluster.local"
RECORD_TYPES = ("A", "AAAA", "CNAME", "PTR", "SRV")


@dataclass(frozen=True, slots=True, order=True)
class DnsQuestion:
    name: str
    type: str


@dataclass(frozen=True, slots=True, order=True)
class DnsRecord:
    name: str
    type: str
    data: str

    @property
    def question(self) -> DnsQuestion:
        return DnsQuestion(self.name, self.type)


class SliceLike(Protocol):
    """What DNS reads of a slice; both ExpectedSlice and model.EndpointSlice qualify."""

    @property
    def address_type(self) -> str: ...
    @property
    def ports(self) -> tuple[EndpointPort, ...]: ...
    @property
    def endpoints(self) -> tuple[Endpoint, ...]: ...


@dataclass(frozen=True, slots=True)
class ExpectedDns:
    records: frozenset[DnsRecord]
    nxdomain: frozenset[DnsQuestion]  # questions that must answer NXDOMAIN
    # Questions whose answer may also name other services: the PTR of an endpoint address
    # (CoreDNS answers one PTR per service with a ready endpoint there). Only the records
    # naming this service are this service's business (compare.compare_dns).
    shared: frozenset[DnsQuestion] = frozenset()

    @property
    def questions(self) -> tuple[DnsQuestion, ...]:
        """Every question the shell must ask to observe these records (sorted)."""
        return tuple(sorted({r.question for r in self.records} | self.nxdomain))


def fqdn(name: str) -> str:
    """Canonical DNS name: lower-case with the trailing dot."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


def service_fqdn(service: Service, zone: str = DEFAULT_ZONE) -> str:
    return fqdn(f"{service.name}.{service.namespace}.svc.{zone}")


def canonical_ip(address: str) -> str:
    return str(ipaddress.ip_address(address))


def address_record_type(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


def reverse_name(address: str) -> str:
    """in-addr.arpa / ip6.arpa (32 nibbles) name of an address, with trailing dot."""
    return ipaddress.ip_address(address).reverse_pointer + "."


def endpoint_label(endpoint_hostname: str | None, address: str) -> str:
    """CoreDNS endpointHostname: the hostname, else the IP as written with '.'/':' -> '-'
    (an IPv6 label ending in '-', from a trailing '::', gets a '0' appended)."""
    if endpoint_hostname:
        return endpoint_hostname.lower()
    label = address.replace(".", "-").replace(":", "-").lower()
    return label + "0" if label.endswith("-") else label


def srv_name(port: EndpointPort, base: str) -> str:
    return fqdn(f"_{port.name}._{port.protocol.lower()}.{base}")


def srv_data(port: int, target: str) -> str:
    return f"{port} {fqdn(target)}"


def ready_endpoints(slices: Iterable[SliceLike]) -> list[tuple[SliceLike, Endpoint]]:
    """CoreDNS counts only conditions.ready (nil already reads as ready in the model)."""
    return [(s, ep) for s in slices for ep in s.endpoints if ep.conditions.ready]


def endpoint_ptr_records(
    service: Service, slices: Sequence[SliceLike], zone: str = DEFAULT_ZONE
) -> frozenset[DnsRecord]:
    """The PTR records CoreDNS serves for the service's endpoint addresses, whatever its
    type (kubernetes plugin, reverse.go serviceRecordForIP): an address that is no Service's
    ClusterIP is looked up among the ready endpoints of every EndpointSlice, and each gives
    `<hostname, else the dashed IP>.<service>.<ns>.svc.<zone>` (the slice's service-name
    label names the service). CoreDNS indexes an address as the slice writes it and looks
    it up in its canonical form, so an address spelled otherwise (`fd00:0::1`) has none;
    the service's own ClusterIPs answer the service itself (and nothing else)."""
    base = service_fqdn(service, zone)
    own = {canonical_ip(ip) for ip in service.cluster_ips if _is_ip(ip)}
    records: set[DnsRecord] = set()
    for slice_, ep in ready_endpoints(slices):
        if slice_.address_type not in (IPV4, IPV6):
            continue  # FQDN endpoints: no address to reverse
        for address in ep.addresses:
            if not _is_ip(address) or canonical_ip(address) != address or address in own:
                continue
            target = fqdn(f"{endpoint_label(ep.hostname, address)}.{base}")
            records.add(DnsRecord(reverse_name(address), "PTR", target))
    return frozenset(records)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def names_service(target: str, service: Service, zone: str = DEFAULT_ZONE) -> bool:
    """Whether an endpoint PTR's target is an endpoint of `service`: one label, then the
    service's name (the form endpoint_ptr_records gives)."""
    _, _, rest = fqdn(target).partition(".")
    return rest == service_fqdn(service, zone)


def is_service_name(target: str, zone: str = DEFAULT_ZONE) -> bool:
    """Whether a PTR target is a Service's own name `<svc>.<ns>.svc.<zone>.` (the answer for
    a ClusterIP), rather than an endpoint's, which has one more label in front."""
    labels = fqdn(target).split(".", 2)
    return len(labels) == 3 and labels[2] == fqdn(f"svc.{zone}")


def expected_dns(
    service: Service, slices: Sequence[SliceLike], zone: str = DEFAULT_ZONE
) -> ExpectedDns:
    """Records for one service. `slices` are its endpoints (expected ones for a managed
    service, observed ones for one the controller does not manage): a headless service's
    names list them, and every service's ready endpoint addresses have a PTR naming it."""
    ptrs = endpoint_ptr_records(service, slices, zone)
    own = _service_records(service, slices, zone)
    return ExpectedDns(own.records | ptrs, own.nxdomain, frozenset(r.question for r in ptrs))


def _service_records(
    service: Service, slices: Sequence[SliceLike], zone: str = DEFAULT_ZONE
) -> ExpectedDns:
    """The records under the service's own name: A/AAAA, the ClusterIP's PTR, SRV, CNAME."""
    base = service_fqdn(service, zone)
    records: set[DnsRecord] = set()
    nxdomain: set[DnsQuestion] = set()
    if service.is_external_name:
        # CoreDNS answers only a name with a CNAME (findServices: HostType() == CNAME); an
        # address there gives no record at all (NXDOMAIN): nothing to expect, nor to ask
        if not _is_ip(service.external_name):
            records.add(DnsRecord(base, "CNAME", fqdn(service.external_name)))
    elif service.has_cluster_ip:
        for ip in service.cluster_ips:
            records.add(DnsRecord(base, address_record_type(ip), canonical_ip(ip)))
            records.add(DnsRecord(reverse_name(ip), "PTR", base))
        for sp in service.ports:
            if sp.name:
                port = EndpointPort(sp.name, sp.port, sp.protocol)
                records.add(DnsRecord(srv_name(port, base), "SRV", srv_data(sp.port, base)))
    elif service.is_headless:
        ready = ready_endpoints(slices)
        for slice_, ep in ready:
            for address in ep.addresses:
                rtype = address_record_type(address)
                target = fqdn(f"{endpoint_label(ep.hostname, address)}.{base}")
                records.add(DnsRecord(base, rtype, canonical_ip(address)))
                records.add(DnsRecord(target, rtype, canonical_ip(address)))
                for port in slice_.ports:
                    if port.name and port.port is not None:
                        records.add(
                            DnsRecord(srv_name(port, base), "SRV", srv_data(port.port, target))
                        )
        if not ready:
            families = {s.address_type for s in slices} or set(service.ip_families)
            nxdomain.add(DnsQuestion(base, "A"))
            if IPV6 in families:
                nxdomain.add(DnsQuestion(base, "AAAA"))
    return ExpectedDns(frozenset(records), frozenset(nxdomain))


def pod_ip_label(address: str) -> str:
    """The first label of a pod's address record (CoreDNS `pods insecure`): IPv4 a.b.c.d is
    `a-b-c-d`; IPv6 is its compressed lower-case form with ':' replaced by '-'
    (fd00::a -> `fd00--a`). A label that would start or end with '-' (an address starting
    or ending with '::') gets a '0' there, so it stays a valid hostname label: CoreDNS reads
    `0--1` as 0::1, the same address as ::1. An IPv4-mapped address is written in full
    hex groups (no dotted quad, whose dots CoreDNS would not read back)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return str(ip).replace(".", "-")
    text = ip.compressed
    if "." in text:
        text = ip.exploded
    label = text.replace(":", "-").lower()
    if label.startswith("-"):
        label = "0" + label
    if label.endswith("-"):
        label += "0"
    return label


def pod_ip_from_label(label: str) -> str | None:
    """The address CoreDNS (`pods insecure`, findPods) answers for a pod name's first
    label: exactly three '-' and no '--' is IPv4 (dashes become dots), anything else IPv6
    (dashes become colons); None when that is no IP (CoreDNS answers NXDOMAIN)."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return canonical_ip(text)
    except ValueError:
        return None


def pod_dns(pod: Pod, zone: str = DEFAULT_ZONE) -> tuple[DnsRecord, ...]:
    """A pod's address records under CoreDNS `pods insecure` (as kubeadm configures it):
    `<ip label>.<ns>.pod.<zone>` A (IPv4) or AAAA (IPv6) per status.podIPs entry, sorted;
    none for a pod without IP. Insecure mode answers any well-formed address name without
    looking the pod up, so these are the names that carry the pod's own addresses."""
    records = {
        DnsRecord(
            fqdn(f"{pod_ip_label(ip)}.{pod.namespace}.pod.{zone}"),
            address_record_type(ip),
            canonical_ip(ip),
        )
        for ip in pod.pod_ips
    }
    return tuple(sorted(records))


def expected_dns_questions(
    service: Service, slices: Sequence[SliceLike], zone: str = DEFAULT_ZONE
) -> tuple[DnsQuestion, ...]:
    """The (name, type) questions the shell asks to observe `expected_dns` (incl. NXDOMAIN)."""
    return expected_dns(service, slices, zone).questions


def record_from_answer(name: str, rtype: str, text: str) -> DnsRecord:
    """Canonical record from a resolver's presentation text (e.g. dnspython `rdata.to_text()`):
    SRV "prio weight port target" becomes "port target"."""
    rtype = rtype.upper()
    if rtype in ("A", "AAAA"):
        data = canonical_ip(text.strip())
    elif rtype == "SRV":
        parts = text.split()
        if len(parts) != 4:
            raise ValueError(f"not an SRV rdata: {text!r}")
        data = srv_data(int(parts[2]), parts[3])
    else:
        data = fqdn(text.strip())
    return DnsRecord(fqdn(name), rtype, data)
