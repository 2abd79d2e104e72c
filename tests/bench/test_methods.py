import re
from collections.abc import Sequence

import anyio
import pytest

from rlm_mcp.bench.methods import (
    MethodConfig,
    bm25_top_chunks,
    chunk_text,
    run_method,
)
from rlm_mcp.bench.tasks import make_sniah, score
from rlm_mcp.errors import ConfigError
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.base import Message


def reader(messages: Sequence[Message]) -> str:
    """A fake model that really reads: finds the asked key's needle in what it was shown."""
    text = messages[-1].content
    key = re.search(r"magic number for (\S+) (?:mentioned|in the text)", text)
    assert key, text[:200]
    hit = re.search(rf"magic number for {re.escape(key.group(1))} is (\d+)", text)
    if hit:
        return hit.group(1)
    notes = re.search(r"\[chunk \d+\] (\d+)", text) or re.search(r"Notes[^\n]*\n(\d{7})", text)
    return notes.group(1) if notes else "NONE"


CFG = MethodConfig(window_chars=8_000, chunk_chars=2_000, top_k=2)


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["map-reduce", "sliding-window", "retrieval"])
async def test_method_finds_a_mid_context_needle_end_to_end(method: str) -> None:
    task = make_sniah(40_000, seed=3, depth=0.5)
    lm = ScriptedLM(reader)
    with anyio.fail_after(30):
        r = await run_method(method, task, root_lm=lm, sub_lm=lm, config=CFG)
    assert r.error is None
    assert score(task.scorer, r.response, task.answer) == 1.0
    assert r.calls == len(lm.calls) and r.input_tokens > 0
    if method == "retrieval":
        assert r.sub_calls == 0 and r.calls == 1
    else:
        assert r.sub_calls == len(chunk_text(task.context, CFG.chunk_chars))


@pytest.mark.anyio
async def test_base_truncates_the_middle_so_a_mid_needle_is_lost_and_an_edge_needle_kept() -> None:
    lm = ScriptedLM(reader)
    mid = make_sniah(40_000, seed=3, depth=0.5)
    edge = make_sniah(40_000, seed=3, depth=0.02)
    with anyio.fail_after(10):
        r_mid = await run_method("base", mid, root_lm=lm, config=CFG)
        r_edge = await run_method("base", edge, root_lm=lm, config=CFG)
    assert score("exact", r_mid.response, mid.answer) == 0.0
    assert score("exact", r_edge.response, edge.answer) == 1.0
    assert all(len(c[-1].content) < CFG.window_chars + 1_000 for c in lm.calls)
    assert r_mid.calls == 1 and r_mid.sub_calls == 0 and r_mid.iterations == 1


def test_bm25_retrieves_the_needle_chunk_first_among_many() -> None:
    task = make_sniah(200_000, seed=9, depth=0.73)
    chunks = chunk_text(task.context, 2_000)
    needle_chunk = next(
        i for i, c in enumerate(chunks) if f"for {task.metadata['key']} is {task.answer}" in c
    )
    assert bm25_top_chunks(chunks, task.question, k=1) == [needle_chunk]


def test_chunks_cover_the_text_exactly_and_do_not_split_sentences() -> None:
    task = make_sniah(50_000, seed=1)
    chunks = chunk_text(task.context, 3_000)
    assert "".join(chunks) == task.context
    assert all(c.endswith(". ") for c in chunks[:-1])


@pytest.mark.anyio
async def test_unknown_method_and_too_many_chunks_raise_config_errors() -> None:
    task = make_sniah(20_000, seed=1)
    lm = ScriptedLM(reader)
    with pytest.raises(ConfigError, match="map-reduce"):
        await run_method("magic", task, root_lm=lm)
    with pytest.raises(ConfigError, match="max_chunks"):
        await run_method(
            "map-reduce", task, root_lm=lm, config=MethodConfig(chunk_chars=1_000, max_chunks=3)
        )


