"""Secrets never leave the worker: redaction of values, encodings, models and log lines,
and the scrubbed-environment pattern for workers that run commands."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import string
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hitl.logs import RedactingFilter, configure_logging
from hitl.models import ToolResult
from hitl.secrets import (
    MIN_SECRET_LENGTH,
    Redactor,
    current_redactor,
    encoded_forms,
    minimal_environ,
    redact,
    redact_model,
    secrets_in,
)

# Characters chosen so every encoding differs from the raw value: base64 of ">>>" and
# "???" holds "+" and "/" (standard) or "-" and "_" (URL-safe); space, "?", ">" and
# "&" are URL-quoted.
KEY = "sk-live>>>???&A1 b2"
LABEL = "[redacted:OPENAI_API_KEY]"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor.from_environ({"OPENAI_API_KEY": KEY, "HOME": "/home/worker"})


def names(environ: dict[str, str]) -> set[str]:
    return {name for name, _ in secrets_in(environ)}


# --- which values are secrets ---------------------------------------------------------


def test_known_names_are_secrets_whatever_their_value_looks_like() -> None:
    environ = {
        "OPENAI_API_KEY": "sk-proj-0123456789",
        "TEMPORAL_API_KEY": "eyJhbGciOiJFUzI1NiJ9",
        "HITL_SMTP_URL": "smtp://mailer.example.com:587",
        "HITL_WEBHOOK_SECRET": "whsec_abcdefgh",
        "HITL_CODEC_KEY": "0123456789abcdef",
        "HOME": "/home/worker",
    }
    assert names(environ) == set(environ) - {"HOME"}


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",
        "github_token",
        "Db_Password",
        "LDAP_PASSWD",
        "GOOGLE_CREDENTIALS",
        "AZURE_CREDENTIAL",
        "GITLAB_PAT",
        "AUTH_HEADER",
        "authorization",
        "SLACK_BOT_SECRET",
    ],
)
def test_secret_looking_names_are_secrets_in_any_case(name: str) -> None:
    assert names({name: "value-of-some-length"}) == {name}


@pytest.mark.parametrize("name", ["PATH", "AUTHOR_NAME", "KEYBOARD_LAYOUT", "PATTERN", "HOME"])
def test_ordinary_names_are_not(name: str) -> None:
    assert names({name: "value-of-some-length"}) == set()


def test_names_listed_in_hitl_secret_env_are_secrets() -> None:
    environ = {"HITL_SECRET_ENV": "SIGNING_SEED, ,ANOTHER", "SIGNING_SEED": "0xdeadbeefcafe"}
    assert names(environ) == {"SIGNING_SEED"}


def test_passwords_inside_urls_are_secrets_as_written_and_decoded() -> None:
    environ = {"DATABASE_URL": "postgres://app:p%40ss-w0rd!@db:5432/app"}
    redactor = Redactor.from_environ(environ)
    text = "tried p%40ss-w0rd! then p@ss-w0rd! against postgres://app:p%40ss-w0rd!@db:5432/app"
    assert redactor.redact_text(text) == (
        "tried [redacted:DATABASE_URL] then [redacted:DATABASE_URL] against [redacted:DATABASE_URL]"
    )


def test_the_smtp_url_is_secret_whole_and_its_password_alone() -> None:
    redactor = Redactor.from_environ({"HITL_SMTP_URL": "smtps://bot:hunter2hunter2@mail:465"})
    assert redactor.redact_text("connect smtps://bot:hunter2hunter2@mail:465") == (
        "connect [redacted:HITL_SMTP_URL]"
    )
    assert redactor.redact_text("AUTH bot hunter2hunter2") == "AUTH bot [redacted:HITL_SMTP_URL]"


def test_several_urls_in_one_value_each_give_their_own_password() -> None:
    environ = {"HITL_REDIS_URL": "redis://:first-pass@h1:6379,redis://u:second-pass@h2"}
    redactor = Redactor.from_environ(environ)
    assert redactor.redact_text("first-pass second-pass") == (
        "[redacted:HITL_REDIS_URL] [redacted:HITL_REDIS_URL]"
    )


def test_short_values_are_ignored_so_ordinary_text_is_not_garbled() -> None:
    environ = {"API_KEY": "abc", "DB_PASSWORD": "1234567", "HITL_SMTP_URL": "smtp://u:pw@h"}
    redactor = Redactor.from_environ(environ)
    assert len("1234567") < MIN_SECRET_LENGTH
    text = "abc 1234567 pw u:pw smtp://u:pw@h is 13 characters long"
    # The whole URL is 13 characters, so it alone is a secret; its 2-letter password is not.
    assert redactor.redact_text(text) == (
        "abc 1234567 pw u:pw [redacted:HITL_SMTP_URL] is 13 characters long"
    )
    assert redactor.names == ("HITL_SMTP_URL",)


def test_no_secrets_means_nothing_changes_and_nothing_is_copied() -> None:
    redactor = Redactor.from_environ({"PATH": "/usr/bin", "HOME": "/root"})
    value = {"a": ["/usr/bin"]}
    assert not redactor and redactor.redact(value) is value


def test_the_redactor_names_secrets_but_never_shows_them(redactor: Redactor) -> None:
    assert repr(redactor) == "Redactor(names=['OPENAI_API_KEY'])"


# --- every encoding --------------------------------------------------------------------

RAW = KEY.encode()
ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda key: key,
    "base64": lambda key: base64.b64encode(key.encode()).decode(),
    "base64 unpadded": lambda key: base64.b64encode(key.encode()).decode().rstrip("="),
    "urlsafe base64": lambda key: base64.urlsafe_b64encode(key.encode()).decode(),
    "urlsafe unpadded": lambda key: base64.urlsafe_b64encode(key.encode()).decode().rstrip("="),
    "hex": lambda key: key.encode().hex(),
    "HEX": lambda key: key.encode().hex().upper(),
    "url-quoted": lambda key: urllib.parse.quote(key, safe=""),
    "url-quoted plus": lambda key: urllib.parse.quote_plus(key),
    "reversed": lambda key: key[::-1],
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_is_caught(redactor: Redactor, encoding: str) -> None:
    encoded = ENCODINGS[encoding](KEY)
    assert encoded != KEY or encoding == "raw"
    out = redactor.redact_text(f"before {encoded} after")
    assert out == f"before {LABEL} after"


def assert_key_gone_from_base64(out: str, stream: str, key: bytes) -> None:
    # Of the characters the key's bits make up, at most the two on each edge, which
    # mix in its neighbours' bits, may remain: nothing that decodes to the key.
    assert LABEL in out
    removed = len(stream) - (len(out) - out.count(LABEL) * len(LABEL))
    assert removed >= 8 * len(key) // 6 - 4


@pytest.mark.parametrize("prefix", range(6))
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_of_a_longer_stream_is_caught_at_every_alignment(
    redactor: Redactor, prefix: int, encode: Callable[[bytes], bytes]
) -> None:
    # What `base64 /proc/self/environ` prints: the key somewhere inside a longer blob.
    stream = encode(b"HOME=/x\0"[:prefix] + b"OPENAI_API_KEY=" + RAW + b"\0PATH=/bin").decode()
    assert_key_gone_from_base64(redactor.redact_text(stream), stream, RAW)


def test_a_key_escaped_inside_json_text_is_caught_and_the_json_stays_valid() -> None:
    key = 'pa"ss\\wörd\t-123'
    redactor = Redactor([("DB_PASSWORD", key)])
    for text in (json.dumps({"password": key}), json.dumps({"password": key}, ensure_ascii=False)):
        assert key not in text
        assert json.loads(redactor.redact_text(text)) == {"password": "[redacted:DB_PASSWORD]"}


def test_encodings_of_a_url_password_are_caught() -> None:
    redactor = Redactor.from_environ({"HITL_SMTP_URL": "smtp://bot:s3cret-pass@mail"})
    hexed = b"s3cret-pass".hex()
    assert redactor.redact_text(f"x{hexed}x") == "x[redacted:HITL_SMTP_URL]x"


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=8),
    before=st.binary(max_size=40),
    after=st.binary(max_size=40),
    encoding=st.sampled_from(["base64", "urlsafe", "hex", "HEX", "raw", "reversed", "quoted"]),
)
def test_a_planted_key_never_survives_in_any_encoding(
    key: str, before: bytes, after: bytes, encoding: str
) -> None:
    redactor = Redactor([("OPENAI_API_KEY", key)])
    data = before + key.encode() + after
    if encoding in ("base64", "urlsafe"):
        encode = base64.b64encode if encoding == "base64" else base64.urlsafe_b64encode
        stream = encode(data).decode()
        assert_key_gone_from_base64(redactor.redact_text(stream), stream, key.encode())
        return
    text = {
        "hex": data.hex(),
        "HEX": data.hex().upper(),
        "raw": data.decode("utf-8", errors="replace"),
        "reversed": data.decode("utf-8", errors="replace")[::-1],
        "quoted": urllib.parse.quote(data, safe=""),
    }[encoding]
    form = {
        "hex": key.encode().hex(),
        "HEX": key.encode().hex().upper(),
        "raw": key,
        "reversed": key[::-1],
        "quoted": urllib.parse.quote(key, safe=""),
    }[encoding]
    assume(form in text)  # a replacement character may have merged with the key's edge
    out = redactor.redact_text(text)
    assert form not in out and LABEL in out


@settings(max_examples=300, deadline=None)
@given(key=st.text(min_size=8, max_size=40), text=st.text(max_size=300))
def test_text_holding_no_form_of_a_key_comes_back_unchanged(key: str, text: str) -> None:
    bare, digits = "".join(text.split()), re.sub("[^0-9a-f]", "", text.lower())
    assume(not any(form in text or form in bare for form in encoded_forms(key)))
    assume(key.encode().hex() not in digits)
    assert Redactor([("API_KEY", key)]).redact_text(text) == text


@settings(max_examples=100, deadline=None)
@given(short=st.text(min_size=1, max_size=MIN_SECRET_LENGTH - 1), text=st.text(max_size=100))
def test_short_values_never_redact_anything(short: str, text: str) -> None:
    redactor = Redactor([("API_KEY", short)])
    assert not redactor and redactor.redact_text(short + text + short) == short + text + short


# --- wrapped, spaced and dumped: the real tools' output ----------------------------------

KEY_CHARS = string.ascii_letters + string.digits + "-_+/=:@!%&*#~^"
"""What tokens and passwords are made of (no whitespace, and no `.`, which dump tools print
for every unprintable byte)."""


def dump(argv: list[str], blob: bytes) -> str:
    return subprocess.run(argv, input=blob, capture_output=True, check=True).stdout.decode()


def _hex_of_lines(lines: list[str], parse: Callable[[str], tuple[str, str]]) -> tuple[str, str]:
    """The hex and the character column of every line still there, each joined."""
    hexes, columns = [], []
    for line in lines:
        line = re.sub(r"\[redacted:\w+\]", "", line)  # what is left around a label joins up
        if line.strip() in ("", "*"):
            continue
        hexed, column = parse(line)
        hexes.append(hexed)
        columns.append(column)
    return "".join(hexes), "".join(columns)


def _xxd(line: str) -> tuple[str, str]:
    area = line.partition(": ")[2].partition("  ")[0]
    hexed = "".join(area.split())
    return hexed, line[len(line) - len(hexed) // 2 :]


def _od_z(line: str) -> tuple[str, str]:
    area, _, column = line.partition(">")
    return "".join(area.split()[1:]), column[:-1]


def _hexdump_c(line: str) -> tuple[str, str]:
    area, _, column = line.partition("|")
    return "".join(area.split()[1:]), column[: column.rfind("|")]


def _od_x(line: str) -> tuple[str, str]:
    return "".join(word[2:] + word[:2] for word in line.split()[1:]), ""


def _od(line: str) -> tuple[str, str]:
    words = [int(word, 8) for word in line.split()[1:]]
    return b"".join(word.to_bytes(2, "little") for word in words).hex(), ""


def _od_c(line: str) -> tuple[str, str]:
    # One field of 4 columns per byte: `   k` a character, `  \\0` an escape, ` 303` octal.
    fields = [line[at : at + 4] for at in range(7, len(line), 4)]
    return "", "".join(field[3] if field[2] == " " else "\0" for field in fields)


HEX_READERS: dict[str, Callable[[str], tuple[str, str]]] = {
    "xxd": _xxd,
    "xxd -p": lambda line: (line, ""),
    "od -A x -t x1z": _od_z,
    "od -x": _od_x,
    "od -An -tx1": lambda line: ("".join(line.split()), ""),
    "hexdump -C": _hexdump_c,
    "od": _od,
    "od -c": _od_c,
}


def readings(reader: str, out: str) -> list[bytes]:
    """Everything a reader gets back from `out`, a tool's output however redacted: the text
    with its line breaks and spaces removed, and what that decodes to, read as the tool
    (`reader`) wrote it.
    """
    bare = "".join(out.split())
    found = [out.encode(), bare.encode()]
    if reader == "base64":
        # Every run of base64 characters, decoded from each of the 4 possible starts.
        for run in re.findall(r"[A-Za-z0-9+/_-]+", bare):
            for start in range(4):
                chunk = run[start:]
                chunk = chunk[: len(chunk) - len(chunk) % 4]
                for decode in (base64.b64decode, base64.urlsafe_b64decode):
                    with contextlib.suppress(ValueError):
                        found.append(decode(chunk))
    else:
        hexed, column = _hex_of_lines(out.splitlines(), HEX_READERS[reader])
        found.append(bytes.fromhex(hexed[: len(hexed) - len(hexed) % 2]))
        found.append(column.encode())
    return found


@st.composite
def tools(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A dump tool as a command prints a blob with it: (how to read it, argv)."""
    width = str(draw(st.sampled_from([0, 1, 3, 7, 64, 76]) | st.integers(0, 120)))
    return draw(
        st.sampled_from(
            [
                ("base64", ["base64", "-w", width]),
                ("base64", ["basenc", "--base64url", "-w", width]),
                ("xxd", ["xxd"]),
                ("xxd", ["xxd", "-u"]),
                ("xxd", ["xxd", "-c", str(draw(st.integers(1, 40)))]),
                ("xxd -p", ["xxd", "-p"]),
                ("xxd -p", ["xxd", "-p", "-u", "-c", str(draw(st.integers(1, 40)))]),
                ("od -A x -t x1z", ["od", "-A", "x", "-t", "x1z"]),
                ("od -x", ["od", "-x"]),
                ("od -An -tx1", ["od", "-An", "-tx1"]),
                ("hexdump -C", ["hexdump", "-C"]),
                ("od", ["od"]),
                ("od -c", ["od", "-c"]),
            ]
        )
    )


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(KEY_CHARS, min_size=8, max_size=64),
    before=st.binary(max_size=120),
    after=st.binary(max_size=120),
    tool=tools(),
)
def test_a_key_printed_by_a_dump_tool_is_gone_however_the_output_is_read(
    key: str, before: bytes, after: bytes, tool: tuple[str, list[str]]
) -> None:
    # Like `base64 /proc/self/environ`: the key among other bytes, at any offset.
    assume(len(set(key)) >= 4 and key not in LABEL)  # the label itself is no leak
    reader, argv = tool
    out = dump(argv, before + b"OPENAI_API_KEY=" + key.encode() + b"\0" + after)
    secret = key.encode()
    # Control: read the same way, the tool's own output shows the key. (`od` and
    # `hexdump` print `*` for repeated lines; a key that repeats 32 bytes is not read.)
    assume(any(secret in reading for reading in readings(reader, out)))
    redacted = Redactor([("OPENAI_API_KEY", key)]).redact_text(out)
    assert "[redacted:OPENAI_API_KEY]" in redacted
    assert redacted.count("\n") == out.count("\n"), "line breaks are kept"
    for reading in readings(reader, redacted):
        assert secret not in reading, (argv, redacted)


