"""The RLM loop as explicit state and small steps.

`run_loop` reads top to bottom: prepare the run, then per iteration check the budget, ask the
root, run its code blocks, decide whether it answered; out of iterations, ask once more (the last
chance); finish. Every way a run can stop — an answer, the iteration limit, a token, cost or time
budget, a model call cut off by the time budget — ends as a `stop_reason` on the result, never as
an exception of ours. Each step is a function of `RunState` (and the sandbox), so a step can be
read, tested and changed on its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.context_input import ContextInput, prepare_context
from rlm_mcp.lm.base import LM, Message
from rlm_mcp.lm.usage import UsageTracker
from rlm_mcp.parsing import find_code_blocks, find_final, strip_code
from rlm_mcp.prompts import (
    ContextSummary,
    build_system_prompt,
    continue_prompt,
    first_user_prompt,
    last_chance_prompt,
)
from rlm_mcp.subcalls import Budget, SubCallRouter
from rlm_mcp.trajectory import TrajectoryWriter
from rlm_mcp.types import CodeBlockRecord, IterationRecord, RLMChatCompletion, RLMEvent

if TYPE_CHECKING:
    from rlm_mcp.sandbox import ContextSpec, ExecResult, SandboxLimits, SandboxSession
    from rlm_mcp.sandbox.types import SubCallHandler

__all__ = ["LoopConfig", "RunState", "SandboxFactory", "run_loop"]

#: `(context, sub-call handler) -> async context manager of a started session`: where a run's
#: sandbox comes from (the server leases one from its pool, so runs count against its limits).
SandboxFactory = Callable[["ContextSpec", "SubCallHandler"], AbstractAsyncContextManager[Any]]
Emit = Callable[[RLMEvent], Awaitable[None]]


@dataclass(frozen=True)
class LoopConfig:
    """What one RLM's runs share (set once by `RLM`)."""

    lm: LM
    sub_lm: LM
    choices: dict[str, LM]
    max_iterations: int
    max_depth: int
    custom_system_prompt: str | None
    max_subcall_chars: int
    limits: SandboxLimits
    emit: Emit
    sandbox: SandboxFactory
    child: Callable[[str, str, int, tuple[str, ...]], Awaitable[RLMChatCompletion]] | None


@dataclass
class RunState:
    """Where one run (at one depth) stands."""

    depth: int
    path: tuple[str, ...]
    lm: LM
    root_prompt: str | None
    tracker: UsageTracker
    budget: Budget
    messages: list[Message]
    summary: ContextSummary
    writer: TrajectoryWriter | None = None
    started: float = field(default_factory=time.perf_counter)
    iteration: int | None = None
    trajectory: list[IterationRecord] = field(default_factory=list)
    answer: str | None = None
    best: str = ""
    stop: str = "max_iterations"
    router: SubCallRouter = field(init=False)  # built from the state (it reads the iteration)


async def run_loop(
    cfg: LoopConfig,
    context: ContextInput,
    root_prompt: str | None,
    *,
    depth: int,
    tracker: UsageTracker,
    budget: Budget,
    path: tuple[str, ...],
    log_dir: Path | None = None,
) -> RLMChatCompletion:
    """One run: prepare, iterate until an answer or a limit, last chance, finish."""
    spec, state = prepare(cfg, context, root_prompt, depth, tracker, budget, path)
    if log_dir is not None:  # only a run that really starts leaves a trajectory
        state.writer = TrajectoryWriter(log_dir)
        write_config(cfg, state, state.messages[0].content)
    try:
        await announce(cfg, state)
        async with cfg.sandbox(spec, state.router) as sb:
            for i in range(1, cfg.max_iterations + 1):
                if over_budget(state) or await iterate(cfg, state, sb, i):
                    break
            else:
                if not over_budget(state):
                    await last_chance(state, sb)
        return await finish(cfg, state)
    finally:
        if state.writer is not None:
            state.writer.close()


def prepare(
    cfg: LoopConfig,
    context: ContextInput,
    root_prompt: str | None,
    depth: int,
    tracker: UsageTracker,
    budget: Budget,
    path: tuple[str, ...],
) -> tuple[ContextSpec, RunState]:
    """The sandbox's context and a fresh run state with its system prompt and sub-call router."""
    spec, summary = prepare_context(context)
    system = build_system_prompt(
        summary,
        custom=cfg.custom_system_prompt if depth == 0 else None,
        max_subcall_chars=cfg.max_subcall_chars,
        max_output_chars=cfg.limits.max_output_chars,
    )
    if len(cfg.choices) > 1:
        system += (
            "\n\nSub-models you can pick with llm_query(prompt, model=NAME) or "
            f"llm_query_batched(prompts, model=NAME): {', '.join(cfg.choices)} (default: "
            f"{cfg.sub_lm.model})."
        )
    messages = [Message("system", system), Message("user", first_user_prompt(root_prompt))]
    state = RunState(
        depth=depth,
        path=path,
        lm=cfg.lm if depth == 0 else cfg.sub_lm,
        root_prompt=root_prompt,
        tracker=tracker,
        budget=budget,
        messages=messages,
        summary=summary,
    )
    state.router = _router(cfg, state)
    return spec, state


