"""`rlm-mcp complete` end to end: real OpenAI SDK, real HTTP, a local fake provider as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_mcp.testing.fake_provider import FakeProvider


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"OPENAI_API_KEY": "dummy", "RLM_MCP_HOME": str(home)})
    return subprocess.run(
        [sys.executable, "-m", "rlm_mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_complete_answers_from_a_file_through_a_fake_openai_server(tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("filler line\n" * 50_000 + "The launch code is 7781.\n" + "more\n" * 1000)
    replies = [
        "```repl\nimport re\ncode = re.search(r'launch code is (\\d+)', context).group(1)\n"
        "print(code)\n```",
        "FINAL_VAR(code)",
    ]
    logs = tmp_path / "logs"
    with FakeProvider(replies) as fake:
        proc = _run(
            [
                "complete",
                "--context",
                str(doc),
                "--query",
                "What is the launch code?",
                "--backend",
                "openai",
                "--model",
                "gpt-4o-mini",
                "--base-url",
                fake.openai_base_url,
                "--log-dir",
                str(logs),
            ],
            tmp_path / "home",
        )
        requests = list(fake.requests)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "7781"
    assert "[final] 2 iterations, 2 calls" in proc.stderr and "cost $" in proc.stderr
    assert len(requests) == 2
    second = json.dumps(requests[1].json)
    assert "7781" in second  # the REPL output went back to the model over HTTP
    (trajectory,) = logs.glob("*.jsonl")
    assert '"type": "result"' in trajectory.read_text()


def test_complete_rejects_a_missing_context(tmp_path: Path) -> None:
    proc = _run(["complete", "--context", str(tmp_path / "nope"), "--query", "q"], tmp_path)
    assert proc.returncode == 2 and "neither a file nor a stored handle" in proc.stderr


def test_complete_in_process_prints_answer_and_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlm_mcp.cli import main

    doc = tmp_path / "doc.txt"
    doc.write_text("colour: teal\n")
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    with FakeProvider(["FINAL(teal)"]) as fake:
        code = main(
            [
                "complete",
                "--context",
                str(doc),
                "--query",
                "Which colour?",
                "--backend",
                "openai",
                "--model",
                "gpt-4o-mini",
                "--sub-model",
                "gpt-4o-mini",
                "--base-url",
                fake.openai_base_url,
                "--max-cost",
                "1.0",
            ]
        )
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == "teal" and "[final] 1 iterations" in out.err


def _complete_with_schema(
    tmp_path: Path, replies: list[str], schema: object, monkeypatch: pytest.MonkeyPatch
) -> int:
    from rlm_mcp.cli import main

    doc = tmp_path / "doc.txt"
    doc.write_text("Oslo, founded 1624\n")
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    with FakeProvider(replies) as fake:
        return main(
            [
                "complete", "--context", str(doc), "--query", "q", "--backend", "openai",
                "--model", "m", "--base-url", fake.openai_base_url, "--schema", str(schema_file),
                "--max-iterations", "1",
            ]
        )  # fmt: skip


SCHEMA = {"type": "object", "properties": {"year": {"type": "integer"}}, "required": ["year"]}


def test_complete_with_a_schema_prints_the_validated_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _complete_with_schema(tmp_path, ['FINAL({"year": 1624})'], SCHEMA, monkeypatch)
    out = capsys.readouterr()
    assert code == 0 and json.loads(out.out) == {"year": 1624}


def test_complete_whose_answer_never_fits_the_schema_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _complete_with_schema(tmp_path, ["FINAL(1624)"] * 3, SCHEMA, monkeypatch)
    out = capsys.readouterr()
    assert code == 1 and out.out.strip() == "1624"
    assert "[invalid_answer]" in out.err and "does not match --schema" in out.err


def test_complete_with_a_bad_schema_file_exits_2_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _complete_with_schema(tmp_path, [], {"type": 5}, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "--schema" in err and "not a valid JSON Schema" in err
