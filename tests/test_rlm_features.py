"""The reference library's newer features, with scripted models: rlm_query, SHOW_VARS, custom
tools, max_errors and the best partial answer, multi-turn runs, compaction, typed answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from rlm_mcp import RLM, ConfigError, RLMEvent
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.types import RLMChatCompletion

pytestmark = pytest.mark.anyio


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def block_outputs(r: RLMChatCompletion) -> list[str]:
    return [b.output for it in r.trajectory for b in it.code_blocks]


class PricedLM:
    """Replays replies at a fixed cost per call (ScriptedLM's calls are free)."""

    model = "priced"
    backend = "test"

    def __init__(self, replies: Sequence[str], cost: float) -> None:
        self.replies = list(replies)
        self.cost = cost
        self.calls: list[list[Message]] = []

    async def complete(self, messages: Sequence[Message], **_: Any) -> Completion:
        self.calls.append(list(messages))
        text = self.replies[min(len(self.calls), len(self.replies)) - 1]
        usage = Usage(model=self.model, input_tokens=100, output_tokens=10, cost=self.cost)
        return Completion(text, usage)


# -- rlm_query and SHOW_VARS ---------------------------------------------------------------------


async def test_rlm_query_runs_a_child_rlm_that_shares_the_usage_and_appears_in_the_trajectory() -> (
    None
):
    root = ScriptedLM(
        [repl("r = rlm_query('the number is 41; add one')\nprint(r)"), "FINAL_VAR(r)"],
        model="root",
    )
    child = ScriptedLM(
        [repl("n = int(context.split('is ')[1].split(';')[0]) + 1"), "FINAL_VAR(n)"],
        model="child",
    )
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=child).acompletion("ctx", "q")
    assert r.response == "42" and r.stop_reason == "final" and not r.partial
    (call,) = r.trajectory[0].code_blocks[0].sub_calls
    assert call.child and call.depth == 1 and len(call.trajectory) == 2
    assert call.trajectory[-1].final_answer == "42"
    # the child's own REPL saw the prompt as its context
    assert "the number is 41" in child.calls[0][0].content
    assert r.usage.total_calls == 4 and set(r.usage.models) == {"root", "child"}


async def test_rlm_query_at_the_depth_limit_is_a_plain_model_call() -> None:
    root = ScriptedLM([repl("r = rlm_query('hi')"), "FINAL_VAR(r)"], model="root")

    def sub_reply(messages: Sequence[Message]) -> str:
        if messages[0].role != "system":
            return "plain answer"  # a plain call: one user message
        turns = sum(1 for m in messages if m.role == "assistant")
        return repl("x = rlm_query('deeper')") if turns == 0 else "FINAL_VAR(x)"

    sub = ScriptedLM(sub_reply, model="sub")
    # max_depth=1 still lets the root start children; a child (depth 1) may not go deeper
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=sub, max_depth=1).acompletion("ctx", "q")
    assert r.response == "plain answer"
    (call,) = r.trajectory[0].code_blocks[0].sub_calls
    (inner,) = call.trajectory[0].code_blocks[0].sub_calls
    assert call.child and not inner.child and inner.depth == 2
    assert len(sub.requests) == 3


async def test_rlm_query_outside_an_rlm_run_says_what_to_use_instead() -> None:
    from rlm_mcp.sandbox import SandboxSession

    async with SandboxSession() as sb:
        res = await sb.execute("rlm_query('x')")
    assert res.status == "error" and res.error is not None
    assert "llm_query" in res.error.message


async def test_show_vars_lists_the_variables_code_made() -> None:
    root = ScriptedLM(
        [repl("rows = [1, 2, 3]\ntitle = 'report'\nprint(SHOW_VARS())"), "FINAL(done)"]
    )
    with anyio.fail_after(60):
        r = await RLM(lm=root).acompletion("ctx", "q")
    out = block_outputs(r)[0]
    assert "rows: list" in out and "title: str" in out
    assert "context" not in out and "llm_query" not in out


# -- custom tools ---------------------------------------------------------------------------------


