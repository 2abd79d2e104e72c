"""Configuration snippets that register `rlm-mcp serve` with MCP clients.

`rlm-mcp config CLIENT` prints one of these with the installed command's absolute path, because
desktop clients start servers without the user's shell PATH.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode", "windsurf")

#: Variables a user typically sets for the server; empty values are placeholders.
#: RLM_MCP_ALLOWED_PATHS: folders load_context may read (unset: any path the user can read).
ENV = {"ANTHROPIC_API_KEY": "", "RLM_MCP_MODEL": "", "RLM_MCP_ALLOWED_PATHS": ""}


def command_path() -> str:
    """The absolute path of the installed `rlm-mcp` script (next to this interpreter first)."""
    local = Path(sys.executable).with_name("rlm-mcp")
    if local.exists():
        return str(local)
    return shutil.which("rlm-mcp") or "rlm-mcp"


def snippet(client: str, *, command: str | None = None) -> str:
    """The text to paste into `client`'s configuration."""
    cmd = command if command is not None else command_path()
    entry = {"command": cmd, "args": ["serve"], "env": dict(ENV)}
    if client in ("claude-desktop", "cursor", "windsurf"):
        return json.dumps({"mcpServers": {"rlm": entry}}, indent=2)
    if client == "vscode":
        return json.dumps({"servers": {"rlm": {"type": "stdio", **entry}}}, indent=2)
    if client == "claude-code":
        # the .mcp.json is committed and shared: teammates' installs differ, so it names the
        # bare command; `claude mcp add` runs here, so it gets this install's path
        shared = {**entry, "command": "rlm-mcp"}
        project = json.dumps({"mcpServers": {"rlm": {"type": "stdio", **shared}}}, indent=2)
        return (
            f"claude mcp add rlm --env ANTHROPIC_API_KEY=sk-... -- {cmd} serve\n\n"
            f"# or commit this as .mcp.json in the project root:\n{project}"
        )
    raise ValueError(f"unknown client {client!r}; choose one of: {', '.join(CLIENTS)}")
