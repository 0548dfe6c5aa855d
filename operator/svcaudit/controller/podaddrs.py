"""The Store's cluster-wide view of pod addresses, for hand-written endpoints without targetRef
(SVA-EP-017, core/podnet.py): which addresses live pods of every namespace hold, and which
services' slices name which addresses without a targetRef, so that a pod's IP appearing or
going away re-audits exactly the services whose slices name it, in any namespace.

Kept up to date event by event (a pod, a slice at a time); it never lists anything. The core
decides what the addresses mean; this only counts and routes.
"""

from __future__ import annotations

import collections
import dataclasses

from svcaudit.core.model import IPV4, IPV6, EndpointSlice
from svcaudit.core.podnet import canonical_ip

Key = tuple[str, str]  # (namespace, name)


def named_addresses(view: EndpointSlice | None) -> frozenset[str]:
    """The canonical addresses a slice's endpoints without targetRef name."""
    if view is None or view.address_type not in (IPV4, IPV6):
        return frozenset()
    found = (
        canonical_ip(a) for ep in view.endpoints if ep.target_ref is None for a in ep.addresses
    )
    return frozenset(a for a in found if a is not None)


@dataclasses.dataclass
class PodAddresses:
    # canonical IP -> number of live pods holding it: what the core reads (as a Container)
    live: dict[str, int] = dataclasses.field(default_factory=dict)
    held: dict[Key, frozenset[str]] = dataclasses.field(default_factory=dict)  # pod -> its IPs
    # canonical address -> services (with how many of their slices) naming it, no targetRef
    named: dict[str, collections.Counter[Key]] = dataclasses.field(default_factory=dict)
    by_slice: dict[Key, tuple[Key, frozenset[str]]] = dataclasses.field(default_factory=dict)

    def set_pod(self, pod: Key, ips: frozenset[str]) -> set[Key]:
        """Record what pod `pod` holds now (empty: deleted or terminal); returns the services
        whose slices name an address that was or is now held by it."""
        old = self.held.pop(pod, frozenset())
        if ips:
            self.held[pod] = ips
        for ip in old - ips:
            left = self.live.get(ip, 0) - 1
            if left > 0:
                self.live[ip] = left
            else:
                self.live.pop(ip, None)
        for ip in ips - old:
            self.live[ip] = self.live.get(ip, 0) + 1
        return self.naming(old ^ ips)

    def set_slice(self, slice_key: Key, service: Key | None, addresses: frozenset[str]) -> None:
        """Record the addresses slice `slice_key` (labelled for `service`; None: gone) names
        without targetRef."""
        old = self.by_slice.pop(slice_key, None)
        if old is not None:
            for address in old[1]:
                counts = self.named.get(address)
                if counts is not None:
                    counts[old[0]] -= 1
                    if counts[old[0]] <= 0:
                        del counts[old[0]]
                    if not counts:
                        del self.named[address]
        if service is not None and addresses:
            self.by_slice[slice_key] = (service, addresses)
            for address in addresses:
                self.named.setdefault(address, collections.Counter())[service] += 1

    def naming(self, addresses: frozenset[str]) -> set[Key]:
        """The services whose slices name one of `addresses` without targetRef."""
        return {svc for a in addresses for svc in self.named.get(a, ())}

    def naming_any(self) -> set[Key]:
        """Every service whose slices name an address without targetRef (a pod range of the
        cluster changed: any of them may now lie in it, or no longer)."""
        return {svc for svc, _ in self.by_slice.values()}
