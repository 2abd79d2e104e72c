"""The shipped fake provider: callable replies, scripted lists, recording; and priced usage."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import anyio
import pytest

from rlm_mcp.errors import ProviderError
from rlm_mcp.lm import Message, PriceTable, resolve_lm
from rlm_mcp.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.anyio


async def test_callable_replies_see_the_request_json_and_prices_give_a_cost() -> None:
    def reply(request: dict[str, Any]) -> str:
        return "echo: " + request["messages"][-1]["content"]

    with FakeProvider(reply) as fake:
        fake.usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
        lm = resolve_lm(
            "openai",
            model_name="priced",
            api_key="k",
            base_url=fake.openai_base_url,
            prices=PriceTable({"priced": (1.0, 2.0)}, defaults=False),
        )
        try:
            with anyio.fail_after(10):
                comp = await lm.complete([Message("user", "hi")])
        finally:
            await lm.aclose()  # type: ignore[attr-defined]
    assert comp.text == "echo: hi"
    assert comp.usage.cost == pytest.approx(3.0)


async def test_a_scripted_list_that_runs_out_answers_500_and_becomes_a_provider_error() -> None:
    with FakeProvider(["one"]) as fake:
        lm = resolve_lm(
            "openai", model_name="m", api_key="k", base_url=fake.openai_base_url, max_retries=0
        )
        try:
            with anyio.fail_after(10):
                assert (await lm.complete([Message("user", "a")])).text == "one"
                with pytest.raises(ProviderError, match="status 500"):
                    await lm.complete([Message("user", "b")])
        finally:
            await lm.aclose()  # type: ignore[attr-defined]
        assert fake.url.startswith("http://127.0.0.1:")
    assert [r.json["messages"][0]["content"] for r in fake.requests] == ["a", "b"]


def _spawn(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rlm_mcp.testing.fake_provider", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_forever_keeps_serving_with_stdin_closed_and_stops_on_sigterm() -> None:
    # In a terminal `... fake_provider &` has its stdin closed; without --forever it would exit.
    proc = _spawn("--forever", "--reply", "still here", stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        time.sleep(0.3)  # long enough for a reader of a closed stdin to have exited
        assert proc.poll() is None
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        req = urllib.request.Request(
            url + "/v1/chat/completions",
            data=body.encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["content"] == "still here"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _spawn("--port", str(port), stdin=subprocess.DEVNULL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