@settings(max_examples=150, deadline=None)
@given(key=st.text(KEY_CHARS, min_size=8, max_size=40), blob=st.binary(max_size=300), tool=tools())
def test_dumps_of_bytes_without_the_key_come_back_unchanged(
    key: str, blob: bytes, tool: tuple[str, list[str]]
) -> None:
    assume(len(set(key)) >= 4 and key.encode()[1:-1] not in blob)
    out = dump(tool[1], blob)
    assert Redactor([("OPENAI_API_KEY", key)]).redact_text(out) == out


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(KEY_CHARS, min_size=8, max_size=64),
    before=st.text(KEY_CHARS + " ", max_size=80),
    after=st.text(KEY_CHARS + " ", max_size=80),
    width=st.integers(1, 40),
)
def test_the_value_itself_split_across_lines_is_caught(
    key: str, before: str, after: str, width: int
) -> None:
    assume(len(set(key)) >= 4 and key not in LABEL)  # the label itself is no leak
    out = dump(["fold", "-w", str(width)], (before + key + after).encode())
    redacted = Redactor([("OPENAI_API_KEY", key)]).redact_text(out)
    assert key not in "".join(redacted.split()), redacted
    assert redacted.count("\n") == out.count("\n")


# One blob, dumped by each tool: the lines holding the key's bytes go, whole (their
# character column too); every other line stays as the tool printed it.
BLOB = b"HOME=/home/w\0LANG=C.UTF-8\0OPENAI_API_KEY=" + RAW + b"\0PATH=/usr/bin:/bin\0" * 3


