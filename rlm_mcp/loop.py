"""The RLM loop as explicit state and small steps.

`run_loop` reads top to bottom: prepare the run, then per iteration check the budget, ask the
root, run its code blocks, decide whether it answered; out of iterations, ask once more (the last
chance); finish. Every way a run can stop — an answer, the iteration limit, a token, cost or time
budget, a model call cut off by the time budget — ends as a `stop_reason` on the result, never as
an exception of ours. Each step is a function of `RunState` (and the sandbox), so a step can be
read, tested and changed on its own.

A run that stops without a final answer still answers: with the best partial answer (what code
put in `answer["content"]`, else the model's last reasoning, else the last code output), marked
`partial=True`, with a note saying where it came from. Nothing unfinished is reported as final.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.answers import parse_answer, schema_prompt
from rlm_mcp.context_input import ContextInput, prepare_context
from rlm_mcp.errors import RLMError
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
from rlm_mcp.types import (
    CodeBlockRecord,
    CompactionRecord,
    IterationRecord,
    RLMChatCompletion,
    RLMEvent,
)

if TYPE_CHECKING:
    from rlm_mcp.custom_tools import ToolSet
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
    tools: ToolSet | None = None
    #: Stop after this many iterations in a row whose code ended in an error (None: never).
    max_errors: int | None = None
    #: Summarise the root's earlier turns past this many characters (None: never).
    compaction_chars: int | None = None
    #: The root's answer must validate against this JSON Schema (None: any text).
    schema: dict[str, Any] | None = None
    #: What the root is told of earlier turns of a conversation, and where its REPL lives.
    recap: str = ""
    root_sandbox: SandboxFactory | None = None


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
    first_prompt: str = ""
    errors: int = 0  # iterations in a row whose code ended in an error
    last_output: str = ""
    answer_json: Any = None
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    compaction: CompactionRecord | None = None  # to attach to the next iteration's record
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
        factory = cfg.root_sandbox if depth == 0 and cfg.root_sandbox else cfg.sandbox
        async with factory(spec, state.router) as sb:
            for i in range(1, cfg.max_iterations + 1):
                if over_budget(state) or await iterate(cfg, state, sb, i):
                    break
            else:
                if not over_budget(state):
                    await last_chance(cfg, state, sb)
            if state.answer is None:
                await settle_partial(cfg, state, sb)
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
    if cfg.tools:
        system += cfg.tools.prompt()
    first = first_user_prompt(root_prompt)
    if depth == 0:
        system += "" if cfg.schema is None else schema_prompt(cfg.schema)
        first = cfg.recap + first
    messages = [Message("system", system), Message("user", first)]
    state = RunState(
        depth=depth,
        path=path,
        lm=cfg.lm if depth == 0 else cfg.sub_lm,
        root_prompt=root_prompt,
        tracker=tracker,
        budget=budget,
        messages=messages,
        summary=summary,
        first_prompt=first,
    )
    state.router = _router(cfg, state)
    return spec, state


def _router(cfg: LoopConfig, state: RunState) -> SubCallRouter:
    """llm_query recurses below `max_depth`; an explicit rlm_query always may from the root (a
    depth limit of 1 would make it useless), deeper only within `max_depth`."""

    async def child(prompt: str, n: int) -> RLMChatCompletion:
        # The prompt becomes the child's context; the child answers it as a question.
        assert cfg.child is not None
        question = "Answer the request written at the start of `context`."
        return await cfg.child(prompt, question, state.depth + 1, (*state.path, f"child{n}"))

    implicit = cfg.child is not None and state.depth + 1 < cfg.max_depth
    explicit = cfg.child is not None and state.depth + 1 < max(cfg.max_depth, 2)
    return SubCallRouter(
        cfg.sub_lm,
        state.tracker,
        alternatives=cfg.choices,
        path=state.path,
        on_event=cfg.emit,
        max_prompt_chars=cfg.max_subcall_chars,
        child_factory=child if implicit else None,
        rlm_child_factory=child if explicit else None,
        tools=cfg.tools,
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
    await compact(cfg, state)
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
        compaction=state.compaction,
    )
    state.compaction = None
    if prose := strip_code(text).strip():
        state.best = prose
    feedback, code_final = await run_blocks(cfg, state, sb, text, record)
    count_errors(state, record)
    state.answer = check_typed(cfg, state, await decide(sb, text, code_final, feedback), feedback)
    record.final_answer = state.answer
    record.duration_s = time.perf_counter() - started
    await record_iteration(cfg, state, record)
    if state.answer is not None:
        state.stop = "final"
        return True
    if cfg.max_errors is not None and state.errors >= cfg.max_errors:
        state.stop = "max_errors"
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
        if res.output.strip():
            state.last_output = res.output
        if res.final is not None:
            return feedback, res.final.value
    return feedback, None


def count_errors(state: RunState, record: IterationRecord) -> None:
    """An iteration whose last code block failed adds one; one whose code ran resets to 0."""
    if record.code_blocks:
        failed = record.code_blocks[-1].status != "ok"
        state.errors = state.errors + 1 if failed else 0


def check_typed(
    cfg: LoopConfig, state: RunState, answer: str | None, feedback: list[str]
) -> str | None:
    """With a schema, an answer that does not validate is refused (the model is asked again)."""
    if answer is None or cfg.schema is None or state.depth > 0:
        return answer
    value, problem = parse_answer(answer, cfg.schema)
    if problem is None:
        state.answer_json = value
        return answer
    state.best = answer
    feedback.append(
        f"Your final answer does not match the required JSON Schema ({problem}). Fix it and "
        "finish again with JSON that validates."
    )
    return None


COMPACT_PROMPT = (
    "Your conversation is getting too long, so it will be replaced by your own summary. Write "
    "that summary now, in plain text and no code: what you have learned about the context (with "
    "exact names, numbers and positions), which REPL variables hold what, what you tried that "
    "failed, and what is left to do. The REPL and its variables stay as they are."
)


async def compact(cfg: LoopConfig, state: RunState) -> None:
    """Past the threshold, replace every turn but the latest with the root's own summary.

    Safe by construction: the system prompt, the question and the latest exchange stay as they
    were, the REPL's variables are untouched, and a summary that fails (or does not shrink the
    conversation) leaves everything as it was, with a note.
    """
    limit = cfg.compaction_chars
    before = sum(len(m.content) for m in state.messages)
    if limit is None or before <= limit or len(state.messages) < 6:
        return
    head, last = state.messages[:-2], state.messages[-2:]
    request = [*head[:-1], Message("user", head[-1].content + "\n\n" + COMPACT_PROMPT)]
    try:
        reply = await ask(state, request)
    except RLMError as exc:
        state.notes.append(f"compaction failed ({exc}); the conversation was kept whole")
        return
    if reply is None or not reply[0].strip():
        return
    summary, usage = reply[0].strip(), reply[1]
    first = Message(
        "user",
        state.first_prompt + "\n\nSummary of your earlier turns (written by you; the REPL and "
        f"its variables are unchanged):\n{summary}",
    )
    messages = [state.messages[0], first, *last]
    after = sum(len(m.content) for m in messages)
    if after >= before:
        state.notes.append("compaction skipped: the summary was no shorter than the turns")
        return
    state.messages = messages
    state.compaction = CompactionRecord(
        chars_before=before,
        chars_after=after,
        messages_summarized=len(head) - 2,
        summary_preview=summary[:2000],
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
    )
    message = f"compacted the root conversation: {before:,} -> {after:,} chars"
    await cfg.emit(
        RLMEvent("compacted", state.depth, state.iteration, message, state.compaction.to_dict())
    )


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
        tool_calls=state.router.drain_tools(),
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


async def last_chance(cfg: LoopConfig, state: RunState, sb: SandboxSession) -> None:
    """Out of iterations: ask once for the best final answer (the budget still applies)."""
    prompt = last_chance_prompt(state.root_prompt)
    if cfg.schema is not None and state.depth == 0:
        prompt += " The answer must be JSON that validates against the schema you were given."
    reply = await ask(state, [*state.messages, Message("user", prompt)])
    if reply is None:
        return  # stop is max_time; settle_partial answers with the best so far
    text = reply[0]
    marker = find_final(text)
    answer = None
    if marker is not None and marker.kind == "FINAL":
        answer = marker.value
    elif marker is not None:
        answer = await sb.get_variable_text(marker.value)
    answer = answer if answer is not None else strip_code(text).strip()
    if not answer:
        return  # nothing new: settle_partial picks the best so far
    state.stop = "max_iterations"
    state.notes.append(
        "No final answer within max_iterations: this is the model's best answer when asked to "
        "stop (partial)."
    )
    typed = check_typed(cfg, state, answer, [])
    if typed is None:
        state.stop = "invalid_answer"
        state.notes.append("The answer does not match the schema: answer_json is None.")
    state.answer = answer


async def settle_partial(cfg: LoopConfig, state: RunState, sb: SandboxSession) -> None:
    """No answer: the best partial one, saying where it came from and what stopped the run."""
    draft = None
    with anyio.move_on_after(5):  # the sandbox may be busy or gone; the draft is optional
        try:
            draft = await sb.draft()
        except Exception:  # a dead sandbox must not turn a stopped run into a crash
            draft = None
    if draft:
        state.best, source = draft, "what code put in answer['content']"
    elif state.best:
        source = "the model's last reasoning"
    elif state.last_output.strip():
        state.best, source = state.last_output, "the last code output"
    else:
        source = ""
    reason = state.stop
    state.notes.append(
        f"No final answer: the run stopped at {reason}"
        + (f"; this is the best partial answer, from {source}." if source else " with nothing.")
    )
    if cfg.schema is not None and state.depth == 0 and state.best:
        value, problem = parse_answer(state.best, cfg.schema)
        state.answer_json = value if problem is None else None


async def finish(cfg: LoopConfig, state: RunState) -> RLMChatCompletion:
    """The result: the answer (or the best prose so far), usage of this subtree, the record."""
    path = state.path
    result = RLMChatCompletion(
        response=state.answer if state.answer is not None else state.best,
        partial=state.stop != "final",
        answer_json=state.answer_json,
        usage=state.tracker.subtree(*path) if state.depth > 0 else state.tracker.summary(),
        iterations=len(state.trajectory),
        trajectory=state.trajectory,
        stop_reason=state.stop,  # type: ignore[arg-type]
        execution_time=time.perf_counter() - state.started,
        root_model=state.lm.model,
        trajectory_path=None if state.writer is None else state.writer.path,
        notes=[*state.budget.notes, *state.notes],
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
