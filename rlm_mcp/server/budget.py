"""One size budget for a whole tool result.

Sandboxed code and models decide how long a final answer, a sub-model reply, an error or a
variable summary is; the client's model has to read every character of a result, and its MCP
client parses it on its event loop (an 80 MB answer blocked one for 33 s). So every field that
code or a model can influence is capped here, in the server, whatever the worker already cut (a
compromised worker is not trusted to cap itself), and the result as a whole stays within
RLM_MCP_MAX_RESULT_CHARS.

A long text is never just lost: what does not fit is stored whole as a context of the caller, and
the cut says which handle holds it and how to read ranges of it (`rlm://contexts/H/chars/A-B`, or
`run_repl` with that handle). That is also how a large final answer is sent once: as a handle,
not twice inline (structured content and its text copy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.errors import RLMError

if TYPE_CHECKING:
    from rlm_mcp.store import ContextStore

__all__ = ["MAX_FIELD_CHARS", "MAX_LIST_ITEMS", "cap", "cap_list", "spill"]

logger = logging.getLogger(__name__)

#: Small fields (names, types, summaries, notes, errors) are cut here.
MAX_FIELD_CHARS = 2_000
#: Lists (variables, notes, contexts) show at most this many items, then say how many more.
MAX_LIST_ITEMS = 50
#: How much of a text that was stored instead of sent still appears inline.
SPILL_PREVIEW_CHARS = 2_000


def cap(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text` cut at `limit` characters, with a marker that says how long it was."""
    if len(text) <= limit:
        return text
    marker = f" [... cut: {len(text):,} chars in all]"
    return text[: max(0, limit - len(marker))] + marker


def cap_list(items: Sequence[Any], limit: int = MAX_LIST_ITEMS) -> tuple[list[Any], int]:
    """The first `limit` items and how many were left out."""
    return list(items[:limit]), max(0, len(items) - limit)


async def spill(
    store: ContextStore | None, text: str, limit: int, what: str
) -> tuple[str, str | None]:
    """(what to send, handle of the stored whole text or None) for a text that may be too long.

    Within `limit` the text is sent as it is. Beyond it, the whole text becomes a context (so
    the caller can slice it) and only its head is sent, with a marker naming the handle. If the
    store refuses (full, capped), the text is cut and the marker says the rest is gone.
    """
    if len(text) <= limit:
        return text, None
    head = min(limit, SPILL_PREVIEW_CHARS)
    handle = None
    if store is not None:
        try:
            info = await anyio.to_thread.run_sync(lambda: store.load_text(text, source=what))
            handle = info.handle
        except RLMError as exc:
            logger.warning("could not store a %s of %d chars: %s", what, len(text), exc)
    if handle is None:
        return (
            text[:head] + f"\n[... {what} cut: {len(text):,} chars in all, over this server's "
            f"result budget of {limit:,}, and it could not be stored; ask for less]",
            None,
        )
    end = min(len(text), head + 50_000)
    return (
        text[:head] + f"\n[... {what} cut at {head:,} of {len(text):,} chars; all of it is "
        f"stored as context {handle}: read rlm://contexts/{handle}/chars/{head}-{end}, or "
        f"run_repl with handle={handle!r} and print slices of `context`]",
        handle,
    )


def fit(model: Any, limit: int, fields: Sequence[str]) -> Any:
    """`model` (a pydantic result) with its longest `fields` cut until its JSON fits `limit`.

    Field caps keep each part small; this keeps their sum small too, whatever an operator set
    the individual caps to. Each cut says so in the field itself.
    """
    for _ in range(len(fields) * 2):
        size = len(model.model_dump_json())
        if size <= limit:
            return model
        longest = max(fields, key=lambda f: len(getattr(model, f) or ""))
        text = getattr(model, longest) or ""
        if not text:
            return model
        keep = max(0, len(text) - (size - limit) - 100)
        model = model.model_copy(update={longest: cap(text, keep)})
    return model
