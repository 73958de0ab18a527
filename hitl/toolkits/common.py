"""What the built-in toolkits share: argument bounds and small formatting helpers."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# What one call may carry: everything a call carries is kept in the approval record and
# the run's history (2 MB a payload), so each argument is bounded, with a message that
# tells the model how to stay within the bound.
MAX_PATH_CHARS = 4096
MAX_SUMMARY_CHARS = 200


def line_breaking_or_control(text: str) -> bool:
    """Control characters (CR, LF, NUL, ESC, ...) and the Unicode line/paragraph separators."""
    return any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in text)


def _bounded_path(value: str) -> str:
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(
            f"a path of {len(value):,} characters is too long; paths are at most "
            f"{MAX_PATH_CHARS:,} characters"
        )
    return value


PathArg = Annotated[str, AfterValidator(_bounded_path)]


class Args(BaseModel):
    # Unknown argument names are an error the model should hear about, not noise to drop.
    model_config = ConfigDict(extra="forbid")


def clamp(value: float) -> int:
    return max(0, min(100, round(value)))


def size_text(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
