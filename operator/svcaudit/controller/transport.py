"""One aiohttp session to the API server with the credentials of our Kubernetes client: the
informers' lists and watches, and every call of the operator's, from the event loop.

Why not the kubernetes client for these: it runs synchronously (a worker thread per call),
validates and re-serialises every body through its models, and its threads contend with the
event loop for the GIL; at 10k pods that was a quarter of the operator's samples (bench/).
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson


class ApiStatus(Exception):
    """The API server answered with an error status (HTTP or a watch ERROR event): the one
    error type of the operator's API calls. `body` is the answer as sent (a Status object,
    or text such as a bare "404 page not found")."""

    def __init__(self, status: int, body: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {body[:300]}".replace(" :", ":"))
        self.status = status
        self.reason = reason
        self.body = body


# How long the Authorization header is reused before it is asked for again. Asking re-reads
# the kubeconfig or the token file (~0.5 ms): 4,000 writes per pass at 10k pods. Tokens live
# for minutes at least.
AUTH_REUSE_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it: from kopf's login (the
    operator, controller/login.py) or from the kubernetes client's configuration (`check`,
    which supports every kubeconfig form, exec plugins included)."""

    server: str
    ssl: ssl.SSLContext | bool  # False: plain http
    authorization: Callable[[], str | None]  # the Authorization header, asked again at times
    server_hostname: str | None = None  # TLS name when it differs from the server's host
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # sent every time

    @classmethod
    def from_configuration(cls, cfg: Any, headers: Mapping[str, str] | None = None) -> Credentials:
        """From a kubernetes.client.Configuration (its token refresh hook runs when asked)."""
        context: ssl.SSLContext | bool = False
        if str(cfg.host).startswith("https"):
            context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if not cfg.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file or None)

        def authorization() -> str | None:
            auth = cfg.auth_settings().get("BearerToken")
            return str(auth["value"]) if auth and auth.get("value") else None

        extra = {k: v for k, v in (headers or {}).items() if k != "User-Agent"}
        return cls(str(cfg.host), context, authorization, cfg.tls_server_name or None, extra)


class Transport:
    """aiohttp with the given credentials, whose Authorization header is asked for again
    every AUTH_REUSE_SECONDS, and at once after a 401, so that refreshed tokens are used."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self.base = credentials.server.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._auth: tuple[float, dict[str, str]] | None = None  # (asked at, headers)

    def _headers(self) -> dict[str, str]:
        now = time.monotonic()
        if self._auth is not None and now - self._auth[0] < AUTH_REUSE_SECONDS:
            return self._auth[1]
        headers = {
            "Accept": "application/json",
            "User-Agent": "svcaudit",
            **self._credentials.headers,
        }
        authorization = self._credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        self._auth = (now, headers)
        return headers

    def _answered(self, status: int) -> None:
        """A 401: the token may have been rotated; ask the client again next time."""
        if status == 401:
            self._auth = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._credentials.ssl, limit=64),
                trust_env=False,  # a proxy from the environment must not apply to the cluster
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _request_kwargs(self, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": {**self._headers(), **(extra or {})}}
        if self._credentials.server_hostname:
            kwargs["server_hostname"] = self._credentials.server_hostname
        return kwargs

    async def get_json(self, path: str, params: Mapping[str, str], timeout: float) -> Any:
        async with self.session.get(
            self.base + path,
            params=dict(params),
            timeout=aiohttp.ClientTimeout(total=timeout),
            **self._request_kwargs(),
        ) as resp:
            data = await resp.read()
            self._answered(resp.status)
            if resp.status >= 300:
                raise ApiStatus(resp.status, data.decode(errors="replace"))
            return orjson.loads(data)

    async def send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: Any,
        content_type: str,
        timeout: float,
        accept: str = "application/json",
    ) -> tuple[int, str, bytes]:
        """(HTTP status, reason, body) of one request (`body` None: none sent); raises on no
        answer (aiohttp errors)."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        async with self.session.request(
            method,
            self.base + path,
            params=dict(params),
            data=None if body is None else orjson.dumps(body),
            timeout=aiohttp.ClientTimeout(total=timeout),
            **self._request_kwargs(extra=headers),
        ) as resp:
            self._answered(resp.status)
            return resp.status, str(resp.reason or ""), await resp.read()

    async def stream_lines(
        self, path: str, params: Mapping[str, str], read_timeout: float
    ) -> AsyncIterator[bytes]:
        """The lines of a streamed answer (a watch), however long each line is."""
        async with self.session.get(
            self.base + path,
            params=dict(params),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout),
            **self._request_kwargs(),
        ) as resp:
            self._answered(resp.status)
            if resp.status >= 300:
                raise ApiStatus(resp.status, (await resp.read()).decode(errors="replace"))
            buffer = bytearray()
            scanned = 0
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n", scanned)) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    scanned = 0
                    if line.strip():
                        yield line
                scanned = len(buffer)
            if buffer.strip():
                yield bytes(buffer)
