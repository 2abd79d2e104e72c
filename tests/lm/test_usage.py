"""Usage accounting and the price table."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from rlm_mcp.errors import ConfigError
from rlm_mcp.lm import ModelUsageSummary, PriceTable, Usage, UsageSummary, UsageTracker


def test_tracker_sums_calls_tokens_cost_and_latency_per_model() -> None:
    tracker = UsageTracker(PriceTable({"m-a": (1.0, 2.0)}, defaults=False))
    tracker.record(Usage("m-a", 1_000_000, 500_000, latency_s=1.5), path=("root",))
    tracker.record(Usage("m-a", 0, 1_000_000, cached_tokens=3, latency_s=0.5), path=("root", "sub"))
    s = tracker.summary()
    m = s.models["m-a"]
    assert (m.calls, m.input_tokens, m.output_tokens, m.cached_tokens) == (
        2,
        1_000_000,
        1_500_000,
        3,
    )
    assert m.cost == pytest.approx(1.0 + 1.0 + 2.0)
    assert m.latency_s == pytest.approx(2.0)
    assert s.total_calls == 2 and s.total_tokens == 2_500_000
    assert s.total_cost == pytest.approx(4.0)


def test_unknown_model_price_is_flagged_and_known_costs_still_sum() -> None:
    tracker = UsageTracker(PriceTable({"known": (1.0, 1.0)}, defaults=False))
    tracker.record(Usage("known", 1_000_000, 0))
    tracker.record(Usage("mystery-llm", 10, 10))
    s = tracker.summary()
    assert s.models["mystery-llm"].cost is None
    assert s.unknown_cost_models == ["mystery-llm"]
    assert s.total_cost == pytest.approx(1.0)


def test_only_unknown_models_give_no_total_cost() -> None:
    tracker = UsageTracker(PriceTable(defaults=False))
    tracker.record(Usage("mystery", 1, 1))
    assert tracker.summary().total_cost is None


def test_cache_hits_count_as_calls_with_zero_cost() -> None:
    tracker = UsageTracker()
    tracker.record(Usage("gpt-5-mini", 100, 10, cached=True, cost=5.0))
    s = tracker.summary()
    assert s.cached_calls == 1 and s.models["gpt-5-mini"].cache_hits == 1
    assert s.total_cost == 0.0


def test_tree_and_child_views_summarise_subtrees() -> None:
    tracker = UsageTracker()
    tracker.record(Usage("scripted", 1, 1), path=("root",))
    child = tracker.child("root", "child:2")
    child.record(Usage("scripted", 10, 10), path=("sub",))
    child.child("sub").record(Usage("scripted", 100, 100))
    tree = tracker.tree()
    assert tree["root"].total_calls == 3
    assert tree["root/child:2"].total_input_tokens == 110
    assert tree["root/child:2/sub"].total_calls == 2
    assert child.summary().total_output_tokens == 110


def test_tracker_is_safe_from_many_threads() -> None:
    tracker = UsageTracker()

    def work() -> None:
        for _ in range(500):
            tracker.record(Usage("scripted", 1, 2))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    s = tracker.summary()
    assert s.total_calls == 4000 and s.total_output_tokens == 8000


def test_summaries_round_trip_through_dicts_and_json() -> None:
    tracker = UsageTracker(PriceTable({"p": (1, 1)}, defaults=False))
    tracker.record(Usage("p", 5, 6, cached_tokens=1, latency_s=0.25))
    tracker.record(Usage("q", 5, 6))
    s = tracker.summary()
    back = UsageSummary.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.total_cost == s.total_cost and back.unknown_cost_models == ["q"]
    m = s.models["p"]
    assert ModelUsageSummary.from_dict(m.to_dict()) == m


def test_price_table_matches_dated_versions_and_routing_prefixes() -> None:
    table = PriceTable()
    assert table.lookup("gpt-5-mini-2025-08-07") == table.lookup("gpt-5-mini")
    assert table.lookup("openai/gpt-4o-mini") == (0.15, 0.60)
    assert table.lookup("GPT-5") == (1.25, 10.0)
    assert table.lookup("gpt-5-nano") != table.lookup("gpt-5")  # longest prefix wins
    assert table.lookup("llama3.2") is None
    assert table.cost(Usage("llama3.2", 1, 1)) is None


def test_price_overrides_come_from_a_mapping_or_json_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"llama3.2": [0, 0], "gpt-5": [9, 9]}))
    table = PriceTable.from_file(path)
    assert table.lookup("llama3.2") == (0.0, 0.0)
    assert table.lookup("gpt-5") == (9.0, 9.0)
    assert table.lookup("gpt-5-mini") == (0.25, 2.0)  # defaults still there
    assert table.to_dict()["gpt-5"] == [9.0, 9.0]


def test_bad_price_overrides_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input_per_Mtok"):
        PriceTable({"x": "cheap"})  # type: ignore[dict-item]
    bad = tmp_path / "p.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        PriceTable.from_file(bad)
    with pytest.raises(ConfigError, match="Cannot read"):
        PriceTable.from_file(tmp_path / "missing.json")
