"""`make demo`'s program, run as a user would with piped answers: approve, then reject."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from hitl.devserver import free_port, port_free

ROOT = Path(__file__).resolve().parent.parent


async def test_the_demo_runs_unattended_with_piped_answers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TEMPORAL_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hitl.demo",
        "--port",
        str(port),
        "--state-dir",
        str(tmp_path / "state"),
        "--workspace",
        str(tmp_path / "ws"),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(b"y\nn\n"), timeout=120)
    text = out.decode()
    assert process.returncode == 0, text
    assert text.count("Approve? [y/n/e(dit)]:") == 2, text
    assert "scripted model" in text
    assert "logs/app-2026-10-02.log" in text  # the affected files are listed
    assert "check: exactly the old logs are gone; newer logs and config kept" in text
    assert "check: nothing was deleted" in text
    assert re.search(r"Decision on apr_\S+: rejected by ", text), text
    assert "/namespaces/default/workflows" in text
    assert "Stopped the worker and the dev server this demo started." in text
    assert (tmp_path / "state" / "temporal.db").exists()
    assert port_free(port), "the demo's server is still running"


def test_only_workspace_remakes_the_demos_folder_and_leaves_anyone_elses_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hitl import demo

    ws = tmp_path / "ws"
    assert demo.main(["--only-workspace", "--workspace", str(ws)]) == 0
    assert "logs/app-2026-10-02.log" in capsys.readouterr().out
    old = demo.expected_old(ws)
    for name in old:
        (ws / name).unlink()  # an approved run deleted them
    (ws / "notes.txt").write_text("a run wrote this")
    assert demo.main(["--only-workspace", "--workspace", str(ws)]) == 0
    assert set(old) <= set(demo.present(ws)) and "notes.txt" not in demo.present(ws)

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit, match="holds files that are not the demo's"):
        demo.main(["--only-workspace", "--workspace", str(mine)])
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_make_server_on_a_busy_port_says_so_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed "Temporal dev server on 127.0.0.1:7233 ... (Ctrl-C stops it)", then the
    binary's own "can't set frontend port"."""
    import socket

    from hitl import devserver

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = devserver.main(
            ["--db", str(tmp_path / "t.db"), "--port", str(port), "--ui-port", str(free_port())]
        )
    err = capsys.readouterr().err
    assert code == 2 and f"port {port} is in use" in err and "--port N" in err, err
    assert not (tmp_path / "t.db").exists()
