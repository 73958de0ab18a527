"""Durations and time ranges as people type them: `90s`, `30m`, `12h`, `30d`, or a date.

Pure (no temporalio): the CLI, the API and the insights share these, so `--since 30d` and
`?since=30d` mean the same and say the same when they can't be read.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 1}
MAX_RANGE = timedelta(days=3660)
"""How far back a range may reach: ten years is every record a deployment keeps."""


class RangeError(argparse.ArgumentTypeError):
    """A duration or moment that can't be read, or a range that ends before it begins:
    one sentence saying what would be read (argparse prints it as the usage error)."""


def parse_duration(text: str) -> float:
    """Seconds from '30m', '90s', '1.5h', '2d' or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise RangeError(
            f"{text[:40]!r} is not a duration; use e.g. 90s, 30m, 2h or a number of seconds"
        )
    return float(match[1]) * _UNITS[match[2]]


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A moment from a duration ago (`30d`, `12h`, `90m`) or a date or time in ISO 8601
    (`2026-11-01`, `2026-11-01T09:00`, `...Z` or `...+01:00`; without a zone, UTC)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    text = text.strip()
    if _DURATION.match(text):
        seconds = parse_duration(text)
        if seconds > MAX_RANGE.total_seconds():
            raise RangeError(f"{text[:40]!r} reaches back more than {MAX_RANGE.days} days")
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RangeError(
            f"{text[:40]!r} is neither a duration (30d, 12h, 90m) nor a date or time "
            "(2026-11-01, 2026-11-01T09:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise RangeError(f"{text[:40]!r} is out of range: the calendar ends there") from None
    if moment < now - MAX_RANGE:
        raise RangeError(f"{text[:40]!r} is more than {MAX_RANGE.days} days ago")
    return moment


def time_range(
    since: str, until: str | None = None, now: datetime | None = None
) -> tuple[datetime, datetime | None]:
    """[since, until) from what a person typed; until None: up to now and on."""
    now = now or datetime.now(UTC)
    start = parse_moment(since, now)
    end = parse_moment(until, now) if until is not None else None
    if end is not None and end <= start:
        raise RangeError(
            f"the range ends ({end:%Y-%m-%d %H:%M:%S}Z) before it begins "
            f"({start:%Y-%m-%d %H:%M:%S}Z): --until must be later than --since"
        )
    if start > now:
        raise RangeError(f"{since[:40]!r} is in the future: nothing was recorded yet")
    return start, end
