"""The execution core and policy, in-process (coverage does not see the worker subprocess)."""

from __future__ import annotations

import pytest

from rlm_mcp.sandbox import policy
from rlm_mcp.sandbox.policy import PolicyViolation
from rlm_mcp.sandbox.worker import Executor


def run(code: str, ex: Executor | None = None) -> dict:
    return (ex or Executor(max_output_chars=1000)).execute(code)


def test_augmented_assignment_to_a_subscript_works() -> None:
    r = run("c = {'a': 1}\nc['a'] += 2\nc['b'] = c.get('b', 0) + 1\nprint(c)")
    assert r["output"] == "{'a': 3, 'b': 1}\n"


def test_augmented_assignment_to_a_name_works() -> None:
    assert run("x = 1\nx += 4\nx *= 2\nprint(x)")["output"] == "10\n"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 3\nprint(f'{x + 1}!')", "4!"),
        ("print([i * i for i in range(4)])", "[0, 1, 4, 9]"),
        ("print({k: v for k, v in zip('ab', [1, 2])})", "{'a': 1, 'b': 2}"),
        ("print(sorted(['bb', 'a', 'ccc'], key=lambda s: -len(s)))", "['ccc', 'bb', 'a']"),
        ("d = {'a': 1}\nfor k, v in d.items():\n    print(k, v)", "a 1"),
        ("print('abcdef'[1:4], [1, 2, 3][::-1])", "bcd [3, 2, 1]"),
        ("for i, c in enumerate('ab'):\n    print(i, c)", "0 a\n1 b"),
        ("print(min(3, 1, 2), max([4, 9]))", "1 9"),
        ("a, (b, c) = 1, (2, 3)\nprint(a + b + c)", "6"),
        ("def f(*a, **k):\n    return len(a) + len(k)\nprint(f(*[1, 2], **{'z': 1}))", "3"),
        ("from collections import Counter\nprint(Counter('aab').most_common(1))", "[('a', 2)]"),
        ("import json\nprint(json.dumps({'a': [1]}))", '{"a": [1]}'),
        ("import re\nprint(re.findall(r'\\d+', 'a1b22'))", "['1', '22']"),
        ("try:\n    1/0\nexcept:\n    print('caught')", "caught"),
    ],
)
def test_everyday_idioms_work(code: str, expected: str) -> None:
    r = run(code)
    assert r["status"] == "ok", r["error"]
    assert r["output"].strip() == expected


def test_print_inside_functions_reaches_the_output() -> None:
    assert run("def f():\n    print('in f')\nf()\nprint('out')")["output"] == "in f\nout\n"


def test_output_is_capped_with_a_note_of_what_was_cut() -> None:
    r = Executor(max_output_chars=10).execute("for i in range(100):\n    print('abcdefghij')")
    assert r["output"] == "abcdefghij"
    assert r["truncated"] is True
    assert r["output_chars"] == 1100
    assert "10 of 1,100" in r["notes"][0]


def test_error_reports_type_message_and_user_line() -> None:
    r = run("x = 1\ny = 2\nraise KeyError('nope')")
    assert r["status"] == "error"
    assert r["error"] == {"type": "KeyError", "message": "'nope'", "line": 3}


def test_error_inside_a_function_reports_the_user_line_of_the_raise() -> None:
    r = run("def f():\n    return 1 / 0\n\nf()")
    assert r["error"]["type"] == "ZeroDivisionError"
    assert r["error"]["line"] == 2


def test_syntax_error_is_an_error_result() -> None:
    r = run("def (:")
    assert r["status"] == "error"
    assert r["error"]["type"] == "SyntaxError"


def test_variables_summary_lists_created_and_changed_names() -> None:
    ex = Executor(max_output_chars=100)
    r = run("s = 'abc'\nn = [1, 2]\nk = 5", ex)
    summaries = {v["name"]: v["summary"] for v in r["variables"]}
    assert summaries == {"s": "str, 3 chars", "n": "list, 2 items", "k": "int = 5"}
    r = run("k = 6", ex)
    assert [v["name"] for v in r["variables"]] == ["k"]


def test_a_huge_int_variable_is_summarised_without_breaking_the_next_call() -> None:
    # repr() of an int over 4,300 digits raises ValueError; the summary of every variable is
    # taken before each call, outside the user code's try, so it once killed the worker.
    ex = Executor(max_output_chars=100)
    r = run("x = 10 ** 5000", ex)
    assert r["status"] == "ok"
    assert r["variables"] == [{"name": "x", "type": "int", "summary": "int, about 5,001 digits"}]
    r = run("y = x % 7\nprint(y)", ex)
    assert r["status"] == "ok" and r["output"].strip() == str(10**5000 % 7)


