"""Attacks on load_context and the store, through stdio as they came: glob enumeration, symlink
targets in errors, and a store that grew past its cap."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

RLM_MCP = shutil.which("rlm-mcp") or str(Path(sys.executable).with_name("rlm-mcp"))


@asynccontextmanager
async def _stdio(home: Path, **env: str) -> AsyncIterator[Any]:
    params = StdioServerParameters(
        command=RLM_MCP, args=["serve"], env={"RLM_MCP_HOME": str(home), **env}
    )
    async with Client(params) as client:
        yield client


def _store_bytes(home: Path) -> int:
    return sum(f.stat().st_size for f in (home / "contexts").rglob("*") if f.is_file())


async def test_globs_outside_the_allowed_folders_reveal_nothing(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "notes.txt").write_text("fine")
    (outside / "id_rsa_fake").write_text("PRIVATE KEY canary")
    (allowed / "link.txt").symlink_to(outside / "id_rsa_fake")
    with anyio.fail_after(60):
        async with _stdio(tmp_path / "home", RLM_MCP_ALLOWED_PATHS=str(allowed)) as client:
            answers = []
            for pattern in [f"{outside}/id_*", f"{outside}/nothing_*", f"{outside}/*.none"]:
                res = await client.call_tool("load_context", {"path": pattern})
                assert res.is_error
                answers.append(res.content[0].text.replace(pattern, "PATTERN"))
            assert len(set(answers)) == 1, answers  # refusal and no-match look the same
            link = await client.call_tool("load_context", {"path": str(allowed / "link.txt")})
            assert link.is_error
            assert "id_rsa_fake" not in link.content[0].text  # never name a symlink's target
            assert "elsewhere" not in link.content[0].text


async def test_the_store_cap_holds_in_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cap = 20 * 1024 * 1024
    with anyio.fail_after(120):
        async with _stdio(home, RLM_MCP_MAX_STORE_BYTES=str(cap)) as client:
            for i in range(12):  # 12 x 3 MB = 36 MB of distinct texts into a 20 MB store
                text = f"{i:04d}" + os.urandom(1_500_000).hex()
                res = await client.call_tool("load_context", {"text": text})
                assert not res.is_error, res.content
                assert _store_bytes(home) <= cap + 1024 * 1024, (i, _store_bytes(home))
            last = res.structured_content["handle"]
            still = await client.call_tool(
                "run_repl", {"code": "print(context[:4])", "handle": last}
            )
            assert still.structured_content["output"] == "0011\n"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
async def test_a_swap_to_environ_during_a_load_through_the_protocol_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp import Client

    from rlm_mcp.config import Settings
    from rlm_mcp.server import build_server
    from rlm_mcp.store import _paths

    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-race-9e1f")
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "a.txt").write_text("ordinary\n")
    victim = folder / "z.txt"
    victim.write_text("swapped later\n")

    def swap(path: Path) -> None:  # an attacker's write lands between check and open
        if path == victim:
            victim.unlink()
            victim.symlink_to("/proc/self/environ")

    monkeypatch.setattr(_paths, "before_open", swap)
    with anyio.fail_after(60):
        async with Client(build_server(Settings(home=tmp_path / "home"))) as client:
            res = await client.call_tool("load_context", {"path": str(folder)})
            assert not res.is_error, res.content
            assert res.structured_content["skipped"] == {"refused": 1}
            handle = res.structured_content["handle"]
            text = await client.call_tool("run_repl", {"code": "print(context)", "handle": handle})
    assert "sk-canary-race" not in text.structured_content["output"]
    assert "ordinary" in text.structured_content["output"]
