from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test may touch the user's real data folder or read real provider keys."""
    home = tmp_path_factory.mktemp("rlm-home")
    monkeypatch.setenv("RLM_MCP_HOME", str(home))
    # the library ignores RLM_MCP_HOME; its default follows the platform's cache folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
