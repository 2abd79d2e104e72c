from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlm_mcp.config import Settings, default_home
from rlm_mcp.errors import ConfigError


def test_rlm_mcp_home_moves_the_data_folder(tmp_path: Path) -> None:
    assert default_home({"RLM_MCP_HOME": str(tmp_path)}) == tmp_path


def test_linux_default_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert default_home({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "rlm-mcp"


def test_settings_read_typed_values_and_overrides_win() -> None:
    env = {
        "RLM_MCP_MAX_ITERATIONS": "7",
        "RLM_MCP_EXEC_TIMEOUT": "2.5",
        "RLM_MCP_MODEL": "m1",
        "RLM_MCP_SUBCALL_CACHE": "0",
    }
    s = Settings.from_env(env, model="m2", backend=None)
    assert (s.max_iterations, s.exec_timeout, s.model, s.subcall_cache) == (7, 2.5, "m2", False)
    assert s.backend == "auto"


@pytest.mark.parametrize(
    ("var", "value"), [("RLM_MCP_MAX_DEPTH", "two"), ("RLM_MCP_SUBCALL_CACHE", "maybe")]
)
def test_a_malformed_variable_names_itself(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: value})


def test_a_home_given_as_a_string_becomes_a_path(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=str(tmp_path))
    assert settings.home == tmp_path
    assert settings.store_dir == tmp_path / "contexts"


def test_allowed_paths_split_on_the_path_separator_and_empty_means_unrestricted() -> None:
    assert Settings.from_env({"RLM_MCP_ALLOWED_PATHS": ""}).allowed_roots is None  # placeholder
    both = Settings.from_env({"RLM_MCP_ALLOWED_PATHS": f"/a{os.pathsep}/b c{os.pathsep}"})
    assert both.allowed_roots == ["/a", "/b c"]
