"""metav1.Condition rendering: verdicts in, condition dicts out (lastTransitionTime kept)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from svcaudit.controller.settings import CONDITION_PREFIX

# Core aspect name -> condition type. The summary comes last, as kubectl shows it.
CONDITION_TYPES: dict[str, str] = {
    "ENDPOINTS": CONDITION_PREFIX + "EndpointsConsistent",
    "ENVIRONMENT": CONDITION_PREFIX + "EnvironmentConsistent",
    "DNS": CONDITION_PREFIX + "DNSConsistent",
    "HEALTHY": CONDITION_PREFIX + "DiscoveryHealthy",
}
OUR_TYPES = frozenset(CONDITION_TYPES.values())
MAX_MESSAGE = 32768


class VerdictLike(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


def aspect_name(aspect: object) -> str:
    """Aspect as its upper-case name, whether the core gives an Enum or a string."""
    name = getattr(aspect, "name", None)
    return str(name if isinstance(name, str) else aspect).upper()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def by_type(conditions: Iterable[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in conditions or () if isinstance(c, Mapping)}


def render_conditions(
    verdicts: Mapping[Any, VerdictLike],
    generation: int | None,
    existing: Sequence[Mapping[str, Any]] | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Our four conditions, in a fixed order; lastTransitionTime moves only on a status change."""
    named = {aspect_name(a): v for a, v in verdicts.items()}
    previous = by_type(existing)
    out: list[dict[str, Any]] = []
    for aspect, ctype in CONDITION_TYPES.items():
        verdict = named.get(aspect)
        if verdict is None:
            continue
        prev = previous.get(ctype)
        same = prev is not None and prev.get("status") == verdict.status
        condition: dict[str, Any] = {
            "type": ctype,
            "status": verdict.status,
            "reason": verdict.reason,
            "message": verdict.message[:MAX_MESSAGE],
            "lastTransitionTime": (
                str(prev.get("lastTransitionTime")) if same and prev else rfc3339(now)
            ),
        }
        if generation:  # Services carry no metadata.generation (0, omitted by the API)
            condition["observedGeneration"] = int(generation)
        out.append(condition)
    return out


def ours_differ(
    rendered: Sequence[Mapping[str, Any]], existing: Sequence[Mapping[str, Any]] | None
) -> bool:
    """True when the cluster does not already hold exactly our rendered conditions."""
    have = {t: dict(c) for t, c in by_type(existing).items() if t in OUR_TYPES}
    want = {str(c["type"]): dict(c) for c in rendered}
    return have != want


def statuses(conditions: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t: str(c.get("status")) for t, c in by_type(conditions).items() if t in OUR_TYPES}
