"""The tools' result types: each pydantic model is published as the tool's output schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ContextSummary(BaseModel):
    """A stored context as the model sees it."""

    handle: str
    name: str | None
    chars: int
    lines: int
    documents: int
    source: str
    preview: str = ""


class ContextList(BaseModel):
    contexts: list[ContextSummary]


class Deleted(BaseModel):
    handle: str
    deleted: bool


class ReplVariable(BaseModel):
    name: str
    type: str
    summary: str


class ReplResult(BaseModel):
    status: str = Field(description="ok, error, timeout, violation or crashed")
    output: str
    error: str | None = None
    variables: list[ReplVariable] = []
    truncated: bool = Field(False, description="output was cut; print less or slice")
    reset: bool = Field(False, description="the session was restarted; variables are gone")
    final: str | None = None
    notes: list[str] = Field(
        default_factory=list, description="what the sandbox did to this call (cut, interrupted)"
    )
    session: str = Field(description="pass this back as `session` to keep these variables")
    sub_calls: int = 0
    usage: dict[str, Any] | None = Field(None, description="tokens/cost of llm_query calls")


class CompleteResult(BaseModel):
    answer: str
    iterations: int
    stop_reason: str
    usage: dict[str, Any]
    trajectory: str | None = Field(None, description="trajectory JSONL path on the server")
    trajectory_resource: str | None = Field(
        None, description="rlm:// URI of the run's trajectory (append /view for the HTML page)"
    )


class QueryResult(BaseModel):
    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None


class TrajectoryInfo(BaseModel):
    run_id: str
    uri: str
    bytes: int
    modified: float
