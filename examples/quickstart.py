"""Quickstart: the RLM loop as a Python library.

The text below is generated: 3,000 lines of filler with one line that matters. The root model
never sees the text in its prompt; it writes Python against the variable `context`, asks a
sub-model about the lines it found (`llm_query`), and answers with FINAL_VAR.

    python examples/quickstart.py

With OPENAI_API_KEY (or ANTHROPIC_API_KEY) set, a real model is the root and sub model
(RLM_MCP_MODEL picks the model). Without a key it runs offline: a ScriptedLM plays the root
model, turn by turn, and a second one plays the sub-model, so you can see the mechanics for free.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence

from rlm_mcp import RLM, Message, ScriptedLM, Settings

KEY = "quartz-falcon"
QUESTION = f"What is the special magic number for {KEY}? Answer with the number only."


def make_haystack(seed: int = 7, lines: int = 3_000) -> tuple[str, str]:
    """A long text with one needle line; returns (text, the needle's number)."""
    rng = random.Random(seed)
    words = [
        "log",
        "entry",
        "user",
        "request",
        "served",
        "cache",
        "miss",
        "retry",
        "ok",
        "latency",
        "shard",
        "region",
    ]
    body = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(lines)]
    number = str(rng.randint(1_000_000, 9_999_999))
    body[rng.randrange(lines)] = f"The special magic number for {KEY} is {number}."
    # distractors: the same sentence for other keys
    for other in ("amber-otter", "cobalt-heron"):
        body[rng.randrange(lines)] = (
            f"The special magic number for {other} is {rng.randint(1_000_000, 9_999_999)}."
        )
    return "\n".join(body), number


# --- offline stand-ins for the models ----------------------------------------------------------

ROOT_TURNS = [
    # turn 1: look at the shape of the text and search it
    f"""Let me look at the text and search for the key.
```repl
print(len(context), "chars,", len(lines()), "lines")
hits = grep(r"magic number for {KEY}")
print(hits)
```""",
    # turn 2: ask a sub-model about the lines found, keep its answer in a variable
    """One line matches. I will ask a sub-model to read it and extract the number.
```repl
answer = llm_query("Which number is given in this line? Reply with the number only.\\n\\n"
                   + hits[0][1])
print(answer)
```
FINAL_VAR(answer)""",
]


def scripted_sub_model(messages: Sequence[Message]) -> str:
    """Plays a sub-model: reads the prompt it is sent and answers with the number in it."""
    found = re.findall(r"\d{7}", messages[-1].content)
    return found[0] if found else "I found no number."


def build_rlm(log_dir: os.PathLike[str]) -> tuple[RLM, str]:
    """A real RLM when a provider key is set, else the scripted one; and a label saying which."""
    model = os.environ.get("RLM_MCP_MODEL")
    if os.environ.get("OPENAI_API_KEY"):
        kw = {"model_name": model or "gpt-5-mini"}
        return RLM(backend="openai", backend_kwargs=kw, environ=os.environ, log_dir=log_dir), (
            f"openai ({kw['model_name']})"
        )
    if os.environ.get("ANTHROPIC_API_KEY"):
        kw = {"model_name": model or "claude-sonnet-4-5"}
        return RLM(backend="anthropic", backend_kwargs=kw, environ=os.environ, log_dir=log_dir), (
            f"anthropic ({kw['model_name']})"
        )
    root = ScriptedLM(ROOT_TURNS, model="scripted-root")
    sub = ScriptedLM(scripted_sub_model, model="scripted-sub")
    return RLM(lm=root, sub_lm=sub, max_iterations=5, log_dir=log_dir), "offline (ScriptedLM)"


def main() -> int:
    text, expected = make_haystack()
    settings = Settings.from_env()  # RLM_MCP_HOME decides where trajectories go
    rlm, label = build_rlm(settings.trajectory_dir)
    print(f"models: {label}")
    print(f"context: {len(text):,} characters; question: {QUESTION}")

    result = rlm.completion(text, root_prompt=QUESTION)

    u = result.usage
    cost = "unknown" if u.total_cost is None else f"${u.total_cost:.4f}"
    print(f"answer: {result.response}")
    print(f"expected: {expected} -> {'correct' if expected in result.response else 'WRONG'}")
    print(
        f"stop: {result.stop_reason} after {result.iterations} iterations; "
        f"{u.total_calls} model calls, {u.total_input_tokens:,} in / "
        f"{u.total_output_tokens:,} out tokens, cost {cost}"
    )
    for model, m in u.models.items():
        print(f"  {model}: {m.calls} calls")
    print(f"trajectory: {result.trajectory_path}")
    return 0 if expected in result.response else 1


if __name__ == "__main__":
    raise SystemExit(main())
