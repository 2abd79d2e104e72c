"""Names of stored contexts: what a name may be, so it can never be mistaken for a handle.

A name that looked like a handle (`ctx_...`) could equal another context's handle, and after that
context was deleted the handle returned the impostor's text. A name with direction-control
characters shows one thing and means another in a client's UI. So a name is 1-128 printable
characters, without those controls, and never starts with `ctx_`; and a lookup of a `ctx_...`
string is only ever a handle lookup, anything else only ever a name lookup.
"""

from __future__ import annotations

from typing import Any

from rlm_mcp.errors import InvalidNameError

__all__ = ["HANDLE_PREFIX", "MAX_NAME_CHARS", "is_handle_form", "swap", "validate_name"]

HANDLE_PREFIX = "ctx_"
MAX_NAME_CHARS = 128
#: Characters that reorder how text is shown (Trojan-Source style): a name must not hold them.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def is_handle_form(ref: str) -> bool:
    """Whether `ref` is spelled like a handle (and so is looked up only as one)."""
    return ref[: len(HANDLE_PREFIX)].lower() == HANDLE_PREFIX


def validate_name(name: str) -> str:
    """`name` if it may name a context; otherwise InvalidNameError saying which rule it broke."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError("A name must not be empty: send 1-128 printable characters.")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidNameError(
            f"A name is at most {MAX_NAME_CHARS} characters (this one has {len(name):,}): send a "
            "shorter name."
        )
    if any(ch in BIDI_CONTROLS for ch in name):
        raise InvalidNameError(
            "A name must not contain direction-control characters (U+202A-U+202E, U+2066-U+2069, "
            "...): send plain printable characters."
        )
    if not name.isprintable():
        raise InvalidNameError(
            "A name must be printable (no tabs, newlines or control characters): send plain "
            "printable characters."
        )
    if is_handle_form(name):
        raise InvalidNameError(
            f"A name must not start with {HANDLE_PREFIX!r}, which is how handles are spelled: "
            "choose a name such as 'logs' or 'q3-contracts'."
        )
    return name


def swap(cache: Any, key: Any, expected: Any, value: Any) -> bool:
    """Set `key` to `value` if it holds `expected` (None: absent), atomically; False if not.

    A shared store does it with a conditional write; a local diskcache inside one SQLite
    transaction, which also holds across processes on the same store.
    """
    cas = getattr(cache, "compare_and_set", None)
    if cas is not None:
        return bool(cas(key, expected, value))
    with cache.transact():
        if cache.get(key) != expected:
            return False
        cache.set(key, value)
        return True
