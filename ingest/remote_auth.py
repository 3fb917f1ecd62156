"""Authenticate keys by asking the llmtel API, for ingest nodes that do not read ClickHouse.

With the embedded engine only one process may open the data, so a separate `llmtel ingest`
cannot look keys up itself; it asks `GET /api/v1/whoami` and caches the answer (positive
and negative) for `cache_ttl_s`, the same bound on revocation as the direct store.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from schema.messages import HandoffUnavailable
from schema.models import Principal


class RemoteAuthenticator:
    def __init__(
        self,
        api_url: str,
        cache_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=5, transport=transport)
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, api_key: str) -> Principal | None:
        now = self._clock()
        cached = self._cache.get(api_key)
        if cached and cached[0] > now:
            return cached[1]
        try:
            response = await self._http.get(
                "/api/v1/whoami", headers={"authorization": f"Bearer {api_key}"}
            )
        except httpx.TransportError as exc:
            raise HandoffUnavailable(
                f"cannot reach the llmtel API to check the key: {exc}"
            ) from exc
        if response.status_code == 401:
            principal = None
        elif response.status_code == 200:
            principal = Principal.model_validate(response.json())
        else:
            raise HandoffUnavailable(f"key check failed: API answered {response.status_code}")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[api_key] = (now + self._ttl, principal)
        return principal

    async def aclose(self) -> None:
        await self._http.aclose()
