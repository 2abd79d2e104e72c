"""What an RLM is asked about: the `context` argument turned into the sandbox's view of it.

A plain `str` is always the text itself, whatever it starts with; a stored context is named by a
`StoredContext` (`store.get(handle_or_name)`), never by a string that happens to look like a
handle, so a user's text is never mistaken for a handle and a name never for text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlm_mcp.errors import ConfigError
from rlm_mcp.prompts import PREVIEW_CHARS, ContextSummary
from rlm_mcp.sandbox import ContextSpec
from rlm_mcp.store.ref import StoredContext

__all__ = ["ContextInput", "prepare_context"]

#: str | list[str] | dict[str, str] | StoredContext | ContextSpec
ContextInput = Any


def prepare_context(context: ContextInput) -> tuple[ContextSpec, ContextSummary]:
    """The sandbox's view of `context` and the few facts the system prompt states about it."""
    if isinstance(context, StoredContext):
        return _stored(context)
    if isinstance(context, ContextSpec):
        return _spec(context)
    if isinstance(context, str):
        summary = ContextSummary("str", len(context), 1, context[:PREVIEW_CHARS])
        return ContextSpec(text=context), summary
    if isinstance(context, Mapping):
        items = [(str(k), str(v)) for k, v in context.items()]
        kind = "dict[str, str] joined into one str"
    elif isinstance(context, Sequence):
        items = [(f"doc_{i}", str(v)) for i, v in enumerate(context)]
        kind = "list[str] joined into one str"
    else:
        raise ConfigError(
            f"Unsupported context type {type(context).__name__}: pass a str, a list of str, a "
            "dict of str, a stored context (store.get(handle_or_name)) or a ContextSpec."
        )
    return _joined(items, kind)


def _stored(context: StoredContext) -> tuple[ContextSpec, ContextSummary]:
    store, handle = context.store, context.handle
    info = store.info(handle)
    docs = [(d.path, d.start, d.length) for d in info.documents]
    spec = ContextSpec(path=store.text_path(handle), documents=docs)
    kind = "stored context" if len(docs) <= 1 else "stored documents"
    head = store.preview(handle, head=PREVIEW_CHARS, tail=0)
    return spec, ContextSummary(kind, info.chars, max(1, len(docs)), str(head)[:PREVIEW_CHARS])


def _spec(context: ContextSpec) -> tuple[ContextSpec, ContextSummary]:
    documents = max(1, len(context.documents))
    if context.text is not None:
        text = context.text
        return context, ContextSummary("str", len(text), documents, text[:PREVIEW_CHARS])
    if context.path is None:
        raise ConfigError("A ContextSpec needs a path or a text.")
    with open(context.path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(PREVIEW_CHARS)
    size = context.path.stat().st_size
    return context, ContextSummary("str", size, documents, head)


def _joined(items: list[tuple[str, str]], kind: str) -> tuple[ContextSpec, ContextSummary]:
    parts: list[str] = []
    docs: list[tuple[str, int, int]] = []
    pos = 0
    sep = "\n\n"
    for name, text in items:
        docs.append((name, pos, len(text)))
        parts.append(text)
        pos += len(text) + len(sep)
    joined = sep.join(parts)
    summary = ContextSummary(kind, len(joined), len(docs), joined[:PREVIEW_CHARS])
    return ContextSpec(text=joined, documents=docs), summary
