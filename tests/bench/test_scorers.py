import pytest

from rlm_mcp.bench.tasks.scorers import exact, oolong, pairs_f1, parse_pairs, score
from rlm_mcp.errors import ConfigError


@pytest.mark.parametrize(
    ("pred", "answer", "expected"),
    [
        ("1234567", "1234567", 1.0),
        ("Answer: 1234567.", "1234567", 1.0),
        ("The special magic number is 1234567", "1234567", 1.0),
        ("1234567 or 7654321", "1234567", 0.0),
        ("7654321", "1234567", 0.0),
        ("  Human Being. ", "human being", 1.0),
    ],
)
def test_exact_match_is_lenient_on_form_and_strict_on_value(pred, answer, expected) -> None:
    assert exact(pred, answer) == expected


def test_oolong_numeric_scores_three_quarters_per_unit_of_error() -> None:
    assert oolong("12", "12") == 1.0
    assert oolong("There are 10 of them", "12") == pytest.approx(0.5625)
    assert oolong("15", "12") == pytest.approx(0.421875)
    assert oolong("no idea", "12") == 0.0


def test_oolong_labels_and_comparisons_are_exact_after_normalisation() -> None:
    assert oolong("Location", "location") == 1.0
    assert oolong("Answer: more common than", "more common than") == 1.0
    assert oolong("entity", "location") == 0.0
    assert oolong("less common than", "more common than") == 0.0


def test_pairs_are_parsed_leniently_and_unordered() -> None:
    text = "Pairs: (3, 1), [2,5] and also 7 and 9; (4, 4) is not a pair"
    assert parse_pairs(text) == {(1, 3), (2, 5), (7, 9)}


def test_pairs_f1_on_a_hand_worked_example() -> None:
    gold = "(1, 2)\n(1, 3)\n(2, 3)\n(3, 4)"
    # 2 right, 1 wrong: precision 2/3, recall 2/4 -> F1 = 2*(2/3)*(1/2)/(2/3+1/2) = 4/7
    assert pairs_f1("(2, 1), (3, 1), (5, 6)", gold) == pytest.approx(4 / 7)
    assert pairs_f1(gold, gold) == 1.0
    assert pairs_f1("none", gold) == 0.0
    assert pairs_f1("no pairs", "") == 1.0


def test_score_dispatches_and_rejects_unknown_scorers() -> None:
    assert score("pairs_f1", "(1,2)", "(2, 1)") == 1.0
    with pytest.raises(ConfigError, match="exact"):
        score("bleu", "a", "a")
