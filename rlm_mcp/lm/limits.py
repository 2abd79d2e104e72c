"""The process-wide concurrency limit and the batch helpers built on it.

Every adapter acquires ONE slot around each provider request (not around a batch), so nested
batches cannot multiply the limit, and a parent that waits for its children holds no slot while
it waits: no deadlock however deep the recursion goes. The limiter is per event loop (an anyio
RunVar) because a limiter cannot be shared between loops; all loops read the same maximum.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from rlm_mcp.config import DEFAULT_MAX_CONCURRENCY
from rlm_mcp.errors import ConfigError
from rlm_mcp.lm.base import LM, Completion, Message

__all__ = [
    "complete_many",
    "complete_sync",
    "get_max_concurrency",
    "provider_slot",
    "set_max_concurrency",
]

_max_concurrency = DEFAULT_MAX_CONCURRENCY
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("rlm_mcp_lm_limiter")


def set_max_concurrency(n: int) -> None:
    """Set how many provider requests may be in flight at once in this process."""
    global _max_concurrency
    if n < 1:
        raise ConfigError(f"max concurrency must be >= 1, got {n}. Set RLM_MCP_MAX_CONCURRENCY.")
    _max_concurrency = n


def get_max_concurrency() -> int:
    return _max_concurrency


def _current_limiter() -> anyio.CapacityLimiter:
    try:
        limiter = _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(_max_concurrency)
        _limiter.set(limiter)
    if limiter.total_tokens != _max_concurrency:
        limiter.total_tokens = _max_concurrency
    return limiter


@asynccontextmanager
async def provider_slot() -> AsyncIterator[None]:
    """Hold one slot of the process-wide limit for the duration of one provider request."""
    async with _current_limiter():
        yield


def in_flight() -> int:
    """Slots currently held in this event loop (for tests and diagnostics)."""
    try:
        return int(_limiter.get().borrowed_tokens)
    except LookupError:
        return 0


async def complete_many(
    lm: LM, requests: Sequence[Sequence[Message]], **opts: Any
) -> list[Completion]:
    """Run a batch concurrently and return completions in request order.

    The batch itself takes no slot; each request inside takes one, so the process-wide limit is
    what bounds parallelism. The first failure cancels the rest and propagates.
    """
    results: list[Completion | None] = [None] * len(requests)
    errors: list[Exception] = []

    async with anyio.create_task_group() as tg:

        async def one(i: int, messages: Sequence[Message]) -> None:
            try:
                results[i] = await lm.complete(messages, **opts)
            except Exception as exc:  # first failure wins; raised plainly, not as a group
                errors.append(exc)
                tg.cancel_scope.cancel()

        for i, messages in enumerate(requests):
            tg.start_soon(one, i, messages)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def complete_sync(lm: LM, messages: Sequence[Message], **opts: Any) -> Completion:
    """Blocking form of `lm.complete` for scripts and the CLI (runs its own event loop)."""

    async def run() -> Completion:
        try:
            return await lm.complete(messages, **opts)
        finally:  # SDK clients are bound to this loop, which ends here
            closer = getattr(lm, "aclose", None)
            if closer is not None:
                await closer()

    return anyio.run(run)
