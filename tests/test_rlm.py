"""The RLM loop against the real sandbox with scripted models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from rlm_mcp import RLM, RLMChatCompletion
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.trajectory import read_trajectory
from rlm_mcp.types import RLMEvent

pytestmark = pytest.mark.anyio


def repl(code: str) -> str:
    return f"Let me look.\n```repl\n{code}\n```\n"


class UnpricedCostLM:
    """Reports tokens but no cost, like many providers; the model is in the price table."""

    def __init__(self, text: str | None, model: str = "gpt-4o") -> None:
        self.text = text
        self._model = model
        self.calls = 0

    @property
    def model(self) -> str:
        return self._model

    @property
    def backend(self) -> str:
        return "test"

    async def complete(
        self, messages: Sequence[Message], *, max_tokens=None, temperature=None, stop=None
    ) -> Completion:
        self.calls += 1
        return Completion(
            text=self.text,  # type: ignore[arg-type]
            usage=Usage(model=self._model, input_tokens=100_000, output_tokens=10_000),
        )


def total_requests(*lms: ScriptedLM) -> int:
    return sum(len(lm.requests) for lm in lms)


async def test_needle_is_found_by_regex_in_a_multi_million_character_context() -> None:
    ctx = "lorem ipsum " * 300_000 + "the secret code is ZX-9912. " + "dolor sit " * 100_000
    lm = ScriptedLM(
        [
            repl(
                "import re\nm = re.search(r'secret code is (\\S+?)\\.', context)\nprint(m.group(1))"
            ),
            "FINAL(ZX-9912)",
        ]
    )
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion(ctx, "What is the secret code?")
    assert len(ctx) > 3_000_000
    assert r.response == "ZX-9912" and r.stop_reason == "final" and r.iterations == 2
    assert "ZX-9912" in r.trajectory[0].code_blocks[0].output
    assert "ZX-9912" in lm.calls[1][-1].content  # the output was fed back


async def test_aggregation_over_chunks_uses_llm_query_batched_and_counts_every_call() -> None:
    ctx = "\n".join(f"line {i} apple" if i % 3 == 0 else f"line {i}" for i in range(3000))
    root = ScriptedLM(
        [
            repl(
                "lines = context.split(chr(10))\n"
                "chunks = [chr(10).join(lines[i:i+300]) for i in range(0, len(lines), 300)]\n"
                "answers = llm_query_batched(['Count the fruit. Reply with a number.' + c "
                "for c in chunks])\n"
                "total = sum(int(a) for a in answers)\nprint(len(chunks), total)"
            ),
            "FINAL_VAR(total)",
        ],
        model="root-model",
    )
    sub = ScriptedLM(lambda msgs: str(msgs[-1].content.count("apple")), model="sub-model")
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=sub).acompletion(ctx, "How many apples?")
    assert r.response == "1000"
    n_chunks = 10
    assert len(sub.requests) == n_chunks
    assert len(r.trajectory[0].code_blocks[0].sub_calls) == n_chunks
    assert r.usage.total_calls == total_requests(root, sub) == n_chunks + 2
    assert r.usage.models["sub-model"].calls == n_chunks


async def test_final_var_returns_the_variable_value() -> None:
    lm = ScriptedLM([repl("result = 'forty ' + str(2)") + "FINAL_VAR(result)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion("ctx", "q")
    assert r.response == "forty 2" and r.iterations == 1  # code ran first, then finalized


async def test_missing_final_var_variable_is_fed_back_as_an_error() -> None:
    lm = ScriptedLM(["FINAL_VAR(nothing_here)", "FINAL(fixed)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion("ctx", "q")
    assert r.response == "fixed" and r.iterations == 2
    assert "no variable named 'nothing_here'" in lm.calls[1][-1].content


async def test_code_that_raises_is_corrected_on_the_next_turn() -> None:
    lm = ScriptedLM([repl("x = undefined_name + 1"), repl("x = 41 + 1"), "FINAL_VAR(x)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion("ctx", "q")
    assert r.response == "42"
    assert r.trajectory[0].code_blocks[0].status == "error"
    assert "NameError" in lm.calls[1][-1].content


async def test_final_in_code_text_or_printed_output_does_not_end_the_run() -> None:
    lm = ScriptedLM([repl("s = 'FINAL(' + 'nope)'\nprint(s)\nprint('FINAL(no)')"), "FINAL(yes)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion("ctx", "q")
    assert r.response == "yes" and r.iterations == 2


async def test_code_that_calls_final_at_run_time_ends_the_run() -> None:
    lm = ScriptedLM([repl("FINAL('from code')")])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion("ctx", "q")
    assert r.response == "from code" and r.stop_reason == "final"


async def test_iteration_limit_asks_once_for_the_best_final_answer() -> None:
    lm = ScriptedLM([repl("print(1)"), repl("print(2)"), "FINAL(best guess)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_iterations=2).acompletion("ctx", "q")
    assert (r.response, r.stop_reason, r.iterations) == ("best guess", "max_iterations", 2)
    assert "out of iterations" in lm.calls[2][-1].content


async def test_token_budget_stops_the_run_and_names_it() -> None:
    lm = ScriptedLM(lambda m: "Thinking about it.\n" + repl("print(len(context))"))
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_tokens=10, max_iterations=5).acompletion("x" * 1000, "q")
    assert r.stop_reason == "max_tokens" and r.iterations == 1
    assert r.response.startswith("Thinking about it.")  # best answer so far


async def test_time_budget_stops_the_run() -> None:
    lm = ScriptedLM(lambda m: repl("print(1)"))
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_time=1e-9).acompletion("ctx", "q")
    assert r.stop_reason == "max_time" and len(lm.requests) == 0


async def test_cost_budget_works_without_a_provider_reported_cost() -> None:
    lm = UnpricedCostLM(repl("print(1)"))
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_cost=0.01, max_iterations=5).acompletion("ctx", "q")
    assert r.stop_reason == "max_cost" and lm.calls == 1
    assert r.usage.total_cost is not None and r.usage.total_cost > 0.01


async def test_cost_budget_notes_models_without_a_price() -> None:
    lm = UnpricedCostLM(repl("print(1)"), model="no-such-model")
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_cost=0.01, max_iterations=2).acompletion("ctx", "q")
    assert any("no-such-model" in n for n in r.notes)


async def test_sub_calls_are_refused_once_the_budget_is_used_up() -> None:
    root = ScriptedLM([repl("a = llm_query('hi')\nprint(a)"), "FINAL(done)"])
    sub = ScriptedLM(["never"])
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=sub, max_tokens=1).acompletion("ctx", "q")
    assert r.stop_reason == "max_tokens" and len(sub.requests) == 0
    assert "budget" in r.trajectory[0].code_blocks[0].output + str(
        r.trajectory[0].code_blocks[0].error
    )


async def test_empty_none_message_from_the_provider_does_not_crash() -> None:
    lm = UnpricedCostLM(None)
    with anyio.fail_after(60):
        r = await RLM(lm=lm, max_iterations=2).acompletion("ctx", "q")
    assert isinstance(r, RLMChatCompletion) and r.stop_reason == "max_iterations"
    assert r.response == ""


def child_or_leaf(marker: str = "") -> ScriptedLM:
    """As a child root (has a system prompt) it prints its own context tag and asks a leaf."""

    def reply(msgs: Sequence[Message]) -> str:
        if msgs[0].role == "system":
            return (
                repl(
                    "import re\ntag = re.search(r'TAG=(\\w+)', context).group(1)\n"
                    "print('child', tag)\n"
                    "r = tag + ':' + llm_query('Echo the tag. ' + tag)"
                )
                + "FINAL_VAR(r)"
            )
        return "leaf-" + msgs[-1].content.split()[-1]

    return ScriptedLM(reply, model="sub-model")


async def test_depth_two_starts_a_child_rlm_whose_usage_counts_in_the_totals() -> None:
    root = ScriptedLM([repl("a = llm_query('Find the tag. TAG=alpha')\nprint(a)"), "FINAL_VAR(a)"])
    sub = child_or_leaf()
    events: list[RLMEvent] = []
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=sub, max_depth=2, on_event=events.append).acompletion(
            "ctx", "q"
        )
    assert r.response == "alpha:leaf-alpha"
    # root 2 + child root 1 + leaf 1
    assert r.usage.total_calls == total_requests(root, sub) == 4
    rec = r.trajectory[0].code_blocks[0].sub_calls[0]
    assert rec.child and rec.input_tokens > 0
    assert {e.depth for e in events if e.kind == "run_started"} == {0, 1}


async def test_parallel_child_runs_keep_their_own_output() -> None:
    root = ScriptedLM(
        [
            repl(
                "outs = llm_query_batched(['Find the tag. TAG=' + t for t in "
                "['red', 'green', 'blue']])\nprint(outs)"
            ),
            "FINAL_VAR(outs)",
        ]
    )
    sub = child_or_leaf()
    with anyio.fail_after(90):
        r = await RLM(lm=root, sub_lm=sub, max_depth=2).acompletion("ctx", "q")
    assert r.response == "['red:leaf-red', 'green:leaf-green', 'blue:leaf-blue']"
    assert r.usage.total_calls == total_requests(root, sub) == 2 + 3 * 2


def test_completion_returns_a_result_object_at_the_depth_limit() -> None:
    sub = child_or_leaf()
    r = RLM(lm=sub, sub_lm=sub, max_depth=1).completion("TAG=solo", "q")
    assert isinstance(r, RLMChatCompletion) and r.response == "solo:leaf-solo"


async def test_events_and_trajectory_file_record_the_run(tmp_path: Path) -> None:
    root = ScriptedLM([repl("a = llm_query('hi there')\nprint('got', a)"), "FINAL(done)"])
    sub = ScriptedLM(["hello"], model="sub-model")
    events: list[RLMEvent] = []
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=sub, log_dir=tmp_path, on_event=events.append).acompletion(
            ["doc one", "doc two"], "q"
        )
    kinds = [e.kind for e in events]
    assert kinds == [
        "run_started",
        "iteration_started",
        "subcall_started",
        "subcall_finished",
        "iteration_finished",
        "iteration_started",
        "iteration_finished",
        "run_finished",
    ]
    assert r.trajectory_path is not None and r.trajectory_path.parent == tmp_path
    lines = [json.loads(x) for x in r.trajectory_path.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["config", "iteration", "iteration", "result"]
    assert lines[0]["context_documents"] == 2 and lines[0]["root_model"] == "scripted"
    block = lines[1]["code_blocks"][0]
    assert "got hello" in block["output"] and block["sub_calls"][0]["model"] == "sub-model"
    assert lines[3]["response"] == "done" and lines[3]["usage"]["models"]
    t = read_trajectory(r.trajectory_path)
    assert t["iterations"] == r.trajectory and t["result"]["stop_reason"] == "final"
    assert RLMChatCompletion.from_dict(json.loads(json.dumps(r.to_dict()))) == r


class HangingLM(UnpricedCostLM):
    async def complete(self, messages, *, max_tokens=None, temperature=None, stop=None):
        self.calls += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_cancelling_acompletion_stops_the_loop_and_pending_sub_calls() -> None:
    root = ScriptedLM(lambda m: repl("a = llm_query('x')"))
    sub = HangingLM("never")
    with anyio.fail_after(30), anyio.CancelScope() as scope:

        def on_event(e: RLMEvent) -> None:
            if e.kind == "subcall_started":
                scope.cancel()

        await RLM(lm=root, sub_lm=sub, on_event=on_event).acompletion("ctx", "q")
    assert scope.cancelled_caught and len(root.requests) == 1 and sub.calls == 1


async def test_dict_context_names_its_documents() -> None:
    lm = ScriptedLM([repl("print(context[:5])"), "FINAL(ok)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion({"a.txt": "alpha", "b.txt": "beta"}, "q")
    assert (
        "2 documents" in lm.calls[0][0].content and "alpha" in r.trajectory[0].code_blocks[0].output
    )


async def test_stored_handle_context_reads_the_stored_documents(tmp_path: Path) -> None:
    from rlm_mcp.store import ContextStore

    store = ContextStore(tmp_path / "store")
    info = store.load_documents({"a.txt": "alpha text", "b.txt": "the word is zebra"})
    lm = ScriptedLM(
        [repl("import re\nw = re.search(r'word is (\\w+)', context).group(1)"), "FINAL_VAR(w)"]
    )
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion(store.get(info.handle), "q")
    assert r.response == "zebra"
    assert "2 documents" in lm.calls[0][0].content


async def test_time_budget_also_bounds_a_hanging_model_call() -> None:
    lm = HangingLM("never")
    with anyio.fail_after(30):
        r = await RLM(lm=lm, max_time=2.0).acompletion("ctx", "q")
    assert r.stop_reason == "max_time" and lm.calls == 1 and r.iterations == 0


async def test_other_backends_are_sub_models_picked_by_name_from_the_repl() -> None:
    code = (
        "a = llm_query('q')\n"
        "b = llm_query_batched(['q', 'q'], model='smart')\n"
        "try:\n    llm_query('q', model='nope')\nexcept RuntimeError as e:\n    err = str(e)\n"
        "print(a, b, err)"
    )
    root = ScriptedLM([repl(code), "FINAL(done)"])
    rlm = RLM(
        lm=root,
        other_backends=["scripted:cheap", "scripted:smart"],
        other_backend_kwargs=[{"responses": ["from-cheap"]}, {"responses": ["from-smart"] * 2}],
    )
    with anyio.fail_after(60):
        r = await rlm.acompletion("ctx", "q")
    out = r.trajectory[0].code_blocks[0].output
    assert "from-cheap ['from-smart', 'from-smart']" in out
    assert "no sub-model named 'nope'" in out and "cheap, smart" in out
    assert "model=NAME" in root.calls[0][0].content  # the root is told which models exist
    assert r.usage.models["cheap"].calls == 1 and r.usage.models["smart"].calls == 2


def test_other_backend_kwargs_must_match_other_backends() -> None:
    from rlm_mcp.errors import ConfigError

    with pytest.raises(ConfigError, match="one dict per backend"):
        RLM(
            lm=ScriptedLM(["x"]),
            other_backends=["scripted:a", "scripted:b"],
            other_backend_kwargs=[{}],
        )
