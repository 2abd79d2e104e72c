"""Beyond one machine: sandbox sessions on a Ray cluster (the contexts' shared store is
`rlm_mcp.store.shared`). Optional: ``pip install 'rlm-mcp[cluster]'``; nothing here is imported
unless RLM_MCP_RAY_ADDRESS is set."""

from rlm_mcp.cluster.pool import NAMESPACE, RayPool, RemoteSession, session_name

__all__ = ["NAMESPACE", "RayPool", "RemoteSession", "session_name"]
