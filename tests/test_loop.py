"""The loop's edges: every stop is a stop_reason, text is text, budgets are checked, and a run that
never starts leaves no trajectory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from rlm_mcp import RLM, ConfigError
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.base import Completion, Message, Usage

pytestmark = pytest.mark.anyio


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


class SlowOnLastChance:
    """A root model that answers with code at once and hangs on the last-chance call."""

    model = "slow-last"
    backend = "test"

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.calls = 0

    async def complete(self, messages: Sequence[Message], **_: Any) -> Completion:
        self.calls += 1
        if self.calls > self.turns:
            await anyio.sleep_forever()
        return Completion(repl("x = 1"), Usage(model=self.model, input_tokens=5, output_tokens=5))


async def test_time_running_out_during_the_last_chance_call_is_a_stop_reason() -> None:
    lm = SlowOnLastChance(turns=2)
    with anyio.fail_after(30):
        r = await RLM(lm=lm, max_iterations=2, max_time=1.0).acompletion("ctx", "q")
    assert r.stop_reason == "max_time"
    assert lm.calls == 3 and r.iterations == 2  # the third call was the last chance


async def test_a_token_budget_spent_by_the_last_turn_skips_the_last_chance() -> None:
    lm = SlowOnLastChance(turns=2)
    with anyio.fail_after(30):
        r = await RLM(lm=lm, max_iterations=2, max_tokens=15).acompletion("ctx", "q")
    assert r.stop_reason == "max_tokens" and lm.calls == 2


async def test_text_that_starts_like_a_handle_is_text() -> None:
    lm = ScriptedLM([repl("n = len(context)"), "FINAL_VAR(n)"])
    with anyio.fail_after(60):
        r = await RLM(lm=lm).acompletion("ctx_0123456789ab and more", "q")
    assert r.response == str(len("ctx_0123456789ab and more"))


async def test_a_stored_context_is_named_by_a_stored_context_not_a_string(tmp_path: Path) -> None:
    from rlm_mcp.store import ContextStore

    with ContextStore(tmp_path / "s") as store:
        store.load_text("the stored text", name="notes")
        lm = ScriptedLM([repl("t = context"), "FINAL_VAR(t)"])
        with anyio.fail_after(60):
            by_name = await RLM(lm=lm).acompletion(store.get("notes"), "q")
        assert by_name.response == "the stored text"
        lm2 = ScriptedLM([repl("t = context"), "FINAL_VAR(t)"])
        with anyio.fail_after(60):
            as_text = await RLM(lm=lm2, store=store).acompletion("notes", "q")
        assert as_text.response == "notes"


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"max_time": 0}, "max_time"),
        ({"max_cost": -1.0}, "max_cost"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_depth": -2}, "max_depth"),
    ],
)
def test_zero_or_negative_budgets_are_one_line_errors_naming_the_argument(
    kwargs: dict[str, Any], arg: str
) -> None:
    with pytest.raises(ConfigError) as err:
        RLM(lm=ScriptedLM(["FINAL(x)"]), **kwargs)
    assert str(err.value).startswith(arg) and "\n" not in str(err.value)


async def test_a_run_that_fails_before_it_starts_writes_no_trajectory(tmp_path: Path) -> None:
    from rlm_mcp.sandbox import ContextSpec

    runs = tmp_path / "runs"
    rlm = RLM(lm=ScriptedLM(["FINAL(x)"]), log_dir=runs)
    with pytest.raises(FileNotFoundError):
        await rlm.acompletion(ContextSpec(path=tmp_path / "missing.log"), "q")
    assert not runs.exists()  # not even the folder: nothing was written
