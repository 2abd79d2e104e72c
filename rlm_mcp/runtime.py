"""`Runtime`: the one place where `Settings` become the objects that run code.

The store, the sandbox limits, the session pool, the language models (with one concurrency
limit per runtime, not per process) and `RLM` objects are all built here, so every way of running
code — `run_repl`, `rlm_complete`, `rlm-mcp complete`, the benchmarks — gets the same limits. An
operator who sets a memory limit gets it everywhere; a library user who builds a `Runtime` from
explicit arguments is never steered by the process environment. Only `Runtime.from_env()` (the
CLI and the server's entry point) reads `os.environ`.

Heavy parts (diskcache, the sandbox pool, provider SDKs) are created on first use, so a server
built on a runtime answers `initialize` before any of them exists.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_mcp.config import MAX_DEFAULT_SESSIONS, MIN_DEFAULT_SESSIONS, Settings
from rlm_mcp.errors import ConfigError

if TYPE_CHECKING:
    from rlm_mcp.lm.base import LM
    from rlm_mcp.lm.limits import ConcurrencyLimit
    from rlm_mcp.loop import SandboxFactory
    from rlm_mcp.rlm import RLM
    from rlm_mcp.sandbox import SandboxLimits, SessionPool
    from rlm_mcp.store import ContextStore
    from rlm_mcp.types import RLMEvent

__all__ = ["LMFactory", "Runtime", "default_max_sessions", "read_tokens_file"]

logger = logging.getLogger(__name__)

#: `(model, sub_model) -> (root LM, sub LM or None)`; tests and demos inject scripted models.
LMFactory = Callable[[str | None, str | None], tuple[Any, Any]]

_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def default_max_sessions(worker_memory_mb: int, memory: int | None = None) -> int:
    """How many sandbox sessions fit this machine when the operator did not say.

    A session may grow to its address-space limit (`worker_memory_mb` on top of its context)
    but an idle one holds ~30 MB, and address space is not resident memory: we let the limits
    add up to twice the physical memory, between MIN_DEFAULT_SESSIONS and MAX_DEFAULT_SESSIONS.
    """
    memory = physical_memory() if memory is None else memory
    if not memory or worker_memory_mb <= 0:
        return MIN_DEFAULT_SESSIONS
    fit = 2 * memory // (worker_memory_mb * 1024 * 1024)
    return int(max(MIN_DEFAULT_SESSIONS, min(MAX_DEFAULT_SESSIONS, fit)))


def read_tokens_file(path: str | Path) -> dict[str, str]:
    """`TOKEN TENANT` per line (blank lines and `#` comments ignored) -> {token: tenant}."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"RLM_MCP_TOKENS_FILE={str(path)!r} cannot be read ({exc.strerror or exc}); give a "
            "readable file of 'TOKEN TENANT' lines."
        ) from None
    tokens: dict[str, str] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(
                f"RLM_MCP_TOKENS_FILE line {n} is not 'TOKEN TENANT' (two words); fix that line."
            )
        token, tenant = parts
        if not _TENANT.fullmatch(tenant):
            raise ConfigError(
                f"RLM_MCP_TOKENS_FILE line {n}: tenant {tenant[:80]!r} must be 1-64 letters, "
                "digits, '.', '_' or '-'."
            )
        if len(token) < 16:
            raise ConfigError(
                f"RLM_MCP_TOKENS_FILE line {n}: the token of tenant {tenant!r} is shorter than "
                "16 characters; use a long random token (e.g. `openssl rand -hex 32`)."
            )
        if token in tokens:
            raise ConfigError(f"RLM_MCP_TOKENS_FILE line {n}: a token appears twice.")
        tokens[token] = tenant
    if not tokens:
        raise ConfigError(f"RLM_MCP_TOKENS_FILE={str(path)!r} holds no 'TOKEN TENANT' line.")
    return tokens


