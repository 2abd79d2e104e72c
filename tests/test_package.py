from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rlm_mcp
from rlm_mcp.config import ENV_VARS

ROOT = Path(__file__).resolve().parent.parent


def test_all_has_no_duplicates_and_every_name_resolves() -> None:
    # Ordering is ruff's job (RUF022, isort-style); here: no duplicates, nothing missing.
    assert len(rlm_mcp.__all__) == len(set(rlm_mcp.__all__))
    assert set(rlm_mcp.__all__) == {*rlm_mcp._EXPORTS, "__version__"}
    for name in rlm_mcp.__all__:
        assert getattr(rlm_mcp, name) is not None


def test_importing_the_package_loads_no_provider_sdk_or_sandbox() -> None:
    code = (
        "import sys, rlm_mcp; "
        "heavy = [m for m in ('openai', 'anthropic', 'RestrictedPython', 'diskcache') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_prints_the_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rlm_mcp", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"rlm-mcp {rlm_mcp.__version__}"


def test_env_example_lists_every_environment_variable_the_project_reads() -> None:
    example = (ROOT / ".env.example").read_text()
    for var in ENV_VARS:
        assert f"{var}=" in example, var
