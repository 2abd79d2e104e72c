"""The methods compared on each task: `rlm` (ours) and four baselines from the RLM paper.

All take the same root and sub model so differences are the method's, not the model's:

- `base`: the whole prompt in one call, context truncated to `window_chars`. We keep the head and
  the tail (half each) with a marker between, because a needle is as likely at either end and the
  paper's truncation baseline loses whichever end it drops; documented in the README.
- `map-reduce`: chunks -> sub-model (instruction and question BEFORE the chunk: small models found
  9/10 needles that way, 4/10 with the question after) -> one aggregate call on the root.
- `sliding-window`: chunks in order, each call sees the running notes and updates them; the last
  notes answer the question.
- `retrieval`: BM25 (bm25s) over chunks, top-k chunks in document order, one call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm_mcp.bench.tasks.generators import Task
from rlm_mcp.lm.base import LM, Message, Usage

__all__ = ["METHODS", "MethodConfig", "MethodResult", "chunk_text", "run_method"]

DEFAULT_WINDOW_CHARS = 4 * 8_000  # 4 chars/token * an 8K-token window
DEFAULT_CHUNK_CHARS = 6_000  # ~1.5K tokens, the size the small-model needle test used


if TYPE_CHECKING:
    from rlm_mcp.sandbox import SandboxLimits


@dataclass(frozen=True)
class MethodConfig:
    window_chars: int = DEFAULT_WINDOW_CHARS
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    top_k: int = 4
    max_tokens: int | None = 512
    max_iterations: int = 10
    max_chunks: int = 2_000  # map-reduce/sliding-window refuse to fan out beyond this
    # Seconds one `rlm` REPL block may run, sub-calls included: a CPU model needs minutes.
    exec_timeout: float = 60.0
    #: The operator's sandbox limits (from the CLI's Runtime); the `rlm` method runs under them,
    #: with `exec_timeout` as its per-block time.
    sandbox_limits: SandboxLimits | None = None


@dataclass(frozen=True)
class MethodResult:
    response: str
    input_tokens: int
    output_tokens: int
    cost: float | None
    wall_time_s: float
    iterations: int
    sub_calls: int
    calls: int
    error: str | None = None


class _Meter:
    """Counts root calls vs sub-calls and sums usage; cost stays None if any call's is unknown."""

    def __init__(self) -> None:
        self.calls = 0
        self.sub_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost: float | None = 0.0

    def add(self, usage: Usage, *, sub: bool) -> None:
        self.calls += 1
        self.sub_calls += int(sub)
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost = None if self.cost is None or usage.cost is None else self.cost + usage.cost

    async def ask(self, lm: LM, prompt: str, *, sub: bool, max_tokens: int | None) -> str:
        comp = await lm.complete([Message("user", prompt)], max_tokens=max_tokens, temperature=0.0)
        self.add(comp.usage, sub=sub)
        return comp.text.strip()


def chunk_text(text: str, size: int) -> list[str]:
    """Fixed-size chunks, nudged forward to the next sentence end so needles are not split."""
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            nxt = text.find(". ", end, end + 400)
            end = nxt + 2 if nxt != -1 else end
        chunks.append(text[start:end])
        start = end
    return chunks


def _truncate(context: str, window: int) -> str:
    if len(context) <= window:
        return context
    half = window // 2
    return context[:half] + "\n[... middle of the context truncated ...]\n" + context[-half:]


def _answer_prompt(question: str, context: str) -> str:
    return (
        "Answer the question using the text below. Reply with the answer only.\n"
        f"Question: {question}\n\nText:\n{context}\n\nQuestion (again): {question}\nAnswer:"
    )


async def _base(task: Task, root: LM, sub: LM, cfg: MethodConfig, m: _Meter) -> tuple[str, int]:
    ctx = _truncate(task.context, cfg.window_chars)
    return await m.ask(
        root, _answer_prompt(task.question, ctx), sub=False, max_tokens=cfg.max_tokens
    ), 1


def _chunks(task: Task, cfg: MethodConfig) -> list[str]:
    from rlm_mcp.errors import ConfigError

    chunks = chunk_text(task.context, cfg.chunk_chars)
    if len(chunks) > cfg.max_chunks:
        raise ConfigError(
            f"{len(chunks)} chunks exceed max_chunks={cfg.max_chunks}; raise chunk_chars or "
            "max_chunks"
        )
    return chunks


async def _map_reduce(
    task: Task, root: LM, sub: LM, cfg: MethodConfig, m: _Meter
) -> tuple[str, int]:
    from rlm_mcp.lm import complete_many
    from rlm_mcp.prompts import aggregate_prompt, map_prompt

    chunks = _chunks(task, cfg)
    prompts = [[Message("user", map_prompt(task.question, c))] for c in chunks]
    comps = await complete_many(sub, prompts, max_tokens=cfg.max_tokens, temperature=0.0)
    notes = []
    for i, comp in enumerate(comps):
        m.add(comp.usage, sub=True)
        text = comp.text.strip()
        if text and text.upper().rstrip(".") != "NONE":
            notes.append(f"[chunk {i}] {text}")
    joined = _truncate("\n".join(notes) or "(no chunk had relevant information)", cfg.window_chars)
    prompt = aggregate_prompt(task.question, joined)
    return await m.ask(root, prompt, sub=False, max_tokens=cfg.max_tokens), 1