@pytest.mark.parametrize(
    "argv",
    [
        ["xxd"],
        ["xxd", "-u", "-c", "7"],
        ["xxd", "-p"],
        ["od", "-A", "x", "-t", "x1z"],
        ["od", "-x"],
        ["od", "-An", "-tx1"],
        ["od"],
        ["od", "-b"],
        ["od", "-c"],
        ["od", "-t", "x4"],
        ["hexdump", "-C"],
        ["hexdump"],
        ["base64", "-w", "76"],
        ["base64", "-w", "9"],
    ],
    ids=" ".join,
)
def test_only_the_lines_that_show_the_key_are_redacted(redactor: Redactor, argv: list[str]) -> None:
    out = dump(argv, BLOB)
    redacted = redactor.redact_text(out)
    assert redacted != out
    kept = 0
    for line, was in zip(redacted.split("\n"), out.split("\n"), strict=True):
        if line != was:
            # Whole, or (a form found whole in the line) where the form stood.
            assert line == LABEL or (LABEL in line and argv[0] in ("xxd", "base64")), line
        else:
            kept += 1
            assert "KEY=sk" not in line and "live>>" not in line, line
    assert kept >= 2, "lines without the key are left alone"


def test_hex_with_separators_and_prefixes_in_any_case_is_caught(redactor: Redactor) -> None:
    hexed = RAW.hex()
    pairs = [hexed[i : i + 2] for i in range(0, len(hexed), 2)]
    for text in (
        ":".join(pairs),
        "-".join(pairs).upper(),
        " ".join(pairs),
        ", ".join("0x" + pair for pair in pairs),
        "".join("\\x" + pair for pair in pairs),
        "\n".join(" ".join(pairs[i : i + 5]) for i in range(0, len(pairs), 5)),
    ):
        out = redactor.redact_text(f"key:\n{text}\nend")
        assert out.startswith("key:\n") and out.endswith("\nend"), out
        assert LABEL in out and hexed not in "".join(out.split()).replace(":", ""), out