async def test_code_calls_the_callers_tools_with_json_and_the_trajectory_records_them() -> None:
    seen: list[Any] = []

    def lookup(city: str, *, unit: str = "C") -> dict[str, Any]:
        """Current temperature of a city.

        Long description that the prompt does not need."""
        seen.append((city, unit))
        return {"city": city, "temp": 21, "unit": unit}

    async def tally(values: list[int]) -> int:
        """Sum of the values."""
        return sum(values)

    root = ScriptedLM(
        [
            repl("w = lookup('Oslo', unit='F')\nt = tally([1, 2, 3])\nprint(w['temp'], t)"),
            "FINAL(ok)",
        ]
    )
    with anyio.fail_after(60):
        r = await RLM(lm=root, tools={"lookup": lookup, "tally": tally}).acompletion("ctx", "q")
    assert seen == [("Oslo", "F")] and block_outputs(r)[0].strip() == "21 6"
    system = root.calls[0][0].content
    assert "lookup(city: str, *, unit: str = 'C') -> dict[str, typing.Any]" in system
    assert "Current temperature of a city." in system and "Long description" not in system
    assert "tally(values: list[int]) -> int: Sum of the values." in system
    calls = r.trajectory[0].code_blocks[0].tool_calls
    assert [(c.name, c.ok) for c in calls] == [("lookup", True), ("tally", True)]
    assert json.loads(calls[0].arguments_preview) == {"args": ["Oslo"], "kwargs": {"unit": "F"}}
    assert calls[1].result_preview == "6" and calls[0].duration_s >= 0


async def test_a_failing_tool_is_an_ordinary_exception_and_a_bad_result_is_refused() -> None:
    def broken(q: str) -> str:
        raise KeyError(f"no row {q}")

    def leaky() -> Any:
        return json  # a module: never handed to the sandbox

    code = (
        "for f, a in ((broken, ('x',)), (leaky, ())):\n"
        "    try:\n"
        "        f(*a)\n"
        "    except Exception as e:\n"
        "        print(repr(e))\n"
        "try:\n"
        "    broken({1, 2})\n"
        "except TypeError as e:\n"
        "    print(repr(e))"
    )
    root = ScriptedLM([repl(code), "FINAL(ok)"])
    with anyio.fail_after(60):
        r = await RLM(lm=root, tools={"broken": broken, "leaky": leaky}).acompletion("ctx", "q")
    out = block_outputs(r)[0].splitlines()
    assert out[0].startswith('ToolError("broken failed: KeyError') and "no row x" in out[0]
    assert out[1].startswith("ToolError('leaky returned module, which is not a JSON value")
    assert out[2].startswith("TypeError('broken: arguments must be JSON values")
    calls = r.trajectory[0].code_blocks[0].tool_calls
    assert [(c.name, c.ok) for c in calls] == [("broken", False), ("leaky", True)]
    assert calls[0].error is not None and "KeyError" in calls[0].error


async def test_a_slow_sync_tool_does_not_stall_other_work() -> None:
    import time

    def slow() -> str:
        time.sleep(0.3)
        return "slow"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.02)
            ticks += 1

    root = ScriptedLM([repl("s = slow()"), "FINAL_VAR(s)"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with anyio.fail_after(60):
            r = await RLM(lm=root, tools={"slow": slow}).acompletion("ctx", "q")
        tg.cancel_scope.cancel()
    assert r.response == "slow" and ticks >= 5  # the loop kept running during the tool's sleep


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"llm_query": len}, "taken"),
        ({"_x": len}, "taken"),
        ({"not a name": len}, "not a Python name"),
        ({"class": len}, "not a Python name"),
        ({"x": 3}, "not a function"),
    ],
)
async def test_tools_that_could_not_work_are_refused_at_construction(
    tools: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RLM(lm=ScriptedLM([]), tools=tools)


# -- max_errors and the best partial answer -------------------------------------------------------


async def test_max_errors_stops_a_run_that_keeps_failing_with_the_best_partial_answer() -> None:
    root = ScriptedLM([repl("print('tried')\n1/0")] * 10)
    with anyio.fail_after(60):
        r = await RLM(lm=root, max_errors=3).acompletion("ctx", "q")
    assert r.stop_reason == "max_errors" and r.iterations == 3 and r.partial
    assert r.response.strip() == "tried"
    assert any("stopped at max_errors" in n and "last code output" in n for n in r.notes)


async def test_an_iteration_that_runs_cleanly_resets_the_error_count() -> None:
    bad, good = repl("1/0"), repl("x = 1")
    root = ScriptedLM([bad, bad, good, bad, bad, "FINAL(done)"])
    with anyio.fail_after(60):
        r = await RLM(lm=root, max_errors=3).acompletion("ctx", "q")
    assert r.stop_reason == "final" and r.response == "done" and not r.partial


async def test_a_run_stopped_by_max_cost_returns_the_best_answer_so_far() -> None:
    replies = [
        repl("answer['content'] = 'draft: 3 matches so far'"),
        "Still checking the rest.\n" + repl("x = 1"),
    ]
    lm = PricedLM(replies, cost=0.40)
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_cost=1.0).acompletion("ctx", "q")
    assert r.stop_reason == "max_cost" and r.partial
    assert r.response == "draft: 3 matches so far"
    assert len(lm.calls) == 3 and r.usage.total_cost == pytest.approx(1.2)
    assert any("max_cost" in n and "answer['content']" in n for n in r.notes)