def test_compiled_code_is_reused_but_each_run_is_fresh() -> None:
    policy._compile_cached.cache_clear()
    ex = Executor(max_output_chars=100)
    run("n = 0", ex)
    assert run("n += 1\nprint(n)", ex)["output"] == "1\n"
    assert run("n += 1\nprint(n)", ex)["output"] == "2\n"
    assert policy._compile_cached.cache_info().hits == 1
    first = policy.compile_user_code("import os")[1]
    first.append("mutated by a caller")
    assert policy.compile_user_code("import os")[1] == first[:-1]  # the cached errors are intact
    big = "x = 1\n" * 5_000  # over the size kept: compiled every time, still correct
    assert policy.compile_user_code(big)[0] is not policy.compile_user_code(big)[0]


def test_state_persists_between_calls() -> None:
    ex = Executor(max_output_chars=100)
    run("total = 40", ex)
    assert run("print(total + 2)", ex)["output"] == "42\n"


def test_context_documents_and_helpers() -> None:
    ex = Executor(max_output_chars=1000)
    ex.set_context(path=None, text="alpha\nbeta gamma\ngamma", documents=[["a", 0, 5]])
    r = run("print(len(context), documents, peek(6, 4), grep('gamma'), len(lines()))", ex)
    assert r["output"] == ("22 (('a', 0, 5),) beta [(2, 'beta gamma'), (3, 'gamma')] 3\n")


def test_documents_are_name_start_length_and_document_returns_the_text() -> None:
    ex = Executor(max_output_chars=1000)
    ex.set_context(path=None, text="first|second", documents=[["a.txt", 0, 5], ["b.txt", 6, 6]])
    r = run(
        "for name, start, length in documents:\n"
        "    print(name, context[start:start + length], document(name))\n"
        "print(document(1))",
        ex,
    )
    assert r["output"] == "a.txt first first\nb.txt second second\nsecond\n"
    assert r["variables"] == [
        {"name": "length", "type": "int", "summary": "int = 6"},
        {"name": "name", "type": "str", "summary": "str, 5 chars"},
        {"name": "start", "type": "int", "summary": "int = 6"},
    ]
    r = run("document('c.txt')", ex)
    assert r["error"]["type"] == "KeyError" and "'a.txt', 'b.txt'" in r["error"]["message"]


def test_final_final_var_and_answer_dict_set_the_final_answer() -> None:
    ex = Executor(max_output_chars=100)
    keys = ("value", "source", "variable")

    def final(code: str) -> dict[str, object] | None:
        got = run(code, ex)["final"]
        return None if got is None else {k: got[k] for k in keys}

    assert final("FINAL('done')") == {"value": "done", "source": "FINAL", "variable": None}
    assert final("res = 7\nFINAL_VAR('res')") == {
        "value": "7",
        "source": "FINAL_VAR",
        "variable": "res",
    }
    r = final("answer = {'content': 'hi', 'ready': True}")
    assert r == {"value": "hi", "source": "answer", "variable": None}
    assert final("x = 1") is None  # a ready answer left from before is not an answer again
    assert final("answer['content'] = 'bye'") == {
        "value": "bye",
        "source": "answer",
        "variable": None,
    }
    assert ex.get_variable_text("res") == "7"
    assert ex.get_variable_text("missing") is None


def test_final_var_of_a_missing_variable_is_an_error_listing_variables() -> None:
    ex = Executor(max_output_chars=100)
    run("alpha = 1", ex)
    r = run("FINAL_VAR('beta')", ex)
    assert r["final"] is None
    assert r["status"] == "error"
    assert "alpha" in r["error"]["message"]


def test_llm_query_without_a_handler_raises_a_clear_error() -> None:
    r = run("llm_query('hi')")
    assert r["error"]["type"] == "RuntimeError"
    assert "no sub-model" in r["error"]["message"]


def test_llm_query_uses_the_bridge() -> None:
    ex = Executor(max_output_chars=100, llm=lambda ps, model: [p.upper() for p in ps])
    r = run("print(llm_query('a'), llm_query_batched(['b', 'c']))", ex)
    assert r["output"] == "A ['B', 'C']\n"


def test_every_allowed_module_imports_as_a_read_only_proxy() -> None:
    ex = Executor(max_output_chars=100)
    for name in policy.ALLOWED_MODULES:
        r = run(f"import {name}", ex)
        assert r["status"] == "ok", (name, r["error"])
    r = run("import random\nrandom.seed(1)\nx = random.randint(1, 6)\nprint(1 <= x <= 6)", ex)
    assert r["output"] == "True\n"
    assert run("import math\nmath.pi = 3", ex)["status"] != "ok"


def test_module_proxy_names_what_is_available_on_a_missing_member() -> None:
    r = run("import json\njson.load")
    assert "available: loads, dumps" in r["error"]["message"]


