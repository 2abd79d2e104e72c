"""Answers sandboxed code's calls to the parent: `llm_query` (one LM call per prompt, or a child
RLM per prompt below the depth limit), `rlm_query` (a child RLM per prompt) and the caller's tools.
Every usage goes into the one tracker of the whole tree."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rlm_mcp.errors import BudgetExceededError, ConfigError, InputTooLargeError
from rlm_mcp.lm.base import LM, Message
from rlm_mcp.types import RLMChatCompletion, RLMEvent, SubCallRecord, ToolCallRecord

if TYPE_CHECKING:
    from rlm_mcp.custom_tools import ToolSet

__all__ = ["Budget", "SubCallRouter", "emit"]

log = logging.getLogger(__name__)

DEFAULT_MAX_SUBCALL_CHARS = 400_000
#: How much of each sub-call's prompt and answer the trajectory keeps (for the viewer): enough to
#: recognise the call, bounded so 1,000 sub-calls over 400K-char chunks stay a small file.
SUBCALL_PREVIEW_CHARS = 2_000


async def emit(on_event: Callable[[RLMEvent], Any] | None, event: RLMEvent) -> None:
    """Call the event callback (sync or async); a failing callback is logged, never fatal."""
    if on_event is None:
        return
    try:
        result = on_event(event)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a progress reporter must not kill a run
        log.exception("event callback failed for %s", event.kind)


class Budget:
    """One budget for a whole call tree: tokens, cost (reported or priced) and wall time."""

    def __init__(
        self,
        tracker: Any,
        *,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        max_time: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.tracker = tracker
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.max_time = max_time
        self._clock = clock or time.monotonic
        self.started = self._clock()
        self.notes: list[str] = []

    def elapsed(self) -> float:
        return self._clock() - self.started

    def exceeded(self) -> str | None:
        """The name of the first budget that is used up ("max_tokens", ...), None if none."""
        if self.max_time is not None and self.elapsed() >= self.max_time:
            return "max_time"
        if self.max_tokens is None and self.max_cost is None:
            return None
        summary = self.tracker.summary()
        if self.max_tokens is not None and summary.total_tokens >= self.max_tokens:
            return "max_tokens"
        if self.max_cost is not None:
            cost = summary.total_cost or 0.0
            if summary.unknown_cost_models:
                # Some model has no price: count what we can price, and say so.
                note = (
                    "max_cost: no price known for "
                    + ", ".join(summary.unknown_cost_models)
                    + "; their calls are not counted in the cost (add them to the price table)"
                )
                if note not in self.notes:
                    self.notes.append(note)
            if cost >= self.max_cost:
                return "max_cost"
        return None


ChildFactory = Callable[[str, int], Awaitable[RLMChatCompletion]]


class SubCallRouter:
    """The SubCallHandler given to a sandbox session."""

    def __init__(
        self,
        lm: LM,
        tracker: Any,
        *,
        path: tuple[str, ...] = ("root",),
        on_event: Callable[[RLMEvent], Any] | None = None,
        max_prompt_chars: int = DEFAULT_MAX_SUBCALL_CHARS,
        temperature: float | None = 0.0,
        child_factory: ChildFactory | None = None,
        budget: Budget | None = None,
        depth: int = 0,
        iteration: Callable[[], int | None] | None = None,
        alternatives: Mapping[str, LM] | None = None,
        rlm_child_factory: ChildFactory | None = None,
        tools: ToolSet | None = None,
    ) -> None:
        self.lm = lm
        #: rlm_query's children; None where even an explicit child would be too deep (a plain
        #: model call answers then, and the record says so).
        self.rlm_child_factory = rlm_child_factory
        self.tools = tools
        #: What the sandbox lists for code (name -> description); empty without tools.
        self.tool_docs: dict[str, str] = {} if tools is None else dict(tools.docs)
        self.tool_records: list[ToolCallRecord] = []
        #: model name -> LM for `llm_query(prompt, model=NAME)`; a named model is a plain call.
        self.alternatives = dict(alternatives or {})
        self.tracker = tracker
        self.path = path
        self.on_event = on_event
        self.max_prompt_chars = max_prompt_chars
        self.temperature = temperature
        self.child_factory = child_factory
        self.budget = budget
        self.depth = depth
        self._iteration = iteration or (lambda: None)
        self.records: list[SubCallRecord] = []
        self._counter = 0

    def drain(self) -> list[SubCallRecord]:
        """The records since the last drain (one code block's sub-calls)."""
        out, self.records = self.records, []
        return out

    def drain_tools(self) -> list[ToolCallRecord]:
        """The tool calls since the last drain (one code block's)."""
        out, self.tool_records = self.tool_records, []
        return out

    async def rlm(self, prompts: Sequence[str]) -> list[str]:
        """`rlm_query_batched`: a child RLM per prompt, sharing this tree's budget and usage."""
        self._check(prompts)
        factory = self.rlm_child_factory
        return list(await asyncio.gather(*(self._one(p, None, factory) for p in prompts)))

    async def tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """One call of a caller's tool; its time and outcome go into the trajectory. A tool that
        raises becomes `ok: False` at the bridge, so the code gets an ordinary exception."""
        if self.tools is None or name not in self.tool_docs:
            raise ConfigError(f"no tool named {name!r}")
        record = ToolCallRecord(
            name=name, ok=False, arguments_preview=_preview({"args": args, "kwargs": kwargs})
        )
        self.tool_records.append(record)
        t0 = time.perf_counter()
        try:
            value = await self.tools.call(name, args, kwargs)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:SUBCALL_PREVIEW_CHARS]
            raise RuntimeError(f"{name} failed: {record.error}") from None
        finally:
            record.duration_s = time.perf_counter() - t0
        record.ok = True
        record.result_preview = _preview(value)
        return value

    def _check(self, prompts: Sequence[str]) -> None:
        """Refuse a sub-call once the budget is used up, or a prompt over the size limit."""
        if self.budget is not None:
            reason = self.budget.exceeded()
            if reason is not None:
                raise BudgetExceededError(
                    reason,
                    f"Sub-call refused: the run's {reason} budget is used up. Finish now with "
                    "FINAL(...) using what you have.",
                )
        for p in prompts:
            if len(p) > self.max_prompt_chars:
                raise InputTooLargeError(
                    f"Sub-call prompt has {len(p):,} characters, the limit is "
                    f"{self.max_prompt_chars:,}. Split the text into smaller chunks."
                )

    async def __call__(self, prompts: Sequence[str], *, model: str | None = None) -> list[str]:
        self._check(prompts)
        lm = None
        if model is not None and model != self.lm.model:
            lm = self.alternatives.get(model)
            if lm is None:
                known = ", ".join(sorted({self.lm.model, *self.alternatives})) or self.lm.model
                raise ConfigError(
                    f"llm_query: no sub-model named {model!r}. Available: {known}. "
                    "Leave model out to use the default."
                )
        factory = None if lm is not None else self.child_factory
        return list(await asyncio.gather(*(self._one(p, lm, factory) for p in prompts)))

    async def _one(self, prompt: str, lm: LM | None, factory: ChildFactory | None) -> str:
        # a sub-call that names its model is a plain call on that model, never a child run
        child = factory is not None
        self._counter += 1
        n = self._counter
        it = self._iteration()
        await emit(
            self.on_event,
            RLMEvent(
                "subcall_started",
                self.depth + 1,
                it,
                f"sub-call {n} ({len(prompt):,} chars)",
                {"index": n, "prompt_chars": len(prompt), "child": child},
            ),
        )
        t0 = time.perf_counter()
        if factory is not None:
            result = await factory(prompt, n)
            text = result.response
            record = SubCallRecord(
                prompt_chars=len(prompt),
                response_chars=len(text),
                model=result.root_model,
                input_tokens=result.usage.total_input_tokens,
                output_tokens=result.usage.total_output_tokens,
                cost=result.usage.total_cost,
                depth=self.depth + 1,
                child=True,
                trajectory=result.trajectory,
            )
        else:
            target = lm or self.lm
            comp = await target.complete([Message("user", prompt)], temperature=self.temperature)
            self.tracker.record(comp.usage, path=(*self.path, f"sub{n}"))
            text = comp.text or ""  # a provider may return an empty (None) message
            cost = comp.usage.cost
            if cost is None:
                cost = self.tracker.prices.cost(comp.usage)
            record = SubCallRecord(
                prompt_chars=len(prompt),
                response_chars=len(text),
                model=comp.usage.model,
                input_tokens=comp.usage.input_tokens,
                output_tokens=comp.usage.output_tokens,
                cost=cost,
                depth=self.depth + 1,
            )
        record.index = n
        record.duration_s = time.perf_counter() - t0
        record.prompt_preview = prompt[:SUBCALL_PREVIEW_CHARS]
        record.response_preview = text[:SUBCALL_PREVIEW_CHARS]
        self.records.append(record)
        await emit(
            self.on_event,
            RLMEvent(
                "subcall_finished",
                self.depth + 1,
                it,
                f"sub-call {n} answered ({len(text):,} chars)",
                record.to_dict() | {"index": n},
            ),
        )
        return text


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text[:SUBCALL_PREVIEW_CHARS]
