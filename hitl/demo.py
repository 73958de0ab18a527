"""`make demo`: the guide's scenario, end to end, on this machine.

Starts a Temporal dev server (SQLite under .temporal/) and a worker, makes a
workspace with old and new log files, and runs "Delete all log files older than
7 days" twice, asking you `Approve? [y/n/e(dit)]:` each time (answers may be piped:
`printf 'y\\nn\\n' | make demo`). Stops everything it started when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from hitl import start
from hitl.config import connect, load_settings
from hitl.devserver import DevServer, free_port, port_free
from hitl.entry import exit_now
from hitl.text import quoted, visible
from hitl.visibility import ensure_search_attributes

TASK = "Delete all log files older than 7 days"
ROOT = Path(__file__).resolve().parent.parent
DAY = 86400

# (path, age in days): the .log files older than 7 days are the ones to go.
FILES = [
    ("logs/app-2026-10-02.log", 53),
    ("logs/app-2026-11-01.log", 23),
    ("logs/worker/worker-2026-11-12.log", 12),
    ("logs/app-2026-11-23.log", 1),
    ("logs/app-today.log", 0),
    ("logs/worker/worker-today.log", 0),
    ("config/settings.yaml", 90),
]


def _is_demos(root: Path) -> bool:
    """Empty, or made by `make_workspace` (whatever runs have added since)."""
    marker = root / FILES[-1][0]
    try:
        return not any(root.iterdir()) or marker.read_text().startswith(f"{FILES[-1][0]}: sample")
    except OSError:
        return False


def make_workspace(root: Path) -> None:
    """The demo's files in `root`, made again; a folder of anyone else's is left alone."""
    if root.exists() and not root.is_dir():
        raise SystemExit(f"error: {visible(root)} is not a folder; give the demo another one")
    if root.exists() and not _is_demos(root):
        others = [name for name in present(root) if name not in dict(FILES)]
        raise SystemExit(
            f"error: {visible(root)} holds files that are not the demo's ({_names(others[:3])}); "
            "the demo makes its workspace from scratch, so give it a new folder (--workspace)"
        )
    shutil.rmtree(root, ignore_errors=True)
    now = time.time()
    for name, age in FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name}: sample content\n" * (40 + age))
        os.utime(path, (now - age * DAY - 60, now - age * DAY - 60))


def expected_old(root: Path) -> list[str]:
    return sorted(name for name, age in FILES if name.endswith(".log") and age > 7)


def present(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".hitl" not in p.parts
    )


def _say(text: str) -> None:
    # Paths come from the command line and names from the workspace: callers escape
    # them; this keeps a slip from reaching the terminal.
    print(f"\n=== {visible(text, multiline=True)}", flush=True)


def _names(names: list[str]) -> str:
    """File names in a list, each unmistakable however it is spelled (`hitl.text.quoted`)."""
    return ", ".join(quoted(name) for name in names)


async def _ready(address: str, timeout: float = 30) -> None:
    """Wait until the server answers a client, then make sure our search attributes exist."""
    settings = load_settings({**os.environ, "TEMPORAL_ADDRESS": address})
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await connect(settings)
            await ensure_search_attributes(client)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def _run_task(workspace: Path, label: str, address: str, task_queue: str) -> int:
    os.environ["TEMPORAL_ADDRESS"] = address
    os.environ["HITL_TASK_QUEUE"] = task_queue
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return asyncio.run(
        start.run(
            [
                TASK,
                "--workspace",
                str(workspace),
                "--review",
                "inline",
                "--id",
                f"demo-{label}-{stamp}",
            ]
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".temporal")
    parser.add_argument("--workspace", type=Path, default=ROOT / "demo-workspace")
    parser.add_argument(
        "--only-workspace",
        action="store_true",
        help="make the workspace (old and new logs) again and stop: for runs of your own",
    )
    args = parser.parse_args(argv)
    if args.only_workspace:
        make_workspace(args.workspace)
        print(
            f"Made {visible(args.workspace)}: {_names(present(args.workspace))}; "
            f"the logs older than 7 days are {_names(expected_old(args.workspace))}"
        )
        return 0

    server: DevServer | None = None
    worker: subprocess.Popen | None = None
    port = args.port
    try:
        if port_free(port) and port_free(port + 1000):
            server = DevServer(args.state_dir / "temporal.db", port=port)
            _say(
                f"Starting the Temporal dev server on {server.address} "
                f"(state in {visible(server.db_file)}, Web UI {server.ui_url})"
            )
            server.start()
            address = server.address
        elif not port_free(port):
            address = f"127.0.0.1:{port}"
            _say(f"Port {port} is in use; using the Temporal server already there")
        else:
            port = free_port()
            server = DevServer(args.state_dir / "temporal.db", port=port, ui_port=free_port())
            _say(
                f"Port {args.port + 1000} is in use; starting the dev server on "
                f"{server.address} (Web UI {server.ui_url})"
            )
            server.start()
            address = server.address
        asyncio.run(_ready(address))
        ui = server.ui_url if server else f"http://localhost:{port + 1000}"

        task_queue = f"hitl-demo-{os.getpid()}"
        args.state_dir.mkdir(parents=True, exist_ok=True)
        worker_log = args.state_dir / "demo-worker.log"
        _say(f"Starting a worker on task queue {task_queue} (log: {visible(worker_log)})")
        with open(worker_log, "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, str(ROOT / "worker.py")],
                env={
                    **os.environ,
                    "TEMPORAL_ADDRESS": address,
                    "HITL_TASK_QUEUE": task_queue,
                    "HITL_LOG_JSON": "1",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

        old = expected_old(args.workspace)
        results = []
        for label in ("approve", "reject"):
            make_workspace(args.workspace)
            _say(
                f"Run '{label}': \"{TASK}\" in {visible(args.workspace)}\n"
                f"    files: {_names(present(args.workspace))}\n"
                f"    (answer y to approve, n to reject, e to edit the list)"
            )
            code = _run_task(args.workspace, label, address, task_queue)
            left = present(args.workspace)
            gone = [name for name, _ in FILES if name not in left]
            kept_new = all(
                name in left for name, age in FILES if age <= 7 or not name.endswith(".log")
            )
            print(f"    deleted: {_names(gone) or 'nothing'}")
            print(f"    still there: {_names(left)}")
            if gone and sorted(gone) == old and kept_new:
                print("    check: exactly the old logs are gone; newer logs and config kept")
            elif not gone:
                print("    check: nothing was deleted")
            results.append(code)
        _say("Done. What to look at:")
        print(f"  Web UI (while a server runs): {ui}/namespaces/default/workflows")
        print("    each run's summary is its task; open one to see the LLM and tool activities,")
        print("    the approval timer, the decision (an update), and the result with evidence.")
        print("  The runs are kept in the SQLite file: `make server` serves them again.")
        return 0 if all(code in (0, 1) for code in results) else 1
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
        if server is not None:
            server.stop()
            print("Stopped the worker and the dev server this demo started.", flush=True)


if __name__ == "__main__":
    exit_now(main())
