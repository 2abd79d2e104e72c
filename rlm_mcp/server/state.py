"""Per-server state, the REPL session key, and how failures become tool errors.

The store, the sandbox pool and provider SDK clients are built on first use, so `initialize`
answers before any of them exists; SDK clients are kept for the server's life so their
connection pools are reused across calls, and closed with it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver.exceptions import ToolError

from rlm_mcp.config import Settings
from rlm_mcp.errors import (
    ContextNotFoundError,
    MissingAPIKeyError,
    RLMError,
)

if TYPE_CHECKING:
    from rlm_mcp.lm.base import LM
    from rlm_mcp.sandbox import SessionPool
    from rlm_mcp.store import ContextStore

logger = logging.getLogger("rlm_mcp.server")

#: `(model, sub_model) -> (root LM, sub LM or None)`; tests inject scripted models this way.
LMFactory = Callable[[str | None, str | None], tuple[Any, Any]]

LEGACY_PROTOCOL = "2025-11-25"


@dataclass
class AppState:
    """Everything one server instance owns."""

    settings: Settings
    environ: Mapping[str, str] = field(default_factory=dict)
    store: ContextStore | None = None
    pool: SessionPool | None = None
    lm_factory: LMFactory | None = None
    owned_store: bool = False
    _lms: dict[tuple[str | None, str | None], tuple[Any, Any]] = field(default_factory=dict)

    def get_store(self) -> ContextStore:
        if self.store is None:
            from rlm_mcp.store import ContextStore

            self.store = ContextStore(
                self.settings.store_dir,
                max_bytes=self.settings.max_store_bytes,
                max_age_days=self.settings.max_age_days,
                max_context_bytes=self.settings.max_context_bytes,
                allowed_roots=self.settings.allowed_roots,
            )
            self.owned_store = True
        return self.store

    def get_pool(self) -> SessionPool:
        if self.pool is None:
            from rlm_mcp.sandbox import SandboxLimits, SessionPool

            self.pool = SessionPool(
                limits=SandboxLimits(
                    timeout=self.settings.exec_timeout,
                    max_output_chars=self.settings.max_output_chars,
                    memory_mb=self.settings.worker_memory_mb,
                    max_sub_calls=self.settings.max_sub_calls,
                    max_prompt_chars=self.settings.max_prompt_chars,
                ),
                max_sessions=self.settings.max_sessions,
                idle_seconds=self.settings.session_idle_seconds,
            )
        return self.pool

    def uses_sampling(self) -> bool:
        names = (self.settings.backend, self.settings.sub_backend or "")
        return any(n.strip().lower().startswith("sampling") for n in names)

    def lms(
        self, model: str | None = None, sub_model: str | None = None, *, ctx: Any = None
    ) -> tuple[LM, LM]:
        """(root, sub) models for this request; the sub model falls back to the root.

        Sampling models belong to one request (they talk to its client), so they are never
        kept; API clients are kept per (model, sub_model) for the server's life.
        """
        if self.lm_factory is not None:
            root, sub = self.lm_factory(model, sub_model)
            return root, sub or root
        key = (model, sub_model)
        pair = None if self.uses_sampling() else self._lms.get(key)
        if pair is None:
            from rlm_mcp.backends import build_lms

            pair = build_lms(
                self.settings, environ=self.environ, model=model, sub_model=sub_model, ctx=ctx
            )
            # a sampling model talks to this request's client: never reuse it for another
            if all(getattr(x, "backend", "") != "sampling" for x in pair if x is not None):
                self._lms[key] = pair
        root, sub = pair
        return root, sub or root

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
        seen: set[int] = set()
        for pair in self._lms.values():
            for lm in pair:
                if lm is None or id(lm) in seen:
                    continue
                seen.add(id(lm))
                close = getattr(lm, "aclose", None)
                if close is not None:
                    try:
                        await close()
                    except Exception:  # closing a dead connection pool must not block shutdown
                        logger.warning("closing %s failed", lm, exc_info=True)
        self._lms.clear()
        if self.store is not None and self.owned_store:
            self.store.close()
            self.store = None


def session_key(ctx: Any, name: str | None) -> tuple[str, str]:
    """(pool key, session name to report back) for a `run_repl` call.

    REPL variables must never leak between clients. Legacy (2025-11-25) connections have an
    identity: the `Mcp-Session-Id` header over HTTP, the connection itself over stdio/in-memory;
    the default session is scoped to it. The 2026-07-28 protocol is sessionless: over HTTP a
    call without `session` gets a fresh unguessable session name (returned in the result, the
    client passes it back), and named sessions are scoped by the bearer token, so a name is
    shared only by clients that choose to share it. Over stdio one process is one client.
    """
    headers = getattr(ctx, "headers", None) or {}
    token = str(headers.get("authorization", ""))
    scope = f"{hash(token) & 0xFFFFFFFF:x}"
    if getattr(ctx, "protocol_version", None) == LEGACY_PROTOCOL:
        conn = headers.get("mcp-session-id")
        if not conn:
            session = getattr(ctx, "session", None)
            conn = f"{id(getattr(session, '_connection', session)):x}"
        scope = f"{scope}:{conn}"
    elif headers and name is None:
        name = f"s_{secrets.token_hex(8)}"
    name = name or "default"
    return f"{scope}:{name}", name


def explain(exc: RLMError) -> str:
    """A domain error as text that tells the model (or its user) what to do next."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc, ContextNotFoundError):
        return text if "list_contexts" in text else f"{text}; call list_contexts to see handles"
    if isinstance(exc, MissingAPIKeyError) and exc.provider == "any provider":
        return (
            "No model is configured and this client cannot sample (it needs the 2025-11-25 "
            "protocol and sampling support). Put OPENAI_API_KEY or ANTHROPIC_API_KEY in the "
            "\"env\" block of this server's entry in the MCP client's config (clients do not "
            "pass your shell's environment), or set RLM_MCP_BACKEND (e.g. ollama) and "
            "RLM_MCP_MODEL there."
        )
    if isinstance(exc, MissingAPIKeyError):
        return (
            f'No API key for {exc.provider}: put {exc.env_var} in the "env" block of this '
            "server's entry in the MCP client's config (clients do not pass your shell's "
            "environment), or set RLM_MCP_BACKEND=sampling there to use the client's own model."
        )
    return str(exc)


@contextmanager
def tool_errors(tool: str) -> Iterator[None]:
    """Every failure inside a tool becomes a readable `is_error` result, never a traceback.

    Domain errors keep their message. Anything else is a bug of ours: it is logged with its
    traceback on the server's stderr and the model gets one line saying so; the server stays up.
    Cancellation is a BaseException and passes through untouched.
    """
    try:
        yield
    except ToolError:
        raise
    except RLMError as exc:
        raise ToolError(explain(exc)) from None
    except Exception as exc:
        logger.exception("tool %s failed", tool)
        raise ToolError(
            f"{tool} failed unexpectedly ({type(exc).__name__}: {exc}). The server is still "
            "running; this is a bug in rlm-mcp (the server log on stderr has the traceback)."
        ) from None
