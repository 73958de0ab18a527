"""A real Redis server (Debian's redis-server, which .ci/run installs) on a free port."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

from hitl.devserver import free_port, wait_for_port


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server on loopback, yield its URL, stop it."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (.ci/run installs Debian's redis-server)"
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 20, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
