"""The root model's system prompt and the sub-call prompt helper.

A custom system prompt REPLACES ours, unless it contains the placeholder `{default}`, in which case
ours is inserted there (so it extends ours). `{context_summary}` in a custom prompt is filled
in too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_PLACEHOLDER",
    "ContextSummary",
    "aggregate_prompt",
    "build_system_prompt",
    "map_prompt",
    "subcall_prompt",
]

DEFAULT_PLACEHOLDER = "{default}"
PREVIEW_CHARS = 300


@dataclass(frozen=True, slots=True)
class ContextSummary:
    kind: str  # "str", "list[str]", "dict[str, str]", "stored context"
    chars: int
    documents: int
    preview: str


def subcall_prompt(instruction: str, chunk: str) -> str:
    """Instruction first, then the chunk: small models find far more reading the question first."""
    return f"{instruction.strip()}\n\n--- TEXT START ---\n{chunk}\n--- TEXT END ---"


def map_prompt(question: str, chunk: str) -> str:
    """The map step of map-reduce: question first, and names copied with numbers.

    Measured with Qwen2.5-Coder-0.5B: asked for "the answer", it returns the first number of the
    right shape in the chunk, whoever it belongs to, so the aggregate step cannot tell a needle
    from a distractor. Asking it to copy the sentence keeps the key next to the number.
    """
    return subcall_prompt(
        "Read the text below and copy, word for word, the sentences that help answer this "
        "question (keep every name and number exactly). If nothing in it helps, reply NONE.\n"
        f"Question: {question}",
        chunk,
    )


def aggregate_prompt(question: str, notes: str) -> str:
    """The reduce step: the notes from every chunk, question first and repeated last."""
    return (
        "Notes extracted from consecutive chunks of a long text are below. Combine them to answer "
        f"the question. Reply with the answer only.\nQuestion: {question}\n\nNotes:\n{notes}"
        f"\n\nQuestion (again): {question}\nAnswer:"
    )


def _default_prompt(ctx: ContextSummary, *, max_subcall_chars: int, max_output_chars: int) -> str:
    docs = (
        f"It holds {ctx.documents:,} documents; `documents` lists (name, start, length) for each."
        if ctx.documents > 1
        else "It is a single text."
    )
    chunk = min(max_subcall_chars, 100_000)
    return f"""You answer a question about a text too large to read at once. The text is in a
Python REPL as the variable `context` ({ctx.kind}, {ctx.chars:,} characters). {docs}
It begins like this (preview only, not the whole text):
<<<
{ctx.preview}
>>>

Work by writing Python in fenced blocks tagged repl:
```repl
import re
print(len(context), [m.start() for m in re.finditer(r"needle", context)][:10])
```
The code runs, and you see what it printed. Printed output is cut to about {max_output_chars:,}
characters, so print summaries, counts and short slices, never the whole text. Variables persist
between blocks and turns.

Inside the code you can ask a sub-model about a piece of text:
- `llm_query(prompt)` returns the answer as a string.
- `llm_query_batched([p1, p2, ...])` runs many prompts concurrently and returns answers in order;
  prefer it over a loop of llm_query, with batches of about 20 prompts.
- `rlm_query(prompt)` / `rlm_query_batched(prompts)`: the same, but each prompt gets its own
  sub-RLM with a REPL (slower, for pieces that need work of their own).
- `print(SHOW_VARS())` lists the variables you have made.
- Sub-call prompts work best at up to about {chunk:,} characters (the limit is
  {max_subcall_chars:,}). Put the instruction BEFORE the text, e.g.
  `llm_query("Which dates are mentioned? Answer as a list.\n\n" + chunk)`: a sub-model finds far
  more when it reads the question first.
Good strategy: look at the structure first (length, separators, a few slices), filter with code
and regex before asking any model, split the rest into chunks, ask about each chunk with
llm_query_batched, then combine the answers in code. Count and total in code, never by asking a
model to count.

When you know the answer, finish with one of:
- FINAL(your answer) on its own line, outside any code block;
- FINAL_VAR(name) on its own line, to return the value of a REPL variable;
- or in code: answer["content"] = ...; answer["ready"] = True.
Do not finish before you have checked the evidence."""


def build_system_prompt(
    ctx: ContextSummary,
    *,
    custom: str | None = None,
    max_subcall_chars: int = 400_000,
    max_output_chars: int = 20_000,
) -> str:
    """Our prompt, or `custom` (replacing it, or extending it at `{default}`)."""
    ours = _default_prompt(
        ctx, max_subcall_chars=max_subcall_chars, max_output_chars=max_output_chars
    )
    if custom is None:
        return ours
    summary = f"`context` is {ctx.kind}, {ctx.chars:,} characters, {ctx.documents} documents."
    return custom.replace(DEFAULT_PLACEHOLDER, ours).replace("{context_summary}", summary)


def first_user_prompt(root_prompt: str | None) -> str:
    q = f"The question: {root_prompt}\n\n" if root_prompt else ""
    return q + "Start by exploring `context` in a repl block. Do not answer yet."


def continue_prompt(root_prompt: str | None) -> str:
    q = f" (question: {root_prompt})" if root_prompt else ""
    return f"Continue{q}: run more code, or finish with FINAL(...) / FINAL_VAR(...)."


def last_chance_prompt(root_prompt: str | None) -> str:
    q = f" to: {root_prompt}" if root_prompt else ""
    return (
        f"You are out of iterations. Reply now with your best final answer{q}, as "
        "FINAL(your answer) on its own line. No code."
    )
