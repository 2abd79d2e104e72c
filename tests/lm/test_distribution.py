"""Where users install from: the Claude Code plugin, the Claude Desktop bundle, the MCP registry's
server.json, `uvx`, and the prompt that teaches the workflow. Checked with the real tools from npm
(`claude plugin validate`, `mcpb validate` / `mcpb pack`) and the real Claude Code CLI, offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client, StdioServerParameters

from rlm_mcp import __version__
from rlm_mcp.config import ENV_VARS, Settings
from rlm_mcp.distribution import build_bundle, registry_entry
from rlm_mcp.server import build_server
from rlm_mcp.testing.fake_provider import FakeProvider

from .test_agent_cli import agent_bin

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "clients_config" / "claude-code-plugin"
VENV_BIN = Path(sys.executable).parent

# The MCP registry's published server.json rules (schema 2025-09-29, docs/reference/server-json),
# restated here: the registry's schema file itself is not reachable offline.
REGISTRY_RULES: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "version"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "name": {
            "type": "string",
            "pattern": r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$",
            "minLength": 3,
            "maxLength": 200,
        },
        "description": {"type": "string", "minLength": 1, "maxLength": 100},
        "version": {"type": "string", "maxLength": 255, "not": {"pattern": r"^[\^~<>=]|\*|x$"}},
        "repository": {"type": "object", "required": ["url", "source"]},
        "packages": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["registryType", "identifier", "version", "transport"],
                "properties": {
                    "registryType": {"type": "string"},
                    "registryBaseUrl": {"type": "string"},
                    "identifier": {"type": "string"},
                    "version": {"type": "string", "minLength": 1, "not": {"const": "latest"}},
                    "runtimeHint": {"type": "string"},
                    "transport": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["stdio", "streamable-http", "sse"]}},
                    },
                    "packageArguments": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"enum": ["positional", "named"]}},
                        },
                    },
                    "environmentVariables": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "description": {"type": "string"},
                                "isRequired": {"type": "boolean"},
                                "isSecret": {"type": "boolean"},
                                "format": {"enum": ["string", "number", "boolean", "filepath"]},
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_server_json_is_what_the_code_says_and_follows_the_registry_rules() -> None:
    committed = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))
    assert committed == registry_entry(), "regenerate it: rlm-mcp registry > server.json"
    jsonschema.validate(committed, REGISTRY_RULES)
    (package,) = committed["packages"]
    assert committed["version"] == package["version"] == __version__
    assert package["registryType"] == "pypi" and package["transport"] == {"type": "stdio"}
    declared = {v["name"]: v for v in package["environmentVariables"]}
    assert set(declared) == set(ENV_VARS)  # every variable the code reads, and no other
    assert declared["ANTHROPIC_API_KEY"]["isSecret"] and declared["RLM_MCP_TOKEN"]["isSecret"]
    assert not declared["RLM_MCP_HOME"]["isSecret"]


def test_the_bundle_passes_the_real_mcpb_validate_and_pack(tmp_path: Path) -> None:
    mcpb = agent_bin("mcpb")
    manifest = build_bundle(tmp_path / "bundle")
    data = json.loads(manifest.read_text())
    checked = subprocess.run(
        [mcpb, "validate", manifest], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    out = tmp_path / "rlm-mcp.mcpb"
    packed = subprocess.run(
        [mcpb, "pack", tmp_path / "bundle", out], capture_output=True, text=True, timeout=120
    )
    assert packed.returncode == 0 and out.stat().st_size > 0, packed.stdout + packed.stderr
    assert {t["name"] for t in data["tools"]} >= {"load_context", "run_repl", "rlm_complete"}
    asked = data["user_config"]
    assert asked["anthropic_api_key"]["sensitive"] and asked["allowed_paths"]["type"] == "directory"
    env = data["server"]["mcp_config"]["env"]
    assert env["RLM_MCP_ALLOWED_PATHS"] == "${user_config.allowed_paths}"
    assert env["RLM_MCP_HOME"] == "${user_config.home}"


@pytest.mark.parametrize("target", [PLUGIN, ROOT])
def test_the_plugin_and_marketplace_pass_the_real_claude_plugin_validate(target: Path) -> None:
    claude = agent_bin("claude")
    done = subprocess.run(
        [claude, "plugin", "validate", "--strict", target],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": tempfile.mkdtemp()},
    )
    assert done.returncode == 0 and "Validation passed" in done.stdout, done.stdout + done.stderr


def test_the_skill_says_when_to_use_the_server() -> None:
    skill = (PLUGIN / "skills" / "large-inputs" / "SKILL.md").read_text(encoding="utf-8")
    front = re.match(r"---\n(.*?)\n---\n", skill, re.S)
    assert front and "name: large-inputs" in front.group(1)
    assert "too large to read" in front.group(1)
    for step in ("load_context", "run_repl", "llm_query_batched", "in code", "rlm_complete"):
        assert step in skill
    mcp = json.loads((PLUGIN / ".mcp.json").read_text())
    assert mcp["mcpServers"]["rlm"]["args"] == ["serve"]


@pytest.mark.anyio
async def test_the_analyze_prompt_carries_the_workflow(tmp_path: Path) -> None:
    async with Client(build_server(Settings(home=tmp_path))) as client:
        (prompt,) = (await client.list_prompts()).prompts
        assert prompt.name == "analyze"
        assert [a.name for a in prompt.arguments or []] == ["source", "question"]
        got = await client.get_prompt("analyze", {"source": "/logs", "question": "Who failed?"})
        loaded = await client.call_tool("load_context", {"text": "some text"})
    text = got.messages[0].content.text  # type: ignore[union-attr]
    assert "/logs" in text and "Who failed?" in text and "never read it whole" in text
    assert len(text) < 2_000  # a few hundred tokens
    links = [c for c in loaded.content if c.type == "resource_link"]
    assert links and links[0].uri == f"rlm://contexts/{loaded.structured_content['handle']}"


@pytest.mark.anyio
async def test_uvx_runs_the_server_from_a_path(tmp_path: Path) -> None:
    uvx = shutil.which("uvx", path=str(VENV_BIN)) or shutil.which("uvx")
    if uvx is None:
        pytest.skip("no uvx: pip install uv (the dev extra installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_MCP_")}  # CA certs
    env.update(
        PATH=f"{VENV_BIN}:/usr/bin:/bin",
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
        RLM_MCP_HOME=str(tmp_path / "home"),
    )
    params = StdioServerParameters(
        command=uvx, args=["--from", str(ROOT), "rlm-mcp", "serve"], env=env
    )
    with anyio.fail_after(300):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
    assert {"load_context", "run_repl", "rlm_complete"} <= names


def test_claude_code_starts_the_server_from_the_plugin_and_the_model_sees_it(
    tmp_path: Path,
) -> None:
    claude = agent_bin("claude")

    def run(ask: str) -> tuple[subprocess.CompletedProcess[str], str]:
        with FakeProvider(lambda request: "done") as fake:
            env = {
                "PATH": f"{VENV_BIN}:{claude.parent}:/usr/bin:/bin",  # the plugin runs `rlm-mcp`
                "HOME": str(tmp_path),
                "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
                "ANTHROPIC_API_KEY": "sk-fake",
                "DISABLE_TELEMETRY": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "RLM_MCP_HOME": str(tmp_path / "rlm"),
            }
            done = subprocess.run(
                [claude, "-p", ask, "--output-format", "json", "--plugin-dir", PLUGIN,
                 "--no-session-persistence"],
                capture_output=True, text=True, env=env, cwd=tempfile.mkdtemp(), timeout=180,
            )  # fmt: skip
            return done, json.dumps([r.json for r in fake.requests])

    done, sent = run("Which errors repeat in /var/log/app.log? It is 2 GB.")
    assert done.returncode == 0, done.stderr
    for tool in ("load_context", "run_repl", "llm_query", "rlm_complete"):
        assert f"mcp__plugin_rlm_rlm__{tool}" in sent  # the server started and offered its tools
    assert "rlm:large-inputs" in sent and "too large to read" in sent  # the skill, offered
    assert "Filter and count in code" in sent  # the server's instructions
    done, sent = run("/mcp__plugin_rlm_rlm__analyze /var/log/app.log Which errors repeat?")
    assert done.returncode == 0, done.stderr
    assert "never read it whole" in sent and "Which errors repeat?" in sent  # the prompt ran
