"""Cluster settings without any cluster: what is refused at start-up, and how sessions are
keyed when replicas share them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_mcp.config import Settings
from rlm_mcp.errors import ConfigError, SessionExpiredError
from rlm_mcp.runtime import Runtime
from rlm_mcp.sandbox.types import ErrorInfo, ExecResult, FinalAnswer, VariableInfo
from rlm_mcp.server.identity import Caller, SessionRegistry


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"stateless": True}, ["RLM_MCP_STORE", "RLM_MCP_RAY_ADDRESS"]),
        ({"stateless": True, "store": "s3://b/p"}, ["RLM_MCP_RAY_ADDRESS"]),
        ({"ray_address": "127.0.0.1:6379"}, ["RLM_MCP_STORE"]),
    ],
)
def test_an_incomplete_cluster_configuration_fails_at_start_up(
    tmp_path: Path, changes: dict[str, object], words: list[str]
) -> None:
    runtime = Runtime(Settings(home=tmp_path, **changes))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        runtime.check()
    assert all(w in str(caught.value) for w in words)


def test_cluster_variables_are_read_by_from_env(tmp_path: Path) -> None:
    env = {
        "RLM_MCP_HOME": str(tmp_path),
        "RLM_MCP_STORE": "s3://bucket/team",
        "RLM_MCP_RAY_ADDRESS": "10.0.0.6:6379",
        "RLM_MCP_STATELESS": "1",
    }
    s = Settings.from_env(env)
    assert (s.store, s.ray_address, s.stateless) == ("s3://bucket/team", "10.0.0.6:6379", True)


def test_shared_session_handles_are_honoured_on_any_replica_but_keep_their_form() -> None:
    minted_elsewhere = "sess_" + "ab" * 16
    caller = Caller(tenant="alice", legacy=False, http=True)
    shared = SessionRegistry(60, shared=True)
    key, name = shared.key_for(caller, minted_elsewhere)
    assert name == minted_elsewhere and key.tenant == "alice"
    with pytest.raises(SessionExpiredError):
        shared.key_for(caller, "sess_not-a-handle")
    alone = SessionRegistry(60)  # one process: a handle it never minted is refused
    with pytest.raises(SessionExpiredError):
        alone.key_for(caller, minted_elsewhere)


def test_the_same_handle_of_two_tenants_names_two_sessions() -> None:
    from rlm_mcp.cluster import session_name
    from rlm_mcp.server.identity import SessionKey

    handle = "sess_" + "cd" * 16
    alice = session_name(SessionKey("handle", "alice", "", handle))
    bob = session_name(SessionKey("handle", "bob", "", handle))
    assert alice != bob
    assert alice == session_name(SessionKey("handle", "alice", "", handle))  # stable
    assert handle not in alice and "alice" not in alice  # no client text in the name


@pytest.mark.parametrize(
    "result",
    [
        ExecResult(status="ok"),
        ExecResult(
            status="error",
            output="partial é \ufffd",
            error=ErrorInfo("E", "m", 3),
            variables=(VariableInfo("n", "int", "int = 1"),),
            truncated=True,
            output_chars=99,
            duration_s=0.5,
            reset=True,
            final=FinalAnswer("v", "FINAL_VAR", "x", 1),
            sub_calls=2,
            notes=("a", "b"),
        ),
    ],
)
def test_a_result_crosses_the_cluster_channel_whole(result: ExecResult) -> None:
    from rlm_mcp.cluster.wire import result_from_wire, result_to_wire
    from rlm_mcp.sandbox.protocol import decode, encode, header_length

    frame = encode({"kind": "done", "result": result_to_wire(result)})
    assert header_length(frame[:4]) == len(frame) - 4
    assert result_from_wire(decode(frame[4:])["result"]) == result
