"""The tools' result types: each pydantic model is published as the tool's output schema.

Clients validate every structured result against that schema (the Python SDK with
`jsonschema`), so its shape is a per-call cost: `anyOf [X, null]` and `$ref` made validating a
`run_repl` result take twice as long as the flat form used here (`"type": [X, "null"]`, nested
objects inline), which is also shorter in `tools/list`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema


def _nullable(json_type: str) -> WithJsonSchema:
    return WithJsonSchema({"type": [json_type, "null"]})


def _list_of(model: type[BaseModel]) -> WithJsonSchema:
    return WithJsonSchema({"type": "array", "items": model.model_json_schema()})


OptStr = Annotated[str | None, _nullable("string")]
OptInt = Annotated[int | None, _nullable("integer")]


class ContextSummary(BaseModel):
    """A stored context as the model sees it."""

    handle: str
    name: OptStr
    chars: int
    lines: int
    documents: int
    source: str
    preview: str = ""


class ContextList(BaseModel):
    contexts: Annotated[list[ContextSummary], _list_of(ContextSummary)]


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
    error: OptStr = None
    variables: Annotated[list[ReplVariable], _list_of(ReplVariable)] = []
    truncated: bool = Field(False, description="output was cut; print less or slice")
    reset: bool = Field(False, description="the session was restarted; variables are gone")
    final: OptStr = None
    notes: list[str] = Field(
        default_factory=list, description="what the sandbox did to this call (cut, interrupted)"
    )
    session: str = Field(description="pass this back as `session` to keep these variables")
    sub_calls: int = 0
    usage: Annotated[dict[str, Any] | None, _nullable("object")] = Field(
        None, description="tokens/cost of llm_query calls"
    )


class CompleteResult(BaseModel):
    answer: str
    iterations: int
    stop_reason: str
    usage: dict[str, Any]
    trajectory: OptStr = Field(None, description="trajectory JSONL path on the server")
    trajectory_resource: OptStr = Field(
        None, description="rlm:// URI of the run's trajectory (append /view for the HTML page)"
    )


class QueryResult(BaseModel):
    text: str
    model: str
    input_tokens: OptInt = None
    output_tokens: OptInt = None


class TrajectoryInfo(BaseModel):
    run_id: str
    uri: str
    bytes: int
    modified: float