def test_crlf_lines_keep_their_line_ends(redactor: Redactor) -> None:
    out = dump(["xxd", "-p", "-c", "8"], BLOB).replace("\n", "\r\n")
    redacted = redactor.redact_text(out)
    assert LABEL + "\r\n" in redacted and redacted.count("\r\n") == out.count("\r\n")


def test_a_key_spaced_out_is_caught_now(redactor: Redactor) -> None:
    key = "sk-live-0123456789"
    redactor = Redactor([("OPENAI_API_KEY", key)])
    spaced = dump(["sed", "s/./& /g"], key.encode() + b"\n")
    assert redactor.redact_text("before\n" + spaced + "after") == f"before\n{LABEL}\nafter"


@pytest.mark.parametrize(
    "text",
    [
        "\t" * 300_000,
        " " + "00 " * 100_000,
        "0000000 " + "0000 " * 60_000,
        "a:" + " a" * 150_000,
        "\n" * 300_000,
        ":".join(["4f"] * 100_000),
        ("0000000" + "   a" * 16 + "\n") * 4000,
    ],
    ids=["tabs", "pairs", "words", "xxd-ish", "newlines", "colons", "od -c"],
)
def test_redaction_takes_linear_time_on_degenerate_layouts(redactor: Redactor, text: str) -> None:
    # A line of 300,000 tabs once took minutes: whitespace matched twice over backtracks
    # quadratically. Linear, each of these takes milliseconds.
    start = time.perf_counter()
    assert redactor.redact_text(text) == text
    assert time.perf_counter() - start < 3


