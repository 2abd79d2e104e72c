"""Seeded, offline task generators: S-NIAH, OOLONG-style aggregation, OOLONG-Pairs-style pairs.

Why built from pre-made sentences: contexts go up to 100 M characters, so text is assembled by
`random.choices` over a fixed sentence pool and one `str.join`, never a per-character loop. The
same (suite, length, seed) always gives the same bytes, so runs are comparable across methods.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, combinations
from typing import Any

__all__ = [
    "LABELS",
    "Task",
    "generate",
    "make_oolong",
    "make_pairs",
    "make_sniah",
    "parse_length",
]

_FILLER = [
    "The morning train was late again, so most commuters read quietly by the window.",
    "A small bakery on the corner sells bread that is still warm at seven o'clock.",
    "Rivers in the valley rise each spring when the snow on the ridges begins to melt.",
    "The committee postponed its decision until the budget figures had been checked.",
    "Several volunteers repainted the fence around the community garden last weekend.",
    "Old maps of the harbour show a lighthouse that was demolished decades ago.",
    "She kept a notebook of bird sightings and compared it with her neighbour's list.",
    "The library extended its opening hours during the examination period.",
    "Wind turbines on the hill turned slowly in the light afternoon breeze.",
    "A delivery van blocked the narrow street for nearly twenty minutes.",
    "The museum's new exhibit explains how glass was made in medieval workshops.",
    "Farmers at the market argued cheerfully about whose tomatoes were sweeter.",
    "The engineer checked every bolt on the bridge before signing the report.",
    "Children raced paper boats along the gutter after the afternoon storm.",
    "Most of the guests arrived early and waited in the garden for the speeches.",
    "The old clock in the square has not shown the right time for years.",
    "A quiet path through the woods leads to a lake that few visitors know about.",
    "The choir rehearsed the same difficult passage until it finally sounded right.",
    "Prices at the hardware shop went up slightly after the new supplier arrived.",
    "He repaired the bicycle chain with a borrowed tool and a lot of patience.",
    "The report noted that attendance at evening classes had doubled since spring.",
    "Fog rolled in from the sea and hid the cliffs until almost noon.",
    "Two cats sat on the wall, watching the pigeons with obvious interest.",
    "The town council approved a plan to plant trees along the main avenue.",
]

_WORDS: tuple[str, ...] = (
    "amber",
    "azure",
    "birch",
    "cedar",
    "coral",
    "crimson",
    "delta",
    "ember",
    "falcon",
    "garnet",
    "harbor",
    "indigo",
    "jasper",
    "juniper",
    "lagoon",
    "maple",
    "meadow",
    "nectar",
    "onyx",
    "opal",
    "orchid",
    "pebble",
    "quartz",
    "raven",
    "saffron",
    "sierra",
    "summit",
    "tango",
    "thistle",
    "topaz",
    "tundra",
    "velvet",
    "willow",
    "zephyr",
    "cobalt",
    "lotus",
    "marble",
)

LABELS = (
    "abbreviation",
    "entity",
    "description and abstract concept",
    "human being",
    "location",
    "numeric value",
)

_ABBREVIATIONS = ("NASA", "UNESCO", "DNA", "HTML", "NATO", "GPS", "laser", "radar", "scuba")
_TOPICS = (
    "the Eiffel Tower",
    "the Amazon river",
    "the telephone",
    "penicillin",
    "the Mona Lisa",
    "jazz",
    "the printing press",
    "the bicycle",
    "coffee",
    "chess",
)
_TEMPLATES: dict[str, list[str]] = {
    "abbreviation": [
        "What does the abbreviation {a} stand for?",
        "What is {a} short for?",
        "What do the letters in {a} mean?",
    ],
    "entity": [
        "What instrument is most often played in {b}?",
        "Which animal appears on the flag associated with {b}?",
        "What colour is usually used to paint {b}?",
    ],
    "description and abstract concept": [
        "Why is {b} considered important?",
        "What is the meaning of the word {b}?",
        "How does {b} work?",
    ],
    "human being": [
        "Who invented {b}?",
        "Who was the first person to describe {b}?",
        "Which scientist is best known for studying {b}?",
    ],
    "location": [
        "Where is {b} located?",
        "In which country can you find {b}?",
        "What city is famous for {b}?",
    ],
    "numeric value": [
        "How many people visit {b} each year?",
        "In what year was {b} first recorded?",
        "How long is {b} in kilometres?",
    ],
}


@dataclass(frozen=True)
class Task:
    """One benchmark item. `scorer` names a function in `scorers.SCORERS`."""

    task_id: str
    suite: str
    context: str
    question: str
    answer: str
    scorer: str
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_length(text: str) -> int:
    """'100k' -> 100_000, '1m' -> 1_000_000, '16384' -> 16384 (characters)."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    num = t[:-1] if mult != 1 else t
    return int(float(num) * mult)


