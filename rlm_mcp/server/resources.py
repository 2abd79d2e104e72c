"""Read-only views as MCP resources: contexts (metadata, preview, character ranges) and the
trajectories of finished `rlm_complete` runs (raw JSONL and the HTML viewer page).

A resource read must stay small: a 100 MB context is never returned whole, only ranges of at
most MAX_RANGE_CHARS; run ids are checked against a strict pattern so a URI can never name a file
outside the trajectory folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError

from rlm_mcp.errors import RLMError
from rlm_mcp.server.models import ContextList, TrajectoryInfo
from rlm_mcp.server.state import AppState, explain
from rlm_mcp.server.tools import MAX_RANGE_CHARS, summary_of

#: The stem the trajectory writer uses: rlm_<utc stamp>_<8 hex>.
RUN_ID = re.compile(r"rlm_[0-9A-Za-z_-]{1,80}")
MAX_TRAJECTORIES_LISTED = 200


def trajectory_file(folder: Path, run_id: str) -> Path:
    """The JSONL file of `run_id`, refusing anything that is not a plain run id."""
    if not RUN_ID.fullmatch(run_id):
        raise ResourceError(f"{run_id!r} is not a run id; read rlm://trajectories for the list")
    path = folder / f"{run_id}.jsonl"
    if not path.is_file():
        raise ResourceError(
            f"no trajectory {run_id!r}; read rlm://trajectories for the finished runs"
        )
    return path


def list_trajectories(folder: Path) -> list[TrajectoryInfo]:
    """The newest finished runs first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob("rlm_*.jsonl"):
        if RUN_ID.fullmatch(p.stem):
            st = p.stat()
            found.append(
                TrajectoryInfo(
                    run_id=p.stem,
                    uri=f"rlm://trajectories/{p.stem}",
                    bytes=st.st_size,
                    modified=st.st_mtime,
                )
            )
    found.sort(key=lambda t: t.modified, reverse=True)
    return found[:MAX_TRAJECTORIES_LISTED]


def _bounds(start: str, end: str) -> tuple[int, int]:
    """`chars/START-END` as numbers, or one line saying what to send."""
    try:
        a, b = int(start), int(end)
    except ValueError:
        raise ResourceError(
            f"chars/{start[:20]}-{end[:20]} is not a range: send chars/START-END with whole "
            "numbers, e.g. chars/0-5000."
        ) from None
    if a < 0 or b <= a:
        raise ResourceError(
            f"chars/{a}-{b} is empty or reversed: send chars/START-END with 0 <= START < END."
        )
    return a, b


def register_resources(mcp: MCPServer, state: AppState) -> None:
    """Add the rlm://contexts and rlm://trajectories resources (each caller sees its own)."""

    @mcp.resource("rlm://contexts", mime_type="application/json")
    async def contexts_resource() -> str:
        # static resources get no request context: this lists the local (untenanted) store;
        # with tokens, callers use list_contexts or rlm://contexts/{handle}, which are scoped
        if state.runtime.tokens():
            raise ResourceError("With bearer tokens, call list_contexts to see your contexts.")
        st = state.runtime.store()
        infos = await anyio.to_thread.run_sync(st.list)
        return ContextList(contexts=[summary_of(i) for i in infos[:200]]).model_dump_json()

    @mcp.resource("rlm://contexts/{handle}", mime_type="application/json")
    async def context_resource(handle: str, ctx: Context) -> str:
        try:
            st, info = await state.resolve(state.caller(ctx), handle)
            preview = await anyio.to_thread.run_sync(lambda: st.preview(info.handle))
        except RLMError as exc:
            raise ResourceError(explain(exc)) from None
        return summary_of(info, preview).model_dump_json()

    @mcp.resource("rlm://contexts/{handle}/chars/{start}-{end}", mime_type="text/plain")
    async def context_range(handle: str, start: str, end: str, ctx: Context) -> str:
        a, b = _bounds(start, end)
        try:
            st, info = await state.resolve(state.caller(ctx), handle)
            if a >= info.chars:
                raise ResourceError(
                    f"chars/{a}-{b} starts past the end of {info.handle} ({info.chars:,} chars)."
                )
            length = min(b - a, MAX_RANGE_CHARS)
            return await anyio.to_thread.run_sync(
                lambda: st.read(info.handle, start=a, length=length)
            )
        except RLMError as exc:
            raise ResourceError(explain(exc)) from None

    @mcp.resource("rlm://trajectories", mime_type="application/json")
    async def trajectories_resource() -> str:
        if state.runtime.tokens():
            raise ResourceError(
                "With bearer tokens, read rlm://trajectories/RUN_ID of your own runs (each "
                "rlm_complete result names its run)."
            )
        folder = state.settings.trajectory_dir
        runs = await anyio.to_thread.run_sync(lambda: list_trajectories(folder))
        return "[" + ",".join(r.model_dump_json() for r in runs) + "]"

    @mcp.resource("rlm://trajectories/{run_id}", mime_type="application/x-ndjson")
    async def trajectory_resource(run_id: str, ctx: Context) -> str:
        try:
            path = trajectory_file(state.trajectory_dir(state.caller(ctx)), run_id)
        except RLMError as exc:
            raise ResourceError(explain(exc)) from None
        return await anyio.to_thread.run_sync(lambda: path.read_text(encoding="utf-8"))

    @mcp.resource("rlm://trajectories/{run_id}/view", mime_type="text/html")
    async def trajectory_page(run_id: str, ctx: Context) -> str:
        try:
            folder = state.trajectory_dir(state.caller(ctx))
        except RLMError as exc:
            raise ResourceError(explain(exc)) from None

        def render() -> str:
            from rlm_mcp.viewer import load_trajectory, render_html

            path = trajectory_file(folder, run_id)
            return render_html(load_trajectory(path), title=run_id)

        try:
            return await anyio.to_thread.run_sync(render)
        except RLMError as exc:
            raise ResourceError(explain(exc)) from None
