"""Language-model clients: one protocol, one adapter per provider (see base.py).

`resolve_lm("openai", model_name="gpt-5-mini", environ=os.environ)` builds a client. Which
backends exist is one table, `BACKEND_SPECS`: the adapter to import (lazily, so the server starts
without any provider SDK), the default model, the variables for the key and base URL, and the
default base URL. OpenAI-compatible presets are rows of it. Library code never reads the
environment itself: the CLI and server pass `environ` explicitly.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES, DEFAULT_MODEL
from rlm_mcp.errors import ConfigError, MissingAPIKeyError
from rlm_mcp.lm.base import LM, Completion, Message, Usage
from rlm_mcp.lm.cache import CachedLM
from rlm_mcp.lm.limits import ConcurrencyLimit, complete_many, complete_sync
from rlm_mcp.lm.prices import PriceTable
from rlm_mcp.lm.retry import RetryPolicy
from rlm_mcp.lm.sampling import SamplingLM
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.lm.usage import ModelUsageSummary, UsageSummary, UsageTracker

__all__ = [
    "AGENT_BACKENDS",
    "BACKENDS",
    "BACKEND_SPECS",
    "LM",
    "PRESETS",
    "BackendSpec",
    "CachedLM",
    "Completion",
    "ConcurrencyLimit",
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
    "resolve_lm",
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


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One row of the backend table: everything `resolve_lm` needs to build that adapter."""

    adapter: str  # "module:Class", imported on first use
    default_model: str | None  # None: the caller must name a model
    key_env: str | None  # the variable holding the key (None: no key needed)
    base_url: str | None = None  # the default base URL (None: the SDK's own)
    base_url_env: str | None = None  # a variable that may set the base URL
    key_optional_with_base_url: bool = False  # a local compatible server takes any key


_OPENAI = "rlm_mcp.lm.openai:OpenAILM"
BACKEND_SPECS: dict[str, BackendSpec] = {
    "openai": BackendSpec(
        _OPENAI,
        DEFAULT_MODEL,
        "OPENAI_API_KEY",
        base_url_env="OPENAI_BASE_URL",
        key_optional_with_base_url=True,
    ),
    "anthropic": BackendSpec(
        "rlm_mcp.lm.anthropic:AnthropicLM",
        "claude-sonnet-4-5",
        "ANTHROPIC_API_KEY",
        base_url_env="ANTHROPIC_BASE_URL",
    ),
    **{name: BackendSpec(_OPENAI, None, p.key_env, p.base_url) for name, p in PRESETS.items()},
}

#: The user's logged-in agent CLIs (`lm/agent_cli.py`): no API key needed.
AGENT_BACKENDS: tuple[str, ...] = ("claude-code", "codex", "gemini-cli")
BACKENDS: tuple[str, ...] = (*BACKEND_SPECS, *AGENT_BACKENDS, "sampling", "scripted")
_OPTIONS = ("model_name", "api_key", "base_url", "timeout", "max_retries", "prices")


def resolve_lm(
    backend: str,
    *,
    environ: Mapping[str, str] | None = None,
    limit: ConcurrencyLimit | None = None,
    **backend_kwargs: Any,
) -> LM:
    """Build an LM from a backend name (`"openai"`, `"openai:gpt-x"`, a preset, ...) and kwargs.

    Kwargs: `model_name` (or `model`), `api_key`, `base_url`, `timeout`, `max_retries`, `prices`
    (PriceTable, mapping or JSON path); `responses` for scripted; `ctx`, `model_hint` for sampling.
    Keys and base URLs fall back to `environ` only when the caller passes it. `limit` is the
    concurrency limit the model shares with others (default: one of its own).
    """
    env: Mapping[str, str] = environ or {}
    name, _, model_from_name = backend.strip().partition(":")
    name = name.lower()
    kw = dict(backend_kwargs)
    model = kw.pop("model_name", None) or kw.pop("model", None) or model_from_name or None
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Unknown LM backend {backend!r}.{hint} Choose one of: {', '.join(BACKENDS)}."
        )
    if name == "scripted":
        return ScriptedLM(kw.pop("responses", ["FINAL(scripted)"]), model=model or "scripted")
    if name == "sampling":
        if "ctx" not in kw:
            raise ConfigError(
                "The sampling backend needs the MCP request context: it only works inside the "
                "MCP server (rlm-mcp serve), not from the CLI or library."
            )
        return SamplingLM(kw.pop("ctx"), model_hint=kw.pop("model_hint", model), limit=limit)
    if name in AGENT_BACKENDS:
        return _agent(name, model, kw, env, limit)
    return _build(name, BACKEND_SPECS[name], model, kw, env, limit)


def _agent(
    name: str,
    model: str | None,
    kw: dict[str, Any],
    env: Mapping[str, str],
    limit: ConcurrencyLimit | None,
) -> LM:
    from rlm_mcp.lm.agent_cli import AGENT_PROGRAMS, AgentCLILM

    timeout = float(kw.pop("timeout", DEFAULT_LM_TIMEOUT))
    kw.pop("max_retries", None)  # the program retries for itself
    executable = kw.pop("executable", None)
    if kw:
        raise ConfigError(
            f"Unknown option(s) for backend {name!r}: {', '.join(sorted(kw))}. "
            "Known: model_name, timeout, executable."
        )
    return AgentCLILM(
        AGENT_PROGRAMS[name],
        model=model,
        environ=env,
        executable=executable,
        timeout=timeout,
        limit=limit,
    )


def _sdk_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Options every SDK adapter takes, popped from `kw`."""
    prices = kw.pop("prices", None)
    if prices is not None and not isinstance(prices, PriceTable):
        prices = PriceTable.from_file(prices) if isinstance(prices, str) else PriceTable(prices)
    common: dict[str, Any] = {
        "timeout": float(kw.pop("timeout", DEFAULT_LM_TIMEOUT)),
        "max_retries": int(kw.pop("max_retries", DEFAULT_MAX_RETRIES)),
        "prices": prices,
    }
    if "retry_policy" in kw:
        common["retry_policy"] = kw.pop("retry_policy")
    return common


def _build(
    name: str,
    spec: BackendSpec,
    model: str | None,
    kw: dict[str, Any],
    env: Mapping[str, str],
    limit: ConcurrencyLimit | None,
) -> LM:
    common = _sdk_options(kw)
    api_key = kw.pop("api_key", None) or (env.get(spec.key_env) if spec.key_env else None)
    base_url = kw.pop("base_url", None) or (
        env.get(spec.base_url_env) if spec.base_url_env else None
    )
    if kw:
        raise ConfigError(
            f"Unknown option(s) for backend {name!r}: {', '.join(sorted(kw))}. "
            f"Known: {', '.join(_OPTIONS)}."
        )
    if not api_key:
        if spec.key_env is None or (spec.key_optional_with_base_url and base_url):
            api_key = "not-needed"  # the SDK insists on a key; local servers take any
        else:
            raise MissingAPIKeyError(name, spec.key_env)
    model = model or spec.default_model
    if not model:
        raise ConfigError(
            f"Backend {name!r} needs a model name: pass model_name=... or use '{name}:MODEL' "
            "(or set RLM_MCP_MODEL)."
        )
    module, _, cls = spec.adapter.partition(":")
    adapter = getattr(importlib.import_module(module), cls)
    lm: LM = adapter(
        model,
        api_key=api_key,
        base_url=base_url or spec.base_url,
        backend=name,
        limit=limit,
        **common,
    )
    return lm
