"""Text that can always be sent: no lone surrogates.

Python strings can hold lone surrogates that no UTF-8 encoder accepts: a provider's JSON escape cut
from its pair (`\\ud83d`), a file name that is not UTF-8 (decoded with surrogateescape), or code
that builds one. Sent as they are, they break a JSON result, an HTTP response or a trajectory
write far from where they came in, so they are replaced with U+FFFD where text enters: model
replies, file names, tool results.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["clean", "clean_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (the same object when it has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def clean(value: Any) -> Any:
    """`clean_text` through JSON-like data (dicts, lists, strings); other values as they are."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value
