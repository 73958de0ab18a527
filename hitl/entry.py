"""How every entry point (hitl, starter, worker, demo) ends its process."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

USAGE = 2
CLOSED_PIPE = 128 + 13
"""What a process killed by SIGPIPE reports: `hitl runs --json | head` reads what it
wants and closes the pipe, as `yes | head` does."""


def exit_now(code: int) -> NoReturn:
    """Flush and leave without interpreter finalization.

    The SDK's native runtime keeps threads that can touch Python while the
    interpreter finalizes, which intermittently crashes a short-lived client with
    SIGSEGV or SIGABRT after its work is done (temporalio/sdk-python#300; about 1 in
    20 runs of `hitl` here). All work is finished when this is called.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)


def run_main(main: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run an async entry point and leave with its exit code.

    argparse's own exits (--help: 0, usage errors: 2) and Ctrl-C (2) leave the same way;
    a reader that closed the pipe (`| head`) ends it quietly, with no traceback.
    """
    code: int
    try:
        code = asyncio.run(main())
    except BrokenPipeError:
        # Whatever is still buffered has nobody to go to: flushing it again at exit would
        # only fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = CLOSED_PIPE
    except KeyboardInterrupt:
        code = USAGE
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else USAGE
    exit_now(code)
