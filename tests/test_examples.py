"""Every script in examples/ runs offline (no provider key) and finds the answer it must find."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROVIDER_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENROUTER_API_KEY",
    "GEMINI_API_KEY",
)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, home: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PROVIDER_VARS and not k.startswith("RLM_MCP_")
    }
    env["RLM_MCP_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=home,
    )


def test_every_example_has_a_main_and_a_docstring() -> None:
    names = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert names == ["mcp_client", "multi_provider", "quickstart"]
    for name in names:
        source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
        assert source.startswith('"""'), name
        assert 'if __name__ == "__main__":' in source and "def main() -> int:" in source, name


@pytest.mark.slow
def test_quickstart_finds_the_needle_offline_and_writes_a_trajectory(tmp_path: Path) -> None:
    _, expected = load_example("quickstart").make_haystack()
    out = run_example("quickstart", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "models: offline (ScriptedLM)" in out.stdout
    assert f"answer: {expected}" in out.stdout
    assert "stop: final after 2 iterations; 3 model calls" in out.stdout
    assert "scripted-sub: 1 calls" in out.stdout
    path = Path(out.stdout.split("trajectory: ")[1].strip())
    assert path.parent == tmp_path / "trajectories"
    assert path.is_file() and '"type": "result"' in path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_mcp_client_drives_the_stdio_server_and_rlm_complete_with_the_fake_provider(
    tmp_path: Path,
) -> None:
    module = load_example("mcp_client")
    _, expected = module.write_log(tmp_path)
    out = run_example("mcp_client", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("no provider key: using the fake provider at http://127.0.0.1:")
    assert any(line.startswith("load_context -> ctx_") for line in lines)
    repl = [line for line in lines if line.startswith("run_repl [ok] -> ")]
    assert len(repl) == 2 and f"is {expected}." in repl[0] and repl[1].endswith(expected)
    assert any(line.startswith("list_contexts -> ctx_") for line in lines)
    assert f"rlm_complete -> '{expected}' (final, 1 iterations)" in out.stdout
    trajectory = Path(out.stdout.split("trajectory: ")[1].splitlines()[0])
    assert trajectory.parent == tmp_path / "trajectories" and trajectory.is_file()


@pytest.mark.slow
def test_multi_provider_routes_sub_calls_to_the_anthropic_fake(tmp_path: Path) -> None:
    _, expected = load_example("multi_provider").make_haystack()
    out = run_example("multi_provider", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "root: openai fake-root   sub: anthropic fake-sub" in out.stdout
    assert f"answer: {expected}" in out.stdout
    assert "fake-root: 1 calls" in out.stdout
    assert "fake-sub: 7 calls" in out.stdout  # one per 50,000-character chunk