def test_inplace_operator_table_refuses_unknown_operators() -> None:
    with pytest.raises(policy.PolicyViolation):
        policy.inplacevar("<>=", 1, 2)


def test_guarded_getattr_refuses_modules_format_and_private_names() -> None:
    import types

    holder = types.SimpleNamespace(mod=types)
    with pytest.raises(policy.PolicyViolation):
        policy.guarded_getattr(holder, "mod")
    for name in ("format", "format_map", "mro", "_x", "gi_frame"):
        with pytest.raises(policy.PolicyViolation):
            policy.guarded_getattr("s", name)
    assert policy.guarded_getattr([], "append") is not None


def test_augmented_assignment_evaluates_its_target_once() -> None:
    r = run(
        "calls = []\n"
        "def key(k):\n"
        "    calls.append(k)\n"
        "    return k\n"
        "d = {'a': 1, 'b': [1]}\n"
        "d[key('a')] += 1\n"
        "d[key('b')] += [2]\n"
        "rows = [[0, 0]]\n"
        "rows[len(calls) - 2][key(1)] -= 5\n"
        "print(d, rows, calls)"
    )
    assert r["status"] == "ok", r["error"]
    assert r["output"] == "{'a': 2, 'b': [1, 2]} [[0, -5]] ['a', 'b', 1]\n"


def test_augmented_assignment_mutates_in_place_like_python() -> None:
    r = run("d = {'k': [1]}\nalias = d['k']\nd['k'] += [2]\nprint(alias, alias is d['k'])")
    assert r["output"] == "[1, 2] True\n"


@pytest.mark.parametrize(
    "setup",
    [
        "from collections import Counter\ncounts = Counter()",
        "from collections import defaultdict\ncounts = defaultdict(int)",
        "from collections import OrderedDict\ncounts = OrderedDict(a=0, b=0)",
        "counts = {'a': 0, 'b': 0}",
    ],
)
def test_counting_idiom_works_on_every_counting_container(setup: str) -> None:
    r = run(setup + "\nfor w in 'abab':\n    counts[w] += 1\nprint(sorted(counts.items()))")
    assert r["status"] == "ok", r["error"]
    assert r["output"] == "[('a', 2), ('b', 2)]\n"


def test_item_assignment_on_deque_and_slices_works() -> None:
    r = run(
        "from collections import deque\nq = deque([1, 2])\nq[0] = 5\nl = [1, 2]\nl[1:] += [3]\n"
        "print(list(q), l)"
    )
    assert r["output"] == "[5, 2] [1, 2, 3]\n"


def test_augmented_attribute_assignment_reads_guarded_and_evaluates_target_once() -> None:
    class Box:
        _guarded_writes = True  # RestrictedPython's opt-in for writable objects

        def __init__(self) -> None:
            self.v = 1

    box = Box()
    ex = Executor(max_output_chars=100)
    ex.ns["box"] = box
    r = run("n = []\ndef f():\n    n.append(1)\n    return box\nf().v += 41\nprint(len(n))", ex)
    assert r["status"] == "ok", r["error"]
    assert (r["output"], box.v) == ("1\n", 42)


def test_augmented_attribute_assignment_is_refused_on_what_the_sandbox_hands_out() -> None:
    for code in ("import math\nmath.pi += 1", "x = 1\nx.real += 1", "s = 'a'\ns.format += 'b'"):
        r = run(code)
        assert r["status"] != "ok"
    r = run("l = [1]\nl._x += 1")
    assert r["status"] == "violation" and "_x" in r["error"]["message"]


def test_attribute_writes_on_plain_objects_stay_refused() -> None:
    r = run("import json\nf = json.loads\nf.x = 1")
    assert r["status"] == "error" and r["error"]["type"] == "TypeError"


def test_printed_is_an_ordinary_variable_name() -> None:
    ex = Executor(max_output_chars=100)
    r = run("print('hi')\nprinted = 3\nprinted += 1\nprint(printed)", ex)
    assert r["status"] == "ok", r["error"]
    assert r["output"] == "hi\n4\n"
    assert [v["name"] for v in r["variables"]] == ["printed"]
    assert ex.get_variable_text("printed") == "4"


def test_reading_printed_never_returns_the_print_collector() -> None:
    r = run("print('x')\ny = printed")
    assert r["status"] == "error"
    assert (r["error"]["type"], r["error"]["line"]) == ("NameError", 2)
    r = run("print('x')\ndef f():\n    print('in f')\n    return 1\nz = f()")
    assert [v["name"] for v in r["variables"]] == ["f", "z"]
    assert "CappedPrinter" not in repr(r)


