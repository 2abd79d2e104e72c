import hashlib
import json
import re
from collections import Counter
from itertools import combinations

import pytest

from rlm_mcp.bench.tasks import LABELS, generate, load_taskfile, make_sniah, parse_length
from rlm_mcp.bench.tasks.generators import _TEMPLATES
from rlm_mcp.errors import ConfigError


def _digest(suite: str, length: int, seed: int) -> str:
    t = generate(suite, length, seed=seed)
    return hashlib.sha256((t.context + t.question + t.answer).encode()).hexdigest()


@pytest.mark.parametrize("suite", ["sniah", "oolong", "pairs"])
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(suite: str) -> None:
    assert _digest(suite, 20_000, 3) == _digest(suite, 20_000, 3)
    assert _digest(suite, 20_000, 3) != _digest(suite, 20_000, 4)


@pytest.mark.parametrize("length", [10_000, 250_000])
@pytest.mark.parametrize("suite", ["sniah", "oolong", "pairs"])
def test_generated_context_length_is_close_to_the_request(suite: str, length: int) -> None:
    t = generate(suite, length, seed=1)
    assert abs(len(t.context) - length) < 0.02 * length + 200


def test_sniah_places_exactly_one_true_needle_at_the_promised_depth_with_distractors() -> None:
    t = make_sniah(100_000, seed=5, depth=0.25)
    key = t.metadata["key"]
    needle = f"The special magic number for {key} is {t.answer}."
    assert t.context.count(needle) == 1
    assert t.context.count(f"magic number for {key} ") == 1
    assert t.context.index(needle) == t.metadata["needle_offset"]
    assert abs(t.metadata["needle_offset"] / len(t.context) - 0.25) < 0.02
    assert t.context.count("The special magic number for ") == 1 + len(
        t.metadata["distractor_keys"]
    )
    assert len(t.answer) == 7 and t.answer.isdigit()
    assert key in t.question


def _label_of(instance: str) -> str:
    found = {
        label
        for label, templates in _TEMPLATES.items()
        for tpl in templates
        if re.fullmatch(re.escape(tpl).replace(r"\{a\}", ".+").replace(r"\{b\}", ".+"), instance)
    }
    assert len(found) == 1, (instance, found)
    return found.pop()


def _records(context: str) -> list[tuple[int, str]]:
    out = []
    for line in context.splitlines()[1:]:
        _, user, inst = line.split(" || ")
        out.append((int(user.removeprefix("User: ")), _label_of(inst.removeprefix("Instance: "))))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_oolong_answer_matches_a_recount_of_the_labels_in_the_text(seed: int) -> None:
    t = generate("oolong", 30_000, seed=seed)
    counts = Counter(label for _, label in _records(t.context))
    assert counts == Counter(t.metadata["counts"])
    kind = t.metadata["kind"]
    if kind == "count":
        label = t.question.split("'")[1]
        assert t.answer == str(counts[label])
    elif kind == "most":
        assert counts[t.answer] == max(counts[lab] for lab in LABELS)
    elif kind == "least":
        assert counts[t.answer] == min(counts[lab] for lab in LABELS)
    else:
        a, b = t.question.split("'")[1], t.question.split("'")[3]
        expected = {1: "more common than", -1: "less common than", 0: "same frequency as"}
        assert t.answer == expected[(counts[a] > counts[b]) - (counts[a] < counts[b])]


def test_pairs_answer_is_every_pair_of_users_with_the_label_recounted() -> None:
    t = generate("pairs", 40_000, seed=2)
    label = t.metadata["label"]
    users = sorted({u for u, lab in _records(t.context) if lab == label})
    expected = "\n".join(f"({a}, {b})" for a, b in combinations(users, 2))
    assert t.answer == expected and users


def test_a_hundred_million_characters_generate_without_per_character_work() -> None:
    # Correctness at scale (not speed): length and exactly one true needle.
    t = make_sniah(parse_length("20m"), seed=1, depth=0.9)
    assert abs(len(t.context) - 20_000_000) < 1_000
    assert t.context.count(f"magic number for {t.metadata['key']} is {t.answer}") == 1


def test_parse_length_reads_suffixes() -> None:
    assert parse_length("100k") == 100_000
    assert parse_length("1m") == 1_000_000
    assert parse_length("1.5M") == 1_500_000
    assert parse_length("16384") == 16_384


def test_unknown_suite_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="sniah"):
        generate("nope", 1000)


def test_taskfile_loads_inline_and_path_contexts(tmp_path) -> None:
    (tmp_path / "doc.txt").write_text("the answer is 42")
    lines = [
        {"id": "a", "context": "x y z", "question": "q?", "answer": "z"},
        {"context_path": "doc.txt", "question": "q2?", "answer": "42", "scorer": "oolong"},
    ]
    f = tmp_path / "tasks.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    tasks = load_taskfile(f)
    assert [t.task_id for t in tasks] == ["a", "tasks-2"]
    assert tasks[1].context == "the answer is 42" and tasks[1].scorer == "oolong"


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"question": "q", "answer": "a"}', "context"),
        ('{"context": "c", "question": "q", "answer": "a", "scorer": "bleu"}', "unknown scorer"),
        ('{"context_path": "missing.txt", "question": "q", "answer": "a"}', "does not exist"),
    ],
)
def test_taskfile_errors_name_the_line_and_the_fix(tmp_path, line: str, match: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(ConfigError, match=match):
        load_taskfile(f)
