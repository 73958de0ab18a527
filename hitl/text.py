"""Untrusted text made safe to show to a person, and bounded to keep.

The model's reasoning and arguments, file names, file contents, diffs, command output
and whatever a decision carries are written by whoever controls the model, the
workspace or the Temporal namespace. Every surface a reviewer reads (terminal, HTML,
notifications) passes them through `visible`, so no control sequence can redraw the
screen, hide a line or reorder text, and a line break in a name shows as `\\n`
instead of starting what looks like another line. Where a value is embedded in text
the project composes (a preview's file list, a refusal), `quoted` marks it
unambiguously; `visible_json` does the same for whole JSON values. On a terminal,
`framed` lays shown text out under a label so that neither its line breaks nor its
length can make it pass for the lines around it, and `shorten` fits it into a table
cell. `clip` bounds what a run keeps or sends.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import unicodedata
from collections.abc import Callable

# Control (Cc: ESC, CR, BS, DEL, C1 such as CSI 0x9b), format (Cf: bidi overrides and
# isolates, zero-width characters, tag characters), surrogate (Cs: undecodable bytes of
# a file name), private use (Co), unassigned (Cn), and the line and paragraph
# separators (Zl, Zp), which some terminals and every browser break lines at.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default-ignorable code points (Unicode's DerivedCoreProperties) that the categories
# above miss: drawn as nothing, so two different names would look the same. Variation
# selectors, the combining grapheme joiner, Hangul fillers, Khmer and Mongolian ones.
_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)
# In a name or a command line a space that isn't U+0020 looks like one but makes a
# different name or word; prose and diffs (multiline) keep them as typography.
_BLANK = frozenset({"\u2800"})
# Combining marks draw over the character before them: after a letter they are
# accents; after a quote, a slash or a space they disguise the project's own
# punctuation, and a long stack of them draws over neighbouring lines.
_MAX_MARKS = 4
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN_EXTRA = frozenset("-_./+@:,=~%#()[]{}")
_NOTHING: frozenset[str] = frozenset()
_LINE_BREAKS = frozenset("\n\t")

# The gutters of `framed`: no line the project composes starts with these, so a line of
# shown text can never pass for one of the CLI's own.
LINE_GUTTER = "│ "
WRAP_GUTTER = "↪ "
_MIN_WIDTH = 40
_TAB_COLUMNS = 8


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


def _json_escape(char: str) -> str:
    """The JSON escape of one character; outside the BMP as a UTF-16 surrogate pair."""
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _ignorable(code: int) -> bool:
    return any(low <= code <= high for low, high in _IGNORABLE)


def _shown_run(
    run: str, base: bool, keep: frozenset[str], spaces: bool, escape: Callable[[str], str]
) -> str:
    out: list[str] = []
    marks = 0
    for char in run:
        category = unicodedata.category(char)
        if char in keep:
            shown = True
        elif category in _HIDDEN or _ignorable(ord(char)):
            shown = False
        elif category in ("Mn", "Me"):
            shown = base and marks < _MAX_MARKS
        elif not spaces and ((category == "Zs" and char != " ") or char in _BLANK):
            shown = False
        else:
            shown = True
        if not shown:
            out.append(escape(char))
            base, marks = False, 0
        elif category in ("Mn", "Me"):
            out.append(char)
            marks += 1
        else:
            out.append(char)
            base, marks = category[0] in "LNM", 0
    return "".join(out)


@functools.cache
def _unusual(keep: frozenset[str]) -> re.Pattern[str]:
    """Runs of characters other than printable ASCII and `keep`: only these need a look,
    one character at a time (a listing of thousands of approvals is mostly ASCII)."""
    return re.compile("[^\\x20-\\x7e" + "".join(re.escape(char) for char in sorted(keep)) + "]+")


def _shown(text: str, keep: frozenset[str], spaces: bool, escape: Callable[[str], str]) -> str:
    if text.isascii() and text.isprintable():
        return text

    def look(match: re.Match[str]) -> str:
        # A combining mark may sit on the printable ASCII character before the run.
        before = text[match.start() - 1] if match.start() else ""
        return _shown_run(match.group(), before.isalnum(), keep, spaces, escape)

    return _unusual(keep).sub(look, text)


def visible(text: object, *, multiline: bool = False) -> str:
    """`text` with every character that could hide or rewrite what a person sees escaped.

    Control characters (ESC, CR, backspace, DEL, C1 controls such as CSI), bidirectional
    overrides, zero-width, tag and other invisible characters, unassigned code points,
    combining marks that don't sit on a letter, and line and paragraph separators become
    `\\x1b`, `\\u202e` and the like. With `multiline`, line feeds stay line breaks (for
    diffs and the model's reasoning); otherwise they show as `\\n`, and spaces other
    than the plain one are escaped too. Tabs stay only in multiline text. Applying it
    again changes nothing.
    """
    if not isinstance(text, str):
        text = str(text)
    if multiline:
        return _shown(text, _LINE_BREAKS, spaces=True, escape=_escape)
    return _shown(text, _NOTHING, spaces=False, escape=_escape)


def visible_json(value: object, *, indent: int | None = None) -> str:
    """`value` as JSON that reads like the text it holds and hides nothing.

    What `visible` would escape becomes a JSON `\\uXXXX` escape, so the result is still
    valid JSON for the same value (copy it into `hitl modify --args`, parse `--json`
    output), while letters of any script stay readable, unlike `ensure_ascii`. As in any
    JSON, a lone high and low surrogate read as the character they would encode; text
    holding them can't travel in Temporal's UTF-8 payloads anyway.
    """
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    # Only strings can hold such characters, and a JSON string may escape any character.
    # The line feeds an indent adds are the only raw ones: JSON escapes those in strings.
    return _shown(text, frozenset("\n"), spaces=False, escape=_json_escape)


def is_plain(value: str) -> bool:
    """A value that reads the same in any position: letters, digits and common punctuation."""
    return (
        bool(value)
        and all((char.isalnum() and char.isprintable()) or char in _PLAIN_EXTRA for char in value)
        # Hangul fillers are letters (Lo) that draw as nothing.
        and visible(value) == value
    )


def quoted(value: object) -> str:
    """A value embedded in composed text: as-is when plain, else a JSON string, escaped.

    A file named `a.log` shows as `a.log`; one named `a.log\\nrm b` shows as
    `"a.log\\nrm b"`, so it can't pass for two entries, and quotes or backslashes
    inside it can't end the quoting early. Distinct values always read differently.
    """
    text = value if isinstance(value, str) else str(value)
    if is_plain(text):
        return text
    # Not `visible_json`: JSON can only spell a character outside the BMP as a surrogate
    # pair, which reads the same as those two surrogates alone; `visible`'s `\U` can't.
    return visible(json.dumps(text, ensure_ascii=False))


def _columns(char: str) -> int:
    if char == "\t":
        return _TAB_COLUMNS  # at most; wrapping early is harmless, late is not
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def columns(text: str) -> int:
    """How many terminal columns `text` (already visible) takes, at most."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(_columns(char) for char in text)


def _cut(line: str, width: int) -> list[str]:
    """`line` in pieces of at most `width` columns; combining marks stay on their letter."""
    if columns(line) <= width:
        return [line]
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for char in line:
        size = _columns(char)
        if current and used + size > width:
            pieces.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += size
    pieces.append("".join(current))
    return pieces


def terminal_width() -> int:
    """The terminal's columns (100 when not on a terminal), at least 40."""
    return max(_MIN_WIDTH, shutil.get_terminal_size((100, 24)).columns)


def framed(label: str, text: str, width: int | None = None) -> list[str]:
    """Shown text under a label, as terminal lines that can't pass for lines around them.

    `text` is what `visible` (or `visible_json`) made of the untrusted parts; its line
    feeds are the only line breaks. The first line follows `label`; every other line
    starts under it with a gutter: `│` where `text` has a line break, `↪` where a line
    too long for the terminal goes on. Left to the terminal, a long line would go on at
    column 0, where it could draw what looks like the CLI's own next line.
    """
    width = max(_MIN_WIDTH, width or terminal_width())
    indent = " " * columns(label)
    room = max(_MIN_WIDTH // 2, width - len(indent) - len(LINE_GUTTER))
    lines: list[str] = []
    # Re-escaping is a no-op on shown text and keeps a caller's slip from reaching a terminal.
    for number, line in enumerate(visible(text, multiline=True).split("\n")):
        if number == 0:
            head, *rest = _cut(line, max(_MIN_WIDTH // 2, width - len(indent)))
            lines.append((label + head).rstrip())
            rest = _cut("".join(rest), room) if rest else []
        else:
            head, *rest = _cut(line, room)
            lines.append((indent + LINE_GUTTER + head).rstrip())
        lines += [(indent + WRAP_GUTTER + piece).rstrip() for piece in rest]
    return lines


def shorten(text: object, width: int) -> str:
    """`text` made visible, then cut to at most `width` columns, ending in `…` when cut."""
    shown = visible(text)
    if columns(shown) <= width:
        return shown
    return _cut(shown, max(1, width - 1))[0] + "…"


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


def lone_surrogate(value: object) -> str | None:
    """The first string in a decoded JSON value that is not valid Unicode, if any.

    JSON may spell a lone surrogate (`"\\udc9b"`); Python decodes it, but it can't be
    encoded as UTF-8 again, so a run that kept it could never write its history.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= char <= "\udfff" for char in item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")


_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]{1,32};)")


def markdown_text(text: object) -> str:
    """Untrusted text shown where markdown is rendered (the Web UI's details, chat):
    visible, with every markdown character escaped, so a name can't become a link, and
    no character reference (`&#x202e;`, `&ZeroWidthSpace;`) left for a renderer to
    decode (CommonMark and Python-Markdown alike show `&amp;` as `&`)."""
    return _MARKDOWN.sub(r"\\\1", _ENTITY.sub("&amp;", visible(text)))
