"""The viewer page in a real headless Chromium (Debian's `chromium`), driven over the DevTools
protocol on a pipe by rlm_mcp.viewer.browser: stdlib only, no Playwright, no browser download.

Skipped, saying why, on a machine without Chromium (`.ci/run` installs it when it can).
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from rlm_mcp import RLM
from rlm_mcp.lm import ScriptedLM
from rlm_mcp.lm.base import Message
from rlm_mcp.viewer import render_html, write_html
from rlm_mcp.viewer.browser import HeadlessChromium, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium binary on this machine (apt-get install chromium; .ci/run does it as root)",
)

EVIL = "</script><script>window.__pwned = 1</script>"


def repl(code: str) -> str:
    return f"I will check.\n```repl\n{code}\n```\n"


def _sub(messages: list[Message]) -> str:
    if messages[0].role == "system":  # a child RLM's root turn
        return repl("r = llm_query('leaf ' + context[-4:])\nprint(r)") + "FINAL_VAR(r)"
    return "answer to " + messages[-1].content[-12:]


async def _trajectory(tmp_path: Path) -> Path:
    """A real run: 4 iterations, one code error, 5 sub-calls at depth 1, one child run."""
    root = ScriptedLM(
        [
            repl("print(len(context), context[:20])"),
            repl("x = undefined_name + 1"),
            repl(
                "outs = llm_query_batched(['Count apples in part ' + str(i) for i in range(4)])\n"
                f"print(outs, {EVIL!r})"
            ),
            repl("deep = llm_query('Find the tag in TAG=abcd')\nprint(deep)"),
            "Counted them all.\nFINAL(12 apples)",
        ],
        model="root-model",
    )
    with anyio.fail_after(120):
        r = await RLM(
            lm=root, sub_lm=ScriptedLM(_sub, model="sub-model"), max_depth=2, log_dir=tmp_path
        ).acompletion("apples and pears " * 100, "How many apples?")
    assert r.response == "12 apples" and r.trajectory_path is not None
    return r.trajectory_path


def _count(browser: HeadlessChromium, selector: str) -> int:
    return int(browser.evaluate(f"document.querySelectorAll({selector!r}).length"))


@pytest.mark.anyio
async def test_the_page_renders_iterations_and_sub_calls_in_chromium_without_errors(
    tmp_path: Path,
) -> None:
    page = write_html(await _trajectory(tmp_path))
    with HeadlessChromium(timeout=60) as browser:
        browser.open(page.as_uri())
        assert browser.evaluate("document.body.dataset.rendered") == "1"
        assert _count(browser, "main section.iter") == 5
        assert _count(browser, ".block.st-error") == 1
        assert "NameError" in browser.evaluate("document.querySelector('pre.err').textContent")
        assert _count(browser, "details.sub") == 5  # 4 batched + 1 child run
        assert _count(browser, "details.sub.child") == 5
        assert _count(browser, "pre.code span.t-b") > 0  # highlighted names
        bar = browser.evaluate("document.querySelector('header.bar').textContent")
        assert "final" in bar and "root-model" in bar and "iterations5" in bar.replace(" ", "")
        assert browser.evaluate("typeof window.__pwned") == "undefined"
        assert EVIL in browser.evaluate("document.body.textContent")  # shown, not run
        browser.screenshot(tmp_path / "viewer-top.png")

        # Opening sub-calls builds their prompt, answer and child run on demand; a second
        # "open all" reaches the leaf calls inside the child runs the first one built.
        for want in (5, 10):
            browser.evaluate("document.querySelector('.tools button').click()")
            deadline = time.monotonic() + 30
            while _count(browser, ".subbody") < want and time.monotonic() < deadline:
                pass  # toggle handlers run as tasks after the click; each count is a round trip
        assert _count(browser, ".childrun") == 5 and _count(browser, ".subbody") == 10
        assert _count(browser, "details.sub") == 10
        assert _count(browser, "section.iter[data-depth='1']") == 5
        browser.evaluate("document.querySelectorAll('details.sub')[4].scrollIntoView()")
        shot = browser.screenshot(tmp_path / "viewer-subcalls.png")
        browser.drain_events()
        assert browser.console_errors == []
    assert shot.stat().st_size > 10_000


@pytest.mark.anyio
async def test_the_browser_reports_script_errors_so_the_check_above_means_something(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); null.x;</script></body></html>")
    with HeadlessChromium(timeout=60) as browser:
        browser.open(bad.as_uri())
        browser.drain_events()
        assert any("boom" in e for e in browser.console_errors)
        assert any("TypeError" in e for e in browser.console_errors)


def test_clipped_texts_show_a_note_and_old_trajectories_render(tmp_path: Path) -> None:
    records = [
        {"type": "config", "root_prompt": "q", "max_iterations": 7},
        {
            "type": "iteration",
            "iteration": 1,
            "response": "look",
            "code_blocks": [
                {
                    "code": "print(x)",
                    "status": "ok",
                    "output": "y" * 50_000,
                    "truncated": True,
                    # a record written before sub-calls kept previews, index and time
                    "sub_calls": [{"prompt_chars": 10, "response_chars": 2, "model": "m"}],
                }
            ],
        },
    ]
    page = tmp_path / "old.html"
    page.write_text(render_html(records), encoding="utf-8")
    with HeadlessChromium(timeout=60) as browser:
        browser.open(page.as_uri())
        notes = browser.evaluate("[...document.querySelectorAll('.clip')].map(e => e.textContent)")
        assert any("50,000" in n for n in notes) and any("by the sandbox" in n for n in notes)
        assert "max_iterations 7" in browser.evaluate(
            "document.querySelector('.limits').textContent"
        )
        assert "incomplete" in browser.evaluate("document.querySelector('header.bar').textContent")
        browser.evaluate("document.querySelector('details.sub').open = true")
        deadline = time.monotonic() + 30
        while _count(browser, ".subbody") < 1 and time.monotonic() < deadline:
            pass
        assert _count(browser, ".subbody") == 1
        browser.drain_events()
        assert browser.console_errors == []


@pytest.mark.anyio
async def test_tool_calls_rlm_query_children_and_compaction_render(tmp_path: Path) -> None:
    def lookup(key: str) -> str:
        """A value by key."""
        if key == "bad":
            raise KeyError(key)
        return key.upper()

    turns = 0

    def root(messages: list[Message]) -> str:
        nonlocal turns
        if "replaced by your own summary" in messages[-1].content:
            return "Summary: v holds ABC."
        turns += 1
        if turns == 1:
            return repl(
                "v = lookup('abc')\ntry:\n    lookup('bad')\nexcept Exception as e:\n    print(e)\n"
                "c = rlm_query('child prompt TAG=wxyz')"
            )
        if turns < 6:
            return repl("print('y' * 2000)")
        return "FINAL(done)"

    with anyio.fail_after(120):
        r = await RLM(
            lm=ScriptedLM(root),
            sub_lm=ScriptedLM(_sub),
            tools={"lookup": lookup},
            compaction_threshold=5_000,
            log_dir=tmp_path,
        ).acompletion("text", "q")
    assert r.response == "done" and r.trajectory_path is not None
    page = write_html(r.trajectory_path)
    with HeadlessChromium(timeout=60) as browser:
        browser.open(page.as_uri())
        assert browser.evaluate("document.body.dataset.rendered") == "1"
        assert _count(browser, "div.tool") == 2 and _count(browser, "div.tool .badge.error") == 1
        assert "ABC" in browser.evaluate("document.querySelector('div.tool pre').textContent")
        assert _count(browser, "div.compaction") >= 1
        assert _count(browser, "details.sub.child") == 1
        browser.drain_events()
        assert browser.console_errors == []
