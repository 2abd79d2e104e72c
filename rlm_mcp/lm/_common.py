"""Pieces both SDK adapters share: the retry policy built from kwargs, and usage finishing."""

from __future__ import annotations

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
