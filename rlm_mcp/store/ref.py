"""`StoredContext`: the typed way to say "this stored context" to the library.

A plain `str` given to `RLM.completion` is always the text itself. A context that lives in a
`ContextStore` is passed as a `StoredContext` (from `store.get(handle_or_name)`), so a user's
text that happens to start with ``ctx_`` is never taken for a handle, and a name is never taken
for text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlm_mcp.store import ContextStore

__all__ = ["StoredContext"]


@dataclass(frozen=True, slots=True)
class StoredContext:
    """A context in `store` under `handle` (always the resolved ``ctx_...`` handle, not a name)."""

    store: ContextStore
    handle: str

    def __repr__(self) -> str:
        return f"StoredContext({self.handle!r})"
