"""MCP prompts: the workflow that works, for a client's model that has never used this server.

Claude Code shows an MCP prompt as a slash command (`/mcp__rlm__analyze`). The text is what the
RLM paper and its library's users learned: load once, search with code, filter before asking a
model, fan out in batches, count and verify in code (models miscount), then answer with evidence.
It stays a few hundred tokens: it is read on every use.
"""

from __future__ import annotations

from mcp.server import MCPServer

__all__ = ["WORKFLOW", "analyze_prompt", "register_prompts"]

WORKFLOW = """\
The input may be far larger than your context window: never read it whole.
1. Load it once: load_context(path=...) for a file, folder or glob (an absolute path), or reuse a
   stored handle or name (list_contexts). Note its size and its documents.
2. Explore with code: run_repl(handle=..., code=...). Print len(context), short slices,
   grep(pattern) hits and counts; output is cut when long, so print little. Variables persist:
   pass back the `session` the result names.
3. Filter in code before asking a model: keep only the passages that can matter.
4. Fan out over what is left: llm_query_batched([...]) with prompts of about 100,000 characters
   and about 20 prompts per batch; each prompt says exactly what to extract and in what form.
5. Count, join and verify in code, not with models (they miscount): check each extracted value
   against the text before you trust it.
6. Answer with evidence: quotes, counts, document names.
For a one-shot answer without exploring, rlm_complete(handle=..., query=...) runs this whole loop
on the server and returns the answer with its cost.\
"""


def analyze_prompt(source: str, question: str) -> str:
    """The `analyze` prompt's text for `source` (a path, handle or name) and `question`."""
    where = source.strip() or "the input"
    return f"Answer this question about {where}:\n\n{question.strip()}\n\n{WORKFLOW}"


def register_prompts(mcp: MCPServer) -> None:
    @mcp.prompt(
        name="analyze",
        title="Analyze an input too large to read",
        description=(
            "Answer a question about a large file, folder or stored context with rlm-mcp's "
            "tools: load once, search with code, fan out sub-model calls, verify in code."
        ),
    )
    def analyze(source: str, question: str) -> str:
        """`source`: an absolute path (file, folder, glob) or a stored handle or name."""
        return analyze_prompt(source, question)
