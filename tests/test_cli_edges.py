"""The CLI at its edges: one line and the same exit code for the same kind of error, never a
traceback; paths relative to where the command runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_mcp.cli import EXIT_USAGE
from rlm_mcp.testing.fake_provider import FakeProvider


def _run(
    args: list[str], home: Path, *, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_MCP_", "OPENAI_"))}
    env.update({"OPENAI_API_KEY": "dummy", "RLM_MCP_HOME": str(home)})
    return subprocess.run(
        [sys.executable, "-m", "rlm_mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The error line; argparse's usage errors may print the usage above it, nothing else may."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if "error: argument" in lines[-1]:
        assert lines[0].startswith("usage:"), proc.stderr
    else:
        assert len(lines) == 1, proc.stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["demo", "--chars", "abc"], ["--chars", "not a size"]),
        (["--home", "/proc/rlm-x", "contexts"], ["RLM_MCP_HOME"]),
        (["--home", "/proc/rlm-x", "serve"], ["RLM_MCP_HOME"]),  # said at start-up, not later
        (["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"], ["token"]),
        (["complete", "--context", "nope.log", "--query", "q", "--max-iterations", "0"], ["0"]),
        (["rm", "ctx_000000000000"], ["not found"]),
        (["complete", "--context", "ctx_000000000000", "--query", "q"], ["neither a file"]),
        (["--log-level", "LOUD", "contexts"], ["LOUD"]),
        (["serve", "--transport", "http", "--stateless"], ["RLM_MCP_STORE", "RLM_MCP_RAY_ADDRESS"]),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    proc = _run(args, tmp_path / "home")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = _one_line_error(proc)
    for word in words:
        assert word in line


def test_serve_refuses_a_busy_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run(["serve", "--transport", "http", "--port", str(port)], tmp_path, timeout=30)
    assert proc.returncode == EXIT_USAGE
    assert "--port" in _one_line_error(proc)


def test_serve_over_http_prints_the_url_it_serves(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_MCP_")}
    env["RLM_MCP_HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_mcp", "serve", "--transport", "http", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed before the server starts listening
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert f"http://127.0.0.1:{port}/mcp" in line


def test_complete_reads_a_relative_path_from_where_it_runs_and_says_unknown_cost(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "app.log").write_text("ERROR a\nINFO b\nERROR c\n")
    replies = ["```repl\nn = context.count('ERROR')\nprint(n)\n```", "FINAL_VAR(n)"]
    with FakeProvider(replies) as fake:
        proc = _run(
            [
                "complete",
                "--context",
                "app.log",
                "--query",
                "How many ERROR lines?",
                "--model",
                "my-local-model",  # no price is known for it
                "--base-url",
                fake.openai_base_url,
                "--log-dir",
                "runs",
            ],
            tmp_path / "home",
            cwd=work,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    assert "cost unknown (no price for my-local-model)" in proc.stderr
    assert "$0.0000" not in proc.stderr
    assert list((work / "runs").glob("*.jsonl"))


def test_a_failed_complete_writes_no_trajectory(tmp_path: Path) -> None:
    proc = _run(
        ["complete", "--context", "missing.log", "--query", "q", "--log-dir", str(tmp_path / "r")],
        tmp_path / "home",
        cwd=tmp_path,
    )
    assert proc.returncode == EXIT_USAGE
    assert not list((tmp_path / "r").glob("*.jsonl"))


def test_the_committed_claude_code_config_names_the_bare_command(tmp_path: Path) -> None:
    proc = _run(["config", "claude-code"], tmp_path)
    install_line, _, project = proc.stdout.partition("\n\n")
    assert os.path.isabs(install_line.split(" -- ")[1].split()[0])
    entry = json.loads(project.split("\n", 1)[1])["mcpServers"]["rlm"]
    assert entry["command"] == "rlm-mcp"


def test_the_demo_explains_its_distractor_needles(tmp_path: Path) -> None:
    proc = _run(["demo", "--chars", "50k"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "distractor" in proc.stdout.splitlines()[0]
    assert "distractors for other keys" in proc.stdout
