"""Kubernetes Events on the Service, only when a verdict changes status.

Warning when an aspect becomes False, Normal when it recovers from False to True.
Transitions to/from Unknown (e.g. DNS unreachable) and a first True raise no event.
The summary condition raises none either: the aspect that changed already did.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from svcaudit.controller.conditions import CONDITION_TYPES, rfc3339
from svcaudit.controller.settings import CONDITION_PREFIX, EVENT_COMPONENT

SUMMARY = CONDITION_TYPES["HEALTHY"]


def event_kind(ctype: str, old: str | None, new: str) -> str | None:
    """ "Warning", "Normal" or None (no event) for one condition's status change."""
    if ctype == SUMMARY or old == new:
        return None
    if new == "False":
        return "Warning"
    if new == "True" and old == "False":
        return "Normal"
    return None


def build_event(
    service: Mapping[str, Any],
    ctype: str,
    kind: str,
    reason: str,
    message: str,
    now: datetime,
    instance: str,
) -> dict[str, Any]:
    meta = service.get("metadata") or {}
    name = str(meta.get("name"))
    namespace = str(meta.get("namespace"))
    stamp = rfc3339(now)
    short = ctype.removeprefix(CONDITION_PREFIX)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.svcaudit.{uuid.uuid4().hex[:12]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Service",
            "name": name,
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": f"{short}: {message}"[:1024],
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": "svcaudit.dev/operator",
        "reportingInstance": instance[:128],
        "action": "Audit",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