def test_random_hex_and_base64_without_a_key_are_left_alone(redactor: Redactor) -> None:
    import secrets as entropy

    for _ in range(20):
        blob = entropy.token_bytes(400)
        for argv in (["xxd"], ["od", "-x"], ["hexdump", "-C"], ["base64", "-w", "33"]):
            out = dump(argv, blob)
            assert redactor.redact_text(out) == out


# --- structures ------------------------------------------------------------------------


def test_planted_keys_in_nested_structures_are_replaced_everywhere(redactor: Redactor) -> None:
    b64 = base64.b64encode(RAW).decode()
    value = {
        "output": {
            "stdout": f"OPENAI_API_KEY={KEY}\n",
            "lines": [KEY[::-1], ("tuple", KEY.encode().hex()), {b64}],
            KEY: "as a key",
            "raw": RAW + b"\n",
            "buffer": bytearray(RAW),
            "count": 3,
            "none": None,
        }
    }
    out = redactor.redact(value)
    assert out == {
        "output": {
            "stdout": f"OPENAI_API_KEY={LABEL}\n",
            "lines": [LABEL, ("tuple", LABEL), {LABEL}],
            LABEL: "as a key",
            "raw": LABEL.encode() + b"\n",
            "buffer": bytearray(LABEL.encode()),
            "count": 3,
            "none": None,
        }
    }
    assert KEY in value["output"]["stdout"], "the input is not changed"


