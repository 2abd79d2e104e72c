"""Which backend `auto` means, and one LM from a backend name with the user's options.

`resolve_lm` knows backends; this module knows what `auto` picks (a key in the environment,
else the MCP client's own model) and that "sampling" needs the MCP request context. The
`Runtime` is its only caller with settings: it passes the timeout, retries and cache folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES
from rlm_mcp.lm.base import LM
from rlm_mcp.lm.limits import ConcurrencyLimit

__all__ = ["AUTO", "agent_on_path", "backend_name", "build_lm", "explain_auto", "pick_backend"]

AUTO = "auto"

#: Backends that are not a remote API: no timeout/retry options, nothing worth caching on disk.
_LOCAL_BACKENDS = frozenset({"sampling", "scripted"})
#: Agent CLIs take a timeout but retry by themselves.
_AGENT_BACKENDS = frozenset({"claude-code", "codex", "gemini-cli"})


def backend_name(backend: str) -> str:
    """`"openai:gpt-x"` -> `"openai"`."""
    return backend.strip().partition(":")[0].lower()


def _can_sample(ctx: Any) -> bool:
    from rlm_mcp.errors import SamplingUnavailableError
    from rlm_mcp.lm.sampling import SamplingLM

    try:
        SamplingLM(ctx).check()
    except SamplingUnavailableError:
        return False
    return True


def agent_on_path(environ: Mapping[str, str]) -> str | None:
    """The first agent CLI (claude, then codex, then gemini) on `environ`'s PATH, by backend."""
    from rlm_mcp.lm.agent_cli import AGENT_PROGRAMS, find_program

    for name in ("claude-code", "codex", "gemini-cli"):
        if find_program(AGENT_PROGRAMS[name], environ):
            return name
    return None


def pick_backend(
    environ: Mapping[str, str], ctx: Any = None, *, base_url: str | None = None
) -> str:
    """What "auto" means, in order: an API key (or base URL) in the environment, the user's
    logged-in agent CLI on PATH, the MCP client's own model where it can sample.

    A Claude Desktop user who puts only ANTHROPIC_API_KEY in the config gets Anthropic; one with
    Claude Code installed and no key gets `claude`; nobody gets a surprise OpenAI error.
    """
    from rlm_mcp.errors import MissingAPIKeyError

    if base_url or environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL"):
        return "openai"
    if environ.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    agent = agent_on_path(environ)
    if agent is not None:
        return agent
    if ctx is not None and _can_sample(ctx):
        return "sampling"
    raise MissingAPIKeyError("any provider", "OPENAI_API_KEY or ANTHROPIC_API_KEY")


def build_lm(
    backend: str,
    *,
    model: str | None,
    environ: Mapping[str, str],
    ctx: Any = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_LM_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    cache_dir: Path | None = None,
    limit: ConcurrencyLimit | None = None,
) -> LM:
    """One LM for `backend`; with `cache_dir`, answers are cached there (CachedLM).

    `auto` is resolved first; the timeout and retries apply to remote APIs only, and local
    backends (sampling, scripted) are never cached: there is nothing to save.
    """
    from rlm_mcp.lm import CachedLM, resolve_lm

    if backend_name(backend) == AUTO:
        backend = pick_backend(environ, ctx, base_url=base_url)
    name = backend_name(backend)
    kw: dict[str, Any] = {}
    if model:
        kw["model_name"] = model
    if name == "sampling":
        kw["ctx"] = ctx
    elif name in _AGENT_BACKENDS:
        kw["timeout"] = timeout
    elif name not in _LOCAL_BACKENDS:
        kw["timeout"] = timeout
        kw["max_retries"] = max_retries
        if base_url:
            kw["base_url"] = base_url
    lm = resolve_lm(backend, environ=environ, limit=limit, **kw)
    if cache_dir is not None and name not in _LOCAL_BACKENDS:
        return CachedLM(lm, cache_dir)
    return lm


def explain_auto(environ: Mapping[str, str], backend: str) -> tuple[list[str], str | None]:
    """(one line per step of the `auto` order, the backend it picks or None): `rlm-mcp doctor`."""
    from rlm_mcp.lm.agent_cli import AGENT_PROGRAMS, find_program

    lines = []
    explicit = backend_name(backend) != AUTO
    lines.append(
        f"1. explicit backend: {backend} (RLM_MCP_BACKEND)"
        if explicit
        else "1. explicit backend: none (RLM_MCP_BACKEND=auto)"
    )
    keys = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY")
    found = ", ".join(f"{k} {'set' if environ.get(k) else 'not set'}" for k in keys)
    lines.append(f"2. API keys and base URLs: {found}")
    programs = []
    for name in ("claude-code", "codex", "gemini-cli"):
        program = AGENT_PROGRAMS[name]
        where = find_program(program, environ)
        programs.append(f"{program.command} {'at ' + where if where else 'not on PATH'}")
    lines.append(f"3. agent CLIs: {'; '.join(programs)}")
    lines.append("4. MCP sampling: only inside an MCP client that offers it (never from the CLI)")
    if explicit:
        return lines, backend
    try:
        return lines, pick_backend(environ)
    except Exception:
        return lines, None
