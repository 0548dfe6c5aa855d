"""The aiohttp transport against the real API server: it reuses the Authorization header
for a while (asking the kubernetes client for it costs a kubeconfig re-read per request), but
a 401 makes it ask again at once, so a rotated token is picked up by the next request."""

from __future__ import annotations

import asyncio
import copy

import pytest

from svcaudit.controller.transport import ApiStatus, Credentials, Transport
from tests.fixtures import Cluster

pytestmark = pytest.mark.cluster


def test_a_401_drops_the_reused_token(cluster: Cluster) -> None:
    cfg = copy.copy(cluster.api_client().configuration)
    cfg.api_key = dict(cfg.api_key)
    cfg.refresh_api_key_hook = None  # the header comes from api_key alone
    good = cfg.api_key.get("BearerToken")
    assert good, "the admin kubeconfig authenticates with a bearer token"
    cfg.api_key["BearerToken"] = "Bearer not-a-valid-token"
    transport = Transport(Credentials.from_configuration(cfg))

    async def main() -> tuple[int, str, str]:
        try:
            try:
                await transport.get_json("/api/v1/namespaces/default", {}, 10)
            except ApiStatus as exc:
                rejected = exc.status
            else:
                raise AssertionError("a bad token was accepted")
            cfg.api_key["BearerToken"] = good  # rotated: the next request must use it
            body = await transport.get_json("/api/v1/namespaces/default", {}, 10)
            cfg.api_key["BearerToken"] = "Bearer not-a-valid-token"
            # no 401 since: the good header is reused, the client is not asked again
            again = await transport.get_json("/api/v1/namespaces/default", {}, 10)
            return rejected, body["metadata"]["name"], again["metadata"]["name"]
        finally:
            await transport.close()

    rejected, name, again = asyncio.run(main())
    assert rejected == 401
    assert name == again == "default"
