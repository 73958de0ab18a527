"""Untrusted text on a reviewer's screen: nothing hides, rewrites or impersonates a line."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitl.models import (
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    DecisionEntry,
    DecisionKind,
    ToolAction,
    ToolPreview,
)
from hitl.terminal import format_approval, format_entry
from hitl.text import (
    LINE_GUTTER,
    WRAP_GUTTER,
    clip,
    clip_bytes,
    columns,
    framed,
    quoted,
    shorten,
    visible,
    visible_json,
)

HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# Every code point, surrogates included: a file name with undecodable bytes has them.
ANY_TEXT = st.text(st.characters(exclude_categories=()))

# What an attacker puts into a name, a reasoning or a refusal to redraw the screen.
HOSTILE = [
    "\x1b[2K\r",  # erase the line, back to column 0
    "\x1b[1A\x1b[2K",  # up one line and erase it
    "\x1b]8;;https://evil.example/\x1b\\",  # OSC 8 hyperlink
    "\x1b]52;c;cm0gLXJmIH4=\x07",  # OSC 52: write the clipboard
    "\x9b2K",  # C1 CSI
    "\x9d0;title\x9c",  # C1 OSC ... ST
    "\x08\x08\x7f\x00\x0b\x0c\x85",  # BS, DEL, NUL, VT, FF, NEL
    "\u202egol.\u202c\u2066\u2067\u2068\u2069\u202a\u202b\u202d\u200e\u200f\u061c",  # bidi
    "\u200b\u200c\u200d\u2060\ufeff\u00ad",  # zero-width
    "\u2028\u2029",  # line and paragraph separators
    "\U000e0041\U000e0001\U000e007f",  # tag characters
    "\ufe0f\u034f\u3164\u115f\U000e0100",  # default-ignorable, not Cf
    "\u00a0\u2000\u3000\u2800",  # spaces that aren't U+0020, braille blank
    "\ue000\U000f0000\udc9b\U0010ffff\u0378",  # private use, surrogate, unassigned
]
HOSTILE_TEXT = "".join(HOSTILE)
BIDI_AND_INVISIBLE = set(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u2028\u2029\ufe0f\u034f\u3164\u115f"
)


def hidden_in(text: str, allowed: str = "") -> list[str]:
    return [c for c in text if c not in allowed and unicodedata.category(c) in HIDDEN]


def c1_in(text: str) -> list[str]:
    return [c for c in text if 0x80 <= ord(c) <= 0x9F]


def unquote(text: str) -> str:
    """Decodes `quoted` output without JSON's pairing of surrogate escapes, one code point each."""
    if not text.startswith('"'):
        return text
    return text[1:-1].encode("raw_unicode_escape").decode("unicode_escape")


# --- visible ---------------------------------------------------------------------------


@pytest.mark.parametrize("attack", HOSTILE)
def test_every_attack_sequence_is_escaped_in_single_line_text(attack: str) -> None:
    shown = visible(f"logs/{attack}harmless.log")
    assert not hidden_in(shown) and not c1_in(shown)
    assert not set(shown) & BIDI_AND_INVISIBLE
    assert "\x1b" not in shown and "\r" not in shown and "\n" not in shown
    assert shown.startswith("logs/") and shown.endswith("harmless.log")


def test_escapes_name_what_was_there() -> None:
    assert visible("a\x1b[2K\rb") == "a\\x1b[2K\\rb"
    assert visible("x\x9by") == "x\\x9by"
    assert visible("evil\u202egol.exe") == "evil\\u202egol.exe"
    assert visible("tag\U000e0041") == "tag\\U000e0041"
    assert visible("two\nlines\t") == "two\\nlines\\t"
    assert visible("a\u00a0b") == "a\\xa0b"


def test_multiline_text_keeps_line_breaks_and_tabs_but_nothing_else() -> None:
    shown = visible("line 1\r\n\tline 2\x1b[31m\u2028line 3\u00a0", multiline=True)
    assert shown == "line 1\\r\n\tline 2\\x1b[31m\\u2028line 3\u00a0"


