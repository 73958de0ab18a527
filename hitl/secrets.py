"""Secret values the worker holds, kept out of everything a run stores, logs or sends.

A command a reviewer approved can read the worker's environment (`/proc/$PPID/environ`,
`env`, a config file) and print it. Whatever a tool returns goes into workflow
history, the run's result and the next request to the model, so a secret printed once
is stored in Temporal and sent to whoever runs the model. `Redactor` replaces every
secret value the worker process holds, and the common encodings of it, with
`[redacted:NAME]` wherever a value crosses out of the worker: tool results, the LLM
turn, error messages and log lines.

Which values are secrets (`secrets_in`): the known names (`OPENAI_API_KEY`,
`TEMPORAL_API_KEY`, `HITL_SMTP_URL` and the other `HITL_*` credentials), every
environment variable whose name looks secret (ends in KEY, TOKEN, SECRET, PASSWORD,
PASSWD, CREDENTIAL(S) or _PAT, or starts with AUTH; any case), the password of any
`scheme://user:pass@host` value, and the names listed in `HITL_SECRET_ENV`
(comma-separated). Values shorter than `MIN_SECRET_LENGTH` (8) characters are ignored:
a 4-character "password" occurs in ordinary text so often that replacing it would
garble file listings and command output, and it is too weak to protect anyway.

What is caught, where it stands: the value itself; base64 (standard and URL-safe,
padded or not, and the value embedded at any of the 3 byte alignments inside a longer
base64 stream, e.g. `base64 /proc/self/environ`); hex (lower and upper case); URL-quoting;
JSON string escaping; the value reversed (`rev`). What is caught whatever the layout,
taking every line a match draws on whole: each of those forms split across lines or
spaced out (`base64` at any width, `fold`, `sed 's/./& /g'`); hex with separators
(spaces, colons, dashes, commas, `0x` and `\\x` prefixes), in any number of lines, with
the offsets and character columns of `xxd`, `xxd -p`, `xxd -c N`, `od -t x1z`,
`od -An -tx1` and `hexdump -C`; the byte-swapped words of `od -x`, `hexdump` and
`od -t x4`; `od`'s and `od -b`'s octal; `od -c`'s characters.

What is NOT caught, and can't be: any other transformation a command chooses. A
command can print the key with a character between each pair, ROT13, gzip then base64,
XOR with a constant, or simply one character per run. Any program that can read a
secret can leak it past a filter. Redaction stops the accidental leak (an `env` dump, a
verbose error, a hex dump) and the obvious one; the real defense is that a command never
runs where a secret is readable: serve the command-running tools from a worker whose
environment holds no secrets (docs/secrets.md).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import threading
import urllib.parse
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate, repeat
from typing import Any, TypeVar

from pydantic import BaseModel

MIN_SECRET_LENGTH = 8
"""Shorter values are not redacted: too likely to occur in ordinary text (see above)."""

KNOWN_SECRET_ENV = (
    "OPENAI_API_KEY",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "HITL_SMTP_URL",
    "HITL_WEBHOOK_SECRET",
    "HITL_WEBHOOK_URL",
    "HITL_APPRISE_URLS",
    "HITL_REDIS_URL",
    "HITL_CODEC_KEY",
    "HITL_SIGNING_KEY",
    "HITL_DECISION_KEYS",
    "HITL_SLACK_BOT_TOKEN",
    "HITL_SLACK_SIGNING_SECRET",
)
"""Secrets by name, whatever their value looks like. URLs here are secret as a whole
(user, host and all), not only their password."""

PAIR_LISTS = ("HITL_DECISION_KEYS",)
"""Variables holding `name:secret` pairs, comma-separated."""

URL_LISTS = ("HITL_APPRISE_URLS",)
"""Variables holding secret URLs, separated by commas or spaces: each URL on its own."""

EXTRA_SECRET_ENV = "HITL_SECRET_ENV"
"""Comma-separated names of further variables to treat as secret."""

_SECRET_NAME = re.compile(
    r"(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|_PAT)$|^AUTH(?!ORS?(?:_|$))",
    re.IGNORECASE,
)
# AUTHOR, AUTHORS and AUTHOR_* are excluded: author names and e-mail addresses are not
# secrets, and redacting them would garble `git log` output in command results.

# RFC 3986 userinfo can't hold an unencoded "/", "?", "#" or "@", so the password
# ends at the first of them; this keeps "a://u:p1@h1,b://v:p2@h2" two passwords.
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:(?P<password>[^/?#@\s]+)@")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _looks_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def secrets_in(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, value) for every secret value in `environ`, by the rules in the module doc.

    A URL with a password yields the password (as written and percent-decoded), and the
    whole value when the value is that URL alone.
    """
    listed = {name.strip() for name in environ.get(EXTRA_SECRET_ENV, "").split(",") if name.strip()}
    found: list[tuple[str, str]] = []
    for name, value in environ.items():
        if not value:
            continue
        if name in KNOWN_SECRET_ENV or name in listed or _looks_secret(name):
            found.append((name, value))
            if "\n" in value:
                # A PEM key or a multi-line token may be printed re-wrapped or in part.
                found.extend((name, line.strip()) for line in value.splitlines())
            if name in PAIR_LISTS:
                # issuer:key,issuer:key: each key is a secret on its own.
                for pair in value.split(","):
                    found.append((name, pair.strip().partition(":")[2]))
            if name in URL_LISTS:
                found.extend((name, url) for url in re.split(r"[\s,]+", value) if url)
        for match in _URL_PASSWORD.finditer(value):
            password = match["password"]
            found.append((name, password))
            found.append((name, urllib.parse.unquote(password)))
            if match.start() == 0 and not any(char.isspace() for char in value):
                found.append((name, value))
    return [(name, value) for name, value in found if len(value) >= MIN_SECRET_LENGTH]


