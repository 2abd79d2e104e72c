"""A concurrency limit for provider requests, and the batch helpers built on it.

Every adapter acquires ONE slot around each provider request (not around a batch), so nested
batches cannot multiply the limit, and a parent that waits for its children holds no slot while
it waits: no deadlock however deep the recursion goes.

A `ConcurrencyLimit` is an object, not a process global: a `Runtime` makes one and hands it to
every model it builds, so two runtimes in one process (two servers in a test, a library user
beside the server) never share or reset each other's limit. It keeps one anyio limiter per event
loop, because a limiter cannot be shared between loops.
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

__all__ = ["ConcurrencyLimit", "complete_many", "complete_sync"]


class ConcurrencyLimit:
    """At most `max_concurrency` provider requests in flight among the models that share it."""

    def __init__(self, max_concurrency: int = DEFAULT_MAX_CONCURRENCY) -> None:
        if max_concurrency < 1:
            raise ConfigError(
                f"max concurrency must be >= 1, got {max_concurrency}. Set RLM_MCP_MAX_CONCURRENCY."
            )
        self.max_concurrency = max_concurrency
        self._var: RunVar[anyio.CapacityLimiter] = RunVar(f"rlm_mcp_limit_{id(self):x}")

    def __repr__(self) -> str:
        return f"ConcurrencyLimit({self.max_concurrency})"

    def _limiter(self) -> anyio.CapacityLimiter:
        try:
            return self._var.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.max_concurrency)
            self._var.set(limiter)
            return limiter

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of one provider request."""
        async with self._limiter():
            yield

    def in_flight(self) -> int:
        """Slots held now in this event loop (for tests and diagnostics)."""
        try:
            return int(self._var.get().borrowed_tokens)
        except LookupError:
            return 0


async def complete_many(
    lm: LM, requests: Sequence[Sequence[Message]], **opts: Any
) -> list[Completion]:
    """Run a batch concurrently and return completions in request order.

    The batch itself takes no slot; each request inside takes one, so the models' limit is what
    bounds parallelism. The first failure cancels the rest and propagates.
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
