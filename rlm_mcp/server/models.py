"""The tools' result types: each pydantic model is published as the tool's output schema.

Clients validate every structured result against that schema (the Python SDK with
`jsonschema`), so its shape is a per-call cost: `anyOf [X, null]` and `$ref` made validating a
`run_repl` result take twice as long as the flat form used here (`"type": [X, "null"]`, nested
objects inline), which is also shorter in `tools/list`.

Fields still at their default (null, false, 0, empty) are left out of a result (`_quiet`): the
client's model reads every result as JSON text on every turn, and a `run_repl` result full of
`"error": null, "reset": false, ...` cost it ~120 characters (30-40 tokens) to say nothing; it
also halves the client's validation work. The schema keeps every field, with its default, and
requires none of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema


def _nullable(json_type: str) -> WithJsonSchema:
    return WithJsonSchema({"type": [json_type, "null"]})


def _list_of(model: type[BaseModel]) -> WithJsonSchema:
    return WithJsonSchema({"type": "array", "items": model.model_json_schema()})


def _is_empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or value in ("", [], {})


def _quiet(default: Any = None, **kwargs: Any) -> Any:
    """A field with a default that is left out of the result while it holds that default."""
    if isinstance(default, list | dict):
        return Field(default_factory=type(default), exclude_if=_is_empty, **kwargs)
    return Field(default, exclude_if=_is_empty, **kwargs)


OptStr = Annotated[str | None, _nullable("string")]
OptInt = Annotated[int | None, _nullable("integer")]


class ContextSummary(BaseModel):
    """A stored context as the model sees it."""

    handle: str
    name: OptStr = _quiet()
    chars: int
    lines: int
    documents: int = _quiet(0, description="files in a directory or glob load")
    source: str
    preview: str = _quiet("")
    replaced: int = _quiet(0, description="undecodable bytes shown as U+FFFD (binary input?)")
    skipped: Annotated[dict[str, int], WithJsonSchema({"type": "object"})] = _quiet(
        {}, description="files a directory or glob load left out, by reason"
    )


class ContextList(BaseModel):
    contexts: Annotated[list[ContextSummary], _list_of(ContextSummary)]
    more: int = _quiet(0, description="contexts not listed (oldest first are shown)")


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
    error: OptStr = _quiet()
    variables: Annotated[list[ReplVariable], _list_of(ReplVariable)] = _quiet(
        [], description="variables this call created or changed"
    )
    truncated: bool = _quiet(False, description="output was cut; print less or slice")
    reset: bool = _quiet(False, description="the session was restarted; variables are gone")
    final: OptStr = _quiet()
    final_context: OptStr = _quiet(
        description="when `final` was too long for a result: the context that holds all of it"
    )
    notes: list[str] = _quiet(
        [], description="what the sandbox did to this call (cut, interrupted)"
    )
    session: str = Field(description="pass this back as `session` to keep these variables")
    sub_calls: int = _quiet(0)
    usage: Annotated[dict[str, Any] | None, _nullable("object")] = _quiet(
        description="tokens/cost of llm_query calls"
    )


class CompleteResult(BaseModel):
    answer: str
    answer_context: OptStr = _quiet(
        description="when the answer was too long for a result: the context that holds all of it"
    )
    iterations: int
    stop_reason: str
    partial: bool = _quiet(
        False, description="no final answer was reached: `answer` is the best partial one"
    )
    answer_json: Any = Field(
        None,
        exclude_if=lambda v: v is None,  # 0, false and [] are answers
        description="the answer parsed and validated by answer_schema",
    )
    run_id: str = Field(description="send back with a follow-up query to continue this run")
    notes: list[str] = _quiet([], description="how the run ended, and what was left out")
    usage: dict[str, Any]
    trajectory: OptStr = _quiet(description="trajectory JSONL path on the server")
    trajectory_resource: OptStr = _quiet(
        description="rlm:// URI of the run's trajectory (append /view for the HTML page)"
    )


class QueryResult(BaseModel):
    text: str
    text_context: OptStr = _quiet(
        description="when the reply was too long for a result: the context that holds all of it"
    )
    model: str
    input_tokens: OptInt = _quiet()
    output_tokens: OptInt = _quiet()
    slice_cut: bool = _quiet(False, description="the context slice was cut to the range cap")
    notes: list[str] = _quiet([], description="what was cut, and how to get the rest")


class TrajectoryInfo(BaseModel):
    run_id: str
    uri: str
    bytes: int
    modified: float
