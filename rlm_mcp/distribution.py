"""What other tools install us from: the MCP registry's `server.json` and a Claude Desktop bundle.

Both are generated from the code (the version, the tools, the prompts, every environment
variable `config.ENV_VARS` documents), so they cannot drift from what the server really offers:
`server.json` at the repository's root is this module's output, and a test says so.

The bundle (`rlm-mcp bundle OUT`) is a folder `mcpb pack` turns into a `.mcpb` file. By default
its server starts with `uvx` (the package and its dependencies are fetched on first start, for the
user's own platform); `--vendor` installs them into the bundle instead, for this platform only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlm_mcp._version import __version__
from rlm_mcp.config import ENV_VARS

__all__ = ["REGISTRY_NAME", "build_bundle", "bundle_manifest", "registry_entry"]

REGISTRY_NAME = "io.github.rlm-mcp/rlm-mcp"
REPOSITORY = "https://github.com/rlm-mcp/rlm-mcp"
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json"
SUMMARY = "Work on inputs far larger than the context window: Recursive Language Models over MCP."
SECRET_MARKERS = ("KEY", "TOKEN")

#: What Claude Desktop asks the user for, and the variable each fills in.
USER_CONFIG: dict[str, tuple[str, dict[str, Any]]] = {
    "anthropic_api_key": (
        "ANTHROPIC_API_KEY",
        {
            "type": "string",
            "title": "Anthropic API key",
            "description": "For sub-model calls (optional: leave empty to use another provider).",
            "sensitive": True,
            "required": False,
        },
    ),
    "openai_api_key": (
        "OPENAI_API_KEY",
        {
            "type": "string",
            "title": "OpenAI API key",
            "description": "For sub-model calls (optional).",
            "sensitive": True,
            "required": False,
        },
    ),
    "openai_base_url": (
        "OPENAI_BASE_URL",
        {
            "type": "string",
            "title": "OpenAI-compatible server",
            "description": "A local server instead of a key (Ollama, llama.cpp, vLLM), "
            "e.g. http://localhost:11434/v1.",
            "required": False,
        },
    ),
    "allowed_paths": (
        "RLM_MCP_ALLOWED_PATHS",
        {
            "type": "directory",
            "title": "Folder it may read",
            "description": "load_context reads only inside this folder (empty: any folder).",
            "required": False,
        },
    ),
    "home": (
        "RLM_MCP_HOME",
        {
            "type": "directory",
            "title": "Data folder",
            "description": "Where loaded contexts and run trajectories are kept (empty: the "
            "platform's cache folder).",
            "required": False,
        },
    ),
}


def registry_entry() -> dict[str, Any]:
    """`server.json` for the MCP registry: the PyPI package, stdio, every variable we read."""
    variables = [
        {
            "name": name,
            "description": text,
            "isRequired": False,
            "isSecret": any(marker in name for marker in SECRET_MARKERS),
            "format": "string",
        }
        for name, text in ENV_VARS.items()
    ]
    return {
        "$schema": SCHEMA,
        "name": REGISTRY_NAME,
        "description": SUMMARY[:100],
        "repository": {"url": REPOSITORY, "source": "github"},
        "version": __version__,
        "websiteUrl": REPOSITORY,
        "packages": [
            {
                "registryType": "pypi",
                "registryBaseUrl": "https://pypi.org",
                "identifier": "rlm-mcp",
                "version": __version__,
                "runtimeHint": "uvx",
                "transport": {"type": "stdio"},
                "packageArguments": [{"type": "positional", "value": "serve"}],
                "environmentVariables": variables,
            }
        ],
    }


async def _offer() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The tools and prompts a server built here offers (names, descriptions, prompt texts)."""
    import tempfile

    from mcp import Client

    from rlm_mcp.config import Settings
    from rlm_mcp.server import build_server
    from rlm_mcp.server.prompts import analyze_prompt

    with tempfile.TemporaryDirectory() as home:
        async with Client(build_server(Settings(home=Path(home)))) as client:
            tools = (await client.list_tools()).tools
            prompts = (await client.list_prompts()).prompts
    return (
        [{"name": t.name, "description": (t.description or "")[:300]} for t in tools],
        [
            {
                "name": p.name,
                "description": p.description or "",
                "arguments": [a.name for a in p.arguments or []],
                "text": analyze_prompt("${arguments.source}", "${arguments.question}"),
            }
            for p in prompts
        ],
    )


def bundle_manifest(*, vendored: bool = False) -> dict[str, Any]:
    """The MCP Bundle manifest (`manifest.json`) Claude Desktop installs."""
    import anyio

    tools, prompts = anyio.run(_offer)
    env = {var: f"${{user_config.{key}}}" for key, (var, _) in USER_CONFIG.items()}
    if vendored:
        command, args = "python3", ["${__dirname}/server/main.py", "serve"]
        env["PYTHONPATH"] = "${__dirname}/server/lib"
        platforms = [sys.platform if sys.platform != "linux2" else "linux"]
    else:
        command, args = "uvx", ["--from", f"rlm-mcp=={__version__}", "rlm-mcp", "serve"]
        platforms = ["darwin", "linux", "win32"]
    return {
        "manifest_version": "0.3",
        "name": "rlm-mcp",
        "display_name": "RLM: inputs beyond the context window",
        "version": __version__,
        "description": SUMMARY,
        "long_description": (
            "Load a file, a folder or a glob once; Claude then searches it with sandboxed Python "
            "(run_repl), asks sub-models about the pieces (llm_query), or runs the whole "
            "recursive loop on the server (rlm_complete). Sandboxed code never sees your keys, "
            "files or network. Needs uv (https://docs.astral.sh/uv/) unless this bundle was "
            "built with --vendor. Without an API key it uses your logged-in `claude` CLI."
        ),
        "author": {"name": "rlm-mcp developers", "url": REPOSITORY},
        "repository": {"type": "git", "url": REPOSITORY},
        "homepage": REPOSITORY,
        "license": "MIT",
        "keywords": ["rlm", "long-context", "logs", "large-files"],
        "server": {
            "type": "python",
            "entry_point": "server/main.py",
            "mcp_config": {"command": command, "args": args, "env": env},
        },
        "tools": tools,
        "prompts": prompts,
        "user_config": {key: spec for key, (_, spec) in USER_CONFIG.items()},
        "compatibility": {"platforms": platforms, "runtimes": {"python": ">=3.11"}},
    }


MAIN = '''"""Entry point of the rlm-mcp MCP Bundle: `python3 server/main.py serve`."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from rlm_mcp.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:] or ["serve"]))
'''


def build_bundle(out: Path, *, vendor: bool = False) -> Path:
    """Write the bundle folder (manifest.json, server/main.py, server/lib when vendored)."""
    out.mkdir(parents=True, exist_ok=True)
    server = out / "server"
    server.mkdir(exist_ok=True)
    (server / "main.py").write_text(MAIN, encoding="utf-8")
    if vendor:
        source = Path(__file__).resolve().parents[1]
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(server / "lib")]
        subprocess.run(
            [*pip, str(source)],
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps(bundle_manifest(vendored=vendor), indent=2) + "\n", "utf-8")
    return manifest
