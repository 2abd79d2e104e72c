"""rlm-mcp: Recursive Language Models as an MCP server, a Python library and a CLI.

Names are resolved lazily (PEP 562) so that `import rlm_mcp` — and with it the server's start-up —
does not pay for the sandbox, the loop or any provider SDK until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlm_mcp._version import __version__

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ArgumentError": "rlm_mcp.errors",
    "BrowserError": "rlm_mcp.errors",
    "BudgetExceededError": "rlm_mcp.errors",
    "Completion": "rlm_mcp.lm.base",
    "ConcurrencyLimit": "rlm_mcp.lm.limits",
    "ConfigError": "rlm_mcp.errors",
    "ContextDamagedError": "rlm_mcp.errors",
    "ContextError": "rlm_mcp.errors",
    "ContextInfo": "rlm_mcp.store",
    "ContextNotFoundError": "rlm_mcp.errors",
    "ContextStore": "rlm_mcp.store",
    "DocumentInfo": "rlm_mcp.store",
    "DocumentNotFoundError": "rlm_mcp.errors",
    "ExecResult": "rlm_mcp.sandbox.types",
    "InputTooLargeError": "rlm_mcp.errors",
    "InvalidNameError": "rlm_mcp.errors",
    "LM": "rlm_mcp.lm.base",
    "Message": "rlm_mcp.lm.base",
    "MissingAPIKeyError": "rlm_mcp.errors",
    "NameTakenError": "rlm_mcp.errors",
    "ModelUsageSummary": "rlm_mcp.lm.usage",
    "ProviderError": "rlm_mcp.errors",
    "ProviderTimeoutError": "rlm_mcp.errors",
    "RLM": "rlm_mcp.rlm",
    "RLMChatCompletion": "rlm_mcp.types",
    "RLMError": "rlm_mcp.errors",
    "RLMEvent": "rlm_mcp.types",
    "SamplingUnavailableError": "rlm_mcp.errors",
    "SandboxError": "rlm_mcp.errors",
    "SandboxLimits": "rlm_mcp.sandbox.session",
    "SandboxSession": "rlm_mcp.sandbox.session",
    "SessionBusyError": "rlm_mcp.errors",
    "SessionExpiredError": "rlm_mcp.errors",
    "StoreUnavailableError": "rlm_mcp.errors",
    "ScriptedLM": "rlm_mcp.lm.scripted",
    "SessionPool": "rlm_mcp.sandbox.pool",
    "Settings": "rlm_mcp.config",
    "StoredContext": "rlm_mcp.store",
    "TrajectoryError": "rlm_mcp.errors",
    "UnreadablePathError": "rlm_mcp.errors",
    "Usage": "rlm_mcp.lm.base",
    "UsageSummary": "rlm_mcp.lm.usage",
    "render_html": "rlm_mcp.viewer",
    "resolve_lm": "rlm_mcp.lm",
    "write_html": "rlm_mcp.viewer",
}

#: A literal list on purpose: adding a public name is a decision (tests/test_package.py checks it;
#: ruff RUF022 keeps the order).
__all__ = [
    "LM",
    "RLM",
    "ArgumentError",
    "BrowserError",
    "BudgetExceededError",
    "Completion",
    "ConcurrencyLimit",
    "ConfigError",
    "ContextDamagedError",
    "ContextError",
    "ContextInfo",
    "ContextNotFoundError",
    "ContextStore",
    "DocumentInfo",
    "DocumentNotFoundError",
    "ExecResult",
    "InputTooLargeError",
    "InvalidNameError",
    "Message",
    "MissingAPIKeyError",
    "ModelUsageSummary",
    "NameTakenError",
    "ProviderError",
    "ProviderTimeoutError",
    "RLMChatCompletion",
    "RLMError",
    "RLMEvent",
    "SamplingUnavailableError",
    "SandboxError",
    "SandboxLimits",
    "SandboxSession",
    "ScriptedLM",
    "SessionBusyError",
    "SessionExpiredError",
    "SessionPool",
    "Settings",
    "StoreUnavailableError",
    "StoredContext",
    "TrajectoryError",
    "UnreadablePathError",
    "Usage",
    "UsageSummary",
    "__version__",
    "render_html",
    "resolve_lm",
    "write_html",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm_mcp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
