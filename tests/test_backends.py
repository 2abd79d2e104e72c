"""Settings → models: the "auto" backend, per-backend default models, the sub-call cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CreateMessageResult, TextContent

from rlm_mcp.backends import pick_backend
from rlm_mcp.config import Settings
from rlm_mcp.errors import MissingAPIKeyError
from rlm_mcp.lm.cache import CachedLM
from rlm_mcp.runtime import Runtime
from rlm_mcp.server import build_server


@pytest.mark.parametrize(
    ("environ", "base_url", "expected"),
    [
        ({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "a"}, None, "openai"),
        ({"ANTHROPIC_API_KEY": "a"}, None, "anthropic"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, None, "openai"),
        ({}, "http://127.0.0.1:1/v1", "openai"),
    ],
)
def test_auto_picks_the_provider_whose_key_is_set(
    environ: dict[str, str], base_url: str | None, expected: str
) -> None:
    assert pick_backend(environ, base_url=base_url) == expected


def test_auto_without_any_key_or_client_names_both_keys() -> None:
    with pytest.raises(MissingAPIKeyError) as err:
        pick_backend({})
    assert "OPENAI_API_KEY" in str(err.value) and "ANTHROPIC_API_KEY" in str(err.value)


def test_an_anthropic_key_alone_gets_an_anthropic_model_not_the_openai_default(
    tmp_path: Path,
) -> None:
    lm, sub = Runtime(Settings(home=tmp_path), environ={"ANTHROPIC_API_KEY": "a"}).lms()
    assert lm.backend == "anthropic"
    assert lm.model.startswith("claude")
    assert sub is lm


def test_a_separate_sub_model_is_cached_on_disk_unless_turned_off(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "k"}
    lm, sub = Runtime(Settings(home=tmp_path, sub_model="small"), environ=env).lms()
    assert isinstance(sub, CachedLM) and sub.model == "small"
    assert lm.model == "gpt-5-mini"
    plain_runtime = Runtime(
        Settings(home=tmp_path, sub_model="small", subcall_cache=False), environ=env
    )
    _, plain = plain_runtime.lms()
    assert plain.model == "small" and not isinstance(plain, CachedLM)


async def _sampler(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(
        role="assistant", content=TextContent(type="text", text="from-client"), model="m"
    )


@pytest.mark.anyio
async def test_auto_without_keys_falls_back_to_the_clients_model(tmp_path: Path) -> None:
    server = build_server(Settings(home=tmp_path), environ={})
    with anyio.fail_after(60):
        async with Client(server, mode="legacy", sampling_callback=_sampler) as client:
            res = await client.call_tool("llm_query", {"prompt": "hi"})
            assert not res.is_error, res.content
            assert res.structured_content["text"] == "from-client"
        async with Client(server) as modern:  # no back channel, no key: say what to set
            res = await modern.call_tool("llm_query", {"prompt": "hi"})
            assert res.is_error
            text = res.content[0].text
            assert "cannot sample" in text and "ANTHROPIC_API_KEY" in text and '"env"' in text
