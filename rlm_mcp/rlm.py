"""The RLM loop: the root model writes code against `context`, the sandbox runs it, the output goes
back, sub-models are reached from code, and the run ends on FINAL, a limit or a budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.config import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITERATIONS
from rlm_mcp.errors import ConfigError
from rlm_mcp.lm.base import LM, Message
from rlm_mcp.lm.usage import UsageTracker
from rlm_mcp.parsing import find_code_blocks, find_final, strip_code
from rlm_mcp.prompts import (
    PREVIEW_CHARS,
    ContextSummary,
    build_system_prompt,
    continue_prompt,
    first_user_prompt,
    last_chance_prompt,
)
from rlm_mcp.subcalls import DEFAULT_MAX_SUBCALL_CHARS, Budget, SubCallRouter, emit
from rlm_mcp.trajectory import TrajectoryWriter, VerbosePrinter
from rlm_mcp.types import CodeBlockRecord, IterationRecord, RLMChatCompletion, RLMEvent

if TYPE_CHECKING:
    from rlm_mcp.sandbox import ContextSpec, SandboxLimits
    from rlm_mcp.store import ContextStore

__all__ = ["RLM", "ContextInput"]

log = logging.getLogger(__name__)

ContextInput = Any  # str | list[str] | dict[str, str] | "ctx_..." handle | ContextSpec


def _prepare_context(
    context: ContextInput, store: ContextStore | None
) -> tuple[ContextSpec, ContextSummary]:
    """The sandbox's view of `context` and the few facts the system prompt states about it."""
    from rlm_mcp.sandbox import ContextSpec

    if isinstance(context, ContextSpec):
        if context.text is not None:
            text = context.text
            return context, ContextSummary(
                "str", len(text), max(1, len(context.documents)), text[:PREVIEW_CHARS]
            )
        assert context.path is not None
        with open(context.path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(PREVIEW_CHARS)
        size = context.path.stat().st_size
        return context, ContextSummary("str", size, max(1, len(context.documents)), head)
    if isinstance(context, str) and context.startswith("ctx_") and store is not None:
        info = store.info(context)
        docs = [(d.path, d.start, d.length) for d in info.documents]
        spec = ContextSpec(path=store.text_path(context), documents=docs)
        kind = "stored context" if len(docs) <= 1 else "stored documents"
        head = store.preview(context, head=PREVIEW_CHARS, tail=0)
        return spec, ContextSummary(kind, info.chars, max(1, len(docs)), str(head)[:PREVIEW_CHARS])
    if isinstance(context, str):
        return ContextSpec(text=context), ContextSummary(
            "str", len(context), 1, context[:PREVIEW_CHARS]
        )
    if isinstance(context, Mapping):
        items = [(str(k), str(v)) for k, v in context.items()]
        kind = "dict[str, str] joined into one str"
    elif isinstance(context, Sequence):
        items = [(f"doc_{i}", str(v)) for i, v in enumerate(context)]
        kind = "list[str] joined into one str"
    else:
        raise ConfigError(
            f"Unsupported context type {type(context).__name__}: pass a str, a list of str, a "
            "dict of str, a stored handle (ctx_..., with store=) or a ContextSpec."
        )
    parts: list[str] = []
    docs_: list[tuple[str, int, int]] = []
    pos = 0
    sep = "\n\n"
    for name, text in items:
        docs_.append((name, pos, len(text)))
        parts.append(text)
        pos += len(text) + len(sep)
    joined = sep.join(parts)
    return ContextSpec(text=joined, documents=docs_), ContextSummary(
        kind, len(joined), len(docs_), joined[:PREVIEW_CHARS]
    )


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        text[:limit]
        + f"\n[... output truncated: {len(text):,} chars, showing {limit:,}. Print less.]"
    )


