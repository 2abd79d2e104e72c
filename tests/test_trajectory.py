import io
from pathlib import Path

from rlm_mcp.lm.usage import UsageSummary
from rlm_mcp.trajectory import TrajectoryWriter, VerbosePrinter, read_trajectory
from rlm_mcp.types import (
    CodeBlockRecord,
    IterationRecord,
    RLMChatCompletion,
    RLMEvent,
    SubCallRecord,
)


def _record() -> IterationRecord:
    sub = SubCallRecord(prompt_chars=10, response_chars=2, model="m", input_tokens=3)
    block = CodeBlockRecord(code="print(1)", status="ok", output="1\n", sub_calls=[sub])
    return IterationRecord(iteration=1, prompt_chars=100, response="r", code_blocks=[block])


def test_writer_and_reader_round_trip_config_iterations_and_result(tmp_path: Path) -> None:
    w = TrajectoryWriter(tmp_path / "logs")
    w.config(root_model="m", max_iterations=3)
    w.iteration(_record())
    result = RLMChatCompletion("ans", UsageSummary(), 1, [_record()], "final", 0.5)
    w.result(result)
    w.close()
    w.write({"type": "ignored"})  # after close: nothing written, no error
    t = read_trajectory(w.path)
    assert t["config"] == {"root_model": "m", "max_iterations": 3}
    assert t["iterations"] == [_record()]
    assert t["result"]["response"] == "ans" and "trajectory" not in t["result"]


def test_verbose_printer_shows_code_and_output() -> None:
    out = io.StringIO()
    p = VerbosePrinter(out)
    p(RLMEvent("iteration_finished", 1, 2, "iteration 2", _record().to_dict()))
    text = out.getvalue()
    assert "[2] iteration_finished" in text and "| print(1)" in text and "> 1" in text


def test_loop_benchmark_smoke_run_produces_rows() -> None:
    from rlm_mcp.bench.loop import measure

    rows = measure(chars=200_000)
    assert [r.bench for r in rows] == ["loop"] * 6 and all(r.measured >= 0 for r in rows)
    assert rows[4].passed is True  # compaction on finishes the run longer than the window
