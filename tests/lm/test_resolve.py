"""resolve_lm: backends, presets, keys from an explicit environ, helpful errors."""

from __future__ import annotations

import pytest

from rlm_mcp.errors import ConfigError, MissingAPIKeyError
from rlm_mcp.lm import PRESETS, PriceTable, SamplingLM, ScriptedLM, resolve_lm
from rlm_mcp.lm.anthropic import AnthropicLM
from rlm_mcp.lm.openai import OpenAILM


def test_openai_model_after_the_colon_and_key_from_explicit_environ() -> None:
    lm = resolve_lm("openai:gpt-x", environ={"OPENAI_API_KEY": "sk-env"})
    assert isinstance(lm, OpenAILM)
    assert (lm.model, lm.backend, lm.api_key, lm.base_url) == ("gpt-x", "openai", "sk-env", None)


def test_reference_library_kwargs_shape_is_accepted() -> None:
    lm = resolve_lm("openai", model_name="gpt-5-nano", api_key="k", timeout=3, max_retries=1)
    assert lm.model == "gpt-5-nano"
    assert isinstance(lm, OpenAILM) and lm.policy.timeout == 3 and lm.policy.max_retries == 1


def test_library_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-process")
    with pytest.raises(MissingAPIKeyError):
        resolve_lm("openai")


@pytest.mark.parametrize(
    ("backend", "variable"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
        ("gemini", "GEMINI_API_KEY"),
    ],
)
def test_a_missing_key_names_the_variable_and_a_keyless_local_option(
    backend: str, variable: str
) -> None:
    # not "sampling": outside an MCP tool call (CLI, library) there is no client to sample from
    with pytest.raises(MissingAPIKeyError) as info:
        resolve_lm(backend, model_name="m", environ={})
    message = str(info.value)
    assert variable in message and "ollama" in message and "OPENAI_BASE_URL" in message
    assert "sampling" not in message
    assert message.endswith(".") and "\n" not in message  # one sentence


def test_an_unknown_backend_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'anthropic'"):
        resolve_lm("antropic")
    with pytest.raises(ConfigError, match="Did you mean 'ollama'"):
        resolve_lm("olama:llama3")


def test_unknown_options_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="temprature"):
        resolve_lm("openai", api_key="k", temprature=0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_use_their_base_url_and_name_the_backend(name: str) -> None:
    lm = resolve_lm(f"{name}:some-model", api_key="k")
    assert isinstance(lm, OpenAILM)
    assert lm.base_url == PRESETS[name].base_url and lm.backend == name
    assert lm.model == "some-model"


def test_preset_urls_are_the_documented_ones() -> None:
    assert PRESETS["ollama"].base_url == "http://localhost:11434/v1"
    assert PRESETS["openrouter"].base_url == "https://openrouter.ai/api/v1"
    assert PRESETS["gemini"].base_url.endswith("/v1beta/openai/")
    assert PRESETS["lmstudio"].base_url == "http://localhost:1234/v1"


def test_local_presets_need_no_key_but_need_a_model() -> None:
    lm = resolve_lm("ollama", model="llama3.2", base_url="http://h:1/v1", environ={})
    assert isinstance(lm, OpenAILM) and lm.base_url == "http://h:1/v1"
    assert lm.api_key == "not-needed"
    with pytest.raises(ConfigError, match="needs a model name"):
        resolve_lm("vllm")


def test_openai_with_only_a_base_url_uses_a_placeholder_key() -> None:
    lm = resolve_lm("openai", environ={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert isinstance(lm, OpenAILM) and lm.base_url == "http://127.0.0.1:9/v1"


def test_anthropic_reads_key_and_base_url_and_prices() -> None:
    lm = resolve_lm(
        "anthropic",
        model_name="claude-x",
        prices={"claude-x": (1, 2)},
        environ={"ANTHROPIC_API_KEY": "a", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"},
    )
    assert isinstance(lm, AnthropicLM) and lm.base_url == "http://127.0.0.1:9"
    assert isinstance(lm.prices, PriceTable) and lm.prices.lookup("claude-x") == (1.0, 2.0)


def test_scripted_and_sampling_backends() -> None:
    lm = resolve_lm("scripted", responses=["a"])
    assert isinstance(lm, ScriptedLM)
    sampler = resolve_lm("sampling", ctx=object(), model_name="hint")
    assert isinstance(sampler, SamplingLM) and sampler.model == "hint"
    with pytest.raises(ConfigError, match="MCP request context"):
        resolve_lm("sampling")