def test_redact_model_returns_the_same_type_with_secrets_replaced(redactor: Redactor) -> None:
    result = ToolResult(
        ok=True,
        output={"stdout": f"key={KEY}", "files": [{"name": KEY}]},
        summary=f"ran cat /proc/1/environ: {base64.b64encode(RAW).decode()}",
    )
    clean = redactor.redact_model(result)
    assert type(clean) is ToolResult
    assert clean.output == {"stdout": f"key={LABEL}", "files": [{"name": LABEL}]}
    assert clean.summary == f"ran cat /proc/1/environ: {LABEL}"
    assert KEY not in clean.model_dump_json() and KEY in result.model_dump_json()


def test_the_module_api_follows_the_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-changed-at-runtime")
    assert redact({"k": "sk-changed-at-runtime"}) == {"k": LABEL}
    assert redact_model(ToolResult(ok=True, summary="sk-changed-at-runtime")).summary == LABEL
    monkeypatch.setenv("OPENAI_API_KEY", "sk-rotated-key-value")
    assert current_redactor().redact_text("sk-changed-at-runtime") == "sk-changed-at-runtime"
    assert current_redactor().redact_text("sk-rotated-key-value") == LABEL


def test_a_long_multiline_key_is_redacted_whole_and_line_by_line() -> None:
    body = base64.b64encode(bytes(range(256)) * 8).decode()
    lines = [body[index : index + 64] for index in range(0, len(body), 64)]
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----"
    redactor = Redactor.from_environ({"TEMPORAL_TLS_CLIENT_KEY_DATA": pem})
    assert redactor.redact_text(pem) == "[redacted:TEMPORAL_TLS_CLIENT_KEY_DATA]"
    assert lines[5] not in redactor.redact_text(f"line: {lines[5]}")