def _filler(rng: random.Random, n_chars: int) -> list[str]:
    """Sentences (each with a trailing space) totalling about `n_chars`."""
    avg = sum(len(s) + 1 for s in _FILLER) / len(_FILLER)
    parts = [s + " " for s in rng.choices(_FILLER, k=int(n_chars / avg * 1.05) + 2)]
    ends = list(accumulate(len(p) for p in parts))
    return parts[: max(1, bisect.bisect_right(ends, n_chars))]


def _key(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randrange(100, 1000)}"


def make_sniah(
    length: int, *, seed: int = 0, depth: float | None = None, n_distractors: int = 4
) -> Task:
    """RULER-style single needle at `depth` (0..1 of the text) plus needles for other keys."""
    rng = random.Random(f"sniah-{length}-{seed}")
    depth = rng.random() if depth is None else depth
    key = _key(rng)
    keys = {key}
    while len(keys) < n_distractors + 1:
        keys.add(_key(rng))
    numbers = rng.sample(range(1_000_000, 10_000_000), len(keys))
    answer = str(numbers[0])
    needles = [f"The special magic number for {key} is {answer}. "] + [
        f"The special magic number for {k} is {n}. "
        for k, n in zip(sorted(keys - {key}), numbers[1:], strict=True)
    ]
    fill_chars = max(0, length - sum(len(n) for n in needles))
    parts = _filler(rng, fill_chars)
    positions = [int(depth * len(parts))] + [rng.randrange(len(parts) + 1) for _ in needles[1:]]
    # Insert from the back so earlier indices stay valid; the true needle goes last among equals.
    for pos, needle in sorted(zip(positions, needles, strict=True), key=lambda x: -x[0]):
        parts.insert(pos, needle)
    context = "".join(parts)
    return Task(
        task_id=f"sniah-{length}-{seed}",
        suite="sniah",
        context=context,
        question=(
            f"What is the special magic number for {key} mentioned in the provided text? "
            "Answer with the number only."
        ),
        answer=answer,
        scorer="exact",
        metadata={
            "key": key,
            "depth": round(depth, 4),
            "needle_offset": context.index(needles[0]),
            "distractor_keys": sorted(keys - {key}),
            "length": len(context),
        },
    )


def _records(
    rng: random.Random, length: int, users: list[int], user_labels: dict[int, list[str]]
) -> tuple[list[str], list[tuple[int, str]]]:
    """Dated user records whose label is only implied by the question text."""
    out: list[str] = []
    labels: list[tuple[int, str]] = []
    total = 0
    day0 = 738_000  # ordinal date in 2021
    while total < length:
        user = rng.choice(users)
        label = rng.choice(user_labels[user])
        text = rng.choice(_TEMPLATES[label]).format(
            a=rng.choice(_ABBREVIATIONS), b=rng.choice(_TOPICS)
        )
        date = _dt.date.fromordinal(day0 + rng.randrange(1000)).strftime("%b %d, %Y")
        line = f"Date: {date} || User: {user} || Instance: {text}\n"
        out.append(line)
        labels.append((user, label))
        total += len(line)
    return out, labels