def _b64_forms(data: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        forms.add(whole)
        forms.add(whole.rstrip("="))
        # Inside a longer stream the value starts at byte offset 0, 1 or 2 of a
        # 3-byte group. Encode it behind that many filler bytes and keep only the
        # characters made of the value's bits alone: those appear in any stream
        # carrying the value at that alignment, whatever surrounds it.
        for offset in range(3):
            shifted = encode(b"\0" * offset + data).decode().rstrip("=")
            first = -(-8 * offset // 6)  # ceil: the first character without filler bits
            last = (8 * (offset + len(data))) // 6  # the last character without later bits
            forms.add(shifted[first:last])
    return forms


def encoded_forms(value: str) -> set[str]:
    """The value and the encodings of it that `Redactor` looks for."""
    data = value.encode()
    hexed = binascii.hexlify(data).decode()
    forms = {
        value,
        value[::-1],
        hexed,
        hexed.upper(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        urllib.parse.quote(value),
        # Inside JSON text (a tool call's arguments, a command printing JSON) quotes,
        # backslashes and control characters are escaped.
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    forms |= _b64_forms(data)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of `words`, the longest one at a position first.

    A plain alternation makes `re` try every word at every position; a prefix tree
    rejects most positions after one character (1 MiB with 10 secrets: ~11 ms
    against ~31 ms for the plain alternation, `python -m hitl.secrets`).
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        # Recurses only where words branch, so a 2,000-character key (a PEM in hex)
        # doesn't hit the recursion limit.
        chain = []
        while len(node) == 1 and "" not in node:
            [(char, node)] = node.items()
            chain.append(re.escape(char))
        branches = [re.escape(char) + build(child) for char, child in node.items() if char]
        if not branches:
            return "".join(chain)
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            body = f"(?:{body})?"  # greedy: the longer word wins where both match
        return "".join(chain) + body

    return build(trie)


# --- layout-tolerant views ---------------------------------------------------------------
#
# A dump tool prints a secret's bytes in pieces: `base64` wraps at 76 columns, `xxd -p` at
# 60 hex digits, `xxd`, `od` and `hexdump -C` put an offset before and a character
# column after each line's hex, `od -x` prints 16-bit words byte-swapped. Each view below
# is the text as one stream with that layout undone, kept as one string per original
# line, so a match in the stream names the original lines it came from.

_H = "[0-9a-f]"  # the views read the text lower-cased
_DUMP_LINE = re.compile(
    # Whitespace is matched possessively throughout: a line of spaces costs one pass,
    # not one per space.
    "^(?:"
    # xxd: `offset: groups  characters`; the hex ends where two spaces start the column.
    rf"[ \t]*+{_H}++:((?:[ \t]{_H}++)++)(?:[ \t][^\n]*)?$"
    # hexdump -C, od -t x1z: an offset, bytes, then `|characters|` or `>characters<`.
    rf"|(?:[ \t]*+{_H}{{6,8}}(?=[ \t]))?((?:[ \t]++{_H}{{2}})++)"
    r"[ \t]++(?:\|[^\n]*\||>[^\n]*<)[ \t\r]*+$"
    # od -x, hexdump: 16-bit words, printed little-endian.
    rf"|(?:[ \t]*+{_H}{{6,8}}(?=[ \t]))?((?:[ \t]++{_H}{{4}})++)[ \t\r]*+$"
    # od -t x4: 32-bit words, little-endian.
    rf"|(?:[ \t]*+{_H}{{6,7}}(?=[ \t]))?((?:[ \t]++{_H}{{8}})++)[ \t\r]*+$"
    # od -t x1, od -A x -t x1: an offset, then bytes.
    rf"|[ \t]*+{_H}{{6,8}}((?:[ \t]++{_H}{{2}})++)[ \t\r]*+$"
    # od, od -b: 16-bit words or bytes in octal.
    r"|(?:[ \t]*+[0-7]{7}(?=[ \t]))?((?:[ \t]++(?:[0-7]{6}|[0-7]{3}))++)[ \t\r]*+$"
    ")",
    re.M,
)
"""A line in one of the dump layouts; the group that matched holds its bytes, without the
offset or the character column."""
_SEP = r"(?:\s?[:,\-]\s?|\\x|,?\s?0x)"
_SEPARATED_HEX = re.compile(rf"[:,\-x]\s?[0-9a-f]{{2}}(?:{_SEP}[0-9a-f]{{2}}){{2}}")
"""Hex bytes with separators other than whitespace: `4f:50:45:4e`, `0x4f, 0x50, ...`.
(It starts at a separator, so the search skips quickly over text that has none.)"""
_HEX_PREFIX = re.compile(r"\\x|\b0x(?=[0-9a-f])")
_HEX_WORD = re.compile(r"\b[0-9a-f]+\b|\n")
"""A word of hex digits only (so not the hex letters inside other words), or a line break."""


def _dump_views(text: str) -> list[list[str]]:
    """The bytes the lines of `text` show as hex, one string per line: none, one or two views.

    The first is the hex digits as printed (lower case) with offsets, character columns,
    `0x`/`\\x` prefixes and separators left out, and octal dumps turned into hex. The
    second, when there are 16- or 32-bit words, has each word's bytes swapped back:
    `od -x` and `hexdump` print the words of a little-endian machine. Hex that only
    whitespace separates is left to the whitespace view, unless other separators occur.
    """
    lowered = text.lower()
    dumped: dict[int, str] = {}
    words: dict[int, list[tuple[int, str]]] = {4: [], 8: []}
    line, counted = 0, 0
    for match in _DUMP_LINE.finditer(lowered):
        line += lowered.count("\n", counted, match.start())
        counted = match.start()
        xxd, columned, word16, word32, offset, octal = match.groups()
        if word16 or word32:
            digits = "".join((word16 or word32).split())
            words[4 if word16 else 8].append((line, digits))
        elif octal:
            digits = _octal_hex(octal.split())
        else:
            digits = "".join((xxd or columned or offset).split())
        dumped[line] = digits
    separated = _SEPARATED_HEX.search(lowered) is not None
    if not dumped and not separated:
        return []
    if separated:
        if "x" in lowered:
            lowered = _HEX_PREFIX.sub(" ", lowered)
        hexed = "".join(_HEX_WORD.findall(lowered)).split("\n")
    else:
        hexed = [""] * (lowered.count("\n") + 1)
    for index, digits in dumped.items():
        hexed[index] = digits
    views = [hexed]
    if words[4] or words[8]:
        swapped = [""] * len(hexed)
        for size, lines in words.items():
            _swap_words(size, lines, swapped)
        views.append(swapped)
    return views


def _swap_words(size: int, lines: list[tuple[int, str]], view: list[str]) -> None:
    """Put into `view` each line's hex with the bytes of every `size`-digit word reversed."""
    if not lines:
        return
    stream = "".join(digits for _, digits in lines).encode()
    out = bytearray(len(stream))
    for at in range(0, size, 2):  # byte `at` of each word goes to the mirrored place
        out[size - 2 - at :: size] = stream[at::size]
        out[size - 1 - at :: size] = stream[at + 1 :: size]
    text = out.decode()
    position = 0
    for index, digits in lines:
        view[index] = text[position : position + len(digits)]
        position += len(digits)


def _octal_hex(words: list[str]) -> str:
    """`od`'s octal words (16-bit, native order) or `od -b`'s octal bytes, as hex."""
    try:
        if all(len(word) == 6 for word in words):
            return array("H", map(int, words, repeat(8))).tobytes().hex()
        if all(len(word) == 3 for word in words):
            return bytes(map(int, words, repeat(8))).hex()
    except (OverflowError, ValueError):  # not od's words after all
        pass
    return ""


_WHITESPACE = re.compile(r"\s")
_OD_CHARS = re.compile(r"^[0-7]{7}(?= {2,3}\S)", re.M)
"""The offset of a line of `od -c`, one character (or escape) every 4 columns."""


def _bare_lines(text: str) -> list[str]:
    """Each line of `text` with its whitespace removed (joined: `"".join(text.split())`)."""
    return ["".join(line.split()) for line in text.split("\n")]


def _find(
    view: str,
    per_line: Callable[[], list[str]],
    pattern: re.Pattern[str],
    labels: dict[str, str],
    hits: dict[int, str],
) -> None:
    """Add to `hits` every line (by index) that a match of `pattern` in `view` draws on.

    `view` is the concatenation of `per_line()`, one string per line of the text; that
    list is only made when something matched, which is rare.
    """
    matches = list(pattern.finditer(view))
    if not matches:
        return
    starts = list(accumulate(map(len, per_line()), initial=0))
    for match in matches:
        first = bisect_right(starts, match.start()) - 1
        last = bisect_right(starts, match.end() - 1) - 1
        for index in range(first, last + 1):
            hits.setdefault(index, labels[match.group()])


class Redactor:
    """Replaces secret values (and their encodings) in text and JSON-like structures.

    `Redactor([("OPENAI_API_KEY", "sk-...")])`, or `Redactor.from_environ()` for the
    worker's own environment (`secrets_in`). Immutable and safe to share across threads.
    """

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        labels: dict[str, str] = {}
        hexed: dict[str, str] = {}
        names: list[str] = []
        for name, value in secrets:
            if len(value) < MIN_SECRET_LENGTH:
                continue
            if name not in names:
                names.append(name)
            for form in encoded_forms(value):
                labels.setdefault(form, name)
            hexed.setdefault(value.encode().hex(), name)
        self.names: tuple[str, ...] = tuple(names)
        """The names of the secrets this redactor knows (never their values)."""
        self._labels = labels
        self._text = re.compile(_trie_pattern(labels)) if labels else None
        # The views: every form with its whitespace removed, for text with the whitespace
        # removed; the value's hex, for the hex digits of a dump.
        joined: dict[str, str] = {}
        for form, name in labels.items():
            bare = "".join(form.split())
            if len(bare) >= MIN_SECRET_LENGTH:
                joined.setdefault(bare, name)
        self._joined: tuple[re.Pattern[str], dict[str, str]] | None = None
        if joined:
            # Most secrets hold no whitespace: the same forms, so the same pattern.
            same = joined == labels and self._text
            pattern = self._text if same and self._text else re.compile(_trie_pattern(joined))
            self._joined = (pattern, joined)
        self._hexed = (re.compile(_trie_pattern(hexed)), hexed) if hexed else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """The secrets of `environ` (default: this process's environment)."""
        return cls(secrets_in(os.environ if environ is None else environ))

    def __bool__(self) -> bool:
        return self._text is not None

    def __repr__(self) -> str:
        return f"Redactor(names={list(self.names)!r})"

    def _label(self, match: re.Match[str]) -> str:
        return f"[redacted:{self._labels[match.group(0)]}]"

    def redact_text(self, text: str) -> str:
        """`text` with every secret and encoded secret replaced by `[redacted:NAME]`.

        A form found whole in a line is replaced where it stands. A form found only once
        the layout is undone (split across lines, spaced out, in a hex dump with offsets
        and a character column, byte-swapped) takes every line it came from: each such
        line becomes `[redacted:NAME]`, line breaks kept.
        """
        if self._text is None or len(text) < MIN_SECRET_LENGTH:
            return text
        return self._redact_lines(self._text.sub(self._label, text))

    def _redact_lines(self, text: str) -> str:
        hits: dict[int, str] = {}
        # With no whitespace, the direct pass has seen this view already.
        if self._joined is not None and _WHITESPACE.search(text):
            pattern, labels = self._joined
            _find("".join(text.split()), lambda: _bare_lines(text), pattern, labels, hits)
            if _OD_CHARS.search(text):  # `od -c`: the same, without the offsets
                chars = _OD_CHARS.sub("", text)
                _find("".join(chars.split()), lambda: _bare_lines(chars), pattern, labels, hits)
        if self._hexed is not None:
            pattern, labels = self._hexed
            for view in _dump_views(text):
                _find("".join(view), functools.partial(list, view), pattern, labels, hits)
        if not hits:
            return text
        lines = text.split("\n")
        for index, name in hits.items():
            end = "\r" if lines[index].endswith("\r") else ""
            lines[index] = f"[redacted:{name}]{end}"
        return "\n".join(lines)

    def redact_bytes(self, data: bytes) -> bytes:
        """The same for bytes, matching the UTF-8 encoding of each form.

        Bytes that are not UTF-8 are kept as they are (and can't be part of a form).
        """
        if self._text is None or len(data) < MIN_SECRET_LENGTH:
            return data
        text = data.decode("utf-8", "surrogateescape")
        redacted = self.redact_text(text)
        return data if redacted == text else redacted.encode("utf-8", "surrogateescape")

    def redact(self, value: T) -> T:
        """A copy of `value` with every secret replaced, at any depth.

        Handles str, bytes/bytearray, dict (keys and values), list, tuple, set and
        pydantic models (as `redact_model`); other values (numbers, None, datetimes)
        are returned as they are. A str that holds no secret comes back unchanged.
        """
        return self._redact(value)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            redacted = self.redact_text(value)
            return value if redacted == value else redacted
        if self._text is None:
            return value
        if isinstance(value, bytes | bytearray):
            return type(value)(self.redact_bytes(bytes(value)))
        if isinstance(value, BaseModel):
            return self.redact_model(value)
        if isinstance(value, dict):
            return {self._redact(key): self._redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._redact(item) for item in value]
        if isinstance(value, tuple):
            items = [self._redact(item) for item in value]
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        if isinstance(value, set | frozenset):
            return type(value)(self._redact(item) for item in value)
        return value

    def redact_model(self, model: M) -> M:
        """A model of the same type with every secret in its fields replaced.

        Rebuilt through validation, so a field whose redacted value breaks a constraint
        raises pydantic's ValidationError, which names the field and shows only the
        redacted value.
        """
        if self._text is None:
            return model
        return type(model).model_validate(self._redact(model.model_dump(mode="python")))


_lock = threading.Lock()
_current: tuple[dict[Any, Any], Redactor] | None = None


def _environ_snapshot() -> dict[Any, Any]:
    # os.environ's raw bytes mapping copies in well under a microsecond; decoding
    # every item through the public mapping costs ~16 µs, paid on every log line.
    raw = getattr(os.environ, "_data", None)
    return dict(raw) if isinstance(raw, dict) else dict(os.environ)


def current_redactor() -> Redactor:
    """The redactor for this process's environment as it is now.

    Cached; rebuilt when the environment changes (a worker that sets OPENAI_API_KEY
    after import, a test's monkeypatch), so it is cheap enough to call per log line.
    """
    global _current
    snapshot = _environ_snapshot()
    cached = _current
    if cached is not None and cached[0] == snapshot:
        return cached[1]
    with _lock:
        if _current is None or _current[0] != snapshot:
            _current = (snapshot, Redactor.from_environ())
        return _current[1]


def redact(value: T) -> T:
    """`value` with the worker's secrets replaced (`current_redactor().redact`)."""
    return current_redactor().redact(value)


def redact_text(text: str) -> str:
    """`text` with the worker's secrets replaced."""
    return current_redactor().redact_text(text)


def redact_model(model: M) -> M:
    """A copy of `model` with the worker's secrets replaced; for activity boundaries.

    Call it on whatever a tool activity returns (ToolResult, ToolPreview) before
    returning it, so nothing a command printed reaches workflow history with a secret.
    """
    return current_redactor().redact_model(model)


MINIMAL_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "HITL_TASK_QUEUE",
    "HITL_WORKFLOW_QUEUES",
)
"""What a command worker's environment needs: where to find programs and Temporal, and
whose workflows it serves."""


def minimal_environ(
    environ: Mapping[str, str] | None = None, keep: Iterable[str] = ()
) -> dict[str, str]:
    """An environment for a process that must hold no secrets (a command worker).

    PATH, HOME, LANG, LC_ALL, TZ, TMPDIR, the Temporal address and namespace and the
    task queue, unless one of them holds a secret (a password in TEMPORAL_ADDRESS);
    plus the names in `keep`, as they are: what you name there is your choice.
    """
    source = os.environ if environ is None else environ
    secret_values = {value for _, value in secrets_in(source)}
    kept = {
        name: source[name]
        for name in MINIMAL_ENV
        if name in source and source[name] not in secret_values and not _looks_secret(name)
    }
    kept.update({name: source[name] for name in keep if name in source})
    return kept


def _measure() -> None:
    """`python -m hitl.secrets`: how long redacting 1 MiB with 10 secrets takes.

    Prose with the secrets and some encodings planted (the first line), then dumps of
    bytes that hold the secrets: wrapped base64, and `xxd`'s and `od -x`'s layouts.
    """
    import random
    import secrets as entropy
    import string
    import time

    rng = random.Random(7)
    values = [f"sk-{entropy.token_urlsafe(36)}" for _ in range(10)]
    redactor = Redactor((f"KEY_{index}", value) for index, value in enumerate(values))
    words = ["".join(rng.choices(string.ascii_letters, k=rng.randint(2, 10))) for _ in range(5000)]
    text = " ".join(rng.choices(words, k=200_000))[: 1 << 20]
    planted = [value for value in values] + [
        encoded
        for value in values[:3]
        for encoded in (
            base64.b64encode(value.encode()).decode(),
            value.encode().hex(),
            value[::-1],
        )
    ]
    cuts = sorted(rng.sample(range(len(text)), len(planted)))
    pieces, last = [], 0
    for cut, secret in zip(cuts, planted, strict=True):
        pieces += [text[last:cut], secret]
        last = cut
    text = "".join([*pieces, text[last:]])
    blob = bytearray(rng.randbytes(800_000))
    for value in values:
        at = rng.randrange(len(blob))
        blob[at:at] = f"KEY={value}\0".encode()
    b64 = base64.b64encode(blob).decode()
    hexed = blob.hex()
    shapes = {
        "prose": text,
        "base64 -w 76": "\n".join(b64[at : at + 76] for at in range(0, len(b64), 76)),
        "xxd": "\n".join(
            f"{at // 2:08x}: "
            + " ".join(hexed[group : group + 4] for group in range(at, at + 32, 4))
            + "  "
            + "".join(chr(b) if 32 <= b < 127 else "." for b in blob[at // 2 : at // 2 + 16])
            for at in range(0, len(hexed), 32)
        ),
        "od -x": "\n".join(
            f"{at // 2:07o} "
            + " ".join(
                hexed[word + 2 : word + 4] + hexed[word : word + 2]
                for word in range(at, at + 32, 4)
            )
            for at in range(0, len(hexed), 32)
        ),
    }
    for name, shape in shapes.items():
        shape = shape[: 1 << 20]
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            out = redactor.redact_text(shape)
            runs.append(time.perf_counter() - start)
        count = f"{len(planted)} planted" if name == "prose" else "planted in the bytes"
        print(
            f"{name}: {len(shape) / (1 << 20):.2f} MiB, {len(values)} secrets "
            f"({len(redactor._labels)} forms), {count}: "
            f"best {min(runs) * 1000:.1f} ms, median {sorted(runs)[2] * 1000:.1f} ms"
        )
        if name == "prose":
            assert not any(value in out for value in values)
        else:
            assert "[redacted:KEY_" in out


if __name__ == "__main__":
    _measure()
