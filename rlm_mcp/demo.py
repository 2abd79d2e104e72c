"""`rlm-mcp demo`: the whole product in one offline command, through the real MCP protocol.

It writes a haystack with one needle (and distractor needles) into the data folder, then drives
an in-process server with the `mcp` Client exactly as an agent would: `load_context` on the file,
`run_repl` over it, and `rlm_complete` with a *scripted* root model (clearly labelled) whose
code searches, asks a sub-model to confirm, and answers with FINAL_VAR. With `--backend` the
root and sub models are real (your key, Ollama, ...), and nothing else changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_mcp.config import Settings
from rlm_mcp.errors import RLMError
from rlm_mcp.runtime import Runtime

__all__ = ["DemoResult", "run_demo"]

DEFAULT_DEMO_CHARS = 2_000_000


@dataclass(frozen=True)
class DemoResult:
    handle: str
    expected: str
    answer: str
    trajectory: str | None
    seconds: float

    @property
    def correct(self) -> bool:
        return self.expected in self.answer


def _scripted_models(key: str) -> tuple[Any, Any]:
    """A root that writes what a good root writes, and a sub-model that reads its snippet."""
    from rlm_mcp.lm.scripted import ScriptedLM

    pattern = rf"magic number for {re.escape(key)} is (\d+)"
    root = ScriptedLM(
        [
            "The context is too big to read; search it for the key first.\n"
            "```repl\nimport re\n"
            f"hits = list(re.finditer(r'{pattern}', context))\n"
            "print(len(hits), 'hit(s):', [h.group(1) for h in hits])\n```",
            "One hit. Ask a sub-model to confirm it from the surrounding text.\n"
            "```repl\nh = hits[0]\n"
            "snippet = context[max(0, h.start() - 300): h.end() + 300]\n"
            f"verdict = llm_query('What is the special magic number for {key}? Text: ' + snippet)\n"
            "answer = h.group(1) if h.group(1) in verdict else verdict\n"
            "print('sub-model says:', verdict)\n```",
            "FINAL_VAR(answer)",
        ],
        model="scripted-root",
    )

    def read_snippet(messages: Sequence[Any]) -> str:
        found = re.search(pattern, messages[-1].content)
        return f"The number is {found.group(1)}." if found else "NONE"

    sub = ScriptedLM(read_snippet, model="scripted-sub")
    return root, sub


async def run_demo(
    runtime: Runtime,
    *,
    chars: int = DEFAULT_DEMO_CHARS,
    real_models: bool = False,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo over `runtime`'s settings; `say` receives each line of the narration."""
    from mcp import Client

    from rlm_mcp.bench.tasks.generators import make_sniah
    from rlm_mcp.server import build_server

    t0 = time.perf_counter()
    task = make_sniah(chars, seed=7, depth=0.62)
    settings = runtime.settings
    path = demo_path(settings, chars)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.stat().st_size == 0:
        path.write_text(task.context, encoding="utf-8")
    key = task.metadata["key"]
    if not real_models:
        runtime = Runtime(settings, lm_factory=lambda m, s: _scripted_models(key))
    server = build_server(runtime=runtime)
    say(
        f"rlm-mcp demo: a {len(task.context):,}-character haystack with one needle for the key "
        f"{key}, among distractor needles for other keys ({path})"
    )
    failure: RLMError | None = None
    async with Client(server) as client:
        try:
            handle, out = await _drive(client, task, path, real_models, say)
        except RLMError as exc:  # re-raised below, outside the client's task group
            failure = exc
    if failure is not None:
        raise failure
    usage = out.get("usage", {})
    say(f"   A: {out['answer']}   (expected {task.answer})")
    say(
        f"   {out['iterations']} iterations, {usage.get('total_calls', 0)} model calls, "
        f"stop: {out['stop_reason']}"
    )
    traj = out.get("trajectory")
    if traj:
        say(f"\nTrajectory: {traj}\nSee it:     rlm-mcp view {traj} --open")
    seconds = time.perf_counter() - t0
    say(f"\nDone in {seconds:.1f}s. Next: `rlm-mcp config claude-desktop` to use it from a client.")
    return DemoResult(handle, task.answer, str(out["answer"]), traj, seconds)


async def _drive(
    client: Any, task: Any, path: Path, real: bool, say: Callable[[str], None]
) -> tuple[str, dict[str, Any]]:
    """load_context, run_repl, rlm_complete: (handle, rlm_complete's structured result)."""
    loaded = await client.call_tool(
        "load_context", {"path": str(path), "name": "demo", "replace": True}
    )
    _check(loaded, "load_context")
    info = loaded.structured_content or {}
    handle = str(info["handle"])
    lines = info["lines"]
    say(
        f"\n1. load_context -> {handle}: {info['chars']:,} chars, "
        f"{lines:,} line{'' if lines == 1 else 's'}"
    )

    key = task.metadata["key"]
    code = (
        "import re\nfound = re.findall(r'magic number for (\\S+) is', context)\n"
        f"print(len(found), 'needles:', found.count({key!r}), 'for {key},', "
        f"len(found) - found.count({key!r}), 'distractors for other keys')"
    )
    ran = await client.call_tool("run_repl", {"code": code, "handle": handle})
    _check(ran, "run_repl")
    shown = ran.structured_content["output"].strip()
    shown_code = "\n   ... ".join(code.splitlines()[1:])
    say(f"\n2. run_repl\n   >>> {shown_code}\n   {shown}")

    label = "your configured models" if real else "a scripted root model (offline)"
    say(f"\n3. rlm_complete with {label}\n   Q: {task.question}")

    async def progress(p: float, total: float | None, msg: str | None) -> None:
        say(f"   . {msg}")

    done = await client.call_tool(
        "rlm_complete", {"query": task.question, "handle": handle}, progress_callback=progress
    )
    _check(done, "rlm_complete")
    return handle, dict(done.structured_content or {})


def _check(result: Any, tool: str) -> None:
    if result.is_error:
        text = result.content[0].text if result.content else "(no message)"
        raise RLMError(f"demo: {tool} failed: {text}")


def demo_path(settings: Settings, chars: int) -> Path:
    """Where the demo's haystack lives (kept between runs: same content, same handle)."""
    return settings.home / "demo" / f"haystack_{chars}.txt"
