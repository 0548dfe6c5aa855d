"""Typed field access over plain API dicts; every failure names the object and field path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from svcaudit.core.errors import MalformedObjectError


class Fields:
    """Reads fields of one API object, raising MalformedObjectError with the full path."""

    __slots__ = ("kind", "name", "namespace")

    def __init__(self, kind: str, obj: object) -> None:
        self.kind = kind
        self.namespace = ""
        self.name = ""
        if not isinstance(obj, Mapping):
            raise self.error("", f"expected an object, got {type(obj).__name__}")
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping):
            raise self.error("metadata", "required object missing")
        name = meta.get("name")
        namespace = meta.get("namespace", "")
        if isinstance(namespace, str):
            self.namespace = namespace
        if not isinstance(name, str) or not name:
            raise self.error("metadata.name", "required non-empty string missing")
        self.name = name
        if not isinstance(namespace, str):
            raise self.error("metadata.namespace", "must be a string")

    def error(self, field: str, reason: str) -> MalformedObjectError:
        return MalformedObjectError(self.kind, self.namespace, self.name, field, reason)

    def mapping(self, parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        """A nested object; absent or null reads as empty."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be an object, got {type(value).__name__}")
        return value

    def items(self, parent: Mapping[str, Any], key: str, path: str) -> list[Mapping[str, Any]]:
        """A list of objects; absent or null reads as empty."""
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise self.error(path, f"must be a list, got {type(value).__name__}")
        out: list[Mapping[str, Any]] = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self.error(f"{path}[{i}]", f"must be an object, got {type(item).__name__}")
            out.append(item)
        return out

    def strings(self, parent: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = parent.get(key)
        if value is None:
            return ()
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise self.error(path, f"must be a list of strings, got {type(value).__name__}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{path}[{i}]", f"must be a string, got {type(item).__name__}")
        return tuple(value)

    def string_map(self, parent: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = self.mapping(parent, key, path)
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.error(f"{path}.{k}", "must map strings to strings")
            out[k] = v
        return out

    def string(self, parent: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
        value = parent.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(path, f"must be a string, got {type(value).__name__}")
        return value

    def opt_string(self, parent: Mapping[str, Any], key: str, path: str) -> str | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(path, f"must be a string, got {type(value).__name__}")
        return value

    def boolean(self, parent: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = parent.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(path, f"must be a boolean, got {value!r}")
        return value

    def opt_boolean(self, parent: Mapping[str, Any], key: str, path: str) -> bool | None:
        if parent.get(key) is None:
            return None
        return self.boolean(parent, key, path, False)

    def port(self, parent: Mapping[str, Any], key: str, path: str) -> int:
        value = parent.get(key)
        if value is None:
            raise self.error(path, "required port number missing")
        return self.port_value(value, path)

    def port_value(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(path, f"must be a port number 1-65535, got {value!r}")
        return value

    def opt_port(self, parent: Mapping[str, Any], key: str, path: str) -> int | None:
        if parent.get(key) is None:
            return None
        return self.port(parent, key, path)

    def protocol(self, parent: Mapping[str, Any], key: str, path: str) -> str:
        """Protocol defaults to TCP, as the apiserver does for every port field."""
        value = self.string(parent, key, path, "TCP")
        if value not in ("TCP", "UDP", "SCTP"):
            raise self.error(path, f"must be TCP, UDP or SCTP, got {value!r}")
        return value

    def time(self, parent: Mapping[str, Any], key: str, path: str) -> datetime | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, datetime):  # YAML loaders turn timestamps into datetimes
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if not isinstance(value, str):
            raise self.error(path, f"must be an RFC 3339 time, got {value!r}")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self.error(path, f"must be an RFC 3339 time, got {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
