"""The one error the core raises on bad input, so callers can report the culprit object."""

from __future__ import annotations


class MalformedObjectError(ValueError):
    """An API object lacks a required field or has one of the wrong shape.

    Carries kind/namespace/name/field so the shell can say exactly which object to fix
    instead of crashing somewhere deep in the rules.
    """

    def __init__(self, kind: str, namespace: str, name: str, field: str, reason: str) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.field = field
        self.reason = reason
        where = f"{namespace}/{name}" if namespace else name or "<unnamed>"
        super().__init__(f"{kind} {where}: {field}: {reason}")
