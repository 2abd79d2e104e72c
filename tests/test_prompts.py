from rlm_mcp.prompts import ContextSummary, build_system_prompt, subcall_prompt

CTX = ContextSummary("str", 5_000_000, 3, "PREVIEW-HEAD")


def test_system_prompt_states_size_documents_and_preview_but_not_the_whole_text() -> None:
    p = build_system_prompt(CTX, max_subcall_chars=123_456, max_output_chars=7_000)
    assert "5,000,000 characters" in p and "3 documents" in p and "PREVIEW-HEAD" in p
    assert "llm_query_batched" in p and "123,456" in p and "7,000" in p
    assert "FINAL(" in p and "FINAL_VAR(" in p and 'answer["ready"]' in p


def test_custom_prompt_replaces_ours_without_placeholder() -> None:
    assert build_system_prompt(CTX, custom="Just answer.") == "Just answer."


def test_custom_prompt_extends_ours_at_the_default_placeholder() -> None:
    p = build_system_prompt(CTX, custom="Be brief.\n{default}\n{context_summary}")
    assert p.startswith("Be brief.") and "llm_query_batched" in p and "5,000,000" in p


def test_subcall_prompt_puts_the_instruction_before_the_chunk() -> None:
    p = subcall_prompt("Find the code word.", "lots of text")
    assert p.index("Find the code word.") < p.index("lots of text")
