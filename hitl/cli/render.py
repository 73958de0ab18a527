"""Tables for the terminal, drawn by rich from text that is already escaped.

Every cell is a `rich.text.Text`, never a string rich would read: no markup, emoji codes
or highlighting, so a file name like `[bold]x[/]` or `:smile:` shows as written. The
cells come escaped (`hitl.text.visible`) and are escaped once more here, which changes
nothing in escaped text and keeps any raw control out.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hitl.models import ApprovalStatus, PendingApproval
from hitl.text import columns, shorten, terminal_width, visible


def table(rows: list[list[str]], headers: list[str], fit: int | None = None) -> str:
    """Aligned columns, one line per row; column `fit` is cut so a row fits the terminal
    (100 columns when output is not a terminal).

    A row never wraps: the cut-off end of a cell, on a line of its own, could read as a
    row of its own.
    """
    cells = [[visible(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(columns(row[i]) for row in cells) for i in range(len(headers))]
    if fit is not None:
        others = sum(widths) - widths[fit] + 2 * (len(widths) - 1)
        room = max(columns(headers[fit]), 12, terminal_width() - others)
        if widths[fit] > room:
            widths[fit] = room
            for row in cells:
                row[fit] = shorten(row[fit], room)
    drawn = Table(
        box=None,
        padding=(0, 1),
        pad_edge=False,
        show_edge=False,
        header_style="",
        highlight=False,
        expand=False,
    )
    for header, width in zip(cells[0], widths, strict=True):
        drawn.add_column(Text(header), no_wrap=True, overflow="ellipsis", min_width=width)
    for row in cells[1:]:
        drawn.add_row(*(Text(cell) for cell in row))
    out = io.StringIO()
    console = Console(
        file=out,
        width=sum(widths) + 2 * (len(widths) - 1) + 1,
        color_system=None,
        force_terminal=False,
        markup=False,
        emoji=False,
        highlight=False,
        legacy_windows=False,
    )
    console.print(drawn)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def pending_json(item: PendingApproval) -> dict[str, Any]:
    """The documented record shape, from the memo's summary of a pending approval."""
    return {
        "id": item.id,
        "session_id": item.session_id,
        "status": ApprovalStatus.PENDING.value,
        "tool": item.tool,
        "action_json": item.action_json.model_dump(mode="json") if item.action_json else None,
        "action_digest": item.action_digest,
        "preview": {"summary": item.summary},
        "risk": item.risk,
        "created_at": item.created_at.isoformat(),
        "expires_at": item.expires_at.isoformat(),
        "reviewer": None,
        "reviewed_at": None,
        "modified_action_json": None,
        "reason": None,
    }