async def test_without_a_draft_the_partial_answer_is_the_models_last_reasoning() -> None:
    lm = PricedLM(["The total looks like 17, still verifying.\n" + repl("x = 1")], cost=1.0)
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_cost=1.0).acompletion("ctx", "q")
    assert r.stop_reason == "max_cost" and r.partial
    assert r.response == "The total looks like 17, still verifying."


async def test_an_answer_forced_at_the_iteration_limit_is_marked_partial() -> None:
    root = ScriptedLM([repl("x = 1"), "FINAL(best guess)"])
    with anyio.fail_after(60):
        r = await RLM(lm=root, max_iterations=1).acompletion("ctx", "q")
    assert r.stop_reason == "max_iterations" and r.response == "best guess" and r.partial


# -- multi-turn -----------------------------------------------------------------------------------


async def test_a_persistent_rlm_continues_in_the_same_repl_with_a_recap() -> None:
    root = ScriptedLM(
        [
            repl("words = context.split()\ncount = len(words)"),
            "FINAL_VAR(count)",
            repl("longest = max(words, key=len)"),  # `words` from the first turn
            "FINAL_VAR(longest)",
        ]
    )
    async with RLM(lm=root, persistent=True) as rlm:
        with anyio.fail_after(60):
            first = await rlm.acompletion("alpha beta gamma", "How many words?")
            second = await rlm.acompletion(None, "Which word is longest?")
    assert first.response == "3" and second.response == "alpha"
    recap = root.calls[2][1].content
    assert "Turn 1: question: How many words?" in recap and "answer (final): 3" in recap
    assert "Which word is longest?" in recap
    assert [t.question for t in rlm.conversation.turns] == [  # type: ignore[union-attr]
        "How many words?",
        "Which word is longest?",
    ]


def test_a_persistent_rlm_keeps_its_repl_across_blocking_completions() -> None:
    root = ScriptedLM([repl("n = 5"), "FINAL(one)", repl("n += 1"), "FINAL_VAR(n)"])
    with RLM(lm=root, persistent=True) as rlm:
        assert rlm.completion("ctx", "q1").response == "one"
        assert rlm.completion(None, "q2").response == "6"
    assert rlm._portal is None  # closed with the block


async def test_a_new_context_in_a_later_turn_keeps_the_variables() -> None:
    root = ScriptedLM(
        [
            repl("first = context"),
            "FINAL(a)",
            repl("both = first + '+' + context"),
            "FINAL_VAR(both)",
        ]
    )
    async with RLM(lm=root, persistent=True) as rlm:
        with anyio.fail_after(60):
            await rlm.acompletion("one", "q1")
            r = await rlm.acompletion("two", "q2")
    assert r.response == "one+two"


