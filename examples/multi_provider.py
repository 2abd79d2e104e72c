"""Root and sub model from different providers: OpenAI-compatible root, Anthropic sub-model.

    python examples/multi_provider.py

An RLM's root model writes code and calls sub-models on pieces; the two need not share a
provider. A common set-up is a strong root (e.g. an OpenAI model, or a local server through
OPENAI_BASE_URL) and a cheap, fast sub-model from another vendor. Each side is chosen on its own:

- root: OpenAI when OPENAI_API_KEY is set (model RLM_MCP_MODEL, default gpt-5-mini); otherwise the
  local fake provider in a subprocess (`python -m rlm_mcp.testing.fake_provider`), an
  OpenAI-compatible server on 127.0.0.1 that answers every call with FAKE_ROOT_REPLY.
- sub-model: Anthropic when ANTHROPIC_API_KEY is set (RLM_MCP_SUB_MODEL, default
  claude-haiku-4-5); otherwise an in-process FakeProvider speaking the Anthropic Messages wire
  format, whose reply is a function of the prompt it receives (it really reads the chunk).

Both fakes go through the real `openai` and `anthropic` SDKs, so this is the production code path.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import anyio

from rlm_mcp import LM, RLM, resolve_lm
from rlm_mcp.testing.fake_provider import FakeProvider

KEY = "cobalt-heron"
QUESTION = f"What is the special magic number for {KEY}? Answer with the number only."
INSTRUCTION = (
    f"If this text states the special magic number for {KEY}, reply with that number only; "
    "otherwise reply NONE."
)

#: One root-model turn: split the text, ask the sub-model about every chunk at once, answer.
FAKE_ROOT_REPLY = f"""I will ask the sub-model about each 50,000-character chunk.
```repl
chunks = [context[i:i + 50_000] for i in range(0, len(context), 50_000)]
answers = llm_query_batched(["{INSTRUCTION}\\n\\n" + c for c in chunks])
print(len(chunks), "chunks ->", answers)
found = [a.strip() for a in answers if a.strip() != "NONE"]
FINAL(found[0] if found else "not found")
```"""


def make_haystack(seed: int = 3, paragraphs: int = 4_000) -> tuple[str, str]:
    """About 400K characters of prose-like filler with one needle; returns (text, number)."""
    rng = random.Random(seed)
    words = [
        "the",
        "river",
        "ran",
        "past",
        "old",
        "mills",
        "where",
        "workers",
        "kept",
        "ledgers",
        "of",
        "grain",
        "and",
        "salt",
    ]
    body = [" ".join(rng.choice(words) for _ in range(16)) + "." for _ in range(paragraphs)]
    number = str(rng.randint(1_000_000, 9_999_999))
    body[rng.randrange(paragraphs)] = f"The special magic number for {KEY} is {number}."
    return "\n\n".join(body), number


def fake_sub_reply(request: dict[str, Any]) -> str:
    """The fake Anthropic sub-model: answers the instruction by reading the text it was sent."""
    content = request["messages"][-1]["content"]
    if isinstance(content, list):  # content blocks
        content = "".join(b.get("text", "") for b in content)
    m = re.search(rf"magic number for {KEY} is (\d+)", content.split("\n\n", 1)[-1])
    return m.group(1) if m else "NONE"


@contextmanager
def fake_openai_server(reply: str) -> Iterator[str]:
    """The fake provider as a separate process, as you would run a local model server."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_mcp.testing.fake_provider", "--reply", reply],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the fake provider did not start (printed {url!r})")
        yield url
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # it serves until its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.stdout.close()


async def run(root: LM, sub: LM, text: str) -> Any:
    rlm = RLM(lm=root, sub_lm=sub, max_iterations=6)
    try:
        return await rlm.acompletion(text, root_prompt=QUESTION)
    finally:
        for lm in (root, sub):  # SDK connection pools belong to this event loop
            close = getattr(lm, "aclose", None)
            if close is not None:
                await close()


def main() -> int:
    text, expected = make_haystack()
    with ExitStack() as stack:
        if os.environ.get("OPENAI_API_KEY"):
            model = os.environ.get("RLM_MCP_MODEL")
            root = resolve_lm("openai", model_name=model, environ=os.environ)
        else:
            url = stack.enter_context(fake_openai_server(FAKE_ROOT_REPLY))
            root = resolve_lm(
                "openai", model_name="fake-root", api_key="fake", base_url=f"{url}/v1"
            )
        if os.environ.get("ANTHROPIC_API_KEY"):
            model = os.environ.get("RLM_MCP_SUB_MODEL") or "claude-haiku-4-5"
            sub = resolve_lm("anthropic", model_name=model, environ=os.environ)
        else:
            fake = stack.enter_context(FakeProvider(fake_sub_reply))
            sub = resolve_lm(
                "anthropic", model_name="fake-sub", api_key="fake", base_url=fake.anthropic_base_url
            )
        print(f"root: {root.backend} {root.model}   sub: {sub.backend} {sub.model}")
        print(f"context: {len(text):,} characters; question: {QUESTION}")
        result = anyio.run(run, root, sub, text)

    print(f"answer: {result.response}")
    ok = expected in result.response
    print(f"expected: {expected} -> {'correct' if ok else 'WRONG'}")
    print(f"stop: {result.stop_reason} after {result.iterations} iteration(s)")
    for name, m in result.usage.models.items():
        print(f"  {name}: {m.calls} calls, {m.input_tokens:,} in / {m.output_tokens:,} out tokens")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
