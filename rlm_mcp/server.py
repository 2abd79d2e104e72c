"""The MCP server: contexts and a sandboxed REPL as MCP tools and resources.

Everything heavy (the store's diskcache, the sandbox pool) is created lazily on the first tool
call so that ``initialize`` answers fast; only ``mcp`` and pydantic are imported at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from rlm_mcp.config import Settings
from rlm_mcp.errors import ContextNotFoundError, RLMError

if TYPE_CHECKING:
    from rlm_mcp.sandbox import SessionPool
    from rlm_mcp.store import ContextInfo, ContextStore

logger = logging.getLogger(__name__)

PREVIEW_CHARS = 300
MAX_RANGE_CHARS = 100_000


class ContextSummary(BaseModel):
    """A stored context as the model sees it."""

    handle: str
    name: str | None
    chars: int
    lines: int
    documents: int
    source: str
    preview: str = ""


class CompleteResult(BaseModel):
    answer: str
    iterations: int
    stop_reason: str
    usage: dict[str, Any]
    trajectory: str | None = None


class QueryResult(BaseModel):
    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None


class ContextList(BaseModel):
    contexts: list[ContextSummary]


class Deleted(BaseModel):
    handle: str
    deleted: bool


class ReplVariable(BaseModel):
    name: str
    type: str
    summary: str


class ReplResult(BaseModel):
    status: str
    output: str
    error: str | None = None
    variables: list[ReplVariable] = []
    truncated: bool = False
    reset: bool = False
    final: str | None = None
    sub_calls: int = 0


@dataclass
class AppState:
    """Per-server state; the store and pool are built on first use."""

    settings: Settings
    store: ContextStore | None = None
    pool: SessionPool | None = None
    owned_store: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def get_store(self) -> ContextStore:
        if self.store is None:
            from rlm_mcp.store import ContextStore

            self.store = ContextStore(
                self.settings.store_dir,
                max_bytes=self.settings.max_store_bytes,
                max_age_days=self.settings.max_age_days,
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
                ),
                max_sessions=self.settings.max_sessions,
                idle_seconds=self.settings.session_idle_seconds,
            )
        return self.pool

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
        if self.store is not None and self.owned_store:
            self.store.close()
            self.store = None


def _summary(info: ContextInfo, preview: str = "") -> ContextSummary:
    return ContextSummary(
        handle=info.handle,
        name=info.name,
        chars=info.chars,
        lines=info.lines,
        documents=len(info.documents),
        source=info.source,
        preview=preview,
    )


def _tool_error(exc: Exception) -> ToolError:
    """A domain error as text that tells the model what to do next."""
    if isinstance(exc, ContextNotFoundError):
        return ToolError(f"{exc.args[0] if exc.args else exc}; call list_contexts to see handles")
    return ToolError(str(exc))


def session_key(ctx: Context[Any], name: str) -> str:
    """Pool key isolating REPL state per client connection.

    Legacy (2025-11-25) connections: the ServerSession's connection identity (one per stdio process,
    one per Mcp-Session-Id over HTTP). The 2026-07-28 era is sessionless (a new session object
    per request), so the key is the bearer token plus the client-chosen session name: clients
    sharing a token and a name share variables; pick a unique name for isolation.
    """
    token = ""
    headers = getattr(ctx, "headers", None)
    if headers:
        token = str(headers.get("authorization", ""))[-12:]
    conn = ""
    if getattr(ctx, "protocol_version", None) == "2025-11-25":
        # the ServerSession object is per request; its connection lives as long as the client
        sess = getattr(ctx, "session", None)
        conn = f"{id(getattr(sess, '_connection', sess)):x}"
    return f"{conn}:{hash(token) & 0xFFFFFFFF:x}:{name}"


LMFactory = Callable[[str | None, str | None], tuple[Any, Any]]


def build_server(
    settings: Settings | None = None,
    *,
    store: ContextStore | None = None,
    lm_factory: LMFactory | None = None,
    environ: Mapping[str, str] | None = None,
) -> MCPServer:
    """The rlm-mcp MCPServer; pass `store` to share an existing ContextStore (tests)."""
    settings = settings if settings is not None else Settings()

    # one state per server so static resources (which get no Context) can reach the store
    state = AppState(settings=settings, store=store)

    @asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[AppState]:
        try:
            yield state
        finally:
            await state.aclose()

    mcp = MCPServer(
        "rlm-mcp",
        instructions=(
            "Load huge inputs with load_context (returns a handle), then explore them with "
            "run_repl: Python where `context` is the text."
        ),
        lifespan=lifespan,
    )

    def state_of(ctx: Context[Any]) -> AppState:
        return ctx.request_context.lifespan_context  # type: ignore[no-any-return]

    @mcp.tool(
        description=(
            "Store text, or a file/directory/glob on the server's machine, as a context. "
            "Give exactly one of text or path. Returns a handle for run_repl and a preview."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def load_context(
        ctx: Context[Any],
        text: str | None = None,
        path: str | None = None,
        name: str | None = None,
    ) -> ContextSummary:
        import anyio

        if (text is None) == (path is None):
            raise ToolError("give exactly one of text or path")
        st = state_of(ctx).get_store()
        try:
            if text is not None:
                info = await anyio.to_thread.run_sync(lambda: st.load_text(text, name=name))
            else:
                assert path is not None
                info = await anyio.to_thread.run_sync(lambda: st.load_path(path, name=name))
            preview = await anyio.to_thread.run_sync(
                lambda: st.preview(info.handle, head=PREVIEW_CHARS // 2, tail=PREVIEW_CHARS // 2)
            )
        except RLMError as exc:
            raise _tool_error(exc) from None
        return _summary(info, preview)

    @mcp.tool(
        description="List stored contexts (handle, name, size).",
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def list_contexts(ctx: Context[Any]) -> ContextList:
        import anyio

        st = state_of(ctx).get_store()
        infos = await anyio.to_thread.run_sync(st.list)
        return ContextList(contexts=[_summary(i) for i in infos])

    @mcp.tool(
        description="Delete a stored context by handle or name.",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def delete_context(handle: str, ctx: Context[Any]) -> Deleted:
        import anyio

        st = state_of(ctx).get_store()
        ok = await anyio.to_thread.run_sync(lambda: st.delete(handle))
        if not ok:
            raise ToolError(f"unknown handle {handle}; call list_contexts to see handles")
        return Deleted(handle=handle, deleted=True)

    @mcp.tool(
        description=(
            "Run Python in a persistent sandbox session. With handle, `context` is that text. "
            "Use print() to see results; variables persist per session name."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, idempotent_hint=False, open_world_hint=False
        ),
    )
    async def run_repl(
        code: str, ctx: Context[Any], handle: str | None = None, session: str = "default"
    ) -> ReplResult:
        import anyio

        from rlm_mcp.sandbox import ContextSpec

        state = state_of(ctx)
        spec = None
        if handle is not None:
            st = state.get_store()
            try:
                info = await anyio.to_thread.run_sync(lambda: st.info(handle))
                path = await anyio.to_thread.run_sync(lambda: st.text_path(info.handle))
            except RLMError as exc:
                raise _tool_error(exc) from None
            spec = ContextSpec(
                path=path, documents=[(d.path, d.start, d.length) for d in info.documents]
            )
        try:
            sess = await state.get_pool().get(session_key(ctx, session), context=spec)
            res = await sess.execute(code)
        except RLMError as exc:
            raise _tool_error(exc) from None
        err = None if res.error is None else f"{res.error.type}: {res.error.message}"
        return ReplResult(
            status=res.status,
            output=res.output,
            error=err,
            variables=[
                ReplVariable(name=v.name, type=v.type, summary=v.summary) for v in res.variables
            ],
            truncated=res.truncated,
            reset=res.reset,
            final=None if res.final is None else res.final.value,
            sub_calls=res.sub_calls,
        )

    def make_lms(model: str | None, sub_model: str | None) -> tuple[Any, Any]:
        if lm_factory is not None:
            return lm_factory(model, sub_model)
        from rlm_mcp.lm import resolve_lm

        env = dict(environ or {})
        lm = resolve_lm(settings.backend, environ=env, model_name=model or settings.model)
        sub = None
        if settings.sub_backend or settings.sub_model or sub_model:
            sub = resolve_lm(
                settings.sub_backend or settings.backend,
                environ=env,
                model_name=sub_model or settings.sub_model or model or settings.model,
            )
        return lm, sub

    @mcp.tool(
        description=(
            "Answer a question about a large context with the recursive LM loop (a root model "
            "writes REPL code and calls sub-models). Give handle or text. Sends progress."
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def rlm_complete(
        query: str,
        ctx: Context[Any],
        handle: str | None = None,
        text: str | None = None,
        max_iterations: int | None = None,
        max_depth: int | None = None,
        model: str | None = None,
        sub_model: str | None = None,
    ) -> CompleteResult:
        from rlm_mcp.rlm import RLM

        if (handle is None) == (text is None):
            raise ToolError("give exactly one of handle or text")
        steps = 0

        async def on_event(event: Any) -> None:
            nonlocal steps
            if event.kind in ("iteration_finished", "subcall_finished", "run_finished"):
                steps += 1
                await ctx.report_progress(steps, None, f"{event.kind}: {event.message}"[:200])

        try:
            lm, sub_lm = make_lms(model, sub_model)
            rlm = RLM(
                lm=lm,
                sub_lm=sub_lm,
                max_iterations=max_iterations or settings.max_iterations,
                max_depth=max_depth or settings.max_depth,
                store=state.get_store() if handle is not None else None,
                log_dir=settings.trajectory_dir,
                on_event=on_event,
            )
            result = await rlm.acompletion(
                handle if handle is not None else text, root_prompt=query
            )
        except RLMError as exc:
            raise _tool_error(exc) from None
        return CompleteResult(
            answer=str(result.response),
            iterations=result.iterations,
            stop_reason=str(result.stop_reason),
            usage=result.usage.to_dict(),
            trajectory=None if result.trajectory_path is None else str(result.trajectory_path),
        )

    @mcp.tool(
        description=(
            "One sub-model call. With handle, the slice context[start:end] (capped) is "
            "appended to the prompt."
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def llm_query(
        prompt: str,
        ctx: Context[Any],
        handle: str | None = None,
        start: int | None = None,
        end: int | None = None,
        model: str | None = None,
    ) -> QueryResult:
        import anyio

        from rlm_mcp.lm.base import Message

        try:
            if handle is not None:
                st = state.get_store()
                s0 = start or 0
                length = MAX_RANGE_CHARS if end is None else max(0, min(end - s0, MAX_RANGE_CHARS))
                piece = await anyio.to_thread.run_sync(
                    lambda: st.read(handle, start=s0, length=length)
                )
                prompt = f"{prompt}\n\n{piece}"
            root, sub = make_lms(model, model)
            lm = sub if sub is not None else root
            done = await lm.complete([Message(role="user", content=prompt)])
        except RLMError as exc:
            raise _tool_error(exc) from None
        usage = done.usage
        return QueryResult(
            text=done.text,
            model=str(lm.model),
            input_tokens=getattr(usage, "input_tokens", None),
            output_tokens=getattr(usage, "output_tokens", None),
        )

    @mcp.resource("rlm://contexts", mime_type="application/json")
    async def contexts_resource() -> str:
        import anyio

        st = state.get_store()
        infos = await anyio.to_thread.run_sync(st.list)
        return ContextList(contexts=[_summary(i) for i in infos]).model_dump_json()

    @mcp.resource("rlm://contexts/{handle}", mime_type="application/json")
    async def context_resource(handle: str, ctx: Context) -> str:
        import anyio

        st = state_of(ctx).get_store()
        try:
            info = await anyio.to_thread.run_sync(lambda: st.info(handle))
            preview = await anyio.to_thread.run_sync(lambda: st.preview(info.handle))
        except RLMError as exc:
            raise _tool_error(exc) from None
        return _summary(info, preview).model_dump_json()

    @mcp.resource("rlm://contexts/{handle}/chars/{start}-{end}", mime_type="text/plain")
    async def context_range(handle: str, start: int, end: int, ctx: Context) -> str:
        import anyio

        st = state_of(ctx).get_store()
        length = max(0, min(int(end) - int(start), MAX_RANGE_CHARS))
        try:
            return await anyio.to_thread.run_sync(
                lambda: st.read(handle, start=int(start), length=length)
            )
        except RLMError as exc:
            raise _tool_error(exc) from None

    return mcp


def _require_token(app: Any, token: str) -> Any:
    """Wrap an ASGI app so every HTTP request must carry `Authorization: Bearer <token>`."""
    import hmac

    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"missing or wrong bearer token (RLM_MCP_TOKEN)",
                    }
                )
                return
        await app(scope, receive, send)

    return guarded


def http_app(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """The streamable-HTTP ASGI app: DNS-rebinding protection always on, token when set."""
    from mcp.server.transport_security import TransportSecuritySettings

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not settings.token:
        raise ValueError(f"binding to {host} needs RLM_MCP_TOKEN set; or bind 127.0.0.1")
    hosts = [f"{host}:{port}", host, f"127.0.0.1:{port}", f"localhost:{port}"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )
    app = build_server(settings, environ=environ).streamable_http_app(transport_security=security)
    return _require_token(app, settings.token) if settings.token else app


def serve(
    settings: Settings,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is stopped (HTTP)."""
    if transport == "stdio":
        build_server(settings, environ=environ).run()
        return
    import uvicorn

    try:
        app = http_app(settings, host=host, port=port, environ=environ)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    uvicorn.run(app, host=host, port=port, log_level="warning")
