"""Settings → LM objects, in one place, so the server and the CLI build models the same way.

`resolve_lm` knows backends; this module knows *our* settings: the timeout and retry count a
user configured, the sub-call answer cache, and that "sampling" needs the MCP request context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlm_mcp.config import Settings
from rlm_mcp.lm.base import LM

__all__ = ["AUTO", "build_lm", "build_lms", "pick_backend"]

AUTO = "auto"

#: Backends that are not a remote API: no timeout/retry options, nothing worth caching on disk.
_LOCAL_BACKENDS = frozenset({"sampling", "scripted"})


def _backend_name(backend: str) -> str:
    return backend.strip().partition(":")[0].lower()


def _can_sample(ctx: Any) -> bool:
    from rlm_mcp.errors import SamplingUnavailableError
    from rlm_mcp.lm.sampling import SamplingLM

    try:
        SamplingLM(ctx).check()
    except SamplingUnavailableError:
        return False
    return True


def pick_backend(
    environ: Mapping[str, str], ctx: Any = None, *, base_url: str | None = None
) -> str:
    """What "auto" means: the provider whose key is set, else the MCP client's own model.

    A Claude Desktop user who puts only ANTHROPIC_API_KEY in the config gets Anthropic; one who
    puts nothing gets sampling when the client offers it; nobody gets a surprise OpenAI error.
    """
    from rlm_mcp.errors import MissingAPIKeyError

    if base_url or environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL"):
        return "openai"
    if environ.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    if ctx is not None and _can_sample(ctx):
        return "sampling"
    raise MissingAPIKeyError("any provider", "OPENAI_API_KEY or ANTHROPIC_API_KEY")


def build_lm(
    settings: Settings,
    backend: str,
    *,
    model: str | None,
    environ: Mapping[str, str],
    ctx: Any = None,
    base_url: str | None = None,
    cache: bool = False,
) -> LM:
    """One LM for `backend` with the user's timeout/retries; `cache=True` wraps it in CachedLM."""
    from rlm_mcp.lm import CachedLM, resolve_lm

    if _backend_name(backend) == AUTO:
        backend = pick_backend(environ, ctx, base_url=base_url)
    name = _backend_name(backend)
    kw: dict[str, Any] = {}
    if model:
        kw["model_name"] = model
    if name == "sampling":
        kw["ctx"] = ctx
    elif name not in _LOCAL_BACKENDS:
        kw["timeout"] = settings.lm_timeout
        kw["max_retries"] = settings.max_retries
        if base_url:
            kw["base_url"] = base_url
    lm = resolve_lm(backend, environ=environ, **kw)
    if cache and settings.subcall_cache and name not in _LOCAL_BACKENDS:
        return CachedLM(lm, settings.cache_dir)
    return lm


def build_lms(
    settings: Settings,
    *,
    environ: Mapping[str, str],
    backend: str | None = None,
    model: str | None = None,
    sub_backend: str | None = None,
    sub_model: str | None = None,
    base_url: str | None = None,
    ctx: Any = None,
) -> tuple[LM, LM | None]:
    """The root LM and, when any sub-model setting differs from the root, a separate sub LM.

    Explicit arguments win over settings. A sub LM that would equal the root is not built twice
    (None means "use the root"). Sub-calls are cached on disk when `subcall_cache` is on.
    """
    from rlm_mcp.lm import set_max_concurrency

    set_max_concurrency(settings.max_concurrency)
    root_backend = backend or settings.backend
    if _backend_name(root_backend) == AUTO:
        root_backend = pick_backend(environ, ctx, base_url=base_url)
    root_model = model or settings.model
    lm = build_lm(
        settings, root_backend, model=root_model, environ=environ, ctx=ctx, base_url=base_url
    )
    sb = sub_backend or settings.sub_backend
    sm = sub_model or settings.sub_model
    if not sb and not sm:
        return lm, None
    sub = build_lm(
        settings,
        sb or root_backend,
        model=sm or root_model,
        environ=environ,
        ctx=ctx,
        base_url=base_url if not sb else None,
        cache=True,
    )
    return lm, sub
