"""The shipped fake provider: callable replies, scripted lists, recording; and priced usage."""

from __future__ import annotations

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
