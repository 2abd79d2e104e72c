"""The six tools. Each validates, delegates to the store/sandbox/loop, and reports progress.

Descriptions are written for a model that has never seen this server: what the tool is for,
which arguments go together, and what to call next.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from rlm_mcp.errors import ConfigError, RLMError
from rlm_mcp.server.models import (
    CompleteResult,
    ContextList,
    ContextSummary,
    Deleted,
    QueryResult,
    ReplResult,
    ReplVariable,
)
from rlm_mcp.server.state import AppState, explain, session_key, tool_errors

PREVIEW_CHARS = 300
MAX_RANGE_CHARS = 100_000
#: load_context progress is reported at most this often (fraction of the input).
PROGRESS_STEP = 0.02


def summary_of(info: Any, preview: str = "") -> ContextSummary:
    return ContextSummary(
        handle=info.handle,
        name=info.name,
        chars=info.chars,
        lines=info.lines,
        documents=len(info.documents),
        source=info.source,
        preview=preview,
        replaced=info.replaced,
    )


class ReplSubCalls:
    """`llm_query` inside run_repl: the sub model is resolved on the first call only.

    Code that never calls llm_query needs no provider key; code that does gets the missing-key
    message as a RuntimeError it can print. Usage goes into this call's own tracker so the
    result can report exactly what this run_repl spent.
    """

    def __init__(self, state: AppState, ctx: Context[Any]) -> None:
        from rlm_mcp.lm.usage import UsageTracker

        self.state = state
        self.ctx = ctx
        self.tracker = UsageTracker()
        self.calls = 0
        self._router: Any = None

    async def _progress(self, event: Any) -> None:
        if event.kind == "subcall_finished":
            self.calls += 1
            await self.ctx.report_progress(self.calls, None, event.message[:200])

    async def __call__(self, prompts: Sequence[str], *, model: str | None = None) -> list[str]:
        if self._router is None:
            from rlm_mcp.subcalls import SubCallRouter

            try:
                _, sub = self.state.lms(ctx=self.ctx)
            except RLMError as exc:  # the code sees the same advice as a tool error would give
                raise ConfigError(explain(exc)) from exc
            self._router = SubCallRouter(
                sub,
                self.tracker,
                path=("run_repl",),
                on_event=self._progress,
                max_prompt_chars=self.state.settings.max_prompt_chars,
            )
        texts: list[str] = await self._router(prompts, model=model)
        return texts


def register_tools(mcp: MCPServer, state: AppState) -> None:
    """Add load_context, list_contexts, delete_context, run_repl, rlm_complete, llm_query."""
    settings = state.settings

    @mcp.tool(
        description=(
            "Store a large input so it never has to enter your context window. Give exactly one "
            "of `text` (the content itself) or `path` (a file, directory or glob on the server's "
            "machine; directories become several documents, binary files are skipped). Returns "
            "a handle (ctx_...) for run_repl/rlm_complete, the size and a short preview. Loading "
            "the same content again returns the same handle."
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
        if (text is None) == (path is None):
            raise ToolError("give exactly one of text or path")
        st = state.get_store()
        with tool_errors("load_context"):
            if text is not None:
                info = await anyio.to_thread.run_sync(lambda: st.load_text(text, name=name))
            else:
                assert path is not None
                info = await _load_path_with_progress(st, path, name, ctx)
            preview = await anyio.to_thread.run_sync(
                lambda: st.preview(info.handle, head=PREVIEW_CHARS // 2, tail=PREVIEW_CHARS // 2)
            )
        return summary_of(info, preview)

    @mcp.tool(
        description="List the stored contexts: handle, name, size in characters/lines/documents.",
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def list_contexts(ctx: Context[Any]) -> ContextList:
        st = state.get_store()
        with tool_errors("list_contexts"):
            infos = await anyio.to_thread.run_sync(st.list)
        return ContextList(contexts=[summary_of(i) for i in infos])

    @mcp.tool(
        description="Delete a stored context by handle or name. It cannot be undone.",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def delete_context(handle: str, ctx: Context[Any]) -> Deleted:
        st = state.get_store()
        with tool_errors("delete_context"):
            ok = await anyio.to_thread.run_sync(lambda: st.delete(handle))
        if not ok:
            raise ToolError(f"unknown handle {handle}; call list_contexts to see the handles")
        return Deleted(handle=handle, deleted=True)

    @mcp.tool(
        description=(
            "Run Python in a sandboxed, persistent REPL. With `handle`, the variable `context` "
            "holds that stored text (str; `documents` lists (name, start, length) for "
            "directories; document(name) gives one file). print() what you want to see; "
            "output is cut when long, so print slices, counts and matches rather than whole "
            "texts. `llm_query(prompt)` and "
            "`llm_query_batched(prompts)` ask a sub-model and return its answer text. Variables "
            "persist between calls of the same `session`: pass back the `session` value from "
            "the result. Allowed modules include re, json, math, collections, itertools; no "
            "files, network or processes."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, idempotent_hint=False, open_world_hint=False
        ),
    )
    async def run_repl(
        code: str,
        ctx: Context[Any],
        handle: str | None = None,
        session: str | None = None,
    ) -> ReplResult:
        from rlm_mcp.sandbox import ContextSpec

        spec = None
        if handle is not None:
            st = state.get_store()
            with tool_errors("run_repl"):
                info = await anyio.to_thread.run_sync(lambda: st.info(handle))
                path = await anyio.to_thread.run_sync(lambda: st.text_path(info.handle))
            spec = ContextSpec(
                path=path, documents=[(d.path, d.start, d.length) for d in info.documents]
            )
        key, name = session_key(ctx, session)
        sub_calls = ReplSubCalls(state, ctx)
        with tool_errors("run_repl"):
            # the session runs one call at a time; each call's llm_query usage is its own
            async with state.get_pool().lease(key, context=spec, sub_calls=sub_calls) as sess:
                res = await sess.execute(code, sub_calls=sub_calls)
        usage = sub_calls.tracker.summary()
        return ReplResult(
            status=res.status,
            output=res.output,
            error=None if res.error is None else f"{res.error.type}: {res.error.message}",
            variables=[
                ReplVariable(name=v.name, type=v.type, summary=v.summary) for v in res.variables
            ],
            truncated=res.truncated,
            reset=res.reset,
            final=None if res.final is None else res.final.value,
            notes=list(res.notes),
            session=name,
            sub_calls=res.sub_calls,
            usage=usage.to_dict() if usage.total_calls else None,
        )

    @mcp.tool(
        description=(
            "Answer a question about a large input with the full recursive-LM loop on the "
            "server: a root model writes REPL code over the input and calls sub-models on "
            "pieces. Give `handle` (from load_context) or `text`. Sends progress per iteration "
            "and sub-call; returns the answer, usage/cost and the trajectory's resource URI."
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

        with tool_errors("rlm_complete"):
            lm, sub_lm = state.lms(model, sub_model, ctx=ctx)
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
        path = result.trajectory_path
        return CompleteResult(
            answer=str(result.response),
            iterations=result.iterations,
            stop_reason=str(result.stop_reason),
            usage=result.usage.to_dict(),
            trajectory=None if path is None else str(path),
            trajectory_resource=None if path is None else f"rlm://trajectories/{path.stem}",
        )

    @mcp.tool(
        description=(
            "One sub-model call. With `handle`, the slice context[start:end] (at most "
            f"{MAX_RANGE_CHARS:,} characters) is appended to the prompt, so the text does not "
            "pass through you."
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
        from rlm_mcp.lm.base import Message

        with tool_errors("llm_query"):
            if handle is not None:
                st = state.get_store()
                s0 = max(0, start or 0)
                length = MAX_RANGE_CHARS if end is None else max(0, min(end - s0, MAX_RANGE_CHARS))
                piece = await anyio.to_thread.run_sync(
                    lambda: st.read(handle, start=s0, length=length)
                )
                prompt = f"{prompt}\n\n{piece}"
            _, lm = state.lms(model, model, ctx=ctx)
            done = await lm.complete([Message(role="user", content=prompt)])
        usage = done.usage
        return QueryResult(
            text=done.text or "",
            model=str(lm.model),
            input_tokens=getattr(usage, "input_tokens", None),
            output_tokens=getattr(usage, "output_tokens", None),
        )


class _LoadCancelledError(Exception):
    """Raised inside the loading thread after the client cancelled; nobody awaits it."""


async def _load_path_with_progress(st: Any, path: str, name: str | None, ctx: Context[Any]) -> Any:
    """Load in a thread, reporting progress; a cancelled call stops the load at its next chunk.

    The store calls `progress(done, total)` from the loading thread; we hop back to the event
    loop for each notification (throttled), and raise from the callback once the client has
    cancelled so the store abandons its temp file instead of finishing a load nobody wants.
    """
    cancelled = threading.Event()
    last = [-1.0]

    def progress(done: int, total: int | None) -> None:
        if cancelled.is_set():
            raise _LoadCancelledError(path)
        frac = done / total if total else 0.0
        if total and frac - last[0] < PROGRESS_STEP and done < total:
            return
        last[0] = frac
        msg = f"loaded {done:,} of {total:,} bytes" if total else f"loaded {done:,} bytes"
        anyio.from_thread.run(ctx.report_progress, float(done), float(total or 0) or None, msg)

    try:
        return await anyio.to_thread.run_sync(
            lambda: st.load_path(path, name=name, progress=progress), abandon_on_cancel=True
        )
    except anyio.get_cancelled_exc_class():
        cancelled.set()
        raise
