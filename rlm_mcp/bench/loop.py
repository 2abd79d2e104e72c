"""Loop overhead: 10 iterations with an instant scripted root model over a 100M-character context.

Per-iteration time is the iteration's wall time with an instant LM, so it is the loop's own work
(prompting, parsing, feeding back, recording) plus one sandbox call; the baseline is the same
sandbox call made directly on a warm session over the same context, measured in the same run.

Compaction rows: a scripted root whose window is 60K characters (it fails like a provider does
past it) works 30 turns that each print 4K characters, with compaction on (threshold 40K) and
off; they report the root's input tokens and whether the run finished.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.bench._table import BenchRow, format_table

__all__ = ["main", "measure"]

ITERATIONS = 10
CODE = "n = len(context)\nprint(n)"


def _generate(path: Path, chars: int) -> None:
    line = "the quick brown fox jumps over the lazy dog 0123456789\n"
    block = line * (1_000_000 // len(line) + 1)
    with path.open("w", encoding="utf-8") as fh:
        left = chars
        while left > 0:
            piece = block[: min(left, len(block))]
            fh.write(piece)
            left -= len(piece)


async def _loop(path: Path) -> tuple[float, list[float], float]:
    from rlm_mcp.lm import ScriptedLM
    from rlm_mcp.rlm import RLM
    from rlm_mcp.sandbox import ContextSpec

    replies = [f"Step {i}.\n```repl\n{CODE}\n```" for i in range(ITERATIONS - 1)]
    replies.append(f"```repl\n{CODE}\n```\nFINAL_VAR(n)")
    lm = ScriptedLM(replies)
    t0 = time.perf_counter()
    result = await RLM(lm=lm, max_iterations=ITERATIONS).acompletion(
        ContextSpec(path=path), "How long is the context?"
    )
    total = time.perf_counter() - t0
    assert result.stop_reason == "final" and result.iterations == ITERATIONS, result.stop_reason
    return total, [r.duration_s for r in result.trajectory], result.trajectory[0].duration_s


async def _bare(path: Path) -> float:
    from rlm_mcp.sandbox import ContextSpec, SandboxSession

    async with SandboxSession(context=ContextSpec(path=path)) as sb:
        await sb.execute(CODE)
        times = []
        for _ in range(ITERATIONS - 1):
            t0 = time.perf_counter()
            await sb.execute(CODE)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


WINDOW_CHARS = 60_000
COMPACTION_TURNS = 30


class _WindowedRoot:
    """A scripted root with a context window: past it, it fails as a provider would."""

    model = "windowed-root"
    backend = "bench"

    def __init__(self) -> None:
        self.turns = 0

    async def complete(self, messages: Sequence[Any], **_: Any) -> Any:
        from rlm_mcp.errors import ProviderError
        from rlm_mcp.lm.base import Completion, Usage
        from rlm_mcp.lm.retry import estimate_tokens

        chars = sum(len(m.content) for m in messages)
        if chars > WINDOW_CHARS:
            raise ProviderError(
                f"context length exceeded: {chars:,} chars", provider="bench", model=self.model
            )
        if "replaced by your own summary" in messages[-1].content:
            text = f"Summary: {self.turns} turns done; `total` holds the running count."
        else:
            self.turns += 1
            text = (
                "FINAL_VAR(total)"
                if self.turns > COMPACTION_TURNS
                else "```repl\ntry:\n    total += 1\nexcept NameError:\n    total = 1\n"
                "print('x' * 4000)\n```"
            )
        usage = Usage(self.model, sum(estimate_tokens(m.content) for m in messages), 20)
        return Completion(text, usage)


async def _compaction(on: bool) -> tuple[int, bool, int]:
    """(root input tokens, finished, iterations) of one windowed run."""
    from rlm_mcp.errors import ProviderError
    from rlm_mcp.rlm import RLM

    tokens: list[int] = []

    async def count(event: Any) -> None:
        if event.kind == "iteration_finished":
            tokens.append(int(event.data.get("input_tokens", 0)))

    rlm = RLM(
        lm=_WindowedRoot(),
        max_iterations=COMPACTION_TURNS + 5,
        compaction=on,
        compaction_threshold=40_000,
        on_event=count,
    )
    try:
        result = await rlm.acompletion("small context", "count the turns")
    except ProviderError:
        return sum(tokens), False, len(tokens)
    return result.usage.total_input_tokens, result.stop_reason == "final", result.iterations


def _compaction_rows() -> list[BenchRow]:
    rows = []
    for on in (True, False):
        tokens, finished, iterations = anyio.run(_compaction, on)
        state = "finished" if finished else "failed: root window exceeded"
        rows.append(
            BenchRow(
                "loop",
                f"compaction {'on' if on else 'off'}, {COMPACTION_TURNS} turns x 4K chars, 60K "
                f"root window: {state} after {iterations} iterations (root input tokens)",
                tokens,
                "tokens",
                target="finishes" if on else "",
                passed=finished if on else None,
            )
        )
    return rows


def measure(*, quick: bool = False, chars: int | None = None) -> list[BenchRow]:
    """Run the loop benchmark (quick = 10M chars) and return its rows."""
    chars = chars if chars is not None else (10_000_000 if quick else 100_000_000)
    label = f"{chars / 1e6:,.0f}M chars"
    with tempfile.TemporaryDirectory(prefix="rlm-bench-loop-") as tmp:
        path = Path(tmp) / "context.txt"
        _generate(path, chars)
        total, per_iter, first = anyio.run(_loop, path)
        bare = anyio.run(_bare, path)
    warm = statistics.median(per_iter[1:])
    overhead = max(0.0, warm - bare)
    return [
        BenchRow("loop", "first iteration (sandbox already started)", first * 1000, "ms"),
        BenchRow(
            "loop",
            f"warm iteration, instant LM (median of {ITERATIONS - 1})",
            warm * 1000,
            "ms",
            bare * 1000,
            "same code, bare sandbox call",
            "<= 10 ms",
            warm * 1000 <= 10,
        ),
        BenchRow(
            "loop",
            "loop overhead per iteration (warm - bare)",
            overhead * 1000,
            "ms",
            target="<= 10 ms",
            passed=overhead * 1000 <= 10,
        ),
        BenchRow("loop", f"whole run, {ITERATIONS} iterations, incl. start + {label}", total, "s"),
        *_compaction_rows(),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench loop", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10M characters instead of 100M")
    parser.add_argument("--chars", type=int, default=None)
    args = parser.parse_args(argv)
    print(format_table(measure(quick=args.quick, chars=args.chars)))
    return 0
