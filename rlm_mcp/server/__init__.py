"""The MCP server: contexts, a sandboxed REPL and the RLM loop as MCP tools and resources.

Everything heavy (the store's diskcache, the sandbox pool, provider SDKs) is created lazily on
the first tool call so that ``initialize`` answers fast; only ``mcp`` and pydantic are imported
at start-up. Modules: `state` (what one server owns, session keys, error mapping), `tools`,
`resources`, `models` (result schemas), `http` (transports and the bearer token).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from mcp.server import MCPServer

from rlm_mcp.config import Settings
from rlm_mcp.runtime import LMFactory, Runtime
from rlm_mcp.server.app import RLMServer
from rlm_mcp.server.http import http_app, serve
from rlm_mcp.server.prompts import register_prompts
from rlm_mcp.server.resources import register_resources
from rlm_mcp.server.state import AppState
from rlm_mcp.server.tools import register_tools

__all__ = ["AppState", "LMFactory", "RLMServer", "build_server", "http_app", "serve"]

INSTRUCTIONS = (
    "For inputs too large to read (big files, folders, logs): load_context stores one once and "
    "returns a handle; run_repl runs Python where `context` is that text (slice, grep, count, "
    "llm_query_batched for sub-models); rlm_complete runs the whole recursive loop on the "
    "server. Filter and count in code, not with models. The analyze prompt has the workflow."
)


def build_server(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    store: object | None = None,
    lm_factory: LMFactory | None = None,
    environ: Mapping[str, str] | None = None,
) -> MCPServer:
    """The rlm-mcp server over `runtime` (or one built from `settings`, `environ`, ...).

    `environ` is where provider keys come from (the CLI passes os.environ; library code never
    reads it itself); `store` shares an open ContextStore; `lm_factory` injects models (tests).
    """
    if runtime is None:
        runtime = Runtime(
            settings,
            environ=environ,
            store=store,  # type: ignore[arg-type]
            lm_factory=lm_factory,
        )
    # one state per server so resources (which get no lifespan context) reach the same store
    state = AppState(runtime)
    entered = [0]

    @asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[AppState]:
        # HTTP enters this once; in memory every Client connection enters it: the runtime is
        # closed when the last one leaves, not under a client that is still connected
        entered[0] += 1
        try:
            yield state
        finally:
            entered[0] -= 1
            if not entered[0]:
                await state.aclose()

    mcp = RLMServer("rlm-mcp", instructions=INSTRUCTIONS, lifespan=lifespan)
    register_tools(mcp, state)
    register_resources(mcp, state)
    register_prompts(mcp)
    return mcp