@pytest.mark.anyio
async def test_a_provider_failure_is_recorded_not_raised() -> None:
    from rlm_mcp.errors import ProviderError

    def boom(messages: Sequence[Message]) -> str:
        raise ProviderError("provider down")

    task = make_sniah(10_000, seed=1)
    with anyio.fail_after(10):
        r = await run_method("base", task, root_lm=ScriptedLM(boom))
    assert r.error is not None and "provider down" in r.error and r.response == ""


@pytest.mark.anyio
async def test_rlm_method_runs_end_to_end_with_the_scripted_root_strategy() -> None:
    pytest.importorskip("rlm_mcp.rlm", reason="the RLM loop (issue 5) is not in this tree yet")
    from rlm_mcp.bench.localmodel import scripted_root

    task = make_sniah(30_000, seed=4, depth=0.6)
    sub = ScriptedLM(reader)
    with anyio.fail_after(60):
        r = await run_method(
            "rlm", task, root_lm=scripted_root(), sub_lm=sub, config=MethodConfig(max_iterations=4)
        )  # type: ignore[arg-type]
    assert r.error is None, r.error
    assert score(task.scorer, r.response, task.answer) == 1.0
    assert r.sub_calls == len(sub.calls) >= 5 and r.iterations >= 1


def test_map_prompt_puts_the_question_first_and_asks_for_exact_sentences() -> None:
    from rlm_mcp.prompts import aggregate_prompt, map_prompt

    p = map_prompt("What is X?", "some chunk")
    assert p.index("What is X?") < p.index("some chunk")
    assert "word for word" in p and "NONE" in p
    agg = aggregate_prompt("What is X?", "[chunk 0] X is 1.")
    assert agg.count("What is X?") == 2 and agg.rstrip().endswith("Answer:")


@pytest.mark.anyio
async def test_rlm_method_gives_the_repl_its_configured_exec_timeout(monkeypatch) -> None:
    import rlm_mcp.rlm

    seen: dict[str, object] = {}
    real = rlm_mcp.rlm.RLM

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a: object, **kw: object) -> None:
            limits = kw["sandbox_limits"]
            seen.update(timeout=limits.timeout, memory_mb=limits.memory_mb)  # type: ignore[attr-defined]
            super().__init__(*a, **kw)  # type: ignore[arg-type]

    from rlm_mcp.sandbox import SandboxLimits

    monkeypatch.setattr(rlm_mcp.rlm, "RLM", Spy)
    lm = ScriptedLM(["FINAL(1)"])
    operator = SandboxLimits(memory_mb=777)  # what the CLI's Runtime hands the benchmark
    config = MethodConfig(exec_timeout=321.0, sandbox_limits=operator)
    with anyio.fail_after(30):
        r = await run_method("rlm", make_sniah(2_000, seed=0), root_lm=lm, config=config)
    assert r.error is None and seen == {"timeout": 321.0, "memory_mb": 777}


@pytest.mark.anyio
async def test_rlm_cell_cost_is_unknown_when_a_sub_model_has_no_price() -> None:
    # A local model has no price: the cell must say "unknown", not $0 from the priced root alone.
    from dataclasses import replace

    from rlm_mcp.bench.localmodel import scripted_root

    class Unpriced(ScriptedLM):
        async def complete(self, messages, **kwargs):  # type: ignore[no-untyped-def]
            comp = await super().complete(messages, **kwargs)
            return replace(comp, usage=replace(comp.usage, cost=None))

    task = make_sniah(8_000, seed=1)
    with anyio.fail_after(60):
        priced = await run_method("rlm", task, root_lm=scripted_root(), sub_lm=ScriptedLM(reader))
        unpriced = await run_method(
            "rlm", task, root_lm=scripted_root(), sub_lm=Unpriced(reader, model="qwen-local")
        )
    assert priced.cost == 0.0
    assert unpriced.cost is None and unpriced.sub_calls == priced.sub_calls > 0
