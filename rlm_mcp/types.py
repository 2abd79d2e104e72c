"""Result and record types of an RLM run; plain dataclasses so they survive JSON both ways."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlm_mcp.lm.usage import UsageSummary

__all__ = [
    "CodeBlockRecord",
    "CompactionRecord",
    "EventKind",
    "IterationRecord",
    "RLMChatCompletion",
    "RLMEvent",
    "StopReason",
    "SubCallRecord",
    "ToolCallRecord",
]

#: Why a run ended. "final": the model answered; "invalid_answer": it answered, but never in the
#: shape the caller's schema asks for; the rest name the limit that stopped it.
StopReason = Literal[
    "final",
    "invalid_answer",
    "max_iterations",
    "max_errors",
    "max_tokens",
    "max_cost",
    "max_time",
    "error",
]

EventKind = Literal[
    "run_started",
    "iteration_started",
    "iteration_finished",
    "subcall_started",
    "subcall_finished",
    "compacted",
    "run_finished",
]


@dataclass(frozen=True)
class RLMEvent:
    """Progress of a run, for callbacks (the MCP server turns these into notifications)."""

    kind: EventKind
    depth: int
    iteration: int | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubCallRecord:
    prompt_chars: int
    response_chars: int
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    depth: int = 1
    child: bool = False  # answered by a child RLM rather than one LM call
    # For the trajectory viewer: which call of its run, how long it took, the heads of the
    # prompt and answer (clipped, see subcalls.SUBCALL_PREVIEW_CHARS) and a child run's turns.
    index: int = 0
    duration_s: float = 0.0
    prompt_preview: str = ""
    response_preview: str = ""
    trajectory: list[IterationRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubCallRecord:
        d = dict(data)
        d["trajectory"] = [IterationRecord.from_dict(r) for r in d.get("trajectory", [])]
        return cls(**d)


@dataclass
class ToolCallRecord:
    """One call of a caller's tool from sandboxed code (heads of its arguments and result)."""

    name: str
    ok: bool
    duration_s: float = 0.0
    arguments_preview: str = ""
    result_preview: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CodeBlockRecord:
    code: str
    status: str
    output: str
    error: str | None = None
    duration_s: float = 0.0
    truncated: bool = False
    sub_calls: list[SubCallRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodeBlockRecord:
        d = dict(data)
        d["sub_calls"] = [SubCallRecord.from_dict(s) for s in d.get("sub_calls", [])]
        d["tool_calls"] = [ToolCallRecord(**t) for t in d.get("tool_calls", [])]
        return cls(**d)


@dataclass
class CompactionRecord:
    """The root's earlier turns were replaced by its own summary before this iteration."""

    chars_before: int
    chars_after: int
    messages_summarized: int
    summary_preview: str = ""
    input_tokens: int = 0
    output_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IterationRecord:
    iteration: int
    prompt_chars: int
    response: str
    code_blocks: list[CodeBlockRecord] = field(default_factory=list)
    final_answer: str | None = None
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    compaction: CompactionRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationRecord:
        d = dict(data)
        d["code_blocks"] = [CodeBlockRecord.from_dict(c) for c in d.get("code_blocks", [])]
        if d.get("compaction") is not None:
            d["compaction"] = CompactionRecord(**d["compaction"])
        return cls(**d)


@dataclass
class RLMChatCompletion:
    """What `RLM.completion` returns; `usage` covers every call of the tree (root, sub, child).

    `partial` is True when no final answer was given (a budget, the iteration or error limit
    stopped the run): `response` is then the best partial answer, never dressed up as final.
    `answer_json` is the validated value when the completion was asked for a `schema`.
    """

    response: str
    usage: UsageSummary
    iterations: int
    trajectory: list[IterationRecord]
    stop_reason: StopReason
    execution_time: float
    root_model: str = ""
    trajectory_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    partial: bool = False
    answer_json: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "response": self.response,
            "usage": self.usage.to_dict(),
            "iterations": self.iterations,
            "trajectory": [r.to_dict() for r in self.trajectory],
            "stop_reason": self.stop_reason,
            "execution_time": self.execution_time,
            "root_model": self.root_model,
            "trajectory_path": None if self.trajectory_path is None else str(self.trajectory_path),
            "notes": list(self.notes),
            "partial": self.partial,
            "answer_json": self.answer_json,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLMChatCompletion:
        path = data.get("trajectory_path")
        return cls(
            response=data["response"],
            usage=UsageSummary.from_dict(data["usage"]),
            iterations=data["iterations"],
            trajectory=[IterationRecord.from_dict(r) for r in data.get("trajectory", [])],
            stop_reason=data["stop_reason"],
            execution_time=data["execution_time"],
            root_model=data.get("root_model", ""),
            trajectory_path=None if path is None else Path(path),
            notes=list(data.get("notes", [])),
            partial=bool(data.get("partial", False)),
            answer_json=data.get("answer_json"),
        )
