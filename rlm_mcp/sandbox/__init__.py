"""Sandboxed REPL sessions: RestrictedPython inside a limited worker process."""

from rlm_mcp.sandbox.pool import SessionPool
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits, SandboxSession
from rlm_mcp.sandbox.types import ExecResult, FinalAnswer, SubCallHandler

__all__ = [
    "ContextSpec",
    "ExecResult",
    "FinalAnswer",
    "SandboxLimits",
    "SandboxSession",
    "SessionPool",
    "SubCallHandler",
]
