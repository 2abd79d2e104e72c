"""Settings and their defaults: explicit arguments win, then `RLM_MCP_*` variables, then defaults.

Library code takes keyword arguments defaulting to the `DEFAULT_*` constants below and never reads
the environment; only `cli.py` and `Settings.from_env()` do, so a library user's process
environment cannot silently change a run. `ENV_VARS` is the single documented table (the README,
`.env.example` and a test all check against it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from rlm_mcp.errors import ConfigError

__all__ = [
    "ENV_VARS",
    "Settings",
    "default_home",
]

# Store
DEFAULT_MAX_STORE_BYTES = 20 * 1024**3
DEFAULT_MAX_AGE_DAYS = 30.0
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONTEXT_BYTES = 4 * 1024**3
# Sandbox
DEFAULT_EXEC_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT_CHARS = 20_000
DEFAULT_WORKER_MEMORY_MB = 2048
#: Live sandbox sessions when RLM_MCP_MAX_SESSIONS is unset: derived from the machine's memory
#: (`runtime.default_max_sessions`), never fewer than this many nor more than the ceiling.
MIN_DEFAULT_SESSIONS = 4
MAX_DEFAULT_SESSIONS = 64
DEFAULT_SESSION_IDLE_SECONDS = 1800.0
#: A session used within this many seconds is never closed to make room for another.
DEFAULT_SESSION_GRACE_SECONDS = 60.0
#: How long a new session waits for room before the call answers "busy, retry".
DEFAULT_SESSION_WAIT_SECONDS = 30.0
DEFAULT_MAX_SUB_CALLS = 1_000  # llm_query prompts per sandbox execute
DEFAULT_MAX_PROMPT_CHARS = 1_000_000  # one llm_query prompt from the sandbox
DEFAULT_MAX_FINAL_CHARS = 10_000_000  # a final answer longer than this is cut in the worker
# LM
#: "auto": openai when OPENAI_API_KEY/OPENAI_BASE_URL is set, else anthropic when
#: ANTHROPIC_API_KEY is, else the MCP client's model (sampling) when it can; see backends.py.
DEFAULT_BACKEND = "auto"
#: The openai adapter's model when none is named (each backend has its own default).
DEFAULT_MODEL = "gpt-5-mini"
DEFAULT_MAX_CONCURRENCY = 16
#: Agent CLI processes (claude, codex, gemini) at once, per program.
DEFAULT_AGENT_CONCURRENCY = 4
DEFAULT_LM_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 4
# Loop
DEFAULT_MAX_ITERATIONS = 20
DEFAULT_MAX_DEPTH = 1
#: Root conversation size (characters) past which earlier turns are summarised: about 100K
#: tokens, inside the window of every hosted model we support; lower it for small local models.
DEFAULT_COMPACTION_CHARS = 400_000
# What a client may ask of one rlm_complete at most (the operator's ceilings)
DEFAULT_LIMIT_ITERATIONS = 100
DEFAULT_LIMIT_DEPTH = 3
DEFAULT_LIMIT_TIME = 3600.0
DEFAULT_LIMIT_TOKENS = 20_000_000
#: Characters one tool result may carry (its structured content; the text copy repeats it).
DEFAULT_MAX_RESULT_CHARS = 100_000
# Server
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

#: Every environment variable rlm-mcp reads, with what it means. Provider variables are read by
#: the provider adapters' presets (see `rlm_mcp.lm`), listed here so the docs stay complete.
ENV_VARS: dict[str, str] = {
    "RLM_MCP_HOME": (
        "Data folder (contexts, sub-call cache, trajectories); default: platform cache."
    ),
    "RLM_MCP_MAX_STORE_BYTES": "Cap on the context store's size; oldest-used contexts are evicted.",
    "RLM_MCP_MAX_AGE_DAYS": "Contexts unused for longer than this are evicted (0 disables).",
    "RLM_MCP_MAX_CONTEXT_BYTES": (
        "Largest single context a load may store (default 4 GiB; 0: no cap)."
    ),
    "RLM_MCP_ALLOWED_PATHS": (
        "Folders load_context may read from, separated by ':' (';' on Windows); unset: any "
        "path the server's user can read (except /proc, /sys, /dev)."
    ),
    "RLM_MCP_STORE": (
        "s3://BUCKET/PREFIX: keep contexts in an S3-compatible bucket shared by several "
        "replicas (RLM_MCP_HOME stays their local cache); needs rlm-mcp[cluster]."
    ),
    "RLM_MCP_RAY_ADDRESS": (
        "Ray cluster address (ray://HOST:10001 or HOST:6379): run_repl sessions become Ray "
        "actors that any replica finds; needs RLM_MCP_STORE and rlm-mcp[cluster]."
    ),
    "RLM_MCP_STATELESS": (
        "1: no per-process session state (legacy HTTP clients too), for replicas behind a load "
        "balancer; needs RLM_MCP_STORE and RLM_MCP_RAY_ADDRESS."
    ),
    "RLM_MCP_BACKEND": (
        "Root-model backend: auto (default: a key that is set, else a logged-in agent CLI on PATH, "
        "else sampling), openai, anthropic, ollama, vllm, llamacpp, claude-code, codex, "
        "gemini-cli, sampling, ..."
    ),
    "RLM_MCP_MODEL": "Root-model name. Default: the backend's own (gpt-5-mini, claude-sonnet-4-5).",
    "RLM_MCP_SUB_BACKEND": "Backend for sub-calls (llm_query). Default: the root backend.",
    "RLM_MCP_SUB_MODEL": "Model for sub-calls. Default: the root model.",
    "RLM_MCP_MAX_CONCURRENCY": "Concurrent sub-calls across the whole process (default 16).",
    "RLM_MCP_AGENT_CONCURRENCY": (
        "Agent CLI processes (claude, codex, gemini) running at once, per program (default 4)."
    ),
    "RLM_MCP_LM_TIMEOUT": "Seconds before one model call times out.",
    "RLM_MCP_MAX_RETRIES": "Retries on 429/5xx/connection errors.",
    "RLM_MCP_SUBCALL_CACHE": "1/0: cache identical temperature-0 sub-calls on disk (default 1).",
    "RLM_MCP_EXEC_TIMEOUT": "Seconds a run_repl call may run before it is interrupted.",
    "RLM_MCP_MAX_OUTPUT_CHARS": "Cap on the printed output one REPL call returns.",
    "RLM_MCP_WORKER_MEMORY_MB": "Address-space limit of a sandbox worker, above its context.",
    "RLM_MCP_MAX_SESSIONS": (
        "Live sandbox workers at most (default: twice the machine's memory divided by "
        "RLM_MCP_WORKER_MEMORY_MB, between 4 and 64)."
    ),
    "RLM_MCP_SESSION_GRACE_SECONDS": (
        "A session used within this many seconds is never closed to make room (default 60)."
    ),
    "RLM_MCP_SESSION_WAIT_SECONDS": (
        "How long a new session waits for room before the call answers busy (default 30)."
    ),
    "RLM_MCP_MAX_SUB_CALLS": "llm_query prompts one run_repl call may send at most (default 1000).",
    "RLM_MCP_MAX_PROMPT_CHARS": "Characters in one llm_query prompt from code (default 1,000,000).",
    "RLM_MCP_SESSION_IDLE_SECONDS": "Idle sandbox sessions are closed after this many seconds.",
    "RLM_MCP_MAX_ITERATIONS": "Root-model turns at most in one rlm_complete.",
    "RLM_MCP_MAX_DEPTH": "Recursion depth of llm_query inside the sandbox (1 = plain sub-calls).",
    "RLM_MCP_LIMIT_ITERATIONS": "Most max_iterations a client may ask of rlm_complete (100).",
    "RLM_MCP_LIMIT_DEPTH": "Most max_depth a client may ask of rlm_complete (default 3).",
    "RLM_MCP_LIMIT_TIME": "Most seconds one rlm_complete may run (default 3600).",
    "RLM_MCP_LIMIT_TOKENS": "Most tokens one rlm_complete may use (default 20,000,000).",
    "RLM_MCP_LIMIT_COST": "Most USD one rlm_complete may cost (default: no ceiling).",
    "RLM_MCP_MAX_RESULT_CHARS": (
        "Characters one tool result may hold; a longer answer is stored as a context "
        "(default 100,000)."
    ),
    "RLM_MCP_TOKEN": "Bearer token for the HTTP transport; required when binding off loopback.",
    "RLM_MCP_TOKENS_FILE": (
        "File of 'TOKEN TENANT' lines: several bearer tokens, each a tenant that sees only "
        "its own contexts, sessions and runs."
    ),
    "RLM_MCP_LOG_LEVEL": "Logging level on stderr (DEBUG, INFO, WARNING, ...).",
    "OPENAI_API_KEY": "Key for the openai backend.",
    "OPENAI_BASE_URL": "Base URL for the openai backend (any OpenAI-compatible server).",
    "ANTHROPIC_API_KEY": "Key for the anthropic backend.",
    "ANTHROPIC_BASE_URL": "Base URL for the anthropic backend.",
    "OPENROUTER_API_KEY": "Key for the openrouter preset.",
    "GEMINI_API_KEY": "Key for the gemini preset (OpenAI-compatible endpoint).",
    "AWS_ENDPOINT_URL": "With RLM_MCP_STORE: the S3 endpoint (SeaweedFS, MinIO, R2, ...).",
    "AWS_ACCESS_KEY_ID": "With RLM_MCP_STORE: the bucket's access key.",
    "AWS_SECRET_ACCESS_KEY": "With RLM_MCP_STORE: the bucket's secret key.",
    "AWS_SESSION_TOKEN": "With RLM_MCP_STORE: a temporary session token, if any.",
    "AWS_REGION": "With RLM_MCP_STORE: the bucket's region (default us-east-1).",
}


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """The platform's cache folder for rlm-mcp, or `RLM_MCP_HOME` when `environ` sets it.

    Without `environ` nothing of ours is read (library code must not be steered by the
    process environment); the platform's own cache convention (XDG_CACHE_HOME, LOCALAPPDATA)
    still decides where that folder is.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if environ is not None and environ.get("RLM_MCP_HOME"):
        return Path(environ["RLM_MCP_HOME"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "rlm-mcp"
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "rlm-mcp" / "Cache"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlm-mcp"


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean: use 1 or 0.")


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved configuration for one process (server, CLI command or benchmark)."""

    home: Path = field(default_factory=default_home)
    max_store_bytes: int = DEFAULT_MAX_STORE_BYTES
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    allowed_paths: str | None = None
    store: str | None = None
    ray_address: str | None = None
    stateless: bool = False
    backend: str = DEFAULT_BACKEND
    model: str | None = None
    sub_backend: str | None = None
    sub_model: str | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    agent_concurrency: int = DEFAULT_AGENT_CONCURRENCY
    lm_timeout: float = DEFAULT_LM_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    subcall_cache: bool = True
    exec_timeout: float = DEFAULT_EXEC_TIMEOUT
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    worker_memory_mb: int = DEFAULT_WORKER_MEMORY_MB
    max_sessions: int | None = None  # None: derived from memory (runtime.default_max_sessions)
    session_grace_seconds: float = DEFAULT_SESSION_GRACE_SECONDS
    session_wait_seconds: float = DEFAULT_SESSION_WAIT_SECONDS
    max_sub_calls: int = DEFAULT_MAX_SUB_CALLS
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    session_idle_seconds: float = DEFAULT_SESSION_IDLE_SECONDS
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    max_depth: int = DEFAULT_MAX_DEPTH
    limit_iterations: int = DEFAULT_LIMIT_ITERATIONS
    limit_depth: int = DEFAULT_LIMIT_DEPTH
    limit_time: float = DEFAULT_LIMIT_TIME
    limit_tokens: int = DEFAULT_LIMIT_TOKENS
    limit_cost: float | None = None
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS
    token: str | None = None
    tokens_file: str | None = None
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        # `--home` and RLM_MCP_HOME arrive as strings; every *_dir property needs a Path.
        if not isinstance(self.home, Path):
            object.__setattr__(self, "home", Path(self.home).expanduser())

    @property
    def allowed_roots(self) -> list[str] | None:
        """RLM_MCP_ALLOWED_PATHS as a list of folders, or None when any path may be loaded."""
        if not self.allowed_paths:
            return None
        return [r for r in self.allowed_paths.split(os.pathsep) if r.strip()]

    @property
    def store_dir(self) -> Path:
        return self.home / "contexts"

    @property
    def cache_dir(self) -> Path:
        return self.home / "subcalls"

    @property
    def trajectory_dir(self) -> Path:
        return self.home / "trajectories"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `RLM_MCP_*` variables; keyword overrides (e.g. CLI flags) win.

        Overrides that are None are ignored, so argparse namespaces can be passed straight in.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"home": default_home(env)}
        for f in fields(cls):
            if f.name == "home":
                continue
            raw = env.get(f"RLM_MCP_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f"RLM_MCP_{f.name.upper()}", raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number.") from None
    if kind.startswith("bool"):
        return _parse_bool(name, raw)
    return raw
