"""Pieces both SDK adapters share: the retry policy built from kwargs, and usage finishing."""

from __future__ import annotations

from typing import Any

from rlm_mcp.lm.base import Usage
from rlm_mcp.lm.prices import PriceTable


def priced(usage: Usage, prices: PriceTable | None) -> Usage:
    """Fill in the cost from the price table when one was given."""
    if prices is None:
        return usage
    from dataclasses import replace

    return replace(usage, cost=prices.cost(usage))


def is_malformed(exc: BaseException) -> bool:
    """A 2xx answer we could not read: bad JSON, missing fields, wrong types."""
    name = type(exc).__name__
    return isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)) or (
        "ResponseValidation" in name or "JSONDecode" in name
    )


def preset_platform(client: Any, sdk_module: str) -> None:
    """Fill in the OS name an SDK client sends in its headers, so its first request makes no
    thread hop.

    The openai and anthropic SDKs detect the platform on a client's first request in a worker
    thread (`asyncify(get_platform)`); we make one client per event loop, so every new loop paid
    a thread hop, which stalled for seconds on a loaded machine. The probe itself is a few
    `os.uname()` reads, cheap enough to run inline. If an SDK version changes these internals we
    leave the client alone and it probes as before.
    """
    import importlib

    if getattr(client, "_platform", ...) is not None:
        return
    probe = getattr(importlib.import_module(sdk_module), "get_platform", None)
    if callable(probe):
        client._platform = probe()
