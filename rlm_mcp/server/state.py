"""What one server owns (a Runtime, the session handles), the one context resolver, and how
failures become tool errors.

The store, the sandbox pool and provider SDK clients are built by the Runtime on first use, so
`initialize` answers before any of them exists.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.mcpserver.exceptions import ToolError

from rlm_mcp.errors import (
    ArgumentError,
    ContextNotFoundError,
    MissingAPIKeyError,
    RLMError,
)
from rlm_mcp.runtime import LMFactory, Runtime
from rlm_mcp.server.identity import Caller, SessionKey, SessionRegistry, caller_of
from rlm_mcp.server.runs import RunRegistry
from rlm_mcp.text import clean_text

if TYPE_CHECKING:
    from rlm_mcp.store import ContextInfo, ContextStore

__all__ = ["AppState", "LMFactory", "explain", "one_line", "tool_errors"]

logger = logging.getLogger("rlm_mcp.server")

#: A tool error is one line of at most this many characters.
MAX_ERROR_CHARS = 1_000
_SPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` on one line, cut at `limit` characters with a marker."""
    flat = _SPACE.sub(" ", clean_text(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 12] + " [... cut]"


@dataclass
class AppState:
    """Everything one server instance owns."""

    runtime: Runtime
    sessions: SessionRegistry = field(init=False)
    runs: RunRegistry = field(init=False)

    def __post_init__(self) -> None:
        s = self.runtime.settings
        self.sessions = SessionRegistry(
            s.session_idle_seconds, shared=bool(s.stateless or s.ray_address)
        )
        # with a shared bucket, a run's follow-up may reach another replica and continue there
        self.runs = RunRegistry(
            s.session_idle_seconds, records=self.runtime.store if s.store else None
        )

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    def caller(self, ctx: Any) -> Caller:
        return caller_of(
            ctx,
            self.runtime.tokens(),
            on_connection_end=self.connection_ended,
            stateless=self.runtime.settings.stateless,
        )

    async def connection_ended(self, connection: str) -> None:
        """A legacy MCP session ended: its sandbox sessions end with it (on the cluster too,
        where they would otherwise live on until they idle out)."""
        pool = self.runtime.started_repl_pool
        if pool is None:
            return
        for key in pool.live_keys():
            if isinstance(key, SessionKey) and key.kind == "connection" and key.scope == connection:
                await pool.close(key)

    def store_for(self, caller: Caller) -> ContextStore:
        """The caller's view of the store: a tenant sees only what it loaded."""
        store = self.runtime.store()
        if caller.tenant is None:
            return store
        return store.for_tenant(caller.tenant)

    async def resolve(self, caller: Caller, ref: str) -> tuple[ContextStore, ContextInfo]:
        """The one way every tool and resource turns a handle or a name into a context.

        `ctx_...` is only ever a handle and anything else only ever a name (names can never
        take handle form), looked up in the caller's own view of the store.
        """
        if not ref or not ref.strip():
            raise ArgumentError(
                "handle is empty: send a handle (ctx_...) or a name from list_contexts."
            )
        if clean_text(ref) != ref:
            raise ArgumentError(
                "handle holds an invalid character (a lone surrogate): send a handle (ctx_...) "
                "or a name from list_contexts."
            )
        store = self.store_for(caller)
        info = await anyio.to_thread.run_sync(lambda: store.info(ref))
        return store, info

    @asynccontextmanager
    async def pinned(self, store: ContextStore | None, handle: str | None) -> AsyncIterator[None]:
        """Keep `handle` from eviction while a session uses it (no-op without a handle)."""
        if store is None or handle is None:
            yield
            return
        token = await anyio.to_thread.run_sync(lambda: store.pin(handle))
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: store.unpin(token))

    def run_sandboxes(self, caller: Caller) -> Any:
        """Where an rlm_complete run (and its child runs) gets sandboxes: leased from the pool
        under the caller's share, so runs count against the session limit and tenant quotas."""
        pool = self.runtime.pool()
        run = secrets.token_hex(8)
        count = itertools.count()

        @asynccontextmanager
        async def leased(spec: Any, sub_calls: Any) -> AsyncIterator[Any]:
            key = SessionKey("run", caller.tenant, run, str(next(count)))
            try:
                async with pool.lease(
                    key, owner=caller.owner, context=spec, sub_calls=sub_calls, run_slot=False
                ) as session:
                    yield session
            finally:
                with anyio.CancelScope(shield=True):
                    await pool.close(key)

        return leased

    def run_root(self, caller: Caller, run_id: str) -> Any:
        """The root sandbox of a continuable run: a pool session keyed by its run_id, leased for
        each turn and left in the pool between turns as a spare (the first closed when another
        session needs room, so finished runs never lock anyone out; idle expiry closes it too)."""
        pool = self.runtime.pool()
        key = SessionKey("run", caller.tenant, run_id, "root")

        @asynccontextmanager
        async def kept(spec: Any, sub_calls: Any) -> AsyncIterator[Any]:
            async with pool.lease(
                key,
                owner=caller.owner,
                context=spec,
                sub_calls=sub_calls,
                run_slot=False,
                spare=True,
            ) as session:
                yield session

        return kept

    def trajectory_dir(self, caller: Caller) -> Path:
        """Where the caller's runs are written and listed: each tenant has its own folder."""
        base = Path(self.settings.trajectory_dir)
        return base if caller.tenant is None else base / "tenants" / caller.tenant

    async def aclose(self) -> None:
        await self.runtime.aclose()


def explain(exc: RLMError) -> str:
    """A domain error as one line that tells the model (or its user) what to do next."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc, ContextNotFoundError):
        text = text if "list_contexts" in text else f"{text}; call list_contexts to see handles"
    elif isinstance(exc, MissingAPIKeyError) and exc.provider == "any provider":
        text = (
            "No model is configured and this client cannot sample. Any one of: put "
            'OPENAI_API_KEY or ANTHROPIC_API_KEY in the "env" block of this server\'s entry in '
            "the MCP client's config (clients do not pass your shell's environment); install and "
            "log in to an agent CLI (claude, codex or gemini) on the PATH the server sees; point "
            "OPENAI_BASE_URL at a local OpenAI-compatible server (or set RLM_MCP_BACKEND, e.g. "
            "ollama, and RLM_MCP_MODEL there); or use a client that offers sampling."
        )
    elif isinstance(exc, MissingAPIKeyError):
        text = (
            f'No API key for {exc.provider}: put {exc.env_var} in the "env" block of this '
            "server's entry in the MCP client's config (clients do not pass your shell's "
            "environment), or set RLM_MCP_BACKEND=sampling there to use the client's own model."
        )
    return one_line(text)


@contextmanager
def tool_errors(tool: str) -> Iterator[None]:
    """Every failure inside a tool becomes a readable one-line `is_error` result, never a
    traceback.

    Domain errors keep their message. Anything else is a bug of ours: it is logged with its
    traceback on the server's stderr and the model gets one line saying so; the server stays up.
    Cancellation is a BaseException and passes through untouched.
    """
    try:
        yield
    except ToolError as exc:
        raise ToolError(one_line(str(exc))) from None
    except RLMError as exc:
        raise ToolError(explain(exc)) from None
    except Exception as exc:
        logger.exception("tool %s failed", tool)
        raise ToolError(
            one_line(
                f"failed unexpectedly ({type(exc).__name__}: {exc}). The server is still "
                "running; this is a bug in rlm-mcp (the server log on stderr has the traceback)."
            )
        ) from None
