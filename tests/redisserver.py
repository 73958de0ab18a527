"""A real Redis server on a free loopback port: Debian's redis-server where installed, else
the Valkey server the dev extras put in the venv (`tests.processes.redis_binary`)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator

from hitl.devserver import free_port, wait_for_port
from tests.processes import redis_binary


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start the server on loopback, yield its URL, stop it; a server that won't start
    fails the test with its own log (never a skip)."""
    binary = redis_binary()
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(port, 20, process)
            except RuntimeError:  # its message names the Temporal server; say which and why
                process.kill()
                process.wait()
                log.seek(0)
                raise AssertionError(f"{binary} did not start:\n{log.read().decode()}") from None
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)
