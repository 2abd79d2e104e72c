"""`RLM`: the reference library's call shape over our loop (`loop.py`), sandbox and models.

`RLM(...)` checks its arguments and resolves models once; `completion(context, root_prompt)`
runs the loop. Budgets (tokens, cost, time) and usage are shared by the whole call tree, and
every way a run stops is a `stop_reason` on the result, never an exception of ours.

`RLM(persistent=True)` keeps one REPL across completions (a `Conversation`): the next question
sees the earlier variables and a recap of the earlier turns. Close it with `close()` (or use the
RLM as a context manager).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.answers import check_schema
from rlm_mcp.config import DEFAULT_COMPACTION_CHARS, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITERATIONS
from rlm_mcp.context_input import ContextInput
from rlm_mcp.conversation import Conversation
from rlm_mcp.custom_tools import ToolSet
from rlm_mcp.errors import ConfigError
from rlm_mcp.lm.base import LM
from rlm_mcp.lm.usage import UsageTracker
from rlm_mcp.loop import LoopConfig, SandboxFactory, run_loop
from rlm_mcp.subcalls import DEFAULT_MAX_SUBCALL_CHARS, Budget, emit
from rlm_mcp.trajectory import VerbosePrinter
from rlm_mcp.types import RLMChatCompletion, RLMEvent

if TYPE_CHECKING:
    from rlm_mcp.sandbox import ContextSpec, SandboxLimits, SandboxSession
    from rlm_mcp.sandbox.types import SubCallHandler
    from rlm_mcp.store import ContextStore

__all__ = ["RLM", "ContextInput"]

log = logging.getLogger(__name__)


def _check_budgets(
    max_iterations: int,
    max_depth: int,
    max_tokens: int | None,
    max_cost: float | None,
    max_time: float | None,
    max_errors: int | None = None,
    compaction_threshold: int | None = None,
) -> None:
    """One-line errors that name the argument: a zero budget would silently mean 'none'."""
    counts: tuple[tuple[str, Any], ...] = (
        ("max_iterations", max_iterations),
        ("max_depth", max_depth),
        ("max_errors", max_errors),
        ("compaction_threshold", compaction_threshold),
    )
    for arg, value in counts:
        if value is None and arg in ("max_errors", "compaction_threshold"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{arg} must be a whole number of at least 1, got {value!r}.")
    budgets: tuple[tuple[str, float | None, str], ...] = (
        ("max_tokens", max_tokens, "tokens"),
        ("max_cost", max_cost, "USD"),
        ("max_time", max_time, "seconds"),
    )
    for name, amount, unit in budgets:
        if amount is not None and not amount > 0:
            raise ConfigError(
                f"{name} must be a positive number of {unit}, got {amount!r} (None: no budget)."
            )


def _other_lms(
    backends: Sequence[str] | None,
    kwargs: Sequence[Mapping[str, Any]] | None,
    environ: Mapping[str, str] | None,
) -> list[LM]:
    """The reference API's `other_backends`: one LM each, with its own kwargs dict."""
    if not backends:
        return []
    from rlm_mcp.lm import resolve_lm

    kws = list(kwargs or [])
    if len(kws) not in (0, len(backends)):
        raise ConfigError(
            f"other_backend_kwargs has {len(kws)} entries for {len(backends)} other_backends; "
            "give one dict per backend (or none)."
        )
    return [
        resolve_lm(name, environ=environ, **(dict(kws[i]) if kws else {}))
        for i, name in enumerate(backends)
    ]


def _events(on_event: Callable[[RLMEvent], Any] | None, verbose: bool) -> Callable[[RLMEvent], Any]:
    """The caller's event callback, plus the live stderr view when `verbose`."""
    printer = VerbosePrinter() if verbose else None

    async def on(event: RLMEvent) -> None:
        if printer is not None:
            printer(event)
        await emit(on_event, event)

    return on


