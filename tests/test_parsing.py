from rlm_mcp.parsing import find_code_blocks, find_final


def test_repl_blocks_are_returned_in_order() -> None:
    text = "a\n```repl\nx = 1\n```\nb\n```repl\nprint(x)\n```\n"
    assert find_code_blocks(text) == ["x = 1\n", "print(x)\n"]


def test_python_blocks_are_used_only_when_there_is_no_repl_block() -> None:
    assert find_code_blocks("```python\ny = 2\n```") == ["y = 2\n"]
    assert find_code_blocks("```python\ny = 2\n```\n```repl\nz = 3\n```") == ["z = 3\n"]


def test_final_at_line_start_is_found_with_nested_parentheses_over_lines() -> None:
    m = find_final("Done.\nFINAL(The answer (as asked) is:\n42 (forty-two))\n")
    assert m is not None and m.kind == "FINAL"
    assert m.value == "The answer (as asked) is:\n42 (forty-two)"


def test_final_var_gives_the_variable_name() -> None:
    m = find_final("ok\nFINAL_VAR(result)")
    assert m is not None and (m.kind, m.value) == ("FINAL_VAR", "result")


def test_final_quoted_mid_sentence_does_not_count() -> None:
    assert find_final("When done I will call FINAL(answer) as instructed.") is None


def test_final_inside_backticks_does_not_count() -> None:
    assert find_final("`FINAL(x)` is how one finishes") is None


def test_final_inside_a_code_block_text_does_not_count() -> None:
    assert find_final("```repl\nFINAL(x)\nprint('FINAL(y)')\n```\n") is None


def test_quoted_final_value_is_unquoted() -> None:
    m = find_final('FINAL("Paris")')
    assert m is not None and m.value == "Paris"
