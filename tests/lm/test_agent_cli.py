"""Agent CLIs as models, against the real programs from npm.

`claude` (Claude Code) runs fully offline against the loopback fake provider, which speaks the
Messages API's server-sent events; its login lives in `$HOME/.claude/settings.json` (the `env`
block), so the environment we pass holds no key. Codex and the Gemini CLI would need a fake of the
Responses API and of Gemini's API: for their JSON we use stand-in executables that print what
their documentation says, and we check the real programs accept every flag we pass them.

`.ci/run` installs the programs into `.ci/node/` and exports RLM_MCP_AGENT_BIN; without them these
tests skip with one line saying how to get them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from rlm_mcp.errors import ProviderError, ProviderTimeoutError
from rlm_mcp.lm import ConcurrencyLimit, Message, resolve_lm
from rlm_mcp.lm.agent_cli import AGENT_PROGRAMS, AgentCLILM
from rlm_mcp.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
INSTALL = (
    "npm install --prefix .ci/node @anthropic-ai/claude-code @openai/codex @google/gemini-cli "
    "&& export RLM_MCP_AGENT_BIN=$PWD/.ci/node/node_modules/.bin (bash .ci/run does both)"
)


def agent_bin(command: str) -> Path:
    """The real program from npm, or skip saying how to install it."""
    where = os.environ.get("RLM_MCP_AGENT_BIN") or str(
        ROOT / ".ci" / "node" / "node_modules" / ".bin"
    )
    path = Path(where) / command
    if not os.access(path, os.X_OK):
        pytest.skip(f"no `{command}` program: {INSTALL}")
    return path


def logged_in_home(tmp_path: Path, fake: FakeProvider) -> Path:
    """A HOME in which `claude` is "logged in" to the fake: the key lives in its settings."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    env = {
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "ANTHROPIC_API_KEY": "sk-fake-login",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    (home / ".claude" / "settings.json").write_text(json.dumps({"env": env}))
    return home


def user_env(home: Path, bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home)}


@pytest.fixture
def claude(tmp_path: Path) -> Iterator[tuple[Path, FakeProvider, dict[str, str]]]:
    exe = agent_bin("claude")
    with FakeProvider(lambda req: "six times seven is 42") as fake:
        yield exe, fake, user_env(logged_in_home(tmp_path, fake), exe.parent)


def _live_children() -> set[int]:
    found: set[int] = set()
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        found.update(int(p) for p in children.read_text().split())
    return found


# -- the real claude -----------------------------------------------------------------------------


async def test_claude_answers_from_stdin_and_reports_usage_and_cost(
    claude: tuple[Path, FakeProvider, dict[str, str]],
) -> None:
    _, fake, env = claude
    lm = resolve_lm("claude-code", environ=env)
    secret = "the user's document text " * 20
    with anyio.fail_after(60):
        done = await lm.complete([Message("system", "be brief"), Message("user", secret)])
    assert done.text == "six times seven is 42"
    assert done.usage.input_tokens == 10 and not done.usage.estimated
    assert done.usage.cost is not None and done.usage.cost > 0
    sent = json.dumps(fake.requests[-1].json)
    assert "the user's document text" in sent  # the prompt travelled on stdin
    assert '"tools": []' in sent or "tools" not in fake.requests[-1].json


async def test_sixteen_calls_run_at_most_four_programs_at_once(
    claude: tuple[Path, FakeProvider, dict[str, str]],
) -> None:
    _, fake, env = claude
    fake.latency = 0.3
    lm = AgentCLILM(AGENT_PROGRAMS["claude-code"], environ=env, limit=ConcurrencyLimit(4))
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(lm.complete, [Message("user", f"question {i}")])
    assert lm.peak_running == 4 and lm.running == 0
    assert len([r for r in fake.requests if "/messages" in r.path]) >= 16


async def test_a_call_past_its_timeout_is_stopped_with_its_whole_process_group(
    claude: tuple[Path, FakeProvider, dict[str, str]],
) -> None:
    _, fake, env = claude
    fake.latency = 30
    lm = AgentCLILM(AGENT_PROGRAMS["claude-code"], environ=env, timeout=3)
    before = _live_children()
    with anyio.fail_after(60), pytest.raises(ProviderTimeoutError, match="within 3 s"):
        await lm.complete([Message("user", "slow")])
    assert _live_children() <= before


async def test_a_cancelled_call_leaves_no_child_process_behind(
    claude: tuple[Path, FakeProvider, dict[str, str]],
) -> None:
    _, fake, env = claude
    fake.latency = 30
    lm = AgentCLILM(AGENT_PROGRAMS["claude-code"], environ=env)
    before = _live_children()
    with anyio.fail_after(60):
        with anyio.move_on_after(3):
            await lm.complete([Message("user", "cancel me")])
        assert lm.running == 0
    assert _live_children() <= before


async def test_a_logged_out_claude_says_how_to_log_in(tmp_path: Path) -> None:
    exe = agent_bin("claude")
    home = tmp_path / "empty-home"
    home.mkdir()
    env = {**user_env(home, exe.parent), "DISABLE_TELEMETRY": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}  # fmt: skip
    lm = resolve_lm("claude-code", environ=env)
    with anyio.fail_after(60), pytest.raises(ProviderError) as err:
        await lm.complete([Message("user", "hi")])
    text = str(err.value)
    assert "claude-code" in text and "Not logged in" in text and "/login" in text