async def test_a_plain_rlm_starts_every_completion_afresh() -> None:
    root = ScriptedLM([repl("n = 5"), "FINAL(one)", repl("print(n)"), "FINAL(two)"])
    rlm = RLM(lm=root)
    with anyio.fail_after(60):
        await rlm.acompletion("ctx", "q1")
        r = await rlm.acompletion("ctx", "q2")
    assert "NameError" in (r.trajectory[0].code_blocks[0].error or "")
    with pytest.raises(ConfigError, match="context is required"):
        await rlm.acompletion(None, "q3")


# -- compaction -----------------------------------------------------------------------------------


def _long_run(turns: int) -> ScriptedLM:
    """A root that prints 3,000 chars per turn, answers on the last, and summarises on request."""

    done = 0

    def reply(messages: Sequence[Message]) -> str:
        nonlocal done
        if "replaced by your own summary" in messages[-1].content:
            return "Summary: x holds the running total."
        done += 1
        if done > turns:
            return "FINAL(finished)"
        return repl("x = 1\nprint('y' * 3000)")

    return ScriptedLM(reply, model="root")


async def test_compaction_summarises_earlier_turns_past_the_threshold_and_records_it() -> None:
    events: list[RLMEvent] = []
    root = _long_run(12)
    rlm = RLM(lm=root, compaction_threshold=12_000, max_iterations=30, on_event=events.append)
    with anyio.fail_after(60):
        r = await rlm.acompletion("ctx", "q")
    assert r.response == "finished" and r.stop_reason == "final"
    compactions = [it.compaction for it in r.trajectory if it.compaction is not None]
    assert compactions and all(c.chars_after < c.chars_before for c in compactions)
    assert compactions[0].summary_preview == "Summary: x holds the running total."
    assert [e.kind for e in events].count("compacted") == len(compactions)
    # every root call stayed near the threshold: one turn over it at most
    asks = [sum(len(m.content) for m in call) for call in root.calls]
    assert max(asks) < 12_000 + 8_000
    later = root.calls[-1]
    assert later[0].role == "system" and "Summary of your earlier turns" in later[1].content


async def test_compaction_off_keeps_every_turn() -> None:
    root = _long_run(12)
    with anyio.fail_after(60):
        r = await RLM(lm=root, compaction=False, max_iterations=30).acompletion("ctx", "q")
    assert r.response == "finished"
    assert all(it.compaction is None for it in r.trajectory)
    assert sum(len(m.content) for m in root.calls[-1]) > 12 * 3000


# -- typed answers --------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["name", "count"],
}


async def test_an_answer_that_validates_comes_back_as_answer_json() -> None:
    root = ScriptedLM([repl("res = {'name': 'alpha', 'count': 3}"), "FINAL_VAR(res)"])
    with anyio.fail_after(60):
        r = await RLM(lm=root).acompletion("ctx", "q", schema=SCHEMA)
    assert r.answer_json == {"name": "alpha", "count": 3} and r.stop_reason == "final"
    assert '"required": ["name", "count"]' in root.calls[0][0].content


async def test_an_answer_in_the_wrong_shape_is_sent_back_and_asked_again() -> None:
    root = ScriptedLM(
        ['FINAL({"name": "alpha", "count": "three"})', 'FINAL({"name": "a", "count": 3})']
    )
    with anyio.fail_after(60):
        r = await RLM(lm=root).acompletion("ctx", "q", schema=SCHEMA)
    assert r.answer_json == {"name": "a", "count": 3} and r.iterations == 2
    feedback = root.calls[1][-1].content
    assert "does not match the required JSON Schema" in feedback and "count" in feedback


async def test_an_answer_that_never_validates_is_not_reported_as_final() -> None:
    root = ScriptedLM(["FINAL(no json here)"] * 5)
    with anyio.fail_after(60):
        r = await RLM(lm=root, max_iterations=2).acompletion("ctx", "q", schema=SCHEMA)
    assert r.stop_reason == "invalid_answer" and r.answer_json is None and r.partial
    assert r.response == "no json here"


async def test_an_invalid_schema_is_refused_before_the_run() -> None:
    root = ScriptedLM([])
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        await RLM(lm=root).acompletion("ctx", "q", schema={"type": "nope"})
    with pytest.raises(ConfigError, match="JSON Schema object"):
        await RLM(lm=root).acompletion("ctx", "q", schema=["a"])  # type: ignore[arg-type]
    assert root.requests == []
