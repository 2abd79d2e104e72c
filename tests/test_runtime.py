"""The Runtime: the operator's settings hold everywhere code runs, and the library is never
steered by the process environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.config import Settings
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.runtime import Runtime
from rlm_mcp.server import build_server

#: Each probe exercises one sandbox setting; the settings below are far under the defaults.
PROBES = {
    "output": "print('x' * 500)",
    "time": "while True:\n    pass",
    "memory": "big = 'a' * 300_000_000\nprint(len(big))",
    "sub_calls": "print(llm_query_batched(['q', 'q', 'q']))",
    "prompt": "print(llm_query('p' * 300))",
}
LIMITED = dict(
    max_output_chars=50,
    exec_timeout=1.0,
    worker_memory_mb=64,
    max_sub_calls=2,
    max_prompt_chars=100,
)


def _held(probe: str, status: str, output: str, error: str | None) -> bool:
    """Whether the result shows the setting for `probe` held."""
    err = error or ""
    if probe == "output":
        return "x" * 60 not in output
    if probe == "time":
        return status == "timeout"
    if probe == "memory":
        return "300000000" not in output and (status in ("error", "crashed") or "Memory" in err)
    if probe == "sub_calls":
        return "limit" in (output + err) and "2" in (output + err)
    return "100" in (output + err) and "prompt" in (output + err)


def _sub(messages: Any) -> str:
    return "sub-answer"


@pytest.mark.anyio
async def test_every_sandbox_setting_holds_in_rlm_complete_as_in_run_repl(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, **LIMITED)  # type: ignore[arg-type]
    script = [f"```repl\n{code}\n```" for code in PROBES.values()] + ["FINAL(done)"]
    server = build_server(
        settings,
        lm_factory=lambda m, s: (ScriptedLM(list(script)), ScriptedLM(_sub)),
    )
    with anyio.fail_after(120):
        async with Client(server) as client:
            for probe, code in PROBES.items():
                res = await client.call_tool("run_repl", {"code": code, "session": probe})
                got = res.structured_content
                assert _held(probe, got["status"], got["output"], got.get("error")), (probe, got)
            done = await client.call_tool(
                "rlm_complete", {"query": "probe the limits", "text": "some text"}
            )
            assert not done.is_error, done.content
            uri = done.structured_content["trajectory_resource"]
            lines = (await client.read_resource(uri)).contents[0].text.splitlines()
    blocks = [
        block
        for record in map(json.loads, lines)
        if record["type"] == "iteration"
        for block in record["code_blocks"]
    ]
    assert len(blocks) == len(PROBES)
    for probe, block in zip(PROBES, blocks, strict=True):
        assert _held(probe, block["status"], block["output"], block["error"]), (probe, block)


def test_the_library_ignores_rlm_mcp_variables_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlm_mcp import RLM, ContextStore

    def observe() -> tuple[Any, ...]:
        rlm = RLM(lm=ScriptedLM(["```repl\nprint('y' * 30)\n```", "FINAL(ok)"]))
        result = rlm.completion("a context")
        store = ContextStore()
        try:
            where = store.directory
        finally:
            store.close()
        output = result.trajectory[0].code_blocks[0].output
        return Settings(), Runtime().settings, rlm.sandbox_limits, where, output

    clean = observe()
    for name, value in {
        "RLM_MCP_HOME": str(tmp_path / "elsewhere"),
        "RLM_MCP_MAX_OUTPUT_CHARS": "10",
        "RLM_MCP_EXEC_TIMEOUT": "1",
        "RLM_MCP_MAX_ITERATIONS": "1",
        "RLM_MCP_BACKEND": "anthropic",
        "RLM_MCP_WORKER_MEMORY_MB": "64",
    }.items():
        monkeypatch.setenv(name, value)
    assert observe() == clean
    assert clean[4] == "y" * 30 + "\n"
    configured = Runtime.from_env()
    assert configured.settings.max_output_chars == 10
    assert configured.settings.home == tmp_path / "elsewhere"
    assert configured.sandbox_limits.max_output_chars == 10


def test_two_runtimes_do_not_share_or_reset_each_others_settings(tmp_path: Path) -> None:
    a = Runtime(Settings(home=tmp_path / "a", max_output_chars=10, max_concurrency=2))
    b = Runtime(Settings(home=tmp_path / "b", max_output_chars=99, max_concurrency=7))
    assert a.sandbox_limits.max_output_chars == 10
    assert b.sandbox_limits.max_output_chars == 99
    assert a.store().directory != b.store().directory
