"""Sandboxed REPL sessions: RestrictedPython inside a limited worker process."""