@pytest.mark.parametrize("backend", ["codex", "gemini-cli"])
def test_the_real_programs_accept_every_flag_we_pass(backend: str) -> None:
    program = AGENT_PROGRAMS[backend]
    exe = agent_bin(program.command)
    args = [exe, "exec", "--help"] if backend == "codex" else [exe, "--help"]
    helptext = subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
    flags = [a for a in program.argv("some-model") if a.startswith("-") and a != "-"]
    assert flags and all(flag in helptext for flag in flags), flags


# -- stand-ins for Codex and Gemini, and failures any program can have -------------------------


def stand_in(tmp_path: Path, name: str, body: str) -> Path:
    """An executable called `name` that reads stdin and runs `body` (Python)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!{sys.executable}\nimport json, sys\nprompt = sys.stdin.read()\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


CODEX = """
assert sys.argv[1:3] == ["exec", "--json"] and sys.argv[-1] == "-", sys.argv
for event in [
    {"type": "thread.started", "thread_id": "t"},
    {"type": "item.completed", "item": {"id": "i", "type": "agent_message",
                                         "text": "codex read " + str(len(prompt))}},
    {"type": "turn.completed", "usage": {"input_tokens": 7, "cached_input_tokens": 2,
                                          "output_tokens": 3}},
]:
    print(json.dumps(event))
"""
GEMINI = """
assert "--output-format" in sys.argv and "json" in sys.argv, sys.argv
print(json.dumps({"response": "gemini read " + str(len(prompt)), "stats": {"models": {
    "gemini-2.5-pro": {"tokens": {"prompt": 9, "candidates": 4, "cached": 1, "total": 13}}}}}))
"""


@pytest.mark.parametrize(
    ("backend", "command", "body", "words", "tokens"),
    [
        ("codex", "codex", CODEX, "codex read 5", (7, 3, 2)),
        ("gemini-cli", "gemini", GEMINI, "gemini read 5", (9, 4, 1)),
    ],
)
async def test_codex_and_gemini_json_is_read_with_its_usage(
    tmp_path: Path, backend: str, command: str, body: str, words: str, tokens: tuple[int, ...]
) -> None:
    exe = stand_in(tmp_path, command, body)
    lm = resolve_lm(backend, environ={"PATH": str(exe.parent)})
    with anyio.fail_after(30):
        done = await lm.complete([Message("user", "hello")])
    assert done.text == words
    u = done.usage
    assert (u.input_tokens, u.output_tokens, u.cached_tokens) == tokens and not u.estimated


async def test_output_that_is_not_json_names_the_program_and_what_it_said(tmp_path: Path) -> None:
    exe = stand_in(tmp_path, "claude", "print('Welcome! Something broke: stack overflow')")
    lm = resolve_lm("claude-code", environ={"PATH": str(exe.parent)})
    with anyio.fail_after(30), pytest.raises(ProviderError) as err:
        await lm.complete([Message("user", "hi")])
    text = str(err.value)
    assert "claude-code" in text and "not JSON" in text and "Something broke" in text


async def test_a_rate_limited_program_says_to_wait(tmp_path: Path) -> None:
    exe = stand_in(
        tmp_path,
        "gemini",
        "print(json.dumps({'error': {'message': '429 Too Many Requests: quota exceeded'}}))",
    )
    lm = resolve_lm("gemini-cli", environ={"PATH": str(exe.parent)})
    with anyio.fail_after(30), pytest.raises(ProviderError, match="rate-limited"):
        await lm.complete([Message("user", "hi")])


async def test_a_missing_program_says_how_to_install_it() -> None:
    lm = resolve_lm("codex", environ={"PATH": "/nonexistent"})
    with anyio.fail_after(30), pytest.raises(ProviderError) as err:
        await lm.complete([Message("user", "hi")])
    assert "`codex` program is not on PATH" in str(err.value)
    assert "npm install -g @openai/codex" in str(err.value)


def test_auto_picks_an_agent_cli_after_keys_and_before_sampling(tmp_path: Path) -> None:
    from rlm_mcp.backends import pick_backend

    bin_dir = stand_in(tmp_path, "codex", "").parent
    stand_in(tmp_path, "gemini", "")
    env = {"PATH": str(bin_dir)}
    assert pick_backend(env) == "codex"  # codex comes before gemini; no claude here
    stand_in(tmp_path, "claude", "")
    assert pick_backend(env) == "claude-code"
    assert pick_backend({**env, "ANTHROPIC_API_KEY": "k"}) == "anthropic"  # a key wins


def test_doctor_says_what_auto_picks_and_why(tmp_path: Path) -> None:
    bin_dir = stand_in(tmp_path, "claude", "").parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RLM_MCP_HOME": str(tmp_path / "h")}
    out = subprocess.run(
        [sys.executable, "-m", "rlm_mcp", "doctor"], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "picks claude-code" in out.stdout and "against your Claude plan" in out.stdout
    none = subprocess.run(
        [sys.executable, "-m", "rlm_mcp", "doctor"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "RLM_MCP_HOME": str(tmp_path / "h")}, timeout=60,
    )  # fmt: skip
    assert none.returncode == 1 and "Four ways" in none.stdout
