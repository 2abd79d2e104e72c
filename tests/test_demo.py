"""`rlm-mcp demo`: the README's first command, offline, through the real MCP protocol."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_mcp.cli import main


def test_demo_finds_the_needle_through_load_repl_and_rlm_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--home", str(tmp_path), "demo", "--chars", "100k"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1. load_context -> ctx_" in out
    assert "5 needles" in out  # run_repl really ran over the loaded file
    answer_line = next(line for line in out.splitlines() if line.strip().startswith("A: "))
    got, expected = answer_line.split("A: ")[1].split("(expected ")
    assert got.strip() == expected.rstrip(")").strip()
    trajectory = Path(out.split("Trajectory: ")[1].split()[0])
    assert trajectory.is_file()


def test_demo_with_real_models_and_no_key_says_which_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--home", str(tmp_path), "demo", "--chars", "20k", "--backend", "openai"])
    err = capsys.readouterr().err
    assert code == 2
    assert "OPENAI_API_KEY" in err
    assert "Traceback" not in err


def test_the_installed_demo_command_runs_offline(tmp_path: Path) -> None:
    exe = shutil.which("rlm-mcp", path=str(Path(sys.executable).parent))
    assert exe, "rlm-mcp is not installed in this environment (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["RLM_MCP_HOME"] = str(tmp_path)
    out = subprocess.run(
        [exe, "demo", "--chars", "50k"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "rlm-mcp view" in out.stdout
