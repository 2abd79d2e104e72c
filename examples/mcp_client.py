"""Talk to `rlm-mcp serve` the way an MCP client (Claude Desktop, Cursor, ...) does: over stdio.

    python examples/mcp_client.py

It writes a log-like file with one needle line, starts the server as a subprocess, and calls its
tools: `load_context` on the file, `run_repl` twice (variables persist between calls),
`list_contexts`, then `rlm_complete` (the whole RLM loop on the server).

`rlm_complete` needs a model. With OPENAI_API_KEY or ANTHROPIC_API_KEY set it uses that provider;
without one it starts the local fake provider (`python -m rlm_mcp.testing.fake_provider`, an
OpenAI-compatible server on 127.0.0.1 that always answers with the code in FAKE_ROOT_REPLY) and
points the server at it with OPENAI_BASE_URL. Note that the server only sees the variables put in
`env=` below: MCP clients do not hand their shell environment to a stdio server.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

KEY = "quartz-falcon"
QUESTION = f"What is the special magic number for {KEY}?"

#: What the fake provider answers to every call: one turn of a root model that finds the needle.
FAKE_ROOT_REPLY = f"""I will search the context for the key.
```repl
import re
m = re.search(r"magic number for {KEY} is (\\d+)", context)
FINAL(m.group(1) if m else "not found")
```"""


def write_log(folder: Path, seed: int = 11, lines: int = 20_000) -> tuple[Path, str]:
    """A 1 MB log file with one needle line; returns (path, the needle's number)."""
    rng = random.Random(seed)
    levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG"]
    out = [
        f"2026-11-{1 + i % 28:02d} {levels[i % 5]} worker-{rng.randint(1, 64)} "
        f"handled request {rng.getrandbits(40):x} in {rng.randint(1, 900)} ms"
        for i in range(lines)
    ]
    number = str(rng.randint(1_000_000, 9_999_999))
    out[rng.randrange(lines)] = f"2026-11-17 INFO The special magic number for {KEY} is {number}."
    path = folder / "service.log"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path, number


def server_command() -> str:
    """The installed `rlm-mcp` script (next to this Python first, then on PATH)."""
    local = Path(sys.executable).with_name("rlm-mcp")
    return str(local) if local.exists() else (shutil.which("rlm-mcp") or "rlm-mcp")


def start_fake_provider(reply: str) -> tuple[subprocess.Popen[str], str]:
    """Start the fake OpenAI-compatible server; it prints its URL and serves until stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_mcp.testing.fake_provider", "--reply", reply],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"the fake provider did not start (printed {url!r})")
    return proc, url


def server_env(fake_url: str | None) -> dict[str, str]:
    """Exactly the variables the server process gets (plus PATH/HOME, which the SDK adds)."""
    names = ("RLM_MCP_HOME", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "RLM_MCP_MODEL")
    env = {n: os.environ[n] for n in names if os.environ.get(n)}
    if fake_url is not None:
        env.update(
            OPENAI_BASE_URL=f"{fake_url}/v1", RLM_MCP_BACKEND="openai", RLM_MCP_MODEL="fake-root"
        )
    elif "OPENAI_API_KEY" not in env and "ANTHROPIC_API_KEY" in env:
        env["RLM_MCP_BACKEND"] = "anthropic"
        env.setdefault("RLM_MCP_MODEL", "claude-sonnet-4-5")
    return env


def structured(result: Any) -> dict[str, Any]:
    """The tool's structured result, or an error with the text the server sent."""
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"tool error: {text}")
    return dict(result.structured_content or {})


async def run(log_path: Path, fake_url: str | None) -> str:
    params = StdioServerParameters(
        command=server_command(), args=["serve"], env=server_env(fake_url)
    )
    async with Client(params) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        print(f"connected ({client.protocol_version}); tools: {', '.join(tools)}")

        loaded = structured(await client.call_tool("load_context", {"path": str(log_path)}))
        handle = loaded["handle"]
        print(f"load_context -> {handle}: {loaded['chars']:,} chars, {loaded['lines']:,} lines")

        code = f'hits = grep(r"magic number for {KEY}")\nprint(len(context), hits)'
        first = structured(await client.call_tool("run_repl", {"code": code, "handle": handle}))
        print(f"run_repl [{first['status']}] -> {first['output'].strip()}")

        # same session: `hits` is still defined
        code = 'import re\nprint(re.search(r"is (\\d+)", hits[0][1]).group(1))'
        second = structured(await client.call_tool("run_repl", {"code": code, "handle": handle}))
        print(f"run_repl [{second['status']}] -> {second['output'].strip()}")

        listed = structured(await client.call_tool("list_contexts", {}))
        for c in listed["contexts"]:
            print(f"list_contexts -> {c['handle']}  {c['chars']:,} chars  {c['source']}")

        done = structured(
            await client.call_tool(
                "rlm_complete", {"query": QUESTION, "handle": handle}, read_timeout_seconds=600
            )
        )
        print(
            f"rlm_complete -> {done['answer']!r} ({done['stop_reason']}, "
            f"{done['iterations']} iterations)"
        )
        print(f"trajectory: {done['trajectory']}")
        return str(done["answer"])


def main() -> int:
    has_key = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY"))
    fake = None
    fake_url = None
    if not has_key:
        fake, fake_url = start_fake_provider(FAKE_ROOT_REPLY)
        print(f"no provider key: using the fake provider at {fake_url}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log_path, expected = write_log(Path(tmp))
            answer = anyio.run(run, log_path, fake_url)
    finally:
        if fake is not None:
            assert fake.stdin is not None and fake.stdout is not None
            fake.stdin.close()  # the fake provider exits when its stdin closes
            fake.wait(timeout=10)
            fake.stdout.close()
    ok = expected in answer
    print(f"expected {expected}: {'correct' if ok else 'WRONG'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