class _OutOfTime(Exception):
    """The wall-time budget ran out during a model call."""


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
    ) -> None:
        if environment not in ("local", "sandbox"):
            raise ConfigError(
                f"Unknown environment {environment!r}: rlm-mcp runs code in its own sandbox; "
                "use environment='local'."
            )
        if max_iterations < 1 or max_depth < 1:
            raise ConfigError("max_iterations and max_depth must be at least 1.")
        self.environment_kwargs = dict(environment_kwargs or {})
        if lm is None:
            from rlm_mcp.lm import resolve_lm

            lm = resolve_lm(backend, environ=environ, **dict(backend_kwargs or {}))
        #: Extra sub-models, chosen from sandboxed code with llm_query(prompt, model=NAME); the
        #: first is the default sub-model when `sub_lm` is not given (the reference API).
        self.other_lms: list[LM] = []
        if other_backends:
            from rlm_mcp.lm import resolve_lm

            kws = list(other_backend_kwargs or [])
            if len(kws) not in (0, len(other_backends)):
                raise ConfigError(
                    f"other_backend_kwargs has {len(kws)} entries for {len(other_backends)} "
                    "other_backends; give one dict per backend (or none)."
                )
            for i, name in enumerate(other_backends):
                kw = dict(kws[i]) if kws else {}
                self.other_lms.append(resolve_lm(name, environ=environ, **kw))
            if sub_lm is None:
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
        printer = VerbosePrinter() if verbose else None
        user_cb = on_event

        async def _on_event(event: RLMEvent) -> None:
            if printer is not None:
                printer(event)
            await emit(user_cb, event)

        self._on_event = _on_event

    # -- public API ---------------------------------------------------------------------------

    def completion(
        self, context: ContextInput, root_prompt: str | None = None
    ) -> RLMChatCompletion:
        """Blocking form of `acompletion` (not from inside a running event loop)."""
        return anyio.run(self.acompletion, context, root_prompt)

    async def acompletion(
        self, context: ContextInput, root_prompt: str | None = None
    ) -> RLMChatCompletion:
        """Run the loop. Cancelling it stops the loop, closes the sandbox and pending sub-calls."""
        tracker = UsageTracker()
        budget = Budget(
            tracker, max_tokens=self.max_tokens, max_cost=self.max_cost, max_time=self.max_time
        )
        writer = TrajectoryWriter(self.log_dir) if self.log_dir is not None else None
        try:
            result = await self._run(
                context,
                root_prompt,
                depth=0,
                tracker=tracker,
                budget=budget,
                path=("root",),
                writer=writer,
            )
        finally:
            if writer is not None:
                writer.close()
        return result

    # -- the loop -----------------------------------------------------------------------------

    def _model_choices(self) -> dict[str, LM]:
        """Sub-models by name: the default sub-model and every other backend."""
        found: dict[str, LM] = {self.sub_lm.model: self.sub_lm}
        for other in self.other_lms:
            found.setdefault(other.model, other)
        return found

    async def _run(
        self,
        context: ContextInput,
        root_prompt: str | None,
        *,
        depth: int,
        tracker: UsageTracker,
        budget: Budget,
        path: tuple[str, ...],
        writer: TrajectoryWriter | None = None,
    ) -> RLMChatCompletion:
        from rlm_mcp.sandbox import SandboxSession

        t0 = time.perf_counter()
        lm = self.lm if depth == 0 else self.sub_lm
        spec, summary = _prepare_context(context, self.store)
        system = build_system_prompt(
            summary,
            custom=self.custom_system_prompt if depth == 0 else None,
            max_subcall_chars=self.max_subcall_chars,
            max_output_chars=self.sandbox_limits.max_output_chars,
        )
        choices = self._model_choices()
        if len(choices) > 1:
            system += (
                "\n\nSub-models you can pick with llm_query(prompt, model=NAME) or "
                f"llm_query_batched(prompts, model=NAME): {', '.join(choices)} (default: "
                f"{self.sub_lm.model})."
            )
        messages: list[Message] = [
            Message("system", system),
            Message("user", first_user_prompt(root_prompt)),
        ]
        current: list[int | None] = [None]

        child_factory = None
        if depth + 1 < self.max_depth:

            async def child_factory(prompt: str, n: int) -> RLMChatCompletion:
                # The prompt becomes the child's context; the child answers it as a question.
                return await self._run(
                    prompt,
                    "Answer the request written at the start of `context`.",
                    depth=depth + 1,
                    tracker=tracker,
                    budget=budget,
                    path=(*path, f"child{n}"),
                )

        router = SubCallRouter(
            self.sub_lm,
            tracker,
            alternatives=self._model_choices(),
            path=path,
            on_event=self._on_event,
            max_prompt_chars=self.max_subcall_chars,
            child_factory=child_factory,
            budget=budget,
            depth=depth,
            iteration=lambda: current[0],
        )
        if writer is not None:
            writer.config(
                root_model=lm.model,
                sub_model=self.sub_lm.model,
                backend=lm.backend,
                max_iterations=self.max_iterations,
                max_depth=self.max_depth,
                max_tokens=self.max_tokens,
                max_cost=self.max_cost,
                max_time=self.max_time,
                context_kind=summary.kind,
                context_chars=summary.chars,
                context_documents=summary.documents,
                root_prompt=root_prompt,
                system_prompt=system,
            )
        await self._on_event(
            RLMEvent(
                "run_started",
                depth,
                None,
                f"run at depth {depth} over {summary.chars:,} chars",
                {"context_chars": summary.chars, "documents": summary.documents, "model": lm.model},
            )
        )
        trajectory: list[IterationRecord] = []
        answer: str | None = None
        best = ""
        stop: str = "max_iterations"
        notes: list[str] = []

        async def ask(msgs: list[Message]) -> tuple[str, Any]:
            if budget.max_time is None:
                comp = await lm.complete(msgs)
            else:
                # The wall-time budget also bounds a model call that hangs.
                with anyio.move_on_after(max(0.0, budget.max_time - budget.elapsed())):
                    comp = await lm.complete(msgs)
                    tracker.record(comp.usage, path=path)
                    return comp.text or "", comp.usage
                raise _OutOfTime
            tracker.record(comp.usage, path=path)
            return comp.text or "", comp.usage  # None from the provider becomes ""

        async with SandboxSession(context=spec, limits=self.sandbox_limits, sub_calls=router) as sb:
            for i in range(1, self.max_iterations + 1):
                reason = budget.exceeded()
                if reason is not None:
                    stop = reason
                    break
                current[0] = i
                await self._on_event(RLMEvent("iteration_started", depth, i, f"iteration {i}", {}))
                it0 = time.perf_counter()
                prompt_chars = sum(len(m.content) for m in messages)
                try:
                    text, usage = await ask(messages)
                except _OutOfTime:
                    stop = "max_time"
                    break
                record = IterationRecord(
                    iteration=i,
                    prompt_chars=prompt_chars,
                    response=text,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                )
                prose = strip_code(text).strip()
                if prose:
                    best = prose
                feedback: list[str] = []
                code_final: str | None = None
                for n, code in enumerate(find_code_blocks(text), 1):
                    res = await sb.execute(code)
                    err = None if res.error is None else f"{res.error.type}: {res.error.message}"
                    out = _truncate(res.output, self.sandbox_limits.max_output_chars)
                    record.code_blocks.append(
                        CodeBlockRecord(
                            code=code,
                            status=res.status,
                            output=out,
                            error=err,
                            duration_s=res.duration_s,
                            truncated=res.truncated or len(out) < len(res.output),
                            sub_calls=router.drain(),
                        )
                    )
                    part = (
                        f"Block {n} ({res.status}):\n{out}"
                        if out
                        else f"Block {n} ({res.status}), no output."
                    )
                    if res.truncated:
                        part += (
                            f"\n[output truncated: {res.output_chars:,} chars printed. Print less.]"
                        )
                    if err:
                        line = f" (line {res.error.line})" if res.error and res.error.line else ""
                        part += f"\nError{line}: {err}"
                    if res.reset:
                        part += "\n[the REPL was restarted: every variable is gone]"
                    feedback.append(part)
                    if res.final is not None:
                        code_final = res.final.value
                        break
                marker = find_final(text)
                if code_final is not None:
                    answer = code_final
                elif marker is not None and marker.kind == "FINAL":
                    answer = marker.value
                elif marker is not None:
                    value = await sb.get_variable_text(marker.value)
                    if value is None:
                        feedback.append(
                            f"FINAL_VAR({marker.value}) failed: no variable named "
                            f"{marker.value!r} exists in the REPL. Create it first, "
                            "or use FINAL(...)."
                        )
                    else:
                        answer = value
                record.final_answer = answer
                record.duration_s = time.perf_counter() - it0
                trajectory.append(record)
                if writer is not None:
                    writer.iteration(record)
                await self._on_event(
                    RLMEvent(
                        "iteration_finished",
                        depth,
                        i,
                        f"iteration {i}: {len(record.code_blocks)} code block(s)"
                        + ("; answered" if answer is not None else ""),
                        record.to_dict(),
                    )
                )
                if answer is not None:
                    stop = "final"
                    break
                if not feedback:
                    feedback.append("No ```repl block and no FINAL(...) found in your reply.")
                messages.append(Message("assistant", text))
                messages.append(
                    Message("user", "\n\n".join(feedback) + "\n\n" + continue_prompt(root_prompt))
                )
            else:
                reason = budget.exceeded()
                if reason is not None:
                    stop = reason
                else:
                    # Out of iterations: ask once for the best final answer.
                    text, _ = await ask(
                        [*messages, Message("user", last_chance_prompt(root_prompt))]
                    )
                    marker = find_final(text)
                    if marker is not None and marker.kind == "FINAL":
                        answer = marker.value
                    elif marker is not None:
                        answer = await sb.get_variable_text(marker.value)
                    if answer is None:
                        answer = strip_code(text).strip() or best
                    stop = "max_iterations"
        if answer is None:
            answer = best
        notes.extend(budget.notes)
        result = RLMChatCompletion(
            response=answer,
            usage=tracker.subtree(*path) if depth > 0 else tracker.summary(),
            iterations=len(trajectory),
            trajectory=trajectory,
            stop_reason=stop,  # type: ignore[arg-type]
            execution_time=time.perf_counter() - t0,
            root_model=lm.model,
            trajectory_path=None if writer is None else writer.path,
            notes=notes,
        )
        if writer is not None:
            writer.result(result)
        await self._on_event(
            RLMEvent(
                "run_finished",
                depth,
                None,
                f"finished ({stop}) after {len(trajectory)} iteration(s)",
                {
                    "stop_reason": stop,
                    "iterations": len(trajectory),
                    "usage": result.usage.to_dict(),
                },
            )
        )
        return result
