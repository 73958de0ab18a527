"""How every entry point (hitl, starter, worker, demo) ends its process."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


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
