"""\"Did you mean\": what a selector that matches no pod was probably meant to say.

When a service's selector picks no pod of its namespace (SVA-EP-101), the pods and labels
that come closest are named in the finding's hint:

- a value typo: the selector's key with another value some pods carry (`app=sise` instead
  of `app=sies`), found among the pods that carry the rest of the selector;
- a key typo: a similar key with the selector's value (`apps=web` instead of `app=web`);
- a missing key: pods carrying the rest of the selector but not that key at all;
- another namespace: pods there carry the whole selector (a Service only selects pods of
  its own namespace).

With a one-item selector the "rest" is every pod, so only values and keys close to the
selector's (optimal string alignment distance at most a third of the longer string) are
named; with more items, a pod carrying the rest is evidence enough and any value is named,
the closest first. At most three suggestions, in a fixed order. The namespace's pods come
from its PodIndex; other namespaces' from a LabelIndex the shell keeps of every pod it sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import zip_longest

from svcaudit.core.codes import Discrepancy
from svcaudit.core.model import Pod, Service
from svcaudit.core.podindex import PodIndex

__all__ = ["LabelIndex", "Suggestion", "did_you_mean", "distance", "with_suggestions"]

MAX_SUGGESTIONS = 3
SHOWN_PODS = 2  # pod names given per suggestion
NO_POD_CODE = "SVA-EP-101"

PodKey = tuple[str, str]


class LabelIndex:
    """Pods of every namespace by (label, value): which namespaces hold pods carrying a whole
    selector, without visiting their pods. Updated one pod at a time (`put`, `discard`);
    pure bookkeeping, no I/O. Cost of `matching`: the sizes of the selector items' entries."""

    __slots__ = ("_by_label", "_labels")

    def __init__(self) -> None:
        # (label, value) -> namespace -> names of its pods carrying it
        self._by_label: dict[tuple[str, str], dict[str, set[str]]] = {}
        self._labels: dict[PodKey, tuple[tuple[str, str], ...]] = {}

    @classmethod
    def of(cls, pods: Iterable[Pod]) -> LabelIndex:
        index = cls()
        for pod in pods:
            index.put(pod.namespace, pod.name, pod.labels)
        return index

    def put(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        """Record pod namespace/name with `labels` (replacing what it had)."""
        self.discard(namespace, name)
        items = tuple(labels.items())
        self._labels[(namespace, name)] = items
        for item in items:
            self._by_label.setdefault(item, {}).setdefault(namespace, set()).add(name)

    def discard(self, namespace: str, name: str) -> None:
        for item in self._labels.pop((namespace, name), ()):
            by_ns = self._by_label.get(item)
            names = by_ns.get(namespace) if by_ns is not None else None
            if by_ns is None or names is None:
                continue
            names.discard(name)
            if not names:
                del by_ns[namespace]
                if not by_ns:
                    del self._by_label[item]

    def matching(self, selector: Mapping[str, str], exclude: str) -> list[tuple[str, list[str]]]:
        """(namespace, sorted pod names) of the pods carrying every item of `selector`, in
        namespaces other than `exclude`, sorted by namespace. Empty selector: none."""
        found: dict[str, set[str]] | None = None
        for item in sorted(selector.items()):
            by_ns = self._by_label.get(item)
            if not by_ns:
                return []
            if found is None:
                found = {ns: set(names) for ns, names in by_ns.items() if ns != exclude}
            else:
                found = {ns: names & by_ns.get(ns, set()) for ns, names in found.items()}
                found = {ns: names for ns, names in found.items() if names}
        return sorted((ns, sorted(names)) for ns, names in (found or {}).items())


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One guess at what the selector meant, with the pods it would match."""

    text: str  # rendered, e.g. "app=sise instead of app=sies (2 pods: a, b)"
    rank: tuple[int, int, str]  # (distance, -pods, text): smaller is likelier


@lru_cache(maxsize=65536)
def distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    transpositions of adjacent characters cost 1 each (`sies` -> `sise` is 1)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[len(b)]


def _close(a: str, b: str) -> int | None:
    """distance(a, b) when it is small enough for a typo (at most a third of the longer
    string, at least 1), else None. Lengths are compared first: most pairs stop there."""
    longest = max(len(a), len(b))
    if a == b or 3 * abs(len(a) - len(b)) > longest:
        return None
    d = distance(a, b)
    return d if 3 * d <= longest else None


def _pods(pods: Sequence[Pod]) -> str:
    names = sorted(p.name for p in pods)
    shown = ", ".join(names[:SHOWN_PODS])
    more = len(names) - SHOWN_PODS
    return f"{len(names)} pod(s): {shown}" + (f" and {more} more" if more > 0 else "")


def _item_suggestions(
    key: str, value: str, rest: list[tuple[str, str]], index: PodIndex
) -> list[Suggestion]:
    """Suggestions for one selector item, the others (`rest`) kept: other values of its key,
    similar keys with its value, and (with a rest) pods lacking the key altogether."""
    out: list[Suggestion] = []
    if rest:
        carriers = index.having(rest)
        values: dict[str, list[Pod]] = {}
        for pod in carriers:
            if key in pod.labels:
                values.setdefault(pod.labels[key], []).append(pod)
        keys = {k for pod in carriers for k, v in pod.labels.items() if v == value and k != key}
    else:
        carriers = []
        values = index.label_values(key)
        keys = {k for k in index.label_keys if k != key}
    for other, pods in values.items():
        d = distance(value, other) if rest else _close(value, other)
        if d is not None and pods:
            text = f"{key}={other} instead of {key}={value} ({_pods(pods)})"
            out.append(Suggestion(text, (d, -len(pods), text)))
    for other_key in sorted(keys):
        d = _close(key, other_key)
        pods = index.having([*rest, (other_key, value)]) if d is not None else []
        if d is not None and pods:
            text = f"{other_key}={value} instead of {key}={value} ({_pods(pods)})"
            out.append(Suggestion(text, (d, -len(pods), text)))
    lacking = [p for p in carriers if key not in p.labels]
    if lacking:
        kept = ",".join(f"{k}={v}" for k, v in rest)
        text = f"{kept} without {key}={value} ({_pods(lacking)} lack label {key})"
        out.append(Suggestion(text, (len(key), -len(lacking), text)))
    return out


def did_you_mean(
    service: Service, index: PodIndex, elsewhere: LabelIndex | None
) -> tuple[str, ...]:
    """At most MAX_SUGGESTIONS texts, most likely first, alternating between the service's
    namespace (`index`: its pods) and others (`elsewhere`, None: not looked at)."""
    items = sorted(service.selector.items())
    here: dict[str, Suggestion] = {}
    for i, (key, value) in enumerate(items):
        for s in _item_suggestions(key, value, items[:i] + items[i + 1 :], index):
            here.setdefault(s.text, s)
    local = [s.text for s in sorted(here.values(), key=lambda s: s.rank)]
    remote: list[str] = []
    if elsewhere is not None and items:
        selector = ",".join(f"{k}={v}" for k, v in items)
        found = elsewhere.matching(service.selector, service.namespace)
        found.sort(key=lambda f: (-len(f[1]), f[0]))
        for ns, names in found:
            shown = ", ".join(names[:SHOWN_PODS])
            more = f" and {len(names) - SHOWN_PODS} more" if len(names) > SHOWN_PODS else ""
            remote.append(
                f"namespace {ns}, where {len(names)} pod(s) carry {selector} ({shown}{more}): "
                "a Service selects pods of its own namespace only"
            )
    merged = [t for pair in zip_longest(local, remote) for t in pair if t is not None]
    return tuple(merged[:MAX_SUGGESTIONS])


def with_suggestions(
    found: Iterable[Discrepancy], service: Service, index: PodIndex, elsewhere: LabelIndex | None
) -> list[Discrepancy]:
    """`found` with the hint of its SVA-EP-101 (selector matches no pod) led by what the
    selector probably meant; unchanged when nothing comes close."""
    out: list[Discrepancy] = []
    for d in found:
        if d.code == NO_POD_CODE:
            guesses = did_you_mean(service, index, elsewhere)
            if guesses:
                d = replace(d, hint="Did you mean " + "? Or ".join(guesses) + "? " + d.hint)
        out.append(d)
    return out
