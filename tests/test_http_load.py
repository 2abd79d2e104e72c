"""16 HTTP clients at once, 50 calls each on their own sessions: no failure and no cross-talk.

The default session limit and eviction used to fail 382 of these 800 calls (warm sessions were
evicted to make room). Latency is reported by `rlm-mcp bench system --only http_load`, never
asserted here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from rlm_mcp.bench.http_load import run_load

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("mode", "calls"), [("auto", 50), ("legacy", 10)])
async def test_sixteen_clients_on_their_own_sessions_never_fail_or_cross(
    serve_http: Callable[..., Any], mode: str, calls: int
) -> None:
    server = serve_http()  # the server's defaults: nothing raised for the test
    with anyio.fail_after(120):
        report = await run_load(server.url, clients=16, calls=calls, mode=mode)
    assert report.failures == []
    assert report.crosstalk == []
    assert len(report.latencies) == 16 * calls