def _router(cfg: LoopConfig, state: RunState) -> SubCallRouter:
    child = None
    if cfg.child is not None and state.depth + 1 < cfg.max_depth:

        async def child(prompt: str, n: int) -> RLMChatCompletion:
            # The prompt becomes the child's context; the child answers it as a question.
            assert cfg.child is not None
            question = "Answer the request written at the start of `context`."
            return await cfg.child(prompt, question, state.depth + 1, (*state.path, f"child{n}"))

    return SubCallRouter(
        cfg.sub_lm,
        state.tracker,
        alternatives=cfg.choices,
        path=state.path,
        on_event=cfg.emit,
        max_prompt_chars=cfg.max_subcall_chars,
        child_factory=child,
        budget=state.budget,
        depth=state.depth,
        iteration=lambda: state.iteration,
    )


def write_config(cfg: LoopConfig, state: RunState, system: str) -> None:
    assert state.writer is not None
    summary = state.summary
    state.writer.config(
        root_model=state.lm.model,
        sub_model=cfg.sub_lm.model,
        backend=state.lm.backend,
        max_iterations=cfg.max_iterations,
        max_depth=cfg.max_depth,
        max_tokens=state.budget.max_tokens,
        max_cost=state.budget.max_cost,
        max_time=state.budget.max_time,
        context_kind=summary.kind,
        context_chars=summary.chars,
        context_documents=summary.documents,
        root_prompt=state.root_prompt,
        system_prompt=system,
    )


async def announce(cfg: LoopConfig, state: RunState) -> None:
    summary = state.summary
    await cfg.emit(
        RLMEvent(
            "run_started",
            state.depth,
            None,
            f"run at depth {state.depth} over {summary.chars:,} chars",
            {
                "context_chars": summary.chars,
                "documents": summary.documents,
                "model": state.lm.model,
            },
        )
    )


def over_budget(state: RunState) -> bool:
    """Stop (saying which budget) when a token, cost or time budget is used up."""
    reason = state.budget.exceeded()
    if reason is not None:
        state.stop = reason
    return reason is not None


async def ask(state: RunState, messages: Sequence[Message]) -> tuple[str, Any] | None:
    """The root model's reply, or None when the time budget ran out during the call."""
    budget = state.budget
    left = None if budget.max_time is None else max(0.0, budget.max_time - budget.elapsed())
    with anyio.move_on_after(left):
        comp = await state.lm.complete(messages)
        state.tracker.record(comp.usage, path=state.path)
        return comp.text or "", comp.usage  # None from the provider becomes ""
    state.stop = "max_time"
    return None


async def iterate(cfg: LoopConfig, state: RunState, sb: SandboxSession, i: int) -> bool:
    """One root turn; True when the run is over (an answer, or time ran out mid-call)."""
    state.iteration = i
    await cfg.emit(RLMEvent("iteration_started", state.depth, i, f"iteration {i}", {}))
    started = time.perf_counter()
    prompt_chars = sum(len(m.content) for m in state.messages)
    reply = await ask(state, state.messages)
    if reply is None:
        return True
    text, usage = reply
    record = IterationRecord(
        iteration=i,
        prompt_chars=prompt_chars,
        response=text,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
    )
    if prose := strip_code(text).strip():
        state.best = prose
    feedback, code_final = await run_blocks(cfg, state, sb, text, record)
    state.answer = await decide(sb, text, code_final, feedback)
    record.final_answer = state.answer
    record.duration_s = time.perf_counter() - started
    await record_iteration(cfg, state, record)
    if state.answer is not None:
        state.stop = "final"
        return True
    if not feedback:
        feedback.append("No ```repl block and no FINAL(...) found in your reply.")
    state.messages.append(Message("assistant", text))
    state.messages.append(
        Message("user", "\n\n".join(feedback) + "\n\n" + continue_prompt(state.root_prompt))
    )
    return False


