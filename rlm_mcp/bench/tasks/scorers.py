"""Scorers: exact match (S-NIAH), OOLONG's numeric/exact rule, and F1 over user-id pairs.

Lenient on form, strict on content: models wrap answers in prose, so we strip an "Answer:" prefix
and punctuation, and parse pairs from free text, but the value itself must be right.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["SCORERS", "exact", "normalise", "oolong", "pairs_f1", "parse_pairs", "score"]

_PREFIX = re.compile(r"^\s*(final\s+answer|answer)\s*[:\-]\s*", re.I)


def normalise(text: str) -> str:
    """Lowercase, drop an 'Answer:' prefix, quotes and punctuation, collapse whitespace."""
    t = _PREFIX.sub("", text.strip())
    t = re.sub(r"[\"'`*.,;:!?()\[\]{}]", " ", t.lower())
    return " ".join(t.split())


def exact(prediction: str, answer: str) -> float:
    """1.0 when the normalised texts match, or when a numeric answer is the only number given."""
    if normalise(prediction) == normalise(answer):
        return 1.0
    if answer.strip().isdigit():
        return 1.0 if re.findall(r"\d+", prediction) == [answer.strip()] else 0.0
    return 0.0


def oolong(prediction: str, answer: str) -> float:
    """OOLONG: numeric answers score 0.75 ** |y - y_hat| (first number given); others exact."""
    if re.fullmatch(r"-?\d+", answer.strip()):
        nums = re.findall(r"-?\d+", prediction)
        if not nums:
            return 0.0
        return float(0.75 ** abs(int(nums[0]) - int(answer)))
    p, a = normalise(prediction), normalise(answer)
    return 1.0 if p == a or (a and p.endswith(a) and len(p) - len(a) < 20) else 0.0


_PAIR = re.compile(r"(\d+)\s*(?:,|and|&|-|/)\s*(\d+)")


def parse_pairs(text: str) -> set[tuple[int, int]]:
    """Unordered id pairs from free text: '(1, 2)', '1 and 2', '[1,2]' all count."""
    out: set[tuple[int, int]] = set()
    for a, b in _PAIR.findall(text):
        x, y = int(a), int(b)
        if x != y:
            out.add((min(x, y), max(x, y)))
    return out


def pairs_f1(prediction: str, answer: str) -> float:
    """F1 of predicted vs true pairs; both empty is a perfect 1.0."""
    pred, gold = parse_pairs(prediction), parse_pairs(answer)
    if not pred and not gold:
        return 1.0
    hit = len(pred & gold)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(pred), hit / len(gold)
    return 2 * precision * recall / (precision + recall)


SCORERS: dict[str, Callable[[str, str], float]] = {
    "exact": exact,
    "oolong": oolong,
    "pairs_f1": pairs_f1,
}


def score(scorer: str, prediction: str, answer: str) -> float:
    from rlm_mcp.errors import ConfigError

    try:
        fn = SCORERS[scorer]
    except KeyError:
        raise ConfigError(f"unknown scorer {scorer!r}; choose one of {sorted(SCORERS)}") from None
    return fn(prediction, answer)