def test_plain_and_international_text_is_left_alone() -> None:
    for text in ["logs/app-2026-10-01.log", "Grüße, 日本語, عربي, עברית", "café", "e\u0301t\u00e9"]:
        assert visible(text) == text


def test_combining_marks_only_sit_on_letters_and_do_not_stack() -> None:
    assert visible('"\u0338a.log"') == '"\\u0338a.log"'  # would strike through the quote
    assert visible(" \u20e3") == " \\u20e3"
    zalgo = "a" + "\u0300" * 10
    assert visible(zalgo) == "a" + "\u0300" * 4 + "\\u0300" * 6


@given(ANY_TEXT)
def test_visible_never_lets_a_hidden_character_through(text: str) -> None:
    assert not hidden_in(visible(text))
    assert not hidden_in(visible(text, multiline=True), allowed="\n\t")


@given(ANY_TEXT)
def test_visible_is_idempotent(text: str) -> None:
    once = visible(text)
    assert visible(once) == once
    shown = visible(text, multiline=True)
    assert visible(shown, multiline=True) == shown


# --- quoted and visible_json ------------------------------------------------------------------


def test_quoted_marks_values_that_could_pass_for_structure() -> None:
    assert quoted("a.log") == "a.log"
    assert quoted("a.log\nrm b") == '"a.log\\nrm b"'
    assert quoted("a.log, b.log") == '"a.log, b.log"'
    assert quoted("\u3164") == '"\\u3164"'  # a letter that draws as nothing is not plain


@given(ANY_TEXT)
def test_quoted_is_unambiguous_and_shows_nothing_hidden(text: str) -> None:
    shown = quoted(text)
    assert not hidden_in(shown)
    assert unquote(shown) == text  # so distinct values always read differently


@given(ANY_TEXT, ANY_TEXT)
def test_quoted_values_that_differ_read_differently(a: str, b: str) -> None:
    assert (quoted(a) == quoted(b)) == (a == b)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | ANY_TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
        max_leaves=8,
    )
)
def test_visible_json_is_the_same_json_value_with_nothing_hidden(value: object) -> None:
    for indent in (None, 2):
        shown = visible_json(value, indent=indent)
        assert not hidden_in(shown, allowed="\n")
        assert json.dumps(json.loads(shown), sort_keys=True) == json.dumps(value, sort_keys=True)


def test_visible_json_keeps_letters_readable() -> None:
    assert visible_json({"path": "café/日本.log"}) == '{"path": "café/日本.log"}'
    assert visible_json(["a\x1b\x9b\u202eb"]) == '["a\\u001b\\u009b\\u202eb"]'


# --- framed and shorten: long lines ----------------------------------------------------------


def test_framed_gives_every_line_after_the_first_a_gutter() -> None:
    fake = "ok\nAction:    delete_files  (digest 0)\n" + "x" * 150
    lines = framed("Reasoning: ", visible(fake, multiline=True), width=60)
    assert lines[0] == "Reasoning: ok"
    assert lines[1] == " " * 11 + LINE_GUTTER + "Action:    delete_files  (digest 0)"
    assert all(line.startswith(" " * 11 + (LINE_GUTTER, WRAP_GUTTER)[1]) for line in lines[3:])
    assert all(columns(line) <= 60 for line in lines)


@given(st.text(max_size=300), st.integers(min_value=40, max_value=200))
def test_framed_lines_fit_the_width_and_none_starts_at_column_0(text: str, width: int) -> None:
    lines = framed("Label:     ", visible(text, multiline=True), width=width)
    assert lines[0].startswith("Label:")
    for line in lines:
        assert columns(line) <= width and not hidden_in(line, allowed="\t")
    for line in lines[1:]:
        assert line[:11] == " " * 11 and line[11] in LINE_GUTTER[0] + WRAP_GUTTER[0]


