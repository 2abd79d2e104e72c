"""The tools. Each validates, resolves its context through `AppState.resolve`, delegates to the
store/sandbox/loop, keeps its result inside the size budget, and reports progress.

Descriptions are written for a model that has never seen this server: what the tool is for,
which arguments go together, what the server's limits are, and what to call next.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolResult,
    InputRequiredResult,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from rlm_mcp.answers import check_schema
from rlm_mcp.conversation import Conversation
from rlm_mcp.errors import ArgumentError, ConfigError, MissingAPIKeyError, UnreadablePathError
from rlm_mcp.server.budget import cap, cap_list, spill
from rlm_mcp.server.models import (
    CompleteResult,
    ContextList,
    ContextSummary,
    Deleted,
    QueryResult,
)
from rlm_mcp.server.repl import register_run_repl
from rlm_mcp.server.state import AppState, tool_errors
from rlm_mcp.text import clean

PREVIEW_CHARS = 300
MAX_RANGE_CHARS = 100_000
#: list_contexts shows at most this many contexts (the rest are counted in `more`).
MAX_LISTED = 200
#: load_context progress is reported at most this often (fraction of the input).
PROGRESS_STEP = 0.02

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]


def summary_of(info: Any, preview: str = "") -> ContextSummary:
    return ContextSummary(
        handle=info.handle,
        name=info.name,
        chars=info.chars,
        lines=info.lines,
        documents=len(info.documents),
        source=cap(info.source, 500),
        preview=preview,
        replaced=info.replaced,
        skipped=dict(getattr(info, "skipped", None) or {}),
    )


def context_link(handle: str, chars: int | None = None) -> ResourceLink:
    """A link the client can fetch instead of reading a stored thing inline."""
    size = "" if chars is None else f" ({chars:,} chars)"
    return ResourceLink(
        type="resource_link",
        uri=f"rlm://contexts/{handle}",
        name=handle,
        description=f"stored context {handle}{size}; read ranges at /chars/START-END",
        mime_type="application/json",
    )


def with_links(model: BaseModel, links: list[ResourceLink]) -> CallToolResult:
    """The result as structured content, its compact JSON as text, and resource links."""
    data = clean(model.model_dump(mode="json"))
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(
        content=[TextContent(type="text", text=text), *links], structured_content=data
    )


def _relative_hint(path: str) -> str:
    if os.path.isabs(os.path.expanduser(path)):
        return ""
    return (
        f" Relative paths are resolved against the server's working directory ({os.getcwd()}), "
        "which is rarely yours: send an absolute path."
    )


def _ceiling(
    arg: str, value: float | None, default: float | None, ceiling: float | None, env: str
) -> Any:
    """The value a run uses: the client's (never above the ceiling), else the default."""
    if value is None:
        if default is None:
            return ceiling
        return default if ceiling is None else min(default, ceiling)
    if ceiling is not None and value > ceiling:
        raise ArgumentError(
            f"{arg}={value:g} is above this server's ceiling of {ceiling:g} ({env}); send "
            f"{ceiling:g} or less."
        )
    return value