async def run_blocks(
    cfg: LoopConfig, state: RunState, sb: SandboxSession, text: str, record: IterationRecord
) -> tuple[list[str], str | None]:
    """Run the reply's code blocks in order: (feedback for the model, a FINAL from code)."""
    feedback: list[str] = []
    for n, code in enumerate(find_code_blocks(text), 1):
        res = await sb.execute(code)
        record.code_blocks.append(_block_record(cfg, state, code, res))
        feedback.append(_block_feedback(cfg, n, res))
        if res.final is not None:
            return feedback, res.final.value
    return feedback, None


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        text[:limit]
        + f"\n[... output truncated: {len(text):,} chars, showing {limit:,}. Print less.]"
    )


def _block_record(cfg: LoopConfig, state: RunState, code: str, res: ExecResult) -> CodeBlockRecord:
    out = _truncate(res.output, cfg.limits.max_output_chars)
    return CodeBlockRecord(
        code=code,
        status=res.status,
        output=out,
        error=None if res.error is None else f"{res.error.type}: {res.error.message}",
        duration_s=res.duration_s,
        truncated=res.truncated or len(out) < len(res.output),
        sub_calls=state.router.drain(),
    )


def _block_feedback(cfg: LoopConfig, n: int, res: ExecResult) -> str:
    out = _truncate(res.output, cfg.limits.max_output_chars)
    part = f"Block {n} ({res.status}):\n{out}" if out else f"Block {n} ({res.status}), no output."
    if res.truncated:
        part += f"\n[output truncated: {res.output_chars:,} chars printed. Print less.]"
    if res.error is not None:
        line = f" (line {res.error.line})" if res.error.line else ""
        part += f"\nError{line}: {res.error.type}: {res.error.message}"
    if res.reset:
        part += "\n[the REPL was restarted: every variable is gone]"
    return part


async def decide(
    sb: SandboxSession, text: str, code_final: str | None, feedback: list[str]
) -> str | None:
    """The answer this turn gave, if any: FINAL from code, else FINAL(...)/FINAL_VAR(...)."""
    if code_final is not None:
        return code_final
    marker = find_final(text)
    if marker is None:
        return None
    if marker.kind == "FINAL":
        return marker.value
    value = await sb.get_variable_text(marker.value)
    if value is None:
        feedback.append(
            f"FINAL_VAR({marker.value}) failed: no variable named {marker.value!r} exists in the "
            "REPL. Create it first, or use FINAL(...)."
        )
    return value


async def record_iteration(cfg: LoopConfig, state: RunState, record: IterationRecord) -> None:
    state.trajectory.append(record)
    if state.writer is not None:
        state.writer.iteration(record)
    await cfg.emit(
        RLMEvent(
            "iteration_finished",
            state.depth,
            record.iteration,
            f"iteration {record.iteration}: {len(record.code_blocks)} code block(s)"
            + ("; answered" if state.answer is not None else ""),
            record.to_dict(),
        )
    )


async def last_chance(state: RunState, sb: SandboxSession) -> None:
    """Out of iterations: ask once for the best final answer (the budget still applies)."""
    reply = await ask(
        state, [*state.messages, Message("user", last_chance_prompt(state.root_prompt))]
    )
    if reply is None:
        return  # stop is max_time; finish() answers with the best so far
    text = reply[0]
    marker = find_final(text)
    answer = None
    if marker is not None and marker.kind == "FINAL":
        answer = marker.value
    elif marker is not None:
        answer = await sb.get_variable_text(marker.value)
    state.answer = answer if answer is not None else (strip_code(text).strip() or state.best)
    state.stop = "max_iterations"


async def finish(cfg: LoopConfig, state: RunState) -> RLMChatCompletion:
    """The result: the answer (or the best prose so far), usage of this subtree, the record."""
    path = state.path
    result = RLMChatCompletion(
        response=state.answer if state.answer is not None else state.best,
        usage=state.tracker.subtree(*path) if state.depth > 0 else state.tracker.summary(),
        iterations=len(state.trajectory),
        trajectory=state.trajectory,
        stop_reason=state.stop,  # type: ignore[arg-type]
        execution_time=time.perf_counter() - state.started,
        root_model=state.lm.model,
        trajectory_path=None if state.writer is None else state.writer.path,
        notes=list(state.budget.notes),
    )
    if state.writer is not None:
        state.writer.result(result)
    await cfg.emit(
        RLMEvent(
            "run_finished",
            state.depth,
            None,
            f"finished ({state.stop}) after {len(state.trajectory)} iteration(s)",
            {
                "stop_reason": state.stop,
                "iterations": len(state.trajectory),
                "usage": result.usage.to_dict(),
            },
        )
    )
    return result
