"""The official MCP Inspector CLI drives the installed `rlm-mcp serve` over stdio.

This is the check a user does first ("does it show up in the Inspector?"), run by a client we did
not write. Every `--cli` invocation spawns a fresh server, so the handle from `load_context` in one
call is used by `run_repl` in the next one: that works because contexts live on disk under
RLM_MCP_HOME. Inspector 2.x speaks `2025-11-25` (initialize handshake) in its default `legacy`
era and `2026-07-28` (stateless, `server/discover`) in the `modern` era; both are covered.

The Inspector is a Node package that the test suite does not install. `bash .ci/run` installs it
into `.ci/node/` and sets RLM_MCP_INSPECTOR; locally, do the same (see `_SKIP_REASON`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.inspector

ROOT = Path(__file__).resolve().parents[1]
INSPECTOR_VERSION = "2.12.0"
CI_INSPECTOR = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcp-inspector"
RLM_MCP = Path(sys.executable).parent / "rlm-mcp"
TIMEOUT = 120.0  # seconds per Inspector invocation: spawn node, spawn the server, one request
SECRET_FILE = "alpha\nthe secret number is 4217\nomega\n"

_SKIP_REASON = (
    "MCP Inspector CLI not found. Enable with: "
    f"npm install --prefix .ci/node @modelcontextprotocol/inspector@{INSPECTOR_VERSION} && "
    "export RLM_MCP_INSPECTOR=$PWD/.ci/node/node_modules/.bin/mcp-inspector "
    "(bash .ci/run does both when npm is available)"
)


@pytest.fixture(scope="module")
def inspector() -> Path:
    """RLM_MCP_INSPECTOR, else the copy `.ci/run` installs; skip only when neither is set up.

    A configured but unusable RLM_MCP_INSPECTOR fails instead of skipping, so CI cannot
    silently lose this test after installing the Inspector.
    """
    configured = os.environ.get("RLM_MCP_INSPECTOR")
    path = Path(configured) if configured else CI_INSPECTOR
    usable = path.is_file() and os.access(path, os.X_OK) and shutil.which("node") is not None
    if not usable and configured:
        pytest.fail(f"RLM_MCP_INSPECTOR={configured} is not an executable file or node is missing")
    if not usable:
        pytest.skip(_SKIP_REASON)
    return path


class _Run:
    """Runs one Inspector CLI request against a fresh `rlm-mcp serve` sharing one data folder."""

    def __init__(self, inspector: Path, tmp_path: Path, era: str) -> None:
        self.inspector = inspector
        self.era = era
        self.rlm_home = tmp_path / "rlm-home"
        inspector_home = tmp_path / "inspector-home"  # keep ~/.mcp-inspector out of the real home
        inspector_home.mkdir()
        # The Inspector hands the server only a default environment (PATH, HOME, ...) plus `-e`.
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(inspector_home),
            "MCP_CATALOG_PATH": str(inspector_home / "mcp.json"),
            "MCP_CLIENT_CONFIG_PATH": str(inspector_home / "client.json"),
        }

    def __call__(self, method: str, tool: str | None = None, **args: Any) -> dict[str, Any]:
        cmd = [
            str(self.inspector),
            "--cli",
            "--format",
            "json",
            "--protocol-era",
            self.era,
            "--connect-timeout",
            "60000",
            "-e",
            f"RLM_MCP_HOME={self.rlm_home}",
            str(RLM_MCP),
            "serve",
            "--method",
            method,
        ]
        if tool is not None:
            cmd += ["--tool-name", tool, "--tool-args-json", json.dumps(args)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=TIMEOUT, check=False
        )
        detail = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        assert proc.returncode in (0, 5), detail  # 5: the tool answered with isError
        return dict(json.loads(proc.stdout)["result"])


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli_lists_tools_then_loads_a_file_and_runs_code_on_its_handle(
    inspector: Path, tmp_path: Path, era: str
) -> None:
    run = _Run(inspector, tmp_path, era)
    source = tmp_path / "notes.txt"
    source.write_text(SECRET_FILE)

    tools = {t["name"]: t for t in run("tools/list")["tools"]}
    assert {"load_context", "run_repl", "llm_query", "rlm_complete"} <= tools.keys()
    assert tools["run_repl"]["inputSchema"]["required"] == ["code"]

    loaded = run("tools/call", "load_context", path=str(source), name="notes")
    assert loaded["isError"] is False
    summary = loaded["structuredContent"]
    assert re.fullmatch(r"ctx_[0-9a-f]{12}", summary["handle"])
    assert (summary["name"], summary["chars"], summary["lines"]) == ("notes", len(SECRET_FILE), 3)

    code = "hits = [l for l in context.splitlines() if 'secret' in l]\nprint(hits[0].split()[-1])"
    ran = run("tools/call", "run_repl", code=code, handle=summary["handle"])
    assert ran["isError"] is False, ran
    assert ran["structuredContent"]["status"] == "ok"
    assert ran["structuredContent"]["output"].strip() == "4217"
    assert "error" not in ran["structuredContent"]  # left out at its default (null)


def test_inspector_cli_sees_an_unknown_handle_as_a_tool_error_that_names_the_fix(
    inspector: Path, tmp_path: Path
) -> None:
    run = _Run(inspector, tmp_path, "legacy")
    ran = run("tools/call", "run_repl", code="print(1)", handle="ctx_000000000000")
    assert ran["isError"] is True
    assert "list_contexts" in ran["content"][0]["text"]
