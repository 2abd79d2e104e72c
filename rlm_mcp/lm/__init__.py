"""Language-model clients: one protocol, one adapter per provider (see base.py).

`resolve_lm("openai", model_name="gpt-5-mini", environ=os.environ)` builds a client; presets for
OpenAI-compatible servers are just a base URL and a key variable. Library code never reads the
environment itself: the CLI and server pass `environ` explicitly.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES, DEFAULT_MODEL
from rlm_mcp.errors import ConfigError, MissingAPIKeyError
from rlm_mcp.lm.base import LM, Completion, Message, Usage
from rlm_mcp.lm.cache import CachedLM
from rlm_mcp.lm.limits import complete_many, complete_sync, get_max_concurrency, set_max_concurrency
from rlm_mcp.lm.prices import PriceTable
from rlm_mcp.lm.retry import RetryPolicy
from rlm_mcp.lm.sampling import SamplingLM
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.lm.usage import ModelUsageSummary, UsageSummary, UsageTracker

__all__ = [
    "BACKENDS",
    "LM",
    "PRESETS",
    "CachedLM",
    "Completion",
    "Message",
    "ModelUsageSummary",
    "Preset",
    "PriceTable",
    "RetryPolicy",
    "SamplingLM",
    "ScriptedLM",
    "Usage",
    "UsageSummary",
    "UsageTracker",
    "complete_many",
    "complete_sync",
    "get_max_concurrency",
    "resolve_lm",
    "set_max_concurrency",
]


@dataclass(frozen=True, slots=True)
class Preset:
    """An OpenAI-compatible server: where it listens and which variable holds its key.

    `key_env=None` means the server needs no key (a placeholder is sent, as the SDK insists).
    """

    base_url: str
    key_env: str | None


PRESETS: dict[str, Preset] = {
    "ollama": Preset("http://localhost:11434/v1", None),
    "vllm": Preset("http://localhost:8000/v1", None),
    "llamacpp": Preset("http://localhost:8080/v1", None),
    "lmstudio": Preset("http://localhost:1234/v1", None),
    "openrouter": Preset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "gemini": Preset("https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY"),
}

BACKENDS: tuple[str, ...] = ("openai", "anthropic", *PRESETS, "sampling", "scripted")


def resolve_lm(
    backend: str,
    *,
    environ: Mapping[str, str] | None = None,
    **backend_kwargs: Any,
) -> LM:
    """Build an LM from a backend name (`"openai"`, `"openai:gpt-x"`, a preset, ...) and kwargs.

    Kwargs: `model_name` (or `model`), `api_key`, `base_url`, `timeout`, `max_retries`, `prices`
    (PriceTable, mapping or JSON path); `responses` for scripted; `ctx`, `model_hint` for sampling.
    Keys and base URLs fall back to `environ` only when the caller passes it.
    """
    env: Mapping[str, str] = environ or {}
    name, _, model_from_name = backend.strip().partition(":")
    name = name.lower()
    kw = dict(backend_kwargs)
    model = kw.pop("model_name", None) or kw.pop("model", None) or model_from_name or None
    prices = kw.pop("prices", None)
    if prices is not None and not isinstance(prices, PriceTable):
        prices = PriceTable.from_file(prices) if isinstance(prices, str) else PriceTable(prices)
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Unknown LM backend {backend!r}.{hint} Choose one of: {', '.join(BACKENDS)}."
        )
    if name == "scripted":
        responses = kw.pop("responses", ["FINAL(scripted)"])
        return ScriptedLM(responses, model=model or "scripted")
    if name == "sampling":
        if "ctx" not in kw:
            raise ConfigError(
                "The sampling backend needs the MCP request context: it only works inside the "
                "MCP server (rlm-mcp serve), not from the CLI or library."
            )
        return SamplingLM(kw.pop("ctx"), model_hint=kw.pop("model_hint", model))
    common: dict[str, Any] = {
        "timeout": float(kw.pop("timeout", DEFAULT_LM_TIMEOUT)),
        "max_retries": int(kw.pop("max_retries", DEFAULT_MAX_RETRIES)),
        "prices": prices,
    }
    if "retry_policy" in kw:
        common["retry_policy"] = kw.pop("retry_policy")
    api_key = kw.pop("api_key", None)
    base_url = kw.pop("base_url", None)
    if kw:
        raise ConfigError(
            f"Unknown option(s) for backend {name!r}: {', '.join(sorted(kw))}. "
            "Known: model_name, api_key, base_url, timeout, max_retries, prices."
        )
    if name == "anthropic":
        from rlm_mcp.lm.anthropic import AnthropicLM

        api_key = api_key or env.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise MissingAPIKeyError("anthropic", "ANTHROPIC_API_KEY")
        base_url = base_url or env.get("ANTHROPIC_BASE_URL") or None
        return AnthropicLM(
            model or "claude-sonnet-4-5", api_key=api_key, base_url=base_url, **common
        )
    from rlm_mcp.lm.openai import OpenAILM

    if name == "openai":
        api_key = api_key or env.get("OPENAI_API_KEY")
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        if not api_key:
            if base_url:  # a local OpenAI-compatible server usually takes any key
                api_key = "not-needed"
            else:
                raise MissingAPIKeyError("openai", "OPENAI_API_KEY")
        return OpenAILM(model or DEFAULT_MODEL, api_key=api_key, base_url=base_url, **common)
    preset = PRESETS[name]
    if preset.key_env is not None:
        api_key = api_key or env.get(preset.key_env)
        if not api_key:
            raise MissingAPIKeyError(name, preset.key_env)
    if not model:
        raise ConfigError(
            f"Backend {name!r} needs a model name: pass model_name=... or use '{name}:MODEL' "
            "(or set RLM_MCP_MODEL)."
        )
    return OpenAILM(
        model,
        api_key=api_key or "not-needed",
        base_url=base_url or preset.base_url,
        backend=name,
        **common,
    )
