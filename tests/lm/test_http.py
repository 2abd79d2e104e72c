"""The HTTP client the SDK adapters use: requests in one write, a pool sized to the limit."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from rlm_mcp.lm import ConcurrencyLimit, Message, resolve_lm
from rlm_mcp.lm._http import (
    SDK_MAX_KEEPALIVE,
    CoalescingBackend,
    CoalescingStream,
    sdk_http_client,
)
from rlm_mcp.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.anyio


class RecordingStream:
    """An httpcore-style network stream that records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.tls_args: tuple[Any, ...] = ()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writes.append(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b"HTTP/1.1 200 OK\r\n"

    async def aclose(self) -> None:
        self.closed = True

    async def start_tls(self, *args: Any, **kwargs: Any) -> RecordingStream:
        self.tls_args = args
        return self

    def get_extra_info(self, info: str) -> Any:
        return f"info:{info}"


async def test_headers_and_body_reach_the_socket_in_one_write_before_the_first_read() -> None:
    inner = RecordingStream()
    stream = CoalescingStream(inner)
    await stream.write(b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
    await stream.write(b"{}")
    await stream.write(b"")  # h11's end of a content-length body
    assert inner.writes == []
    assert await stream.read(65536) == b"HTTP/1.1 200 OK\r\n"
    assert inner.writes == [b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"]
    await stream.read(65536)  # nothing pending: no empty write
    assert len(inner.writes) == 1


async def test_tls_upgrade_flushes_first_and_close_drops_what_was_never_sent() -> None:
    inner = RecordingStream()
    stream = CoalescingStream(inner)
    await stream.write(b"CONNECT api.example:443 HTTP/1.1\r\n\r\n")
    upgraded = await stream.start_tls("ssl-context", timeout=1.0)
    assert inner.writes == [b"CONNECT api.example:443 HTTP/1.1\r\n\r\n"]
    assert isinstance(upgraded, CoalescingStream)
    assert upgraded.get_extra_info("is_readable") == "info:is_readable"
    await upgraded.write(b"unsent")
    await upgraded.aclose()
    assert inner.closed and inner.writes == [b"CONNECT api.example:443 HTTP/1.1\r\n\r\n"]


async def test_the_backend_wraps_every_stream_it_opens() -> None:
    class Backend:
        async def connect_tcp(self, *args: Any, **kwargs: Any) -> RecordingStream:
            return RecordingStream()

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> RecordingStream:
            return RecordingStream()

        async def sleep(self, seconds: float) -> None:
            await anyio.sleep(seconds)

    backend = CoalescingBackend(Backend())
    assert isinstance(await backend.connect_tcp("127.0.0.1", 80), CoalescingStream)
    assert isinstance(await backend.connect_unix_socket("/tmp/x.sock"), CoalescingStream)
    await backend.sleep(0)


@pytest.mark.parametrize("sdk_name", ["openai", "anthropic"])
async def test_the_sdk_client_keeps_alive_at_least_max_concurrency_connections(
    sdk_name: str,
) -> None:
    import importlib

    sdk = importlib.import_module(sdk_name)
    client = sdk_http_client(sdk, max_concurrency=250)
    try:
        pool = client._transport._pool
        assert pool._max_keepalive_connections == 250
        assert pool._max_connections >= 250
        assert isinstance(pool._network_backend, CoalescingBackend)
    finally:
        await client.aclose()
    small = sdk_http_client(sdk, max_concurrency=4)
    try:  # never fewer than the SDK's own default
        assert small._transport._pool._max_keepalive_connections == SDK_MAX_KEEPALIVE
    finally:
        await small.aclose()


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
async def test_adapters_build_their_sdk_client_on_it_sized_to_their_limit(
    backend: str,
) -> None:
    with FakeProvider(["hi"]) as fake:
        base = fake.openai_base_url if backend == "openai" else fake.anthropic_base_url
        lm = resolve_lm(
            backend,
            model_name="m",
            api_key="k",
            base_url=base,
            max_retries=0,
            limit=ConcurrencyLimit(300),
        )
        try:
            with anyio.fail_after(10):
                comp = await lm.complete([Message("user", "x")])
            pool = lm._client._client._transport._pool  # type: ignore[attr-defined]
            assert pool._max_keepalive_connections == 300
            assert isinstance(pool._network_backend, CoalescingBackend)
        finally:
            await lm.aclose()  # type: ignore[attr-defined]
    assert comp.text == "hi"
    (req,) = fake.requests
    assert req.json["messages"] == [{"role": "user", "content": "x"}]
