"""The caller's tools: sandboxed code can call them and nothing more. The function, its module, its
globals, what it closes over, and any object it returns stay in the parent process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from rlm_mcp.custom_tools import ToolSet
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.usage import UsageTracker
from rlm_mcp.sandbox import SandboxLimits, SandboxSession
from rlm_mcp.sandbox.session import _tool_call
from rlm_mcp.subcalls import SubCallRouter

pytestmark = pytest.mark.anyio

MODULE_SECRET = "sk-module-global-7d1f"


def _make_tools() -> dict[str, Any]:
    closure_secret = "sk-closure-93ab"

    def search(query: str) -> list[str]:
        """Search the caller's index."""
        _ = (closure_secret, MODULE_SECRET)
        return [f"hit for {query}"]

    def handout() -> Any:
        return search  # tries to hand the function itself to the sandbox

    def huge() -> str:
        return "x" * 200_000

    def nan() -> float:
        return float("nan")

    return {"search": search, "handout": handout, "huge": huge, "nan": nan}


@pytest.fixture
async def session() -> AsyncIterator[SandboxSession]:
    router = SubCallRouter(ScriptedLM(["x"]), UsageTracker(), tools=ToolSet(_make_tools()))
    limits = SandboxLimits(timeout=10, max_final_chars=100_000)
    async with SandboxSession(limits=limits, sub_calls=router) as s:
        yield s


async def test_code_can_call_a_tool(session: SandboxSession) -> None:
    with anyio.fail_after(30):
        r = await session.execute("print(search('cats'))\nprint(search)")
    assert r.status == "ok", r.error
    assert r.output.splitlines() == [
        "['hit for cats']",
        "<tool search(query: str) -> list[str]: Search the caller's index.>",
    ]


@pytest.mark.parametrize(
    "probe",
    [
        "search.__globals__",
        "search.__closure__",
        "search.__wrapped__",
        "search.__module__",
        "search.__call__.__globals__",
        "search.__class__",
        "search._rpc",
        "search._rpc.__self__",
        "getattr(search, '_rpc')",
        "getattr(search, '__globals__')",
        "vars(search)",
        "search.__reduce__()",
        "search.__reduce_ex__(2)",
        "type(search).__init__",
        "search.__self__",
        "search.func",
        "search.fn",
        "search.tools",
    ],
)
async def test_code_cannot_reach_the_function_its_module_or_its_globals(
    session: SandboxSession, probe: str
) -> None:
    with anyio.fail_after(30):
        r = await session.execute(f"print({probe})")
    assert r.status in ("error", "violation"), (probe, r.output)
    seen = r.output + str(r.error)
    for secret in (MODULE_SECRET, "sk-closure", "_make_tools", "test_custom_tools"):
        assert secret not in seen


async def test_a_function_or_object_cannot_cross_as_an_argument(session: SandboxSession) -> None:
    for arg in ("lambda: 1", "print", "{1, 2}", "search", "b'raw'"):
        with anyio.fail_after(30):
            r = await session.execute(f"search({arg})")
        assert r.status == "error" and r.error is not None, arg
        assert r.error.type == "TypeError" and "must be JSON values" in r.error.message


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("handout", "returned function, which is not a JSON value"),
        ("huge", "over the 100,000 limit"),
        ("nan", "not a JSON value"),
    ],
)
async def test_a_result_that_is_not_small_json_is_refused_not_handed_over(
    session: SandboxSession, tool: str, message: str
) -> None:
    with anyio.fail_after(30):
        r = await session.execute(f"x = {tool}()")
    assert r.status == "error" and r.error is not None
    assert r.error.type == "ToolError" and message in r.error.message
    assert "x" not in {v.name for v in r.variables}


async def test_only_the_tools_the_caller_gave_can_be_asked_for() -> None:
    """A worker is not trusted: a request naming anything else is refused in the parent."""
    router = SubCallRouter(ScriptedLM(["x"]), UsageTracker(), tools=ToolSet(_make_tools()))
    for name in ("__init__", "call", "_fns", "open", "tool", 3, None):
        msg = {"op": "tool", "name": name, "args": [], "kwargs": {}}
        assert _tool_call(router, msg) == f"no tool named {name!r} in this session"
    bad_args = {"op": "tool", "name": "search", "args": "x", "kwargs": {}}
    assert _tool_call(router, bad_args) == "search: malformed arguments"
    # a handler without tools (run_repl's) refuses every tool request
    plain = SubCallRouter(ScriptedLM(["x"]), UsageTracker())
    assert "no tool named" in str(_tool_call(plain, {"name": "search", "args": [], "kwargs": {}}))
