"""Every tool, sent every kind of argument through the real protocol: the right answer or one line.

A deterministic matrix covers each tool with a name, a handle, an unknown name, wrong types, empty
strings, and 0, negative and huge numbers. A property-based run (hypothesis) then sends hundreds of
generated calls, and every one must come back as a result or a one-line error: never an internal
error, a traceback or a hang.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from rlm_mcp.config import Settings
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.server import build_server

TEXT = "alpha beta\ngamma delta\n" * 20
TOOLS = ["load_context", "list_contexts", "delete_context", "run_repl", "rlm_complete", "llm_query"]


def _models(m: Any, s: Any) -> tuple[Any, Any]:
    root = ScriptedLM(lambda msgs: "```repl\nn = len(context)\n```\nFINAL_VAR(n)")
    sub = ScriptedLM(lambda msgs: f"read {len(msgs[-1].content)}")
    return root, sub


def check_one_line(res: Any) -> str:
    """The text of a result; for an error, assert it is one short line without internals."""
    text = "".join(getattr(c, "text", "") for c in res.content)
    if res.is_error:
        assert "\n" not in text, text
        assert len(text) < 1_100, text
        for bad in ("Traceback", 'File "', "failed unexpectedly", "bug in rlm-mcp"):
            assert bad not in text, text
    return text


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Any, str]]:
    server = build_server(Settings(home=tmp_path, exec_timeout=5.0), lm_factory=_models)
    async with Client(server) as c:
        loaded = await c.call_tool("load_context", {"text": TEXT, "name": "notes"})
        yield c, loaded.structured_content["handle"]


# -- the matrix ----------------------------------------------------------------------------------

REF_TOOLS: dict[str, dict[str, Any]] = {
    "run_repl": {"code": "print(len(context))"},
    "rlm_complete": {"query": "how long?"},
    "llm_query": {"prompt": "q"},
    "delete_context": {},
}


def _correct(tool: str, res: Any) -> bool:
    got = res.structured_content or {}
    return {
        "run_repl": got.get("output") == f"{len(TEXT)}\n",
        "rlm_complete": got.get("answer") == str(len(TEXT)),
        "llm_query": str(got.get("text", "")).startswith("read "),
        "delete_context": got.get("deleted") is True,
    }[tool]


@pytest.mark.anyio
@pytest.mark.parametrize("tool", list(REF_TOOLS))
@pytest.mark.parametrize("ref", ["name", "handle", "unknown", "empty", "looks-like-a-handle"])
async def test_every_tool_with_every_kind_of_context_reference(
    client: tuple[Any, str], tool: str, ref: str
) -> None:
    c, handle = client
    value = {
        "name": "notes",
        "handle": handle,
        "unknown": "no-such-name",
        "empty": "",
        "looks-like-a-handle": "ctx_000000000000",
    }[ref]
    with anyio.fail_after(60):
        res = await c.call_tool(tool, {**REF_TOOLS[tool], "handle": value})
    text = check_one_line(res)
    if ref in ("name", "handle"):
        assert not res.is_error and _correct(tool, res), text
    else:
        assert res.is_error and ("not found" in text or "empty" in text), text


BAD_VALUES: list[Any] = [0, -1, -(10**12), 10**30, "", "  ", "x" * 10_000, [], {}, None, True, 1.5]


@pytest.mark.anyio
@pytest.mark.parametrize("tool", TOOLS)
async def test_every_argument_of_every_tool_with_wrong_and_extreme_values(
    client: tuple[Any, str], tool: str
) -> None:
    c = client[0]
    tools = {t.name: t for t in (await c.list_tools()).tools}
    props = tools[tool].input_schema.get("properties", {})
    base = {
        "load_context": {"text": "t"},
        "run_repl": {"code": "x = 1"},
        "rlm_complete": {"query": "q", "text": "t"},
        "llm_query": {"prompt": "p"},
        "delete_context": {"handle": "notes"},
        "list_contexts": {},
    }[tool]
    with anyio.fail_after(120):
        for arg in props:
            for value in BAD_VALUES:
                res = await c.call_tool(tool, {**base, arg: value})
                check_one_line(res)
        # and nothing at all
        check_one_line(await c.call_tool(tool, {}))


# -- property-based ------------------------------------------------------------------------------

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("ctx_0123456789abcdef\u202e\u2066\ud800 \n\t"), max_size=20),
    st.sampled_from(["notes", "ctx_", "", "x" * 3000, "sess_" + "0" * 32]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
ARG_NAMES = [
    "text",
    "path",
    "name",
    "replace",
    "handle",
    "code",
    "session",
    "query",
    "max_iterations",
    "max_depth",
    "max_time",
    "max_cost",
    "max_tokens",
    "model",
    "sub_model",
    "prompt",
    "start",
    "end",
    "extra",
]
calls = st.tuples(
    st.sampled_from(TOOLS),
    st.dictionaries(st.sampled_from(ARG_NAMES), values, max_size=4),
)


def test_generated_calls_never_break_the_server(tmp_path: Path) -> None:
    """At least 600 generated calls across the six tools, each bounded in time."""
    server = build_server(Settings(home=tmp_path, exec_timeout=2.0), lm_factory=_models)
    seen: list[tuple[str, bool]] = []

    async def session(batch: list[tuple[str, dict[str, Any]]]) -> None:
        async with Client(server) as c:
            await c.call_tool("load_context", {"text": TEXT, "name": "notes"})
            for tool, args in batch:
                if tool == "run_repl" and isinstance(args.get("code"), str):
                    args = {**args, "code": "x = 1"}  # generated code is the sandbox suites' job
                with anyio.fail_after(30):
                    res = await c.call_tool(tool, args)
                check_one_line(res)
                seen.append((tool, bool(res.is_error)))

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(calls, min_size=15, max_size=15))
    def run(batch: list[tuple[str, dict[str, Any]]]) -> None:
        anyio.run(session, [(t, json.loads(json.dumps(a, default=str))) for t, a in batch])

    run()
    assert len(seen) >= 500
    assert {tool for tool, _ in seen} == set(TOOLS)
