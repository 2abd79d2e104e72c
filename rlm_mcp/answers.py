"""Typed answers: the caller gives a JSON Schema, the run's answer comes back validated.

A model's final answer is text; with a schema it must be JSON that validates (a schema whose type
is a string also takes plain text). An answer that does not validate is never returned as if it
did: the loop tells the model what is wrong and asks again, and a run that never gets it right
ends with `stop_reason="invalid_answer"` and `answer_json=None`.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from rlm_mcp.errors import ConfigError

__all__ = ["check_schema", "parse_answer", "schema_prompt"]

MAX_SCHEMA_CHARS = 20_000
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```\s*$", re.DOTALL)


def check_schema(schema: Any) -> dict[str, Any]:
    """The schema if it is a valid JSON Schema object of reasonable size; else one ConfigError."""
    if not isinstance(schema, Mapping):
        raise ConfigError(
            f"schema must be a JSON Schema object (a dict), got {type(schema).__name__}"
        )
    checked: dict[str, Any] = dict(schema)
    try:
        text = json.dumps(checked)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"schema is not JSON: {exc}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise ConfigError(
            f"schema has {len(text):,} characters of JSON, over the {MAX_SCHEMA_CHARS:,} limit"
        )
    try:
        jsonschema.validators.validator_for(checked).check_schema(checked)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top level"
        raise ConfigError(f"schema is not a valid JSON Schema at {where}: {exc.message}") from None
    return checked


def parse_answer(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(the value, None) when `text` validates against `schema`; (None, what is wrong) if not."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
    value = _decode(candidate)
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return value, None
    where = "/".join(str(p) for p in error.absolute_path)
    return None, (f"at {where}: " if where else "") + error.message[:500]


def _decode(text: str) -> Any:
    """JSON; else a Python literal of JSON values (FINAL_VAR of a dict gives its repr, with
    single quotes and True); else the text itself, as a JSON string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text[:1] in "[{":
        try:
            return json.loads(json.dumps(ast.literal_eval(text), allow_nan=False))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    return text


def schema_prompt(schema: dict[str, Any]) -> str:
    """The root prompt's section saying what shape the answer must have."""
    return (
        "\n\nYour final answer must be JSON that validates against this JSON Schema (give it with "
        "FINAL_VAR(name) of a dict or list you built in code, or FINAL(<the JSON>)):\n"
        + json.dumps(schema, indent=None)
    )
