"""`run_repl`: the client agent as the root model, over a persistent sandbox session.

Which session a call reaches is decided by `identity.SessionRegistry` (per connection, per
tenant, or a server-minted handle); everything sandboxed code can make long is capped here
before it becomes a result (`budget`), whatever the worker already cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations

from rlm_mcp.errors import ConfigError, RLMError
from rlm_mcp.server.budget import MAX_FIELD_CHARS, MAX_LIST_ITEMS, cap, cap_list, fit, spill
from rlm_mcp.server.models import ReplResult, ReplVariable
from rlm_mcp.server.state import AppState, explain, tool_errors

__all__ = ["ReplSubCalls", "register_run_repl"]

#: Each variable's name, type and summary are cut here.
VARIABLE_FIELD_CHARS = 120
MAX_NOTES = 10


NO_ROUND_TRIP = (
    "llm_query inside run_repl cannot use your client's model: on the 2026-07-28 protocol "
    "sampling takes a round trip of a tool call, which running code cannot wait for. Call the "
    "llm_query tool instead, or give the server a model: an API key, a logged-in agent CLI "
    "(claude, codex, gemini) on its PATH, or a local OpenAI-compatible server."
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
            from rlm_mcp.server.sampling import can_round_trip
            from rlm_mcp.subcalls import SubCallRouter

            try:
                _, sub = self.state.runtime.lms(ctx=self.ctx)
            except RLMError as exc:  # the code sees the same advice as a tool error would give
                if can_round_trip(self.ctx):
                    raise ConfigError(NO_ROUND_TRIP) from exc
                raise ConfigError(explain(exc)) from exc
            if getattr(sub, "backend", "") == "sampling" and can_round_trip(self.ctx):
                raise ConfigError(NO_ROUND_TRIP)
            self._router = SubCallRouter(
                sub,
                self.tracker,
                path=("run_repl",),
                on_event=self._progress,
                max_prompt_chars=self.state.settings.max_prompt_chars,
            )
        texts: list[str] = await self._router(prompts, model=model)
        return texts


def _variables(found: Sequence[Any]) -> list[ReplVariable]:
    shown, more = cap_list(found, MAX_LIST_ITEMS)
    out = [
        ReplVariable(
            name=cap(v.name, VARIABLE_FIELD_CHARS),
            type=cap(v.type, VARIABLE_FIELD_CHARS),
            summary=cap(v.summary, VARIABLE_FIELD_CHARS),
        )
        for v in shown
    ]
    if more:
        out.append(
            ReplVariable(
                name="...",
                type="",
                summary=f"{more:,} more not listed; print sorted(k for k in dir()) to see all",
            )
        )
    return out


def register_run_repl(mcp: MCPServer, state: AppState) -> None:
    s = state.settings
    idle = s.session_idle_seconds

    @mcp.tool(
        description=(
            "Run Python in a sandboxed, persistent REPL. With `handle` (ctx_... or a name), the "
            "variable `context` holds that stored text (str; `documents` lists (name, start, "
            "length) for directories; document(name) gives one file). print() what you want to "
            "see; output is cut when long, so print slices, counts and matches rather than "
            "whole texts. `llm_query(prompt)` and `llm_query_batched(prompts)` ask a sub-model "
            "and return its answer text. Variables persist in a session: the result's `session` "
            "names it; pass it back to continue (over HTTP without it you get a new session). "
            f"Sessions expire after {idle:.0f}s unused. Allowed modules include re, json, math, "
            "collections, itertools; no files, network or processes."
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
    ) -> Annotated[CallToolResult, ReplResult]:
        from rlm_mcp.sandbox import ContextSpec
        from rlm_mcp.server.tools import context_link, with_links

        with tool_errors("run_repl"):
            caller = state.caller(ctx)
            key, name = state.sessions.key_for(caller, session)
            spec, store, info = None, None, None
            pool = state.runtime.repl_pool()
            if handle is not None:
                store, info = await state.resolve(caller, handle)
                documents = [(d.path, d.start, d.length) for d in info.documents]
                if getattr(pool, "remote", False):  # the session's node reads the shared store
                    spec = ContextSpec(handle=info.handle, documents=documents)
                else:
                    path = await anyio.to_thread.run_sync(lambda: store.text_path(info.handle))
                    spec = ContextSpec(path=path, documents=documents)
            sub_calls = ReplSubCalls(state, ctx)
            # the session runs one call at a time; each call's llm_query usage is its own
            async with (
                state.pinned(store, None if info is None else info.handle),
                pool.lease(key, owner=caller.owner, context=spec, sub_calls=sub_calls) as sb,
            ):
                res = await sb.execute(code, sub_calls=sub_calls)
            final, stored = (None, None)
            if res.final is not None:
                final, stored = await spill(
                    state.store_for(caller),
                    res.final.value,
                    s.max_result_chars // 2,
                    "final answer",
                )
        usage = sub_calls.tracker.summary()
        raw_notes = list(res.notes)
        if res.final is not None and res.final.truncated:
            raw_notes.append(
                f"the final answer has {res.final.chars:,} chars; the sandbox keeps the first "
                f"{len(res.final.value):,} (SandboxLimits.max_final_chars)"
            )
        notes, more_notes = cap_list([cap(n) for n in raw_notes], MAX_NOTES)
        if more_notes:
            notes.append(f"... {more_notes} more notes")
        result = ReplResult(
            status=res.status,
            output=cap(res.output, s.max_output_chars + 200),
            error=None
            if res.error is None
            else cap(f"{res.error.type}: {res.error.message}", MAX_FIELD_CHARS),
            variables=_variables(res.variables),
            truncated=res.truncated or len(res.output) > s.max_output_chars + 200,
            reset=res.reset,
            final=final,
            final_context=stored,
            notes=notes,
            session=name,
            sub_calls=res.sub_calls,
            usage=usage.to_dict() if usage.total_calls else None,
        )
        result = fit(result, s.max_result_chars, ["output", "final", "error"])
        if len(result.output) < len(res.output) and not result.truncated:
            result = result.model_copy(update={"truncated": True})
        return with_links(result, [] if stored is None else [context_link(stored)])