class RLM:
    """A recursive language model, with the reference library's call shape.

    `completion(context, root_prompt)` runs the loop; ready LM objects (`lm=`, `sub_lm=`) win
    over backend names. One UsageTracker and one Budget are shared by the whole call tree.
    """

    def __init__(
        self,
        backend: str = "openai",
        backend_kwargs: Mapping[str, Any] | None = None,
        environment: str = "local",
        environment_kwargs: Mapping[str, Any] | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        max_depth: int = DEFAULT_MAX_DEPTH,
        custom_system_prompt: str | None = None,
        other_backends: Sequence[str] | None = None,
        other_backend_kwargs: Sequence[Mapping[str, Any]] | None = None,
        logger: Any = None,
        verbose: bool = False,
        *,
        lm: LM | None = None,
        sub_lm: LM | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        max_time: float | None = None,
        log_dir: Path | None = None,
        store: ContextStore | None = None,
        on_event: Callable[[RLMEvent], Any] | None = None,
        environ: Mapping[str, str] | None = None,
        sandbox_limits: SandboxLimits | None = None,
        max_subcall_chars: int = DEFAULT_MAX_SUBCALL_CHARS,
        sandbox_factory: SandboxFactory | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        max_errors: int | None = None,
        compaction: bool = True,
        compaction_threshold: int = DEFAULT_COMPACTION_CHARS,
        persistent: bool | Conversation = False,
    ) -> None:
        if environment not in ("local", "sandbox"):
            raise ConfigError(
                f"Unknown environment {environment!r}: rlm-mcp runs code in its own sandbox; "
                "use environment='local'."
            )
        _check_budgets(
            max_iterations,
            max_depth,
            max_tokens,
            max_cost,
            max_time,
            max_errors,
            compaction_threshold,
        )
        #: The caller's functions that sandboxed code may call by name (run here, JSON only).
        self.tools = ToolSet(tools or {})
        self.max_errors = max_errors
        self.compaction_threshold: int | None = compaction_threshold if compaction else None
        #: The REPL and turns kept between completions (None: each completion starts afresh).
        self.conversation: Conversation | None = (
            persistent
            if isinstance(persistent, Conversation)
            else (Conversation() if persistent else None)
        )
        self._portal: Any = None
        self._portal_cm: AbstractContextManager[Any] | None = None
        self.environment_kwargs = dict(environment_kwargs or {})
        if lm is None:
            from rlm_mcp.lm import resolve_lm

            lm = resolve_lm(backend, environ=environ, **dict(backend_kwargs or {}))
        #: Extra sub-models, chosen from sandboxed code with llm_query(prompt, model=NAME); the
        #: first is the default sub-model when `sub_lm` is not given (the reference API).
        self.other_lms = _other_lms(other_backends, other_backend_kwargs, environ)
        if sub_lm is None and self.other_lms:
            sub_lm = self.other_lms[0]
        self.lm: LM = lm
        self.sub_lm: LM = sub_lm or lm
        self.max_iterations = max_iterations
        self.max_depth = max_depth
        self.custom_system_prompt = custom_system_prompt
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.max_time = max_time
        self.log_dir = Path(log_dir) if log_dir is not None else None
        if logger is not None and self.log_dir is None:
            d = getattr(logger, "log_dir", None)
            self.log_dir = Path(d) if d else None
        self.store = store
        self.verbose = verbose
        self.environ = environ
        self.max_subcall_chars = max_subcall_chars
        if sandbox_limits is None:
            from rlm_mcp.sandbox import SandboxLimits

            sandbox_limits = SandboxLimits(**self.environment_kwargs)
        self.sandbox_limits = sandbox_limits
        #: Where runs get their sandbox (default: a fresh session each); the server leases one
        #: from its pool so runs count against its session limits and tenant shares.
        self.sandbox_factory = sandbox_factory
        self._on_event = _events(on_event, verbose)

    # -- public API ---------------------------------------------------------------------------

    def completion(
        self,
        context: ContextInput | None = None,
        root_prompt: str | None = None,
        *,
        schema: Mapping[str, Any] | None = None,
    ) -> RLMChatCompletion:
        """Blocking form of `acompletion` (not from inside a running event loop).

        A persistent RLM runs every completion on one event loop of its own (in a thread), so
        its REPL outlives each call; `close()` ends it.
        """
        if self.conversation is None:
            return anyio.run(self._acompletion_kw, context, root_prompt, schema)
        if self._portal is None:
            from anyio.from_thread import start_blocking_portal

            self._portal_cm = start_blocking_portal()
            self._portal = self._portal_cm.__enter__()
        result: RLMChatCompletion = self._portal.call(
            self._acompletion_kw, context, root_prompt, schema
        )
        return result

    async def _acompletion_kw(
        self,
        context: ContextInput | None,
        root_prompt: str | None,
        schema: Mapping[str, Any] | None,
    ) -> RLMChatCompletion:
        return await self.acompletion(context, root_prompt, schema=schema)

    async def acompletion(
        self,
        context: ContextInput | None = None,
        root_prompt: str | None = None,
        *,
        schema: Mapping[str, Any] | None = None,
    ) -> RLMChatCompletion:
        """Run the loop. Cancelling it stops the loop, closes the sandbox and pending sub-calls.

        `schema` (a JSON Schema): the answer must validate; it comes back parsed as
        `answer_json`, and a model that answers in another shape is asked again. On a persistent
        RLM, `context=None` keeps the previous turn's context.
        """
        checked = None if schema is None else check_schema(schema)
        conv = self.conversation
        if conv is None:
            if context is None:
                raise ConfigError("context is required (only a persistent RLM can reuse one)")
            return await self._run(context, root_prompt, checked, None)
        async with conv.lock:
            context = conv.context if context is None else context
            if context is None:
                raise ConfigError("the first completion of a persistent RLM needs a context")
            result = await self._run(context, root_prompt, checked, conv)
            conv.context = context
            conv.record(root_prompt, result.response, str(result.stop_reason))
            return result

    async def _run(
        self,
        context: ContextInput,
        root_prompt: str | None,
        schema: dict[str, Any] | None,
        conv: Conversation | None,
    ) -> RLMChatCompletion:
        tracker = UsageTracker()
        budget = Budget(
            tracker, max_tokens=self.max_tokens, max_cost=self.max_cost, max_time=self.max_time
        )
        return await run_loop(
            self._loop_config(tracker, budget, schema, conv),
            context,
            root_prompt,
            depth=0,
            tracker=tracker,
            budget=budget,
            path=("root",),
            log_dir=self.log_dir,
        )

    async def aclose(self) -> None:
        """Close a persistent RLM's REPL (a no-op otherwise); the RLM can start a new one."""
        if self.conversation is not None:
            await self.conversation.aclose()

    def close(self) -> None:
        """Blocking form of `aclose`; also ends the event loop a persistent RLM ran on."""
        portal, cm = self._portal, self._portal_cm
        self._portal = self._portal_cm = None
        if portal is not None and cm is not None:
            try:
                portal.call(self.aclose)
            finally:
                cm.__exit__(None, None, None)
        elif self.conversation is not None:
            anyio.run(self.aclose)

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the loop's configuration -------------------------------------------------------------

    def _model_choices(self) -> dict[str, LM]:
        """Sub-models by name: the default sub-model and every other backend."""
        found: dict[str, LM] = {self.sub_lm.model: self.sub_lm}
        for other in self.other_lms:
            found.setdefault(other.model, other)
        return found

    def _loop_config(
        self,
        tracker: UsageTracker,
        budget: Budget,
        schema: dict[str, Any] | None = None,
        conv: Conversation | None = None,
    ) -> LoopConfig:
        """What every run of this call tree shares; a child run is the same loop one level down."""
        cfg: LoopConfig

        async def child(
            prompt: str, question: str, depth: int, path: tuple[str, ...]
        ) -> RLMChatCompletion:
            return await run_loop(
                cfg, prompt, question, depth=depth, tracker=tracker, budget=budget, path=path
            )

        cfg = LoopConfig(
            lm=self.lm,
            sub_lm=self.sub_lm,
            choices=self._model_choices(),
            max_iterations=self.max_iterations,
            max_depth=self.max_depth,
            custom_system_prompt=self.custom_system_prompt,
            max_subcall_chars=self.max_subcall_chars,
            limits=self.sandbox_limits,
            emit=self._on_event,
            sandbox=self.sandbox_factory or self._own_sandbox,
            child=child,
            tools=self.tools or None,
            max_errors=self.max_errors,
            compaction_chars=self.compaction_threshold,
            schema=schema,
            recap="" if conv is None else conv.recap(),
            root_sandbox=(
                None
                if conv is None
                else conv.root_sandbox(self.sandbox_factory or self._own_sandbox)
            ),
        )
        return cfg

    @asynccontextmanager
    async def _own_sandbox(
        self, spec: ContextSpec, sub_calls: SubCallHandler
    ) -> AsyncIterator[SandboxSession]:
        """A fresh sandbox session for one run, closed when it ends."""
        from rlm_mcp.sandbox import SandboxSession

        async with SandboxSession(
            context=spec, limits=self.sandbox_limits, sub_calls=sub_calls
        ) as sb:
            yield sb
