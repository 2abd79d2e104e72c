"""The HTTP client both SDK adapters hand to their SDK: a pool that holds as many idle connections
as the concurrency limit, and each request written to the socket in one piece.

Why one piece: httpcore writes a request's headers and its body with separate socket writes, and
anyio yields to the event loop after each. In a batch, the other calls' response handling runs in
that gap, and the provider, which waits for the body, starts late; when the provider is on the
same machine (Ollama, vLLM, the fake provider) the first write also wakes it, and a loaded machine
often deschedules us before the second. Measured in the fan-out benchmark's setting (64 calls,
limit 16, 100 ms; both clients in one process, on a loaded 2-core machine) the gap from starting
the headers to sending the body had a median of ~10 ms and a p90 of 30-55 ms, and one write took
the median batched/ideal ratio from 1.60 to 1.38. HTTP/1.1 sends a whole request before it reads
the answer, so holding writes until the connection's first read changes nothing else.

We use only what the SDKs document for configuring HTTP (`DefaultAsyncHttpxClient(transport=...)`)
plus one private attribute of httpx's transport (its pool's network backend). If an SDK version
moves away from that stack, `sdk_http_client` returns None and the SDK builds its own client.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["CoalescingBackend", "CoalescingStream", "sdk_http_client"]

logger = logging.getLogger(__name__)

#: The SDKs' own defaults (openai/anthropic `_constants.DEFAULT_CONNECTION_LIMITS`).
SDK_MAX_CONNECTIONS = 1000
SDK_MAX_KEEPALIVE = 100


class CoalescingStream:
    """An httpcore network stream that sends buffered writes in one write before each read."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._pending: list[bytes] = []

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)

    async def flush(self, timeout: float | None = None) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            await self._inner.write(data, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self.flush(timeout)
        data: bytes = await self._inner.read(max_bytes, timeout)
        return data

    async def aclose(self) -> None:
        self._pending.clear()
        await self._inner.aclose()

    async def start_tls(self, *args: Any, **kwargs: Any) -> CoalescingStream:
        await self.flush(kwargs.get("timeout"))
        return CoalescingStream(await self._inner.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class CoalescingBackend:
    """An httpcore network backend whose streams are `CoalescingStream`s."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> CoalescingStream:
        return CoalescingStream(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> CoalescingStream:
        return CoalescingStream(await self._inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def sdk_http_client(sdk: Any, *, max_concurrency: int) -> Any | None:
    """An async HTTP client for `sdk` (the imported `openai` or `anthropic` module), or None.

    The keep-alive pool holds at least `max_concurrency` connections, so a full batch never
    closes and reopens connections (the SDK default keeps 100).
    """
    factory = getattr(sdk, "DefaultAsyncHttpxClient", None)
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - an SDK on another HTTP stack
        return None
    if not (isinstance(factory, type) and issubclass(factory, httpx.AsyncClient)):
        return None  # pragma: no cover - an SDK on another HTTP stack
    limits = httpx.Limits(
        max_connections=max(SDK_MAX_CONNECTIONS, max_concurrency),
        max_keepalive_connections=max(SDK_MAX_KEEPALIVE, max_concurrency),
    )
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = CoalescingBackend(backend)  # type: ignore[union-attr]
    else:  # pragma: no cover - httpx internals moved; the pool sizing still applies
        logger.debug("httpx transport has no pool backend; requests are not coalesced")
    return factory(transport=transport, limits=limits)