def test_framed_escapes_even_what_a_caller_forgot() -> None:
    assert framed("", "a\x1b[2Kb") == ["a\\x1b[2Kb"]


def test_shorten_escapes_before_it_cuts() -> None:
    assert shorten("abc\x1b[2Kdef", 8) == "abc\\x1b…"
    assert shorten("short", 8) == "short"
    assert columns(shorten("日本語のファイル名", 9)) <= 9


# --- clip ----------------------------------------------------------------------------------


def test_clip_says_how_much_was_left_out() -> None:
    assert clip("abc", 10) == "abc"
    clipped = clip("x" * 1000, 100)
    assert len(clipped) == 100 and "more characters not shown" in clipped
    assert clip_bytes(b"\xff" * 10, 4).startswith("\ufffd" * 4)


# --- the approval a reviewer decides on --------------------------------------------------------

REAL = "logs/important.db\x1b[2K\rharmless.log"


def hostile_record() -> ApprovalRecord:
    """An approval whose every field an attacker could write carries the attack sequences."""
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    action = ToolAction(tool="delete_files", args={"paths": [REAL, HOSTILE_TEXT]})
    entry = DecisionEntry(
        kind=DecisionKind.APPROVE,
        reviewer="mallory" + HOSTILE_TEXT,
        reason="fine" + HOSTILE_TEXT,
        received_at=now,
        outcome="refused",
        refusal="already approved by mallory" + HOSTILE_TEXT,
    )
    return ApprovalRecord(
        id="apr_1" + HOSTILE_TEXT,
        session_id="run" + HOSTILE_TEXT,
        action_json=action,
        # ToolAction.digest() can't encode a lone surrogate; the digest isn't under test.
        action_digest="0123456789abcdef",
        status=ApprovalStatus.MODIFIED,
        created_at=now,
        expires_at=now + timedelta(minutes=30),
        reviewer="mallory" + HOSTILE_TEXT,
        reason="ok" + HOSTILE_TEXT,
        modified_action_json=ToolAction(tool="delete_files", args={"paths": [HOSTILE_TEXT]}),
        context=ApprovalContext(
            original_request="clean up" + HOSTILE_TEXT, reasoning="old\n" + HOSTILE_TEXT
        ),
        preview=ToolPreview(
            summary="delete 1 file" + HOSTILE_TEXT,
            details=f"  {REAL}\n  {HOSTILE_TEXT}",
            warnings=["careful" + HOSTILE_TEXT],
        ),
        decisions=[entry],
    )


def test_format_approval_shows_the_real_path_and_nothing_that_redraws_the_screen() -> None:
    text = format_approval(hostile_record(), now=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    assert "\x1b" not in text and "\r" not in text
    assert not c1_in(text) and not set(text) & BIDI_AND_INVISIBLE
    assert not hidden_in(text, allowed="\n")
    assert '"logs/important.db\\u001b[2K\\rharmless.log"' in text  # the action's arguments
    assert "logs/important.db\\x1b[2K\\rharmless.log" in text  # the preview's file list
    for line in text.splitlines():
        assert columns(line) <= 100


def test_format_entry_escapes_reviewer_reason_and_refusal() -> None:
    [entry] = hostile_record().decisions
    text = format_entry(entry)
    assert "mallory\\x1b[2K\\r" in text and "fine\\x1b" in text and "already approved" in text
    assert not hidden_in(text) and not c1_in(text)


def test_markdown_text_leaves_no_character_reference_to_decode() -> None:
    """The Web UI's details and chat alike: `&#x202e;` must not become a real override."""
    from hitl.text import markdown_text

    for hostile in ("a&#x202e;b", "&#8238;", "x&ZeroWidthSpace;y", "&lt;b&gt;"):
        shown = markdown_text(hostile)
        assert "&#" not in shown.replace("&amp;#", "") and "&Zero" not in shown
        assert "&amp;" in shown
    assert markdown_text("fish & chips") == "fish & chips"
