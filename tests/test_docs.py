"""The docs stay true: every tool, resource, CLI command/flag and environment variable is in the
API reference, links resolve, snippets compile, and getting-started.md works when followed."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from rlm_mcp.cli import build_parser
from rlm_mcp.config import ENV_VARS, Settings
from rlm_mcp.server import build_server

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api-reference.md"
GETTING_STARTED = DOCS / "getting-started.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(path: Path, lang: str) -> list[str]:
    return [body for tag, body in FENCE.findall(path.read_text(encoding="utf-8")) if tag == lang]


def snippet(name: str) -> str:
    """The ```python block of getting-started.md whose first line is `# <name>`."""
    found = [b for b in code_blocks(GETTING_STARTED, "python") if b.startswith(f"# {name}")]
    assert len(found) == 1, f"getting-started.md has no single python block starting # {name}"
    return found[0]


def subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from subcommands(sub, f"{prefix}{name} ")


def section(text: str, heading: str) -> str:
    """From the heading line containing `heading` up to the next heading of any level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#") and heading in line:
            rest = lines[i + 1 :]
            end = next((j for j, x in enumerate(rest) if x.startswith("#")), len(rest))
            return "\n".join([line, *rest[:end]])
    raise AssertionError(f"api-reference.md has no heading with {heading!r}")


# --- the reference is complete ------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_tool_argument_and_resource_is_in_the_api_reference(tmp_path: Path) -> None:
    text = API.read_text(encoding="utf-8")
    with anyio.fail_after(60):
        async with Client(build_server(Settings(home=tmp_path))) as client:
            tools = (await client.list_tools()).tools
            resources = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
    assert tools
    for tool in tools:
        part = section(text, f"`{tool.name}`")
        for arg in tool.input_schema.get("properties", {}):
            assert f"`{arg}`" in part, f"argument {arg} of {tool.name} is not documented"
        for field in (tool.output_schema or {}).get("properties", {}):
            assert f"`{field}`" in part, f"result field {field} of {tool.name} is not documented"
    for uri in [str(r.uri) for r in resources] + [t.uri_template for t in templates]:
        assert f"`{uri}`" in text, f"resource {uri} is not documented"


def test_every_cli_command_and_flag_is_in_the_api_reference() -> None:
    text = API.read_text(encoding="utf-8")
    parser = build_parser()
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert f"`{flag}" in text, f"global flag {flag} is not documented"
    commands = dict(subcommands(parser))
    assert {"serve", "load", "contexts", "rm", "config", "complete", "bench tasks"} <= set(commands)
    for name, sub in commands.items():
        part = section(text, f"`rlm-mcp {name}")
        for action in sub._actions:
            flags = [f for f in action.option_strings if f.startswith("--") and f != "--help"]
            for flag in flags:
                assert f"`{flag}" in part, f"rlm-mcp {name} {flag} is not documented"
            if isinstance(action, argparse._StoreAction) and not action.option_strings:
                meta = action.metavar or action.dest
                assert str(meta) in part, f"argument {meta} of rlm-mcp {name} is not documented"


def test_every_public_python_name_and_rlm_argument_is_in_the_api_reference() -> None:
    import dataclasses
    import inspect

    import rlm_mcp
    from rlm_mcp import RLM, ContextStore, RLMChatCompletion

    text = API.read_text(encoding="utf-8")
    assert not [name for name in rlm_mcp.__all__ if f"`{name}" not in text]
    params = [p for p in inspect.signature(RLM.__init__).parameters if p != "self"]
    assert not [p for p in params if f"`{p}" not in text]
    for method in (RLM.completion, RLM.acompletion):
        args = [p for p in inspect.signature(method).parameters if p != "self"]
        assert not [p for p in args if f"`{p}" not in section(text, "`RLM(...)`")]
    fields = [f.name for f in dataclasses.fields(RLMChatCompletion)]
    assert not [f for f in fields if f"`{f}`" not in text]
    methods = [m for m in vars(ContextStore) if not m.startswith("_")]
    assert not [m for m in methods if f"`{m}(" not in text]


def test_every_environment_variable_is_in_the_api_reference() -> None:
    text = API.read_text(encoding="utf-8")
    missing = [name for name in ENV_VARS if f"`{name}`" not in text]
    assert not missing


def test_the_sandbox_page_lists_every_allowed_module_and_builtin() -> None:
    import random

    from rlm_mcp.sandbox.policy import ALLOWED_MODULES, CappedPrinter, build_globals

    text = (DOCS / "environments.md").read_text(encoding="utf-8")
    for module in ALLOWED_MODULES:
        assert f"`{module}`" in text, f"allowed module {module} is not documented"
    builtins = build_globals(CappedPrinter(10), random.Random(), {})["__builtins__"]
    for name in builtins:
        if name not in ("None", "True", "False", "__import__"):
            assert name in text, f"allowed builtin {name} is not documented"


def test_the_clients_page_covers_every_ready_made_config_and_config_command() -> None:
    from rlm_mcp.clients import CLIENTS

    text = (DOCS / "clients.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "clients_config").iterdir()):
        assert f"](../clients_config/{path.name})" in text, f"{path.name} is not linked"
    for client in CLIENTS:
        assert f"rlm-mcp config {client}" in text, f"rlm-mcp config {client} is not shown"


#: Error texts troubleshooting.md quotes, each a fragment that must also be in the code.
TROUBLESHOOTING_TEXTS = [
    "or use a local OpenAI-compatible server instead: backend ollama, llamacpp or",
    "clients do not pass your shell's environment",
    "The MCP client cannot sample",
    "the client did not declare the sampling capability",
    "this connection has no back channel for server-to-client requests",
    "to see stored handles, or load it again with load_context",
    "variables kept",
    "every variable of this session is gone",
    "raise the timeout (RLM_MCP_LM_TIMEOUT) or check that the server is responsive",
    "output truncated:",
    "limit for one context; load a smaller part",
    "Not enough free disk space for",
    "holds no text files to load (binary files, .git, node_modules",
    "does not exist; check the spelling, or pass a directory or a glob pattern",
    "needs a bearer token: set RLM_MCP_TOKEN (or RLM_MCP_TOKENS_FILE)",
    "Choose another port with --port, or stop the program that uses it",
    "cannot be used:",
    "is unknown or expired",
    "needs a bearer token (anyone could guess the name)",
    "sandbox sessions available to this client are in use",
    "is above this server's ceiling of",
    "missing or wrong bearer token (RLM_MCP_TOKEN)",
    "is not allowed in the sandbox; allowed modules:",
    "is not allowed in the sandbox",
    "No trajectory file at",
    "as a trajectory",
]


def _flat(text: str) -> str:
    """Source or Markdown with implicit string concatenation and line wrapping undone."""
    text = re.sub(r"\"\s*\n\s*[rf]*\"", "", text)
    return re.sub(r"\s+", " ", text)


def test_troubleshooting_quotes_error_texts_the_code_still_produces() -> None:
    doc = _flat((DOCS / "troubleshooting.md").read_text(encoding="utf-8"))
    code = _flat("\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "rlm_mcp").rglob("*.py")))
    for fragment in TROUBLESHOOTING_TEXTS:
        assert fragment in doc, f"troubleshooting.md no longer quotes {fragment!r}"
        assert fragment in code, f"the code no longer says {fragment!r}: update troubleshooting.md"


# --- links and snippets -------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def test_every_relative_link_in_the_docs_and_readme_resolves() -> None:
    pages = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
    assert len(pages) >= 6
    checked = 0
    for page in pages:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            assert dest.exists(), f"{page.name}: broken link {target}"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{page.name}: no heading for {target}"
            checked += 1
    assert checked >= 10


def test_every_python_block_in_the_docs_compiles() -> None:
    blocks = 0
    for page in sorted(DOCS.glob("*.md")):
        for i, body in enumerate(code_blocks(page, "python")):
            compile(body, f"{page.name}[python block {i}]", "exec")
            blocks += 1
    assert len(code_blocks(GETTING_STARTED, "python")) >= 3
    assert blocks >= 3


# --- following getting-started.md ---------------------------------------------------------------


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A new user's shell: the venv on PATH, an empty HOME, no provider keys, no RLM_MCP_*.

    The MCP SDK passes HOME (and PATH) to the stdio server it spawns, so an empty HOME keeps the
    server's default data folder inside this test.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RLM_MCP_", "OPENAI_", "ANTHROPIC_", "XDG_"))
        and k not in ("OPENROUTER_API_KEY", "GEMINI_API_KEY")
    }
    home = tmp_path / "home"
    home.mkdir()
    env["HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert out.returncode == 0, f"{argv}: {out.stdout}\n{out.stderr}"
    return out


def write_app_log(folder: Path) -> tuple[Path, int, int]:
    """A log file: (path, lines, ERROR lines)."""
    lines = [
        f"2026-11-25 {h:02d}:{m:02d} {'ERROR' if (h * 60 + m) % 7 == 0 else 'INFO'} job {m}"
        for h in range(24)
        for m in range(60)
    ]
    path = folder / "app.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, len(lines), sum("ERROR" in line for line in lines)


def fake_provider_argv() -> list[str]:
    """The fake-provider command exactly as getting-started.md shows it."""
    found = [b for b in code_blocks(GETTING_STARTED, "bash") if "fake_provider" in b]
    assert len(found) == 1
    argv = shlex.split(found[0])
    assert argv[:3] == ["python", "-m", "rlm_mcp.testing.fake_provider"]
    return [sys.executable, *argv[1:]]


@pytest.mark.slow
def test_getting_started_reaches_run_repl_and_rlm_complete(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    # 1. installed: the command is on PATH
    assert "rlm-mcp" in run(["rlm-mcp", "--version"], user_env, tmp_path).stdout

    # 3. the client config names this install's absolute command
    cfg = json.loads(run(["rlm-mcp", "config", "claude-desktop"], user_env, tmp_path).stdout)
    assert Path(cfg["mcpServers"]["rlm"]["command"]).is_file()

    # 4. load_context + run_repl from a client
    log, n_lines, n_errors = write_app_log(tmp_path)
    (tmp_path / "first_client.py").write_text(snippet("first_client.py"), encoding="utf-8")
    out = run([sys.executable, "first_client.py", "app.log"], user_env, tmp_path).stdout
    assert re.search(r"^handle: ctx_[0-9a-f]{12} \d+ chars$", out, re.M), out
    assert f"{n_lines} lines" in out
    assert f"{n_errors} ERROR lines" in out
    assert (Path(user_env["HOME"]) / ".cache" / "rlm-mcp" / "contexts").is_dir()

    # 5. rlm_complete against the fake provider, started as the page says
    (tmp_path / "first_complete.py").write_text(snippet("first_complete.py"), encoding="utf-8")
    fake = subprocess.Popen(
        fake_provider_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        argv = [sys.executable, "first_complete.py", str(log), url]
        out = run(argv, user_env, tmp_path).stdout
        assert f"answer: The file has {n_lines} lines." in out
        assert "stop: final after 1 iteration(s)" in out
        trajectory = Path(out.split("trajectory: ")[1].splitlines()[0])
        assert trajectory.is_file()
        page = tmp_path / "first_run.html"
        run(["rlm-mcp", "view", str(trajectory), "--out", str(page)], user_env, tmp_path)
        assert "The file has" in page.read_text(encoding="utf-8")

        # the same without MCP, as the page says
        query = ["--query", "How many lines?", "--base-url", f"{url}/v1"]
        cli = run(["rlm-mcp", "complete", "--context", str(log), *query], user_env, tmp_path)
        assert cli.stdout.strip() == f"The file has {n_lines} lines."
    finally:
        assert fake.stdin is not None and fake.stdout is not None
        fake.stdin.close()  # the fake provider serves until its stdin closes
        fake.wait(timeout=10)
        fake.stdout.close()

    # 6. sampling: the client's own model answers
    (tmp_path / "sampling_client.py").write_text(snippet("sampling_client.py"), encoding="utf-8")
    out = run([sys.executable, "sampling_client.py"], user_env, tmp_path).stdout
    assert "answer: 6000 characters" in out


@pytest.mark.slow
def test_getting_started_demo_and_viewer_commands_work(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    commands = dict(subcommands(build_parser()))
    if "demo" not in commands or "view" not in commands:
        pytest.skip("`rlm-mcp demo` / `rlm-mcp view` are not registered in this build")
    out = run(["rlm-mcp", "demo"], user_env, tmp_path).stdout
    paths = re.findall(r"(\S+\.jsonl)", out)
    assert paths, out
    page = tmp_path / "run.html"
    run(["rlm-mcp", "view", paths[-1], "--out", str(page)], user_env, tmp_path)
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_the_ready_made_client_configs_are_what_rlm_mcp_config_prints() -> None:
    from rlm_mcp.clients import snippet

    files = {
        "claude-desktop": "claude_desktop_config.json",
        "cursor": "cursor_mcp.json",
        "vscode": "vscode_mcp.json",
        "windsurf": "windsurf_mcp_config.json",
    }
    for client, name in files.items():
        text = (ROOT / "clients_config" / name).read_text(encoding="utf-8")
        assert text.strip() == snippet(client, command="rlm-mcp").strip(), name
    project = snippet("claude-code", command="rlm-mcp").split("\n", 3)[-1]
    assert project.strip() in (ROOT / "clients_config" / "claude_code.md").read_text("utf-8")
