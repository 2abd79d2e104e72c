"""`rlm-mcp load / contexts / rm` through `rlm_mcp.cli.main`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_mcp.cli import main


def test_load_contexts_rm_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello\nworld\n")
    assert main(["load", str(f), "--name", "notes"]) == 0
    out = capsys.readouterr().out
    handle = out.split()[0]
    assert handle.startswith("ctx_") and "12 chars, 2 lines" in out
    assert main(["load", "--text", "inline text"]) == 0
    capsys.readouterr()
    assert main(["contexts"]) == 0
    table = capsys.readouterr().out
    assert handle in table and "notes" in table and table.count("ctx_") == 2
    assert main(["rm", "notes"]) == 0
    assert main(["contexts"]) == 0
    assert handle not in capsys.readouterr().out


def test_load_missing_path_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_rm_unknown_handle_fails_and_empty_store_says_how_to_load(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rm", "ctx_000000000000"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["contexts"]) == 0
    assert "rlm-mcp load" in capsys.readouterr().out
    assert main(["load"]) == 2


def test_progress_printer_reports_big_inputs_only(capsys: pytest.CaptureFixture[str]) -> None:
    from rlm_mcp.cli import _PROGRESS_MIN_BYTES, _progress_printer

    show = _progress_printer("x")
    show(10, 100)
    assert capsys.readouterr().err == ""
    show(_PROGRESS_MIN_BYTES, _PROGRESS_MIN_BYTES)
    assert "100%" in capsys.readouterr().err


def test_load_over_the_context_size_cap_says_which_variable_raises_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "big.txt"
    f.write_text("x" * 500)
    monkeypatch.setenv("RLM_MCP_MAX_CONTEXT_BYTES", "100")
    assert main(["load", str(f)]) == 2
    err = capsys.readouterr().err
    assert "RLM_MCP_MAX_CONTEXT_BYTES" in err and "Traceback" not in err
    assert main(["contexts"]) == 0
    assert "ctx_" not in capsys.readouterr().out


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_serve_with_a_bad_port_is_a_usage_error_not_a_traceback(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--transport", "http", "--port", port])
    assert exc.value.code == 2
    assert f"'{port}' is not a port number (1-65535)" in capsys.readouterr().err