def test_what_redaction_cannot_catch(redactor: Redactor) -> None:
    # Why commands must run where no secret is readable (docs/secrets.md): a command
    # can always choose a transformation no filter knows.
    import codecs
    import gzip

    for text in (
        ".".join(KEY),  # a character (not a space) between each pair
        codecs.encode(KEY, "rot13"),
        base64.b64encode(gzip.compress(RAW)).decode(),  # compressed first
        bytes(byte ^ 0x20 for byte in RAW).hex(),  # XOR with a constant
    ):
        assert redactor.redact_text(text) == text


# --- logs ------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("stream_type", [io.StringIO, Terminal], ids=["json", "console"])
def test_log_lines_are_redacted_before_they_are_written(
    monkeypatch: pytest.MonkeyPatch, stream_type: type[io.StringIO]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("HITL_LOG_JSON", raising=False)
    stream = stream_type()
    configure_logging("DEBUG", stream=stream)
    b64 = base64.b64encode(RAW).decode()

    structlog.get_logger("hitl.test").info(f"event {KEY}", output={"stdout": b64}, key=KEY)
    logging.getLogger("temporalio.activity").warning("activity said %s", KEY)
    logging.getLogger("temporalio.worker").error("bad format %d", "not a number")
    try:
        raise RuntimeError(f"server echoed {KEY}")
    except RuntimeError:
        logging.getLogger("temporalio.worker").exception("failed")
        structlog.get_logger("hitl.test").exception("failed too")

    written = stream.getvalue()
    assert KEY not in written and b64 not in written
    assert "activity said " + LABEL in written
    assert written.count("RuntimeError: server echoed " + LABEL) == 2
    if stream_type is io.StringIO:
        events = [json.loads(line) for line in written.splitlines()]
        assert events[0]["output"] == {"stdout": LABEL} and events[0]["key"] == LABEL


def test_the_filter_redacts_a_foreign_records_arguments_and_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    record = logging.LogRecord("temporalio.activity", logging.INFO, __file__, 1, "%s", (KEY,), None)
    record.temporal_activity = {"activity_type": "run_tool", "input": KEY}
    assert RedactingFilter().filter(record)
    assert record.getMessage() == LABEL
    assert record.temporal_activity == {"activity_type": "run_tool", "input": LABEL}


# --- a worker that holds no secrets ----------------------------------------------------

# The "worker" reads what a command it runs could read: its parent's environment.
WORKER = (
    "import subprocess; subprocess.run(['sh', '-c', "
    "'cat /proc/$PPID/environ; echo; cat /proc/self/environ'], check=True)"
)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("launch", ["minimal_environ", "env -i"])
def test_a_command_worker_started_with_a_minimal_environment_exposes_no_secret(
    monkeypatch: pytest.MonkeyPatch, launch: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "localhost:7233")
    python = [sys.executable, "-c", WORKER]

    leaky = subprocess.run(python, capture_output=True, check=True).stdout
    assert KEY.encode() in leaky, "control: a worker with the full environment leaks the key"

    if launch == "minimal_environ":
        scrubbed = subprocess.run(python, env=minimal_environ(), capture_output=True, check=True)
    else:
        command = ["env", "-i", f"PATH={os.environ['PATH']}", "TEMPORAL_ADDRESS=localhost:7233"]
        scrubbed = subprocess.run([*command, *python], capture_output=True, check=True)
    seen = scrubbed.stdout
    assert KEY.encode() not in seen and b"OPENAI_API_KEY" not in seen
    assert b"TEMPORAL_ADDRESS=localhost:7233" in seen and b"PATH=" in seen


def test_minimal_environ_keeps_what_a_worker_needs_and_no_secret() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "TEMPORAL_ADDRESS": "temporal:7233",
        "TEMPORAL_API_KEY": "temporal-cloud-key",
        "OPENAI_API_KEY": "sk-0123456789",
        "HITL_TASK_QUEUE": "hitl-commands",
        "SOMETHING_ELSE": "x",
    }
    assert minimal_environ(environ) == {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "TEMPORAL_ADDRESS": "temporal:7233",
        "HITL_TASK_QUEUE": "hitl-commands",
    }
    kept = minimal_environ(environ, keep=["TEMPORAL_API_KEY"])
    assert kept["TEMPORAL_API_KEY"] == "temporal-cloud-key" and "OPENAI_API_KEY" not in kept