def test_an_interrupt_in_user_code_stops_it_and_finally_blocks_run() -> None:
    ex = Executor(max_output_chars=100)
    ex.interrupt("timeout")  # idle: trusted code is never interrupted
    ex.ns["tick"] = lambda: ex.interrupt("timeout")
    r = run("try:\n    tick()\n    never = 1\nfinally:\n    print('cleanup')", ex)
    assert (r["status"], r["error"]["type"], r["error"]["line"]) == ("timeout", "TimeoutError", 2)
    assert r["output"] == "cleanup\n"
    assert "never" not in ex.ns and ex.phase == "idle"


def test_an_interrupt_during_a_sub_call_is_raised_after_the_reply_is_read() -> None:
    seen: list[str] = []

    def bridge(prompts: list[str], model: str | None) -> list[str]:
        if not seen:
            ex.interrupt("cancelled")  # the signal arrives while the worker waits for the parent
            assert ex.phase == "bridge"
        seen.extend(prompts)
        return ["answer"]

    ex = Executor(max_output_chars=100, llm=bridge)
    r = run("x = llm_query('q')\nafter = 1", ex)
    assert seen == ["q"]
    assert (r["status"], r["error"]["type"]) == ("timeout", "CancelledError")
    assert "cancelled by the caller" in r["error"]["message"]
    assert "x" not in ex.ns and "after" not in ex.ns
    assert run("print(llm_query('again'))", ex)["output"] == "answer\n"


def test_sub_call_limits_are_checked_before_anything_is_sent() -> None:
    sent: list[list[str]] = []

    def bridge(prompts: list[str], model: str | None) -> list[str]:
        sent.append(prompts)
        return prompts

    ex = Executor(max_output_chars=1000, llm=bridge, max_sub_calls=3, max_prompt_chars=10)
    r = run("for i in range(10):\n    llm_query('p')", ex)
    assert r["error"]["type"] == "RuntimeError" and "at most 3 sub-calls" in r["error"]["message"]
    assert len(sent) == 3
    r = run("llm_query('x' * 11)", ex)
    assert "11 characters" in r["error"]["message"] and len(sent) == 3
    assert run("print(llm_query_batched(['a', 'b', 'c']))", ex)["output"] == "['a', 'b', 'c']\n"


def test_errors_without_a_message_still_say_what_happened() -> None:
    r = run("raise MemoryError")
    assert "memory limit" in r["error"]["message"] and "memory_mb" in r["error"]["message"]
    r = run("raise KeyError")
    assert r["error"]["message"] == "KeyError raised without a message"


def test_attribute_fast_path_allows_only_what_the_checks_allow() -> None:
    for kind, name in policy._SAFE_ATTRS:
        assert kind in policy._FAST_TYPES and not name.startswith("_")
        assert name not in policy._DENIED_ATTRS
    assert policy.guarded_getattr("a b", "split")() == ["a", "b"]
    with pytest.raises(PolicyViolation):
        policy.guarded_getattr(str, "format")  # the type itself is not on the fast path
    assert (
        run("print(str.upper('x'), 'a-b'.split('-'), {1: 2}.get(1))")["output"]
        == "X ['a', 'b'] 2\n"
    )


def test_code_too_deeply_nested_to_compile_is_an_error_that_says_what_to_do() -> None:
    ex = Executor(max_output_chars=100)
    run("kept = 1", ex)
    r = run("print(" + "+".join(["1"] * 300_000) + ")", ex)  # RecursionError in the compiler
    assert r["status"] == "error" and r["error"]["type"] == "SyntaxError"
    assert "too big or too deeply nested" in r["error"]["message"]
    assert "smaller run_repl calls" in r["error"]["message"]
    assert run("print(kept)", ex)["output"] == "1\n"


def test_a_class_statement_is_refused_with_what_to_use_instead() -> None:
    # a str subclass would also be a way to reach format(); it must never get as far as running
    nested = "def f():\n    class Inner:\n        x = 1\n    return 1"
    for code in ("class S(str):\n    pass", nested):
        r = run(code)
        assert r["status"] == "violation", r
        assert "class definitions are not available" in r["error"]["message"]
        assert "namedtuple" in r["error"]["message"]


def test_every_field_code_controls_is_cut_in_the_reply() -> None:
    ex = Executor(max_output_chars=100, max_final_chars=1_000)
    r = run("from collections import namedtuple\nT = namedtuple('T' * 100_000, 'a')\nt = T(1)", ex)
    assert all(len(v["type"]) <= 120 and len(v["summary"]) <= 200 for v in r["variables"])
    r = run("\n".join(f"v{i} = {i}" for i in range(5_000)), ex)
    assert len(r["variables"]) == 51 and r["variables"][-1]["summary"].startswith("4,950 more")
    r = run("1 +* 2\n" * 5_000, ex)
    assert len(r["error"]["message"]) <= 2_000
    r = run("FINAL('F' * 50_000)", ex)
    assert len(r["final"]["value"]) == 1_000
    assert r["final"]["chars"] == 50_000 and r["final"]["truncated"] is True
