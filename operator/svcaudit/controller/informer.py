"""List, then watch from the list's resourceVersion: client-go's reflector, in small.

This is the path from the API server to the store. kopf still runs the operator (login,
start-up and clean-up, probes, signals), but it no longer watches: it takes each event through
a per-object worker, cause detection and handler invocation, about 1.5 ms of CPU per event.
At 10k pods the initial listing and the watch echoes of our own writes cost ~30 s of the
operator's one core (bench/, py-spy). Here an event costs an `orjson.loads` and a store update.

Guarantees the reconciler relies on:
- every object of the collection is delivered once by the first listing (type None), and
  `synced` is True only after it has been delivered in full;
- after that, every change is delivered in order (ADDED, MODIFIED, DELETED). When the watch
  cannot resume where it stopped (410 Gone: the API server no longer has that version), the
  collection is listed again and `on_listed` gets the live keys, so that objects deleted
  meanwhile (a listing brings no DELETED event) can be forgotten;
- a lost API server is retried for as long as it takes, every 5 s at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import structlog

from svcaudit.controller.indexes import Key, key_of
from svcaudit.controller.settings import CRD_GROUP, CRD_VERSION
from svcaudit.controller.transport import ApiStatus, Transport

log = structlog.get_logger("svcaudit.informer")

BACKOFFS = (0.5, 1.0, 2.0, 3.0, 5.0)  # then 5 s for ever
NOT_SERVED_RETRY = 30.0  # a resource the API server does not serve (a CRD not installed yet)


def collection_paths(
    kind: str, namespaces: tuple[str, ...] | list[str]
) -> list[tuple[str | None, str]]:
    """(namespace or None for all, API path) of each collection to watch for a kind."""
    group = {
        "services": "/api/v1",
        "pods": "/api/v1",
        "nodes": "/api/v1",
        "endpointslices": "/apis/discovery.k8s.io/v1",
        "serviceaudits": f"/apis/{CRD_GROUP}/{CRD_VERSION}",
    }[kind]
    if kind == "nodes" or not namespaces:
        return [(None, f"{group}/{kind}")]
    return [(ns, f"{group}/namespaces/{ns}/{kind}") for ns in namespaces]


class Informer:
    """One collection (e.g. /api/v1/pods), listed in pages and then watched."""

    def __init__(
        self,
        transport: Transport,
        kind: str,
        path: str,
        deliver: Callable[[str | None, dict[str, Any]], None],
        on_listed: Callable[[str, set[Key], float, bool], None],
        page_size: int = 500,
        watch_seconds: int = 300,
    ) -> None:
        self.transport = transport
        self.kind = kind
        self.path = path
        self.deliver = deliver
        self.on_listed = on_listed
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.synced = False
        self.listings = 0
        self._not_served_logged = False

    async def run(self) -> None:
        version = ""
        failures = 0
        while True:
            try:
                if not version:
                    version = await self._list()
                version = await self._watch(version)
                failures = 0
                continue  # the server ended the watch (timeoutSeconds): watch again
            except asyncio.CancelledError:
                raise
            except ApiStatus as exc:
                if exc.status == 410:  # expired: only a new listing can resume
                    log.info("watch expired: listing again", kind=self.kind)
                    version = ""
                    continue
                if exc.status == 404 and not version:
                    self._not_served()
                    await asyncio.sleep(NOT_SERVED_RETRY)
                    continue
                log.warning("watch failed", kind=self.kind, status=exc.status, error=str(exc))
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                if failures == 0:
                    log.warning("watch interrupted", kind=self.kind, error=repr(exc))
            failures += 1  # an error: back off before trying again
            await asyncio.sleep(BACKOFFS[min(failures, len(BACKOFFS)) - 1])

    def _not_served(self) -> None:
        """No such resource (a CRD not installed): nothing to wait for; look again later."""
        if not self._not_served_logged:
            log.warning("resource not served by the API server", kind=self.kind, path=self.path)
            self._not_served_logged = True
        self.synced = True

    async def _list(self) -> str:
        listed_at = time.monotonic()
        live: set[Key] = set()
        token = ""
        version = ""
        while True:
            params = {"limit": str(self.page_size)}
            if token:
                params["continue"] = token
            page = await self.transport.get_json(self.path, params, timeout=60)
            meta = page.get("metadata") or {}
            if not token:
                version = str(meta.get("resourceVersion") or "")
            for item in page.get("items") or ():
                if isinstance(item, dict):
                    live.add(key_of(item))
                    self.deliver(None, item)
            token = str(meta.get("continue") or "")
            if not token:
                break
        first = self.listings == 0
        log.debug(
            "listed",
            kind=self.kind,
            path=self.path,
            objects=len(live),
            seconds=round(time.monotonic() - listed_at, 3),
        )
        self.listings += 1
        self.synced = True
        self._not_served_logged = False
        self.on_listed(self.kind, live, listed_at, first)
        return version

    async def _watch(self, version: str) -> str:
        """Deliver events until the server ends the watch; the version to resume from."""
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        async for line in self.transport.stream_lines(
            self.path, params, read_timeout=self.watch_seconds + 30
        ):
            event = orjson.loads(line)
            etype = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if etype == "ERROR":
                raise ApiStatus(int(obj.get("code") or 0), str(obj.get("message") or ""))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if etype in ("ADDED", "MODIFIED", "DELETED"):
                self.deliver(str(etype), obj)
        return version
