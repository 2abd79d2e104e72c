import csv
import json
import re
import sys
import types
from typing import Any

import pytest

from rlm_mcp.bench._table import BenchRow
from rlm_mcp.bench.system import run_system
from rlm_mcp.cli import main
from rlm_mcp.testing.fake_provider import FakeProvider


def _reader(request: dict[str, Any]) -> str:
    text = request["messages"][-1]["content"]
    key = re.search(r"magic number for (\S+) mentioned", text)
    hit = key and re.search(rf"magic number for {re.escape(key.group(1))} is (\d+)", text)
    if hit:
        return hit.group(1)
    notes = re.search(r"\[chunk \d+\] (\d+)", text)
    return notes.group(1) if notes else "NONE"


def test_bench_tasks_runs_against_a_local_server_and_writes_json_csv_png(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    out = tmp_path / "out"
    with FakeProvider(_reader) as fake:
        rc = main(
            [
                "bench", "tasks", "--suite", "sniah", "--lengths", "12k,20k",
                "--methods", "base,map-reduce,retrieval", "--backend", "openai",
                "--model", "m", "--base-url", fake.openai_base_url, "--out", str(out),
                "--chunk-chars", "3000", "--seed", "1",
            ]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| sniah" in captured.out and "map-reduce" in captured.out
    assert "6/6" in captured.err or "done" in captured.err
    data = json.loads((out / "results.json").read_text())
    assert len(data["results"]) == 6
    by_method = {r["method"]: r for r in data["results"] if r["length"] < 15_000}
    assert by_method["map-reduce"]["score"] == 1.0 and by_method["retrieval"]["score"] == 1.0
    assert by_method["map-reduce"]["sub_calls"] >= 4
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert len(rows) == 6 and {"score", "input_tokens", "wall_time_s", "sub_calls"} <= set(rows[0])
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_tasks_without_a_model_says_how_to_fix_it(tmp_path, capsys) -> None:
    rc = main(["bench", "tasks", "--lengths", "10k", "--out", str(tmp_path), "--backend", "openai"])
    assert rc == 2
    assert "--model" in capsys.readouterr().err


def test_bench_system_reports_present_missing_and_failing_modules() -> None:
    good = types.ModuleType("good")
    good.measure = lambda *, quick=False: [  # type: ignore[attr-defined]
        BenchRow("good", f"quick={quick}", 2.0, "s", baseline=1.0)
    ]
    bad = types.ModuleType("bad")

    def broken(*, quick: bool = False) -> list[BenchRow]:
        raise RuntimeError("disk full")

    bad.measure = broken  # type: ignore[attr-defined]

    def importer(name: str) -> types.ModuleType:
        if name == "absent":
            raise ModuleNotFoundError(name=f"rlm_mcp.bench.{name}")
        return {"good": good, "bad": bad}[name]

    report = run_system(["good", "absent", "bad"], quick=True, importer=importer)
    text = report.render()
    assert "quick=True" in text and "2.00" in text
    assert report.missing == ["absent"] and "missing" in text and "absent" in text
    assert "disk full" in report.failed["bad"]


def test_bench_system_cli_prints_one_table_and_names_missing_modules(
    tmp_path, capsys, monkeypatch
) -> None:
    fake = types.ModuleType("rlm_mcp.bench.store")
    fake.measure = lambda *, quick=False: [  # type: ignore[attr-defined]
        BenchRow("store", "ingest", 3.0, "s", baseline=1.5, target="ratio <= 3", passed=True)
    ]
    monkeypatch.setitem(sys.modules, "rlm_mcp.bench.store", fake)
    monkeypatch.setitem(sys.modules, "rlm_mcp.bench.server", None)  # import -> missing
    out = tmp_path / "sys.json"
    rc = main(["bench", "system", "--quick", "--only", "store,server", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    assert "| store" in captured.out and "2.00" in captured.out
    assert "missing benchmark modules (not built yet): server" in captured.out
    assert json.loads(out.read_text())["rows"][0]["ratio"] == 2.0


@pytest.mark.parametrize("argv", [["bench", "tasks", "--help"], ["bench", "system", "--help"]])
def test_bench_help_lists_the_options(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--" in capsys.readouterr().out


def test_the_http_load_benchmark_reports_its_rows_in_quick_mode() -> None:
    from rlm_mcp.bench.http_load import measure

    rows = measure(quick=True)
    cases = [r.case for r in rows]
    assert cases[0] == "4 clients x 5 run_repl (auto): failed calls"
    assert any("p99 latency" in c for c in cases)
    assert all(r.passed is not False for r in rows)


def test_the_agents_benchmark_compares_claude_with_the_direct_adapter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pathlib import Path

    from rlm_mcp.bench.agents import _claude, measure

    if _claude() is None:
        default = Path(__file__).resolve().parents[2] / ".ci/node/node_modules/.bin"
        if not (default / "claude").exists():
            pytest.skip("no `claude` program: bash .ci/run installs it (RLM_MCP_AGENT_BIN)")
        monkeypatch.setenv("RLM_MCP_AGENT_BIN", str(default))
    rows = measure(quick=True)
    assert [r.case.split(" (")[0] for r in rows] == [
        "one call through `claude -p`",
        "4 calls through `claude`, at most 4 at once",
    ]
    assert all(r.measured > 0 and r.baseline for r in rows)