_HEADER = (
    "The following lines contain questions asked by users. Each question can be labelled as one "
    "of: " + ", ".join(LABELS) + ". The label is not given; infer it from the question.\n"
)


def make_oolong(length: int, *, seed: int = 0, kind: str | None = None) -> Task:
    """Aggregation over every record: a count, most/least frequent label, or a comparison."""
    rng = random.Random(f"oolong-{length}-{seed}")
    users = rng.sample(range(10_000, 100_000), 50)
    weights = {lab: rng.uniform(0.5, 2.0) for lab in LABELS}
    # Skew the label distribution so most/least frequent are well defined.
    pool = [lab for lab in LABELS for _ in range(int(weights[lab] * 10))]
    user_labels = {u: pool for u in users}
    lines, labels = _records(rng, max(0, length - len(_HEADER)), users, user_labels)
    counts = Counter(lab for _, lab in labels)
    kind = kind or rng.choice(["count", "most", "least", "compare"])
    if kind == "count":
        label = rng.choice(LABELS)
        question = f"How many data points should be classified as label '{label}'? Give a number."
        answer, scorer = str(counts[label]), "oolong"
    elif kind in ("most", "least"):
        ranked = sorted(LABELS, key=lambda lab: (counts[lab], lab))
        target = ranked[-1] if kind == "most" else ranked[0]
        word = "most" if kind == "most" else "least"
        question = f"Which label is the {word} common across all data points? Give the label only."
        answer, scorer = target, "oolong"
    else:
        a, b = rng.sample(LABELS, 2)
        question = (
            f"Is label '{a}' more common, less common, or the same frequency as label '{b}'? "
            "Answer with 'more common than', 'less common than' or 'same frequency as'."
        )
        rel = (
            "more common than"
            if counts[a] > counts[b]
            else "less common than"
            if counts[a] < counts[b]
            else "same frequency as"
        )
        answer, scorer = rel, "oolong"
    return Task(
        task_id=f"oolong-{length}-{seed}",
        suite="oolong",
        context=_HEADER + "".join(lines),
        question=question,
        answer=answer,
        scorer=scorer,
        metadata={"kind": kind, "counts": dict(counts), "records": len(lines)},
    )


def make_pairs(length: int, *, seed: int = 0, n_users: int = 20) -> Task:
    """Answer = every pair of user ids where both users asked at least one `label` question."""
    rng = random.Random(f"pairs-{length}-{seed}")
    users = sorted(rng.sample(range(10_000, 100_000), n_users))
    user_labels = {u: rng.sample(LABELS, rng.randint(2, 4)) for u in users}
    lines, labels = _records(rng, max(0, length - len(_HEADER)), users, user_labels)
    label = rng.choice(LABELS)
    have = sorted({u for u, lab in labels if lab == label})
    pairs = [f"({a}, {b})" for a, b in combinations(have, 2)]
    return Task(
        task_id=f"pairs-{length}-{seed}",
        suite="pairs",
        context=_HEADER + "".join(lines),
        question=(
            f"List all pairs of user IDs (each pair once, lower ID first) where both users have "
            f"at least one instance with the label '{label}'. Write each pair as (ID1, ID2)."
        ),
        answer="\n".join(pairs),
        scorer="pairs_f1",
        metadata={"label": label, "users_with_label": have, "n_pairs": len(pairs)},
    )


_MAKERS: dict[str, Callable[..., Task]] = {
    "sniah": make_sniah,
    "oolong": make_oolong,
    "pairs": make_pairs,
}


def generate(suite: str, length: int, *, seed: int = 0) -> Task:
    """One task of `suite` ('sniah', 'oolong', 'pairs') with about `length` characters."""
    from rlm_mcp.errors import ConfigError

    try:
        maker = _MAKERS[suite]
    except KeyError:
        raise ConfigError(f"unknown suite {suite!r}; choose one of {sorted(_MAKERS)}") from None
    return maker(length, seed=seed)