class Runtime:
    """Settings turned into objects, once: store, limits, pool, models and RLMs.

    `environ` is where provider keys and base URLs come from; it is empty unless given, so a
    library runtime never picks up a key the caller did not pass. `store` shares an open
    ContextStore (closed by its owner, not here); `lm_factory` injects models (tests, demos).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        store: ContextStore | None = None,
        lm_factory: LMFactory | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.environ: Mapping[str, str] = dict(environ or {})
        self.lm_factory = lm_factory
        self._store = store
        self._owns_store = store is None
        self._pool: SessionPool | None = None
        self._ray_pool: Any = None
        self._lms: dict[tuple[str | None, ...], tuple[Any, Any]] = {}
        self._tokens: dict[str, str] | None = None
        self._limit: ConcurrencyLimit | None = None
        self._agent_limits: dict[str, ConcurrencyLimit] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Runtime:
        """A runtime configured by `RLM_MCP_*` variables (default: `os.environ`) and overrides.

        Overrides that are None are ignored, so argparse values can be passed straight in.
        """
        env = dict(os.environ if environ is None else environ)
        return cls(Settings.from_env(env, **overrides), environ=env)

    def replace(self, **changes: Any) -> Runtime:
        """A new runtime with some settings changed (nothing built yet is shared)."""
        return Runtime(
            replace(self.settings, **changes), environ=self.environ, lm_factory=self.lm_factory
        )

    # -- limits --------------------------------------------------------------------------------

    @property
    def sandbox_limits(self) -> SandboxLimits:
        """The operator's sandbox limits: every session of this runtime runs under them."""
        from rlm_mcp.sandbox import SandboxLimits

        s = self.settings
        return SandboxLimits(
            timeout=s.exec_timeout,
            max_output_chars=s.max_output_chars,
            memory_mb=s.worker_memory_mb,
            max_sub_calls=s.max_sub_calls,
            max_prompt_chars=s.max_prompt_chars,
        )

    @property
    def max_sessions(self) -> int:
        s = self.settings
        if s.max_sessions is not None:
            if s.max_sessions < 1:
                raise ConfigError(f"RLM_MCP_MAX_SESSIONS must be at least 1, got {s.max_sessions}.")
            return s.max_sessions
        return default_max_sessions(s.worker_memory_mb)

    def tokens(self) -> dict[str, str]:
        """Bearer token -> tenant: RLM_MCP_TOKENS_FILE, or RLM_MCP_TOKEN as tenant 'default'."""
        if self._tokens is None:
            s = self.settings
            found = read_tokens_file(s.tokens_file) if s.tokens_file else {}
            if s.token:
                found.setdefault(s.token, "default")
            self._tokens = found
        return self._tokens

    def tenant_count(self) -> int:
        return len(set(self.tokens().values()))

    def check(self) -> None:
        """Fail at start-up, in one line, on what would otherwise fail the first tool call: an
        unusable data folder, an unreadable tokens file, a bad session limit."""
        self.tokens()
        _ = self.max_sessions
        from rlm_mcp.store import probe_store_dir

        probe_store_dir(self.settings.store_dir)
        s = self.settings
        if s.stateless and not (s.store and s.ray_address):
            raise ConfigError(
                "--stateless (RLM_MCP_STATELESS) keeps no state in this process, so it needs "
                "RLM_MCP_STORE (contexts in a shared bucket) and RLM_MCP_RAY_ADDRESS (sessions "
                "on a Ray cluster); see docs/deployment.md."
            )
        if s.store:  # a bucket that cannot be used is said at start-up, not at the first call
            self.store().check()
        if s.ray_address and not s.store:
            raise ConfigError(
                "RLM_MCP_RAY_ADDRESS needs RLM_MCP_STORE: sessions on other nodes read their "
                "contexts from the shared bucket (see docs/deployment.md)."
            )

    # -- parts ---------------------------------------------------------------------------------

    def store(self) -> ContextStore:
        if self._store is None:
            from rlm_mcp.store import ContextStore
            from rlm_mcp.store.shared import s3_options

            s = self.settings
            self._store = ContextStore(
                s.store_dir,
                max_bytes=s.max_store_bytes,
                max_age_days=s.max_age_days,
                max_context_bytes=s.max_context_bytes,
                allowed_roots=s.allowed_roots,
                shared=s.store,
                shared_options=s3_options(self.environ) if s.store else None,
            )
        return self._store

    def pool(self) -> SessionPool:
        """The session pool; with several tenants each gets an equal share of it and the CPU."""
        if self._pool is None:
            from rlm_mcp.sandbox import SessionPool

            s = self.settings
            total = self.max_sessions
            tenants = self.tenant_count()
            shared = tenants > 1
            self._pool = SessionPool(
                limits=self.sandbox_limits,
                max_sessions=total,
                idle_seconds=s.session_idle_seconds,
                grace_seconds=s.session_grace_seconds,
                wait_seconds=s.session_wait_seconds,
                owner_max_sessions=max(1, total // tenants) if shared else None,
                owner_max_running=max(1, (os.cpu_count() or 1) // tenants) if shared else None,
            )
        return self._pool

    def repl_pool(self) -> Any:
        """Where run_repl sessions live: this process's pool, or the Ray cluster (any replica
        finds a session there) when RLM_MCP_RAY_ADDRESS is set."""
        s = self.settings
        if not s.ray_address:
            return self.pool()
        if self._ray_pool is None:
            from rlm_mcp.cluster import RayPool
            from rlm_mcp.store.shared import s3_options

            self._ray_pool = RayPool(
                address=s.ray_address,
                store=self.store(),
                store_url=s.store or "",
                store_options=s3_options(self.environ),
                cache_dir=str(s.store_dir),
                limits=self.sandbox_limits,
                idle_seconds=s.session_idle_seconds,
            )
        return self._ray_pool

    @property
    def limit(self) -> ConcurrencyLimit:
        """The one concurrency limit every model of this runtime shares (never a global)."""
        if self._limit is None:
            from rlm_mcp.lm.limits import ConcurrencyLimit

            self._limit = ConcurrencyLimit(self.settings.max_concurrency)
        return self._limit

    @property
    def started_pool(self) -> SessionPool | None:
        """The pool if something has used it, without starting one."""
        return self._pool

    @property
    def started_repl_pool(self) -> Any:
        """Where run_repl sessions live (see `repl_pool`), if something has used it."""
        return self._ray_pool if self.settings.ray_address else self._pool

    def lms(
        self,
        model: str | None = None,
        sub_model: str | None = None,
        *,
        backend: str | None = None,
        sub_backend: str | None = None,
        base_url: str | None = None,
        ctx: Any = None,
    ) -> tuple[LM, LM]:
        """(root, sub) models; the sub model is the root unless a sub setting differs.

        Models that talk to a provider are kept for the runtime's life, so their connection
        pools are reused. Sampling models belong to one request (they talk to its client) and
        are never kept.
        """
        if self.lm_factory is not None:
            root, sub = self.lm_factory(model, sub_model)
            return root, sub or root
        key = (backend, model, sub_backend, sub_model, base_url)
        pair = self._lms.get(key)
        if pair is None:
            pair = self._build_lms(key, ctx)
            if all(getattr(x, "backend", "") != "sampling" for x in pair if x is not None):
                self._lms[key] = pair
        root, sub = pair
        return root, sub or root

    def _build_lms(self, key: tuple[str | None, ...], ctx: Any) -> tuple[LM, LM | None]:
        from rlm_mcp.backends import AUTO, backend_name, build_lm, pick_backend

        backend, model, sub_backend, sub_model, base_url = key
        s = self.settings
        root_backend = backend or s.backend
        if backend_name(root_backend) == AUTO:
            root_backend = pick_backend(self.environ, ctx, base_url=base_url)
        root_model = model or s.model
        common = {"environ": self.environ, "ctx": ctx, "timeout": s.lm_timeout}
        lm = build_lm(
            root_backend,
            model=root_model,
            base_url=base_url,
            max_retries=s.max_retries,
            limit=self.limit_for(root_backend),
            **common,
        )
        sb = sub_backend or s.sub_backend
        sm = sub_model or s.sub_model
        if not sb and not sm:
            return lm, None
        sub = build_lm(
            sb or root_backend,
            model=sm or root_model,
            base_url=base_url if not sb else None,
            max_retries=s.max_retries,
            cache_dir=s.cache_dir if s.subcall_cache else None,
            limit=self.limit_for(sb or root_backend),
            **common,
        )
        return lm, sub

    def limit_for(self, backend: str) -> ConcurrencyLimit:
        """The concurrency limit of `backend`'s models: the runtime's, or for an agent CLI its
        program's own (RLM_MCP_AGENT_CONCURRENCY: these are heavy processes)."""
        from rlm_mcp.backends import backend_name
        from rlm_mcp.lm import AGENT_BACKENDS
        from rlm_mcp.lm.limits import ConcurrencyLimit

        name = backend_name(backend)
        if name not in AGENT_BACKENDS:
            return self.limit
        if name not in self._agent_limits:
            self._agent_limits[name] = ConcurrencyLimit(self.settings.agent_concurrency)
        return self._agent_limits[name]

    def rlm(
        self,
        lm: LM,
        sub_lm: LM | None = None,
        *,
        max_iterations: int | None = None,
        max_depth: int | None = None,
        max_time: float | None = None,
        max_cost: float | None = None,
        max_tokens: int | None = None,
        log_dir: Path | None = None,
        on_event: Callable[[RLMEvent], Any] | None = None,
        verbose: bool = False,
        sandbox_factory: SandboxFactory | None = None,
        **features: Any,
    ) -> RLM:
        """An RLM whose sandbox runs under this runtime's limits; `features` are passed on
        (tools, max_errors, compaction, persistent)."""
        from rlm_mcp.rlm import RLM
        from rlm_mcp.subcalls import DEFAULT_MAX_SUBCALL_CHARS

        s = self.settings
        return RLM(
            lm=lm,
            sub_lm=sub_lm,
            max_iterations=s.max_iterations if max_iterations is None else max_iterations,
            max_depth=s.max_depth if max_depth is None else max_depth,
            max_time=max_time,
            max_cost=max_cost,
            max_tokens=max_tokens,
            log_dir=log_dir,
            on_event=on_event,
            verbose=verbose,
            sandbox_limits=self.sandbox_limits,
            sandbox_factory=sandbox_factory,
            max_subcall_chars=min(s.max_prompt_chars, DEFAULT_MAX_SUBCALL_CHARS),
            **features,
        )

    async def aclose(self) -> None:
        """Close the pool, the models' connection pools and, if it built it, the store."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        if self._ray_pool is not None:
            await self._ray_pool.aclose()
            self._ray_pool = None
        seen: set[int] = set()
        for pair in self._lms.values():
            for lm in pair:
                if lm is None or id(lm) in seen:
                    continue
                seen.add(id(lm))
                close = getattr(lm, "aclose", None)
                if close is not None:
                    try:
                        await close()
                    except Exception:  # closing a dead connection pool must not block shutdown
                        logger.warning("closing %s failed", lm, exc_info=True)
        self._lms.clear()
        if self._store is not None and self._owns_store:
            self._store.close()
            self._store = None
