"""The trajectory viewer: loading a JSONL, the page it renders, `rlm-mcp view`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

import rlm_mcp
from rlm_mcp import RLM
from rlm_mcp.cli import main
from rlm_mcp.errors import RLMError, TrajectoryError
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.base import Message
from rlm_mcp.subcalls import SUBCALL_PREVIEW_CHARS
from rlm_mcp.types import SubCallRecord
from rlm_mcp.viewer import load_trajectory, render_html, write_html
from rlm_mcp.viewer._model import MAX_TEXT_CHARS, build_view

EVIL = "</script><script>alert(1)</script><!--"


def repl(code: str) -> str:
    return f"Let me look.\n```repl\n{code}\n```\n"


def _child_or_leaf(messages: list[Message]) -> str:
    """A sub-model that runs a child RLM for 'Find the tag' prompts and answers leaves directly."""
    if messages[0].role == "system":  # a child run's root turn
        return (
            repl("r = llm_query('leaf ' + context.split('TAG=')[1].split()[0])\nprint(r)")
            + "FINAL_VAR(r)"
        )
    return "leaf-" + messages[-1].content.split()[-1]


async def _run(tmp_path: Path, *, max_depth: int = 1) -> Path:
    root = ScriptedLM(
        [
            repl("print(len(context))"),
            repl("x = 1/0"),
            repl("a = llm_query_batched(['Find the tag. TAG=red', 'Find the tag. TAG=blue'])"),
            "FINAL(two tags)",
        ]
    )
    with anyio.fail_after(90):
        r = await RLM(
            lm=root, sub_lm=ScriptedLM(_child_or_leaf), max_depth=max_depth, log_dir=tmp_path
        ).acompletion("some text", "Which tags?")
    assert r.trajectory_path is not None
    return r.trajectory_path


def _page_data(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="rlm-data">(.*?)</script>', page, re.S)
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


@pytest.mark.anyio
async def test_a_run_records_each_sub_calls_prompt_answer_time_and_child_run(
    tmp_path: Path,
) -> None:
    path = await _run(tmp_path, max_depth=2)
    records = load_trajectory(path)
    assert [r["type"] for r in records] == ["config", *["iteration"] * 4, "result"]
    # parallel child runs finish in any order; the index says which call each one was
    subs = sorted(records[3]["code_blocks"][0]["sub_calls"], key=lambda s: s["index"])
    assert [s["index"] for s in subs] == [1, 2]
    assert subs[0]["prompt_preview"] == "Find the tag. TAG=red"
    assert subs[1]["response_preview"] == "leaf-blue" and subs[1]["response_chars"] == 9
    assert all(s["child"] and s["duration_s"] > 0 for s in subs)
    child_it = subs[0]["trajectory"][0]
    leaf = child_it["code_blocks"][0]["sub_calls"][0]
    assert leaf["prompt_preview"] == "leaf red" and leaf["depth"] == 2 and not leaf["child"]
    restored = SubCallRecord.from_dict(subs[0])
    assert restored.trajectory[0].code_blocks[0].sub_calls[0].prompt_preview == "leaf red"
    assert restored.to_dict() == subs[0]


@pytest.mark.anyio
async def test_sub_call_previews_are_clipped_in_the_trajectory(tmp_path: Path) -> None:
    root = ScriptedLM([repl("a = llm_query('Q ' + 'x' * 10000)"), "FINAL(ok)"])
    with anyio.fail_after(60):
        r = await RLM(lm=root, sub_lm=ScriptedLM(["y" * 5000]), log_dir=tmp_path).acompletion(
            "ctx", "q"
        )
    sub = r.trajectory[0].code_blocks[0].sub_calls[0]
    assert len(sub.prompt_preview) == len(sub.response_preview) == SUBCALL_PREVIEW_CHARS
    assert sub.prompt_chars == 10_002 and sub.response_chars == 5000


@pytest.mark.anyio
async def test_the_page_of_a_real_run_shows_question_answer_errors_and_every_sub_call(
    tmp_path: Path,
) -> None:
    path = await _run(tmp_path, max_depth=2)
    page = render_html(load_trajectory(path), title="my run")
    data = _page_data(page)
    s = data["summary"]
    assert s["question"] == "Which tags?" and s["answer"] == "two tags" and s["stop"] == "final"
    assert s["iterations"] == 4 and s["sub_calls"] == 4  # 2 children + 1 leaf each
    assert s["tokens_in"] > 0 and s["tokens_out"] > 0 and s["wall"] > 0
    assert {m["name"] for m in s["models"]} == {"scripted"}
    its = data["iterations"]
    assert its[1]["b"][0]["st"] == "error" and "ZeroDivisionError" in its[1]["b"][0]["err"]
    assert its[0]["why"] == "Let me look." and "```" not in its[0]["why"]
    assert its[3]["fin"] == "two tags"
    assert [sub["i"] for sub in its[2]["b"][0]["sub"]] == [1, 2]  # in call order
    child = its[2]["b"][0]["sub"][0]
    assert child["c"] and child["it"][0]["b"][0]["sub"][0]["p"] == "leaf red"
    assert "<title>my run</title>" in page


def test_nothing_from_the_trajectory_can_close_the_script_element_or_run() -> None:
    records: list[dict[str, Any]] = [
        {"type": "config", "root_prompt": EVIL, "system_prompt": EVIL, "root_model": EVIL},
        {
            "type": "iteration",
            "iteration": 1,
            "prompt_chars": 1,
            "response": EVIL + "\u2028",
            "code_blocks": [
                {
                    "code": EVIL,
                    "status": "error",
                    "output": EVIL,
                    "error": EVIL,
                    "sub_calls": [
                        {
                            "prompt_chars": 1,
                            "response_chars": 1,
                            "model": EVIL,
                            "prompt_preview": EVIL,
                            "response_preview": EVIL,
                        }
                    ],
                }
            ],
            "final_answer": EVIL,
        },
        {"type": "result", "response": EVIL, "usage": {}, "stop_reason": "final", "notes": [EVIL]},
    ]
    page = render_html(records, title=EVIL)
    assert "alert(1)</script>" not in page and "<!--" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<title>&lt;/script&gt;" in page
    data = _page_data(page)  # the text comes back intact once parsed
    assert data["summary"]["question"] == EVIL and data["iterations"][0]["b"][0]["out"] == EVIL
    assert data["iterations"][0]["b"][0]["sub"][0]["p"] == EVIL


def test_the_page_is_self_contained_and_allows_only_its_own_script() -> None:
    page = render_html([{"type": "config", "root_prompt": "q"}])
    assert not re.search(r"https?://|<link|\bsrc=|@import", page)
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None and "default-src 'none'" in csp.group(1)
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(script) == 1
    digest = base64.b64encode(hashlib.sha256(script[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp.group(1)
    assert "innerHTML" not in script[0] and "eval(" not in script[0]


def test_huge_texts_are_clipped_with_their_full_length() -> None:
    big = "line of output\n" * 100_000
    records = [
        {
            "type": "iteration",
            "iteration": 1,
            "response": "x",
            "code_blocks": [{"code": "print(x)", "status": "ok", "output": big}],
        }
    ]
    out = build_view(records)["iterations"][0]["b"][0]["out"]
    assert out == {"t": big[:MAX_TEXT_CHARS], "n": len(big)}
    assert len(render_html(records)) < 100_000


def test_a_run_without_a_result_record_is_summed_from_its_iterations() -> None:
    sub = {"prompt_chars": 5, "response_chars": 2, "model": "s", "input_tokens": 7, "cost": 0.5}
    records = [
        {"type": "config", "root_model": "r", "sub_model": "s", "root_prompt": "q"},
        {
            "type": "iteration",
            "iteration": 1,
            "response": "",
            "input_tokens": 10,
            "output_tokens": 3,
            "duration_s": 1.5,
            "code_blocks": [{"code": "", "status": "ok", "output": "", "sub_calls": [sub]}],
        },
    ]
    s = build_view(records)["summary"]
    assert not s["complete"] and s["answer"] is None and s["stop"] is None
    assert (s["tokens_in"], s["tokens_out"], s["cost"], s["wall"]) == (17, 3, 0.5, 1.5)
    assert [m["name"] for m in s["models"]] == ["r", "s"] and "crashed" in s["notes"][0]


def test_odd_numbers_never_break_the_embedded_json() -> None:
    records = [
        {"type": "config", "context_chars": float("nan"), "max_cost": float("inf")},
        {
            "type": "iteration",
            "iteration": "one",
            "duration_s": float("nan"),
            "code_blocks": [{"sub_calls": [{"cost": float("nan"), "depth": None}]}],
        },
        {"type": "result", "usage": {"total_cost": "n/a", "models": {"m": {"calls": None}}}},
    ]
    data = _page_data(render_html(records))
    assert data["summary"]["cost"] is None and data["iterations"][0]["s"] == 0.0


def test_load_trajectory_drops_the_cut_off_last_line_of_a_crashed_run(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"type": "config"}\n{"type": "iteration", "iteration": 1}\n{"type": "it')
    assert [r["type"] for r in load_trajectory(path)] == ["config", "iteration"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no trajectory records"),
        ("not json at all\n", "line 1 is not JSON"),
        ('{"type": "config"}\n{"broken\n{"type": "result"}\n', "line 2 is not JSON"),
        ('{"type": "config"}\n{"type": "it', None),  # cut off, but nothing else: fine
        ("[1, 2]\n", 'not a record with a "type"'),
        ('{"a": 1}\n', 'not a record with a "type"'),
        ('{"type": "other"}\n', "holds no trajectory records"),
    ],
)
def test_load_trajectory_says_what_is_wrong_with_a_file_that_is_not_a_trajectory(
    tmp_path: Path, content: str, message: str | None
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    if message is None:
        assert load_trajectory(path) == [{"type": "config"}]
        return
    with pytest.raises(TrajectoryError, match=re.escape(message)) as exc:
        load_trajectory(path)
    assert isinstance(exc.value, RLMError) and "rlm-mcp complete --log-dir" in str(exc.value)


def test_load_trajectory_of_a_missing_or_binary_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TrajectoryError, match="No trajectory file at"):
        load_trajectory(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TrajectoryError, match="Cannot read"):
        load_trajectory(tmp_path / "bin.jsonl")


@pytest.mark.anyio
async def test_write_html_puts_the_page_beside_the_trajectory_or_at_out(tmp_path: Path) -> None:
    path = await _run(tmp_path)
    page = write_html(path)
    assert page == path.with_suffix(".html") and "<!DOCTYPE html>" in page.read_text()
    other = write_html(str(path), tmp_path / "deep" / "dir" / "p.html")
    assert other.read_text() == page.read_text()
    (tmp_path / "file").write_text("")
    with pytest.raises(TrajectoryError, match="Cannot write the viewer page"):
        write_html(path, tmp_path / "file" / "p.html")


@pytest.mark.anyio
async def test_rlm_mcp_view_writes_the_page_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await _run(tmp_path)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or False)
    out = tmp_path / "page.html"
    assert main(["view", str(path), "--out", str(out), "--open"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and out.is_file()
    assert opened == [out.resolve().as_uri()] and "no browser could be opened" in captured.err
    assert main(["view", str(path)]) == 0
    assert capsys.readouterr().out.strip() == str(path.with_suffix(".html"))


def test_rlm_mcp_view_of_a_non_trajectory_exits_2_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["view", str(tmp_path / "nope.jsonl")]) == 2
    assert "No trajectory file at" in capsys.readouterr().err


def test_the_viewer_is_exported_from_the_package() -> None:
    assert rlm_mcp.render_html is render_html and rlm_mcp.write_html is write_html
    assert rlm_mcp.TrajectoryError is TrajectoryError
