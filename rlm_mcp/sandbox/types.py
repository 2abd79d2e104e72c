"""Values that cross the sandbox seam. The model's mistakes are data here, never exceptions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "ErrorInfo",
    "ExecResult",
    "ExecStatus",
    "FinalAnswer",
    "SubCallHandler",
    "VariableInfo",
]

#: ok: ran to the end; error: the code raised; timeout: interrupted (state kept) or killed
#: (`reset` says which); violation: refused by the sandbox policy (compile or run time);
#: crashed: the worker died (memory, signal) and the session was reset.
ExecStatus = Literal["ok", "error", "timeout", "violation", "crashed"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    type: str
    message: str
    line: int | None = None  # line in the *user's* code, 1-based


@dataclass(frozen=True, slots=True)
class VariableInfo:
    name: str
    type: str
    summary: str  # short: "str, 1,024 chars", "list, 12 items", "int = 42"


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """Set when the code called FINAL(...)/FINAL_VAR(...) or set answer["ready"] = True."""

    value: str
    source: Literal["FINAL", "FINAL_VAR", "answer"]
    variable: str | None = None
    chars: int = 0  # the answer's full length (value may be cut at SandboxLimits.max_final_chars)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ExecResult:
    status: ExecStatus
    output: str = ""
    error: ErrorInfo | None = None
    variables: tuple[VariableInfo, ...] = ()
    truncated: bool = False
    output_chars: int = 0  # characters printed before the cap was applied
    duration_s: float = 0.0
    reset: bool = False  # the worker was killed and restarted: every variable is gone
    final: FinalAnswer | None = None
    sub_calls: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SubCallHandler(Protocol):
    """The parent's answer to `llm_query`/`llm_query_batched` from sandboxed code.

    It gets every prompt of one call at once (one for `llm_query`), answers them (concurrently,
    under the process-wide limit) and returns the texts in order. Raising `RLMError` makes the
    sandboxed call raise a `RuntimeError` with that message, which the model can read.
    """

    async def __call__(self, prompts: Sequence[str], *, model: str | None = None) -> list[str]: ...


# A handler may also offer, found by attribute (the RLM's router does; run_repl's does not):
#   async rlm(prompts) -> list[str]        rlm_query: a child run per prompt
#   tool_docs: Mapping[str, str]           the caller's tools (name -> description for the code)
#   async tool(name, args, kwargs) -> Any  run one of them; the result must be JSON