def register_tools(mcp: MCPServer, state: AppState) -> None:
    """Add load_context, list_contexts, delete_context, run_repl, rlm_complete, llm_query."""
    s = state.settings
    register_context_tools(mcp, state)
    register_run_repl(mcp, state)
    cost = "none" if s.limit_cost is None else f"${s.limit_cost:g}"

    @mcp.tool(
        description=(
            "Answer a question about a large input with the full recursive-LM loop on the "
            "server: a root model writes REPL code over the input and calls sub-models on "
            "pieces. Give `handle` (a ctx_... handle or a name from load_context) or `text`. "
            "Sends progress per iteration and sub-call; returns the answer, usage/cost and the "
            f"trajectory's resource URI. Server ceilings: max_iterations {s.limit_iterations}, "
            f"max_depth {s.limit_depth}, max_time {s.limit_time:g}s, max_tokens "
            f"{s.limit_tokens:,}, max_cost {cost}; lower values are fine, higher are refused. "
            "Returns run_id: send it back with a follow-up query (handle/text optional) to "
            "continue in the same REPL with its variables and a recap of earlier turns; it "
            f"works only for this client and expires after {s.session_idle_seconds:.0f}s unused. "
            "answer_schema (a JSON Schema) makes the answer come back validated as answer_json. "
            "partial=true means no final answer was reached (see stop_reason and notes)."
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
        max_iterations: Positive | None = None,
        max_depth: Positive | None = None,
        max_time: PositiveFloat | None = None,
        max_cost: PositiveFloat | None = None,
        max_tokens: Positive | None = None,
        model: str | None = None,
        sub_model: str | None = None,
        run_id: str | None = None,
        answer_schema: dict[str, Any] | None = None,
        max_errors: Positive | None = None,
    ) -> Annotated[CallToolResult, CompleteResult]:
        with tool_errors("rlm_complete"):
            if handle is not None and text is not None:
                raise ArgumentError("give one of handle or text, not both")
            if run_id is None and handle is None and text is None:
                raise ArgumentError(
                    "give handle or text (or run_id to continue an earlier run over its context)"
                )
            if not query.strip():
                raise ArgumentError("query is empty: send the question to answer")
            schema = None
            if answer_schema is not None:
                try:
                    schema = check_schema(answer_schema)
                except ConfigError as exc:
                    raise ArgumentError(f"answer_schema: {exc}") from None
            caller = state.caller(ctx)

            def make(rid: str) -> Conversation:
                return Conversation(state.run_root(caller, rid))

            if run_id is not None:
                this_run: str = run_id
                found = await anyio.to_thread.run_sync(
                    lambda: state.runs.get(caller.tenant, this_run, make)
                )
                conversation = found.conversation
                if conversation.context is None and handle is None and text is None:
                    if found.handle is None:  # continued from another replica's record
                        raise ArgumentError(
                            "this run continues on another server, which does not have the "
                            "text it was given inline: send the text again with the follow-up "
                            "(or load it with load_context and send its handle)"
                        )
                    handle = found.handle
            else:
                this_run, conversation = await anyio.to_thread.run_sync(
                    lambda: state.runs.mint(caller.tenant, make)
                )
            run = dict(
                max_iterations=_ceiling(
                    "max_iterations",
                    max_iterations,
                    s.max_iterations,
                    s.limit_iterations,
                    "RLM_MCP_LIMIT_ITERATIONS",
                ),
                max_depth=_ceiling(
                    "max_depth", max_depth, s.max_depth, s.limit_depth, "RLM_MCP_LIMIT_DEPTH"
                ),
                max_time=_ceiling("max_time", max_time, None, s.limit_time, "RLM_MCP_LIMIT_TIME"),
                max_cost=_ceiling("max_cost", max_cost, None, s.limit_cost, "RLM_MCP_LIMIT_COST"),
                max_tokens=_ceiling(
                    "max_tokens", max_tokens, None, s.limit_tokens, "RLM_MCP_LIMIT_TOKENS"
                ),
                max_errors=max_errors,
            )
            context: Any = text
            store, info = None, None
            if handle is not None:
                store, info = await state.resolve(caller, handle)
                context = store.get(info.handle)
            steps = 0

            async def on_event(event: Any) -> None:
                nonlocal steps
                if event.kind in ("iteration_finished", "subcall_finished", "run_finished"):
                    steps += 1
                    await ctx.report_progress(steps, None, f"{event.kind}: {event.message}"[:200])

            lm, sub_lm = state.runtime.lms(model, sub_model, ctx=ctx)
            rlm = state.runtime.rlm(
                lm,
                sub_lm,
                log_dir=state.trajectory_dir(caller),
                on_event=on_event,
                sandbox_factory=state.run_sandboxes(caller),
                persistent=conversation,
                **run,
            )
            async with state.pinned(store, None if info is None else info.handle):
                result = await rlm.acompletion(context, root_prompt=query, schema=schema)
            await anyio.to_thread.run_sync(lambda: state.runs.save(this_run))  # other replicas
            answer, stored = await spill(
                state.store_for(caller),
                str(result.response),
                s.max_result_chars // 2,
                "answer",
            )
            notes = [cap(n, 500) for n in result.notes[:20]]
            answer_json = result.answer_json
            if stored is not None and answer_json is not None:
                answer_json = None  # as large as the answer: read it from answer_context
                notes.append("answer_json left out (too large for a result); see answer_context")
        path = result.trajectory_path
        links = [] if stored is None else [context_link(stored, len(str(result.response)))]
        if path is not None:
            links.append(
                ResourceLink(
                    type="resource_link",
                    uri=f"rlm://trajectories/{path.stem}",
                    name=path.stem,
                    description="this run's trajectory (JSONL); append /view for the HTML page",
                    mime_type="application/x-ndjson",
                )
            )
        return with_links(
            CompleteResult(
                answer=answer,
                answer_context=stored,
                iterations=result.iterations,
                stop_reason=str(result.stop_reason),
                partial=result.partial,
                answer_json=answer_json,
                run_id=this_run,
                notes=notes,
                usage=result.usage.to_dict(),
                trajectory=None if path is None else str(path),
                trajectory_resource=None if path is None else f"rlm://trajectories/{path.stem}",
            ),
            links,
        )

    @mcp.tool(
        description=(
            "One sub-model call. With `handle` (or a name), the slice context[start:end] (at most "
            f"{MAX_RANGE_CHARS:,} characters; default the first ones) is appended to the prompt, "
            "so the text does not pass through you. A reply longer than "
            f"{s.max_output_chars:,} characters is stored as a context and cut, with its handle."
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def llm_query(
        prompt: str,
        ctx: Context[Any],
        handle: str | None = None,
        start: NonNegative | None = None,
        end: NonNegative | None = None,
        model: str | None = None,
    ) -> Annotated[CallToolResult, QueryResult] | InputRequiredResult:
        from rlm_mcp.lm.base import Message
        from rlm_mcp.server import sampling as round_trip

        notes: list[str] = []
        cut = False
        with tool_errors("llm_query"):
            caller = state.caller(ctx)
            if handle is None and (start is not None or end is not None):
                raise ArgumentError("start and end select a slice of a context: also send handle")
            if handle is None and not prompt.strip():
                raise ArgumentError("prompt is empty: send the question for the sub-model")
            if handle is not None:
                store, info = await state.resolve(caller, handle)
                s0, e0, cut, notes = _slice(info.chars, start, end)
                piece = await anyio.to_thread.run_sync(
                    lambda: store.read(info.handle, start=s0, length=e0 - s0)
                )
                prompt = f"{prompt}\n\n{piece}"
            lm = None
            try:
                _, lm = state.runtime.lms(model, model, ctx=ctx)
            except MissingAPIKeyError:
                if not round_trip.can_round_trip(ctx):
                    raise
            if lm is None or (lm.backend == "sampling" and round_trip.can_round_trip(ctx)):
                # 2026-07-28: the client's own model, through a round trip of this call
                answered = round_trip.completion_from(ctx, prompt)
                if answered is None:
                    return round_trip.request_for(prompt, model)
                done, model_name = answered, answered.usage.model
                notes.append("answered by the client's model (sampling); tokens are estimated")
            else:
                done = await lm.complete([Message(role="user", content=prompt)])
                model_name = lm.model
            reply, stored = await spill(
                state.store_for(caller), done.text or "", s.max_output_chars, "reply"
            )
        if stored is not None:
            notes.append(f"the reply was cut; all of it is stored as context {stored}")
        usage = done.usage
        return with_links(
            QueryResult(
                text=reply,
                text_context=stored,
                model=str(model_name),
                input_tokens=getattr(usage, "input_tokens", None),
                output_tokens=getattr(usage, "output_tokens", None),
                slice_cut=cut,
                notes=notes,
            ),
            [] if stored is None else [context_link(stored, len(done.text or ""))],
        )


def _slice(chars: int, start: int | None, end: int | None) -> tuple[int, int, bool, list[str]]:
    """(start, end, cut, notes) of the slice llm_query sends; an empty or reversed range is an
    error, never a prompt sent without its text."""
    s0 = start or 0
    if s0 >= chars:
        raise ArgumentError(
            f"start={s0:,} is past the end of the context ({chars:,} chars): send a start below "
            f"{chars:,}."
        )
    e0 = chars if end is None else end
    if e0 <= s0:
        raise ArgumentError(
            f"end={e0:,} is not after start={s0:,}: send end > start (the slice is "
            "context[start:end])."
        )
    notes: list[str] = []
    if e0 > chars:
        notes.append(f"end={e0:,} is past the end; the slice stops at {chars:,}")
        e0 = chars
    cut = e0 - s0 > MAX_RANGE_CHARS
    if cut:
        notes.append(
            f"the slice [{s0:,}, {e0:,}) has {e0 - s0:,} chars, over the {MAX_RANGE_CHARS:,} "
            f"cap: only [{s0:,}, {s0 + MAX_RANGE_CHARS:,}) was sent; send the rest in further "
            f"calls from start={s0 + MAX_RANGE_CHARS}"
        )
        e0 = s0 + MAX_RANGE_CHARS
    return s0, e0, cut, notes


def register_context_tools(mcp: MCPServer, state: AppState) -> None:
    """load_context, list_contexts, delete_context."""

    @mcp.tool(
        description=(
            "Store a large input so it never has to enter your context window. Give exactly one "
            "of `text` (the content itself) or `path` (an absolute path to a file, directory or "
            "glob on the server's machine; directories become several documents, binary files "
            "are skipped and counted). Returns a handle (ctx_...) for run_repl/rlm_complete/"
            "llm_query, the size and a short preview. The same content gives the same handle. "
            "`name` is an alias usable instead of the handle; pointing an existing name at "
            "other content needs replace=true. Over HTTP one request carries at most 4 MiB: "
            "send `path` for anything larger."
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
        replace: bool = False,
    ) -> Annotated[CallToolResult, ContextSummary]:
        with tool_errors("load_context"):
            if (text is None) == (path is None):
                raise ArgumentError("give exactly one of text or path")
            caller = state.caller(ctx)
            st = state.store_for(caller)
            opts: dict[str, Any] = {"name": name}
            if replace:
                opts["replace"] = True
            if text is not None:
                info = await anyio.to_thread.run_sync(lambda: st.load_text(text, **opts))
            else:
                assert path is not None
                if not path.strip():
                    raise ArgumentError(
                        "path is empty: send the absolute path of a file, directory or glob."
                    )
                try:
                    info = await _load_path_with_progress(st, path, opts, ctx)
                except UnreadablePathError as exc:
                    raise UnreadablePathError(f"{exc}{_relative_hint(path)}") from None
            preview = await anyio.to_thread.run_sync(
                lambda: st.preview(info.handle, head=PREVIEW_CHARS // 2, tail=PREVIEW_CHARS // 2)
            )
        return with_links(summary_of(info, preview), [context_link(info.handle, info.chars)])

    @mcp.tool(
        description=(
            f"List the stored contexts (at most {MAX_LISTED}, oldest first): handle, name, size "
            "in characters/lines/documents."
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def list_contexts(ctx: Context[Any]) -> ContextList:
        with tool_errors("list_contexts"):
            st = state.store_for(state.caller(ctx))
            infos = await anyio.to_thread.run_sync(st.list)
        shown, more = cap_list(infos, MAX_LISTED)
        return ContextList(contexts=[summary_of(i) for i in shown], more=more)

    @mcp.tool(
        description="Delete a stored context by handle or name. It cannot be undone.",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def delete_context(handle: str, ctx: Context[Any]) -> Deleted:
        with tool_errors("delete_context"):
            st, info = await state.resolve(state.caller(ctx), handle)
            ok = await anyio.to_thread.run_sync(lambda: st.delete(info.handle))
            if not ok:  # deleted by someone else between the lookup and now
                raise ToolError(
                    f"unknown handle {info.handle}; call list_contexts to see the handles"
                )
        return Deleted(handle=info.handle, deleted=True)


class _LoadCancelledError(Exception):
    """Raised inside the loading thread after the client cancelled; nobody awaits it."""


async def _load_path_with_progress(st: Any, path: str, opts: dict[str, Any], ctx: Any) -> Any:
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
            lambda: st.load_path(path, progress=progress, **opts), abandon_on_cancel=True
        )
    except anyio.get_cancelled_exc_class():
        cancelled.set()
        raise
