from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlm_mcp.testing.infra import free_port

RLM_MCP = shutil.which("rlm-mcp") or str(Path(sys.executable).with_name("rlm-mcp"))


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


@dataclass
class ServedHTTP:
    """An `rlm-mcp serve --transport http` subprocess on loopback."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def worker_pids(self) -> set[int]:
        """The server's child processes (its sandbox workers), from /proc."""
        found: set[int] = set()
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            try:
                found.update(int(p) for p in children.read_text().split())
            except OSError:
                continue
        return found


@pytest.fixture
def serve_http(tmp_path: Path) -> Iterator[Callable[..., ServedHTTP]]:
    """Start HTTP servers with extra flags and environment variables; all are stopped after
    the test.

    Security and load tests need a real HTTP server (bearer tokens, Mcp-Session-Id, several
    clients); tests/test_transports.py covers the transports themselves.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(*flags: str, **env: str) -> ServedHTTP:
        port = free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("RLM_MCP_")}
        full.update({"RLM_MCP_HOME": str(tmp_path / f"home-{port}"), **env})
        proc = subprocess.Popen(
            [RLM_MCP, "serve", "--transport", "http", "--port", str(port), *flags],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rlm-mcp serve did not start ({proc.poll()})") from None
                time.sleep(0.05)  # polling a port that is not open yet
        return ServedHTTP(f"http://127.0.0.1:{port}/mcp", proc)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
