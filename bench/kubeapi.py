"""A small, fast Kubernetes API client for the benchmark: requests + a thread pool, and watches
that keep the latest object per key and timestamp every event (time.monotonic()).

The operator under test uses its own client (kopf); this one only creates the scenario, makes
the changes and observes the results.
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml

Obj = dict[str, Any]


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


class Kube:
    def __init__(self, kubeconfig: str, pool: int = 32):
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"].rstrip("/")
        self.token = user["token"]
        ca = base64.b64decode(cluster["certificate-authority-data"])
        self._ca = tempfile.NamedTemporaryFile(prefix="bench-ca-", suffix=".crt")  # noqa: SIM115
        self._ca.write(ca)
        self._ca.flush()
        self.session = self._new_session(pool)
        urllib3.disable_warnings()

    def _new_session(self, pool: int) -> requests.Session:
        s = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        s.mount("https://", adapter)
        s.trust_env = False  # REQUESTS_CA_BUNDLE or a proxy must not apply to the cluster
        s.verify = self._ca.name
        s.headers["Authorization"] = f"Bearer {self.token}"
        s.headers["Accept"] = "application/json"
        s.headers["User-Agent"] = "svcaudit-bench"
        return s

    # -- plain calls ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        ok: Iterable[int] = (),
        timeout: float = 60,
    ) -> Obj:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in range(5):
            r = self.session.request(
                method, self.server + path, data=data, headers=headers, timeout=timeout
            )
            if r.status_code in (429, 500, 503, 504) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            break
        if r.status_code >= 300 and r.status_code not in ok:
            raise ApiError(r.status_code, r.text)
        if not r.content:
            return {}
        try:
            return dict(r.json())
        except ValueError:
            return {"raw": r.text}

    def get(self, path: str, **kw: Any) -> Obj:
        return self.request("GET", path, **kw)

    def text(self, path: str) -> str:
        r = self.session.get(self.server + path, timeout=60)
        if r.status_code >= 300:
            raise ApiError(r.status_code, r.text)
        return r.text

    def create(self, path: str, obj: Obj) -> Obj:
        return self.request("POST", path, obj, ok=(409,))

    def delete(self, path: str, **kw: Any) -> Obj:
        return self.request("DELETE", path, ok=(404,), **kw)

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def strategic_patch(self, path: str, patch: Obj) -> Obj:
        return self.request("PATCH", path, patch, "application/strategic-merge-patch+json")

    def json_patch(self, path: str, ops: list[Obj]) -> Obj:
        return self.request("PATCH", path, ops, "application/json-patch+json")

    def apply(self, path: str, obj: Obj, manager: str = "svcaudit-bench") -> Obj:
        return self.request(
            "PATCH",
            f"{path}?fieldManager={manager}&force=true",
            obj,
            "application/apply-patch+yaml",
        )

    def list_all(self, path: str, limit: int = 500) -> tuple[list[Obj], str]:
        """Every item of a collection (paginated) and the list's resourceVersion."""
        items: list[Obj] = []
        cont = ""
        sep = "&" if "?" in path else "?"
        while True:
            q = f"{path}{sep}limit={limit}" + (f"&continue={cont}" if cont else "")
            page = self.get(q)
            items += page.get("items", [])
            cont = page.get("metadata", {}).get("continue", "")
            if not cont:
                return items, page["metadata"]["resourceVersion"]

    def parallel(
        self, fn: Callable[[Any], Any], args: Iterable[Any], workers: int = 24
    ) -> list[Any]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, args))


def key(obj: Obj) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


class Watch:
    """List, then watch a collection from that resourceVersion in a thread. Keeps the latest
    object per key (deleted ones removed) and lets callers wait for a predicate with the
    monotonic time of the event that made it true."""

    def __init__(self, kube: Kube, path: str, name: str = ""):
        self.kube = kube
        self.path = path
        self.name = name or path
        self.objects: dict[str, Obj] = {}
        self.stamps: dict[str, float] = {}  # key -> monotonic time of its last event
        self.events = 0
        self.cond = threading.Condition()
        self.last_event_at = 0.0
        self._stop = threading.Event()
        self._session = kube._new_session(2)
        items, self.rv = kube.list_all(path)
        for obj in items:
            self.objects[key(obj)] = obj
        self.listeners: list[Callable[[str, Obj, float], None]] = []
        self.thread = threading.Thread(target=self._run, name=f"watch {self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                url = (
                    f"{self.kube.server}{self.path}?watch=1&allowWatchBookmarks=true"
                    f"&resourceVersion={self.rv}&timeoutSeconds=300"
                )
                with self._session.get(url, stream=True, timeout=(10, 330)) as r:
                    if r.status_code == 410:
                        self._relist()
                        continue
                    # chunk_size=None: each event as soon as it arrives, not once 512 bytes
                    # have (requests allows it; its stubs do not say so)
                    for line in r.iter_lines(chunk_size=None):  # type: ignore[call-overload]
                        if self._stop.is_set():
                            return
                        if line:
                            self._event(json.loads(line))
            except (requests.RequestException, ValueError):
                if self._stop.is_set():
                    return
                time.sleep(0.5)

    def _relist(self) -> None:
        items, rv = self.kube.list_all(self.path)
        now = time.monotonic()
        with self.cond:
            self.objects = {key(o): o for o in items}
            self.rv = rv
            self.last_event_at = now
            self.cond.notify_all()

    def _event(self, ev: Obj) -> None:
        now = time.monotonic()
        obj = ev.get("object", {})
        kind = ev.get("type")
        if kind == "ERROR":
            if obj.get("code") == 410:
                self._relist()
            return
        rv = obj.get("metadata", {}).get("resourceVersion")
        if rv:
            self.rv = rv
        if kind == "BOOKMARK":
            return
        k = key(obj)
        with self.cond:
            self.stamps[k] = now
            if kind == "DELETED":
                self.objects.pop(k, None)
            else:
                self.objects[k] = obj
            self.events += 1
            self.last_event_at = now
            self.cond.notify_all()
        for fn in self.listeners:
            fn(kind or "", obj, now)

    def wait(self, predicate: Callable[[dict[str, Obj]], bool], timeout: float) -> float | None:
        """The monotonic time at which predicate(objects) became true (now, if it already is),
        or None after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if predicate(self.objects):
                    return self.last_event_at if self.last_event_at else time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))

    def wait_key(
        self, k: str, predicate: Callable[[Obj | None], bool], timeout: float
    ) -> float | None:
        """Like wait() for one object; returns the time of the event that satisfied it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if predicate(self.objects.get(k)):
                    return self.stamps.get(k, 0.0)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))

    def stop(self) -> None:
        self._stop.set()
        self._session.close()
