"""Untrusted text made safe to show to a person, and bounded to keep.

The model's reasoning and arguments, file names, file contents, diffs, command output
and whatever a decision carries are written by whoever controls the model, the
workspace or the Temporal namespace. Every surface a reviewer reads (terminal, HTML,
notifications) passes them through `visible`, so no control sequence can redraw the
screen, hide a line or reorder text, and a line break in a name shows as `\\n`
instead of starting what looks like another line. Where a value is embedded in text
the project composes (a preview's file list, a refusal), `quoted` marks it
unambiguously. `clip` bounds what a run keeps or sends.
"""

from __future__ import annotations

import json
import unicodedata

# Control (Cc), format (Cf: bidi overrides, zero-width characters), surrogate (Cs),
# private use (Co), unassigned (Cn), and the line and paragraph separators (Zl, Zp).
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN_EXTRA = frozenset("-_./+@:,=~%#()[]{}")


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def visible(text: object, *, multiline: bool = False) -> str:
    """`text` with every character that could hide or rewrite what a person sees escaped.

    Control characters (ESC, CR, backspace, C1 controls such as CSI), bidirectional
    overrides, zero-width and other invisible characters become `\\x1b`, `\\u202e`
    and the like. With `multiline`, line feeds stay line breaks (for diffs and the
    model's reasoning); otherwise they show as `\\n`. Tabs stay only in multiline text.
    """
    if not isinstance(text, str):
        text = str(text)
    keep = {"\n", "\t"} if multiline else set()
    if text.isprintable() and not (keep & set(text)):
        return text
    return "".join(char if char in keep or not _hidden(char) else _escape(char) for char in text)


def is_plain(value: str) -> bool:
    """A value that reads the same in any position: letters, digits and common punctuation."""
    return bool(value) and all(
        (char.isalnum() and char.isprintable()) or char in _PLAIN_EXTRA for char in value
    )


def quoted(value: object) -> str:
    """A value embedded in composed text: as-is when plain, else a JSON string, escaped.

    A file named `a.log` shows as `a.log`; one named `a.log\\nrm b` shows as
    `"a.log\\nrm b"`, so it can't pass for two entries, and quotes or backslashes
    inside it can't end the quoting early.
    """
    text = value if isinstance(value, str) else str(value)
    if is_plain(text):
        return text
    return visible(json.dumps(text, ensure_ascii=False))


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    note = f" [... {len(text) - limit:,} more characters not shown]"
    keep = max(0, limit - len(note))
    return text[:keep] + note


def clip_bytes(data: bytes, limit: int) -> str:
    """Bytes decoded as UTF-8 (invalid sequences replaced), at most `limit` bytes of them."""
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) > limit:
        text += f"\n[... {len(data) - limit:,} more bytes not shown]"
    return text
