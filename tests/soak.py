"""How hard the fault, race and fuzz suites push: 1 in `make test`, more in `make soak`."""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("HITL_SOAK", "1") or "1"))
"""Multiplies iterations, kills and generated examples (`make soak` sets HITL_SOAK=10)."""