async def _sliding(task: Task, root: LM, sub: LM, cfg: MethodConfig, m: _Meter) -> tuple[str, int]:
    notes = "(none yet)"
    chunks = _chunks(task, cfg)
    for i, c in enumerate(chunks):
        notes = await m.ask(
            sub,
            "You read a long text one part at a time and keep short notes for a question. "
            f"Question: {task.question}\n\nNotes so far:\n{notes}\n\n"
            f"Part {i + 1} of {len(chunks)}:\n{c}\n\n"
            "Rewrite the notes, keeping everything that helps answer the question. Notes:",
            sub=True,
            max_tokens=cfg.max_tokens,
        )
        notes = _truncate(notes, cfg.window_chars // 4)
    prompt = (
        f"Using these notes, answer the question. Reply with the answer only.\n"
        f"Question: {task.question}\n\nNotes:\n{notes}\nAnswer:"
    )
    return await m.ask(root, prompt, sub=False, max_tokens=cfg.max_tokens), 1


_TOKEN = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")


def bm25_top_chunks(chunks: Sequence[str], query: str, k: int) -> list[int]:
    """Indices of the k best BM25 chunks for `query`, in document order (bm25s)."""
    import bm25s

    def tok(texts: Sequence[str]) -> list[list[str]]:
        return [_TOKEN.findall(t.lower()) for t in texts]

    retriever = bm25s.BM25()
    retriever.index(tok(chunks), show_progress=False)
    k = min(k, len(chunks))
    docs, _scores = retriever.retrieve(tok([query]), k=k, show_progress=False)
    return sorted(int(i) for i in docs[0])


async def _retrieval(
    task: Task, root: LM, sub: LM, cfg: MethodConfig, m: _Meter
) -> tuple[str, int]:
    chunks = chunk_text(task.context, cfg.chunk_chars)
    top = bm25_top_chunks(chunks, task.question, cfg.top_k)
    ctx = _truncate("\n...\n".join(chunks[i] for i in top), cfg.window_chars)
    return await m.ask(
        root, _answer_prompt(task.question, ctx), sub=False, max_tokens=cfg.max_tokens
    ), 1


async def _rlm(task: Task, root: LM, sub: LM, cfg: MethodConfig, m: _Meter) -> tuple[str, int]:
    import dataclasses

    from rlm_mcp.rlm import RLM
    from rlm_mcp.sandbox import SandboxLimits

    base = cfg.sandbox_limits or SandboxLimits()
    rlm = RLM(
        lm=root,
        sub_lm=sub,
        max_iterations=cfg.max_iterations,
        max_depth=1,
        sandbox_limits=dataclasses.replace(base, timeout=cfg.exec_timeout),
    )
    result = await rlm.acompletion(task.context, root_prompt=task.question)
    usage = result.usage
    root_calls = int(getattr(result, "iterations", 0) or 0)
    m.calls += int(usage.total_calls)
    m.sub_calls += max(0, int(usage.total_calls) - root_calls)
    m.input_tokens += int(usage.total_input_tokens)
    m.output_tokens += int(usage.total_output_tokens)
    # a model without a price makes the cell's cost unknown, as in every other method's meter
    cost = None if usage.unknown_cost_models else usage.total_cost
    m.cost = None if m.cost is None or cost is None else m.cost + cost
    return str(result.response), root_calls


_Fn = Callable[[Task, LM, LM, MethodConfig, _Meter], Awaitable[tuple[str, int]]]
METHODS: dict[str, _Fn] = {
    "rlm": _rlm,
    "base": _base,
    "map-reduce": _map_reduce,
    "sliding-window": _sliding,
    "retrieval": _retrieval,
}


async def run_method(
    name: str,
    task: Task,
    *,
    root_lm: LM,
    sub_lm: LM | None = None,
    config: MethodConfig | None = None,
    method_fn: Any = None,
) -> MethodResult:
    """Run one method on one task. Model/provider failures are recorded in `error`, not raised,
    so one bad cell does not lose the rest of a long benchmark run."""
    from rlm_mcp.errors import ConfigError, RLMError

    fn = method_fn or METHODS.get(name)
    if fn is None:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    cfg = config or MethodConfig()
    meter = _Meter()
    t0 = time.perf_counter()
    error = None
    response = ""
    iterations = 0
    try:
        response, iterations = await fn(task, root_lm, sub_lm or root_lm, cfg, meter)
    except ConfigError:
        raise
    except (RLMError, OSError, TimeoutError, ImportError) as exc:
        # ImportError: the `rlm` method before the loop module exists in this install.
        error = f"{type(exc).__name__}: {exc}"
    return MethodResult(
        response=response,
        input_tokens=meter.input_tokens,
        output_tokens=meter.output_tokens,
        cost=meter.cost,
        wall_time_s=time.perf_counter() - t0,
        iterations=iterations,
        sub_calls=meter.sub_calls,
        calls=meter.calls,
        error=error,
    )
