"""The project's exceptions, in one tree so callers can catch as broadly or narrowly as they need.

```
RLMError                          every error rlm-mcp raises on purpose
├── ConfigError                   bad or missing configuration (flags, env vars, backend names)
│   ├── MissingAPIKeyError        a provider needs a key that is not set
│   └── ArgumentError             a call's argument is out of range or above a server ceiling
├── ContextError                  anything about stored contexts
│   ├── ContextNotFoundError      unknown handle or name
│   │   ├── DocumentNotFoundError a context has no such document
│   │   └── ContextDamagedError   the shared bucket's copy fails its checks (load it again)
│   ├── InputTooLargeError        a load or a read over a configured cap
│   ├── UnreadablePathError       missing path, no permission, nothing textual to load
│   ├── InvalidNameError          a name that breaks the naming rules (empty, ctx_..., controls)
│   ├── NameTakenError            a name already names other content (re-point with replace)
│   └── StoreUnavailableError     the shared bucket (RLM_MCP_STORE) cannot be reached or refused
├── SandboxError                  host-side misuse of a REPL session (closed session, bad limits)
│   ├── SessionBusyError          no room for another session right now; retry later
│   └── SessionExpiredError       a session handle that is unknown, expired or someone else's
├── ProviderError                 a language-model call failed after its retries
│   ├── ProviderTimeoutError      ... because it ran out of time
│   └── SamplingUnavailableError  the MCP client cannot sample (no capability, no back channel)
├── BudgetExceededError           a token/cost/time budget ran out (the loop turns it into a result)
├── TrajectoryError               a file is missing or is not a trajectory JSONL (the viewer)
└── BrowserError                  headless Chromium (viewer checks) did not start or answer
```

Messages name the thing and the fix, because they end up in front of a person or a model that has
to act on them. The server maps these to tool errors and the CLI to one stderr line with exit 2.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "BrowserError",
    "BudgetExceededError",
    "ConfigError",
    "ContextDamagedError",
    "ContextError",
    "ContextNotFoundError",
    "DocumentNotFoundError",
    "InputTooLargeError",
    "InvalidNameError",
    "MissingAPIKeyError",
    "NameTakenError",
    "ProviderError",
    "ProviderTimeoutError",
    "RLMError",
    "SamplingUnavailableError",
    "SandboxError",
    "SessionBusyError",
    "SessionExpiredError",
    "StoreUnavailableError",
    "TrajectoryError",
    "UnreadablePathError",
]


class RLMError(Exception):
    """Base of every error rlm-mcp raises on purpose."""


class ConfigError(RLMError):
    """Configuration is missing or wrong; the message says which setting to change."""


class MissingAPIKeyError(ConfigError):
    """A provider needs an API key that is not set."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        if provider == "any provider":
            message = (
                "No model is configured. Four ways, any one: an API key (OPENAI_API_KEY or "
                "ANTHROPIC_API_KEY); a logged-in agent CLI on PATH (claude, codex or gemini: "
                "sub-calls then count against your plan); a local OpenAI-compatible server "
                "(OPENAI_BASE_URL, or backend ollama, llamacpp or vllm with a model name); or an "
                "MCP client that offers sampling. `rlm-mcp doctor` shows what is found."
            )
        else:
            message = (
                f"No API key for {provider}: set {env_var} (or pass api_key=...), or use a local "
                "OpenAI-compatible server instead: backend ollama, llamacpp or vllm with a model "
                "name, or OPENAI_BASE_URL."
            )
        super().__init__(message)


class ArgumentError(ConfigError):
    """A call's argument is empty, out of range, or above a ceiling the operator set."""


class ContextError(RLMError):
    """Something about a stored context."""


class ContextNotFoundError(ContextError, KeyError):
    """No context with that handle or name is stored."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        super().__init__(
            f"Context {handle!r} not found. Call list_contexts (CLI: `rlm-mcp contexts`) "
            "to see stored handles, or load it again with load_context."
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class ContextDamagedError(ContextNotFoundError):
    """The shared store's copy of a context fails its checks: damaged, or changed in the
    bucket. It is set aside, so loading the same text again stores a good copy."""

    def __init__(self, handle: str, why: str) -> None:
        self.handle = handle
        ContextError.__init__(
            self,
            f"Context {handle}: the shared store's copy is damaged or was changed in the bucket "
            f"({why}); it was set aside. Load the same text again to store a good copy.",
        )


class DocumentNotFoundError(ContextNotFoundError):
    """A stored context exists but holds no document by that name or number."""

    def __init__(self, handle: str, doc: object, known: int) -> None:
        self.handle = handle
        ContextError.__init__(
            self,
            f"Context {handle} has no document {doc!r} (it has {known}); list them with "
            "`documents` in run_repl, or read the context's summary.",
        )


class InvalidNameError(ContextError):
    """A context name that breaks the naming rules; the message says which and what to send."""


class NameTakenError(ContextError):
    """A name already points at other content; pass replace=True to re-point it."""


class StoreUnavailableError(ContextError):
    """The shared store's bucket did not answer, or refused a request (credentials, endpoint)."""


class InputTooLargeError(ContextError):
    """An input or a requested read is larger than a configured cap."""


class UnreadablePathError(ContextError):
    """A path to load does not exist, cannot be read, or holds nothing textual."""


class SandboxError(RLMError):
    """The host used a REPL session wrongly (for example after closing it).

    Mistakes in the sandboxed code itself are not raised: they come back as an `ExecResult`
    with a status, so a model can read them and try again.
    """


class SessionBusyError(SandboxError):
    """Every sandbox session this caller may use is busy; the message says when to retry."""


class SessionExpiredError(SandboxError):
    """A session handle that this server never minted for this caller, or that has expired."""


class ProviderError(RLMError):
    """A language-model call failed after its retries."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        super().__init__(message)


class ProviderTimeoutError(ProviderError):
    """A language-model call ran out of time."""


class SamplingUnavailableError(ProviderError):
    """The MCP client cannot answer sampling requests on this connection."""


class BudgetExceededError(RLMError):
    """A budget (tokens, cost, wall time) ran out; `which` names the budget."""

    def __init__(self, which: str, message: str) -> None:
        self.which = which
        super().__init__(message)


class TrajectoryError(RLMError):
    """A trajectory file to view is missing or is not the JSONL an RLM run writes."""


class BrowserError(RLMError):
    """Chromium could not be started or did not answer in time (the viewer's browser checks)."""
