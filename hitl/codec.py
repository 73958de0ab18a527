"""Encrypted payloads: approval records, previews and conversations unreadable at rest.

With `HITL_CODEC_KEY` set (on workers, the starter, `hitl`, the review API), every
payload is encrypted with AES-256-GCM before it leaves the process, so whoever operates
the Temporal cluster sees only ciphertext; search attributes (approval ids, state,
pending count) stay readable, since listings need them. `hitl codec serve`
(hitl/codec_server.py) serves Temporal's codec-server protocol, so the Web UI can show
the payloads to those who may see them.

    HITL_CODEC_KEY=k2026:<base64 of 32 bytes>      # `hitl codec key` makes one
    HITL_CODEC_OLD_KEYS=k2025:<base64>,...          # still decrypted after a rotation

A payload this codec can't decrypt (unknown or undecodable key id, data too short for
a nonce, tampered or truncated data, a sealed plaintext that is not a payload) is not
an error that stops a workflow: decoding never raises; such a payload decodes to one
marked `binary/hitl-undecryptable` (with a short reason as its data), which fails to
convert like any foreign encoding, so a forged decision is refused into the decision
log instead of wedging the run. Payloads that were never encrypted pass through
unchanged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import secrets
from collections.abc import Mapping, Sequence

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

CODEC_KEY_ENV = "HITL_CODEC_KEY"
OLD_KEYS_ENV = "HITL_CODEC_OLD_KEYS"
ENCODING = b"binary/encrypted"
UNDECRYPTABLE = b"binary/hitl-undecryptable"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_SHOWN_KEY_ID = 40
"""An unknown key id is quoted in the marker up to this many characters (ASCII): whoever
sent it chose its length and its bytes."""


class CodecConfigError(ValueError):
    """The codec keys can't be used; the message says what to set."""


def new_key(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


def _parse(text: str, what: str) -> tuple[str, bytes]:
    key_id, _, encoded = text.strip().rpartition(":")
    key_id = key_id or "default"
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise CodecConfigError(f"{what} is ID:BASE64 (`hitl codec key` makes one)") from None
    if len(key) != 32:
        raise CodecConfigError(f"{what} must be 32 bytes (AES-256), base64; got {len(key)}")
    return key_id, key


class AesGcmCodec(PayloadCodec):
    """AES-256-GCM over each whole payload (metadata and data), with a key id."""

    def __init__(self, current: tuple[str, bytes], old: Sequence[tuple[str, bytes]] = ()) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.key_id = current[0]
        self._encrypt = AESGCM(current[1])
        # By the key id's bytes as sent: a non-UTF-8 id can't be mistaken for a real one.
        self._keys = {key_id.encode(): AESGCM(key) for key_id, key in [*old, current]}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = self._encrypt.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(payload) for payload in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        """The payload inside, or an undecryptable marker; never raises.

        The codec runs on the worker before the workflow sees an activation, so an
        exception here fails every workflow task of the run, and a later valid decision
        never applies. Anyone who can signal the run can send any bytes as
        `binary/encrypted`: each way they can fail has to become a marker.
        """
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        try:
            return self._open(payload)
        except Exception as error:  # whatever the bytes were, the run goes on
            return _undecryptable(f"unreadable ({type(error).__name__})")

    def _open(self, payload: Payload) -> Payload:
        from cryptography.exceptions import InvalidTag
        from google.protobuf.message import DecodeError

        raw_key_id = payload.metadata.get(KEY_ID, b"")
        cipher = self._keys.get(raw_key_id)
        if cipher is None:
            shown = ascii(raw_key_id.decode(errors="replace"))
            if len(shown) > MAX_SHOWN_KEY_ID:
                shown = shown[: MAX_SHOWN_KEY_ID - 3] + "..."
            return _undecryptable(f"encrypted with key {shown}, which this process lacks")
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            return _undecryptable(f"{len(data)} bytes, too short for a nonce and a tag")
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            return _undecryptable("the ciphertext was altered or the key is wrong")
        try:
            return Payload.FromString(plain)
        except DecodeError:
            # Only a holder of the key can get here: sealed, but not a payload.
            return _undecryptable("decrypted, but not a payload")


def _undecryptable(reason: str) -> Payload:
    return Payload(metadata={"encoding": UNDECRYPTABLE}, data=reason.encode())


def codec_from_env(environ: Mapping[str, str] | None = None) -> AesGcmCodec | None:
    environ = os.environ if environ is None else environ
    current = environ.get(CODEC_KEY_ENV)
    if not current:
        return None
    old = [
        _parse(item, OLD_KEYS_ENV)
        for item in environ.get(OLD_KEYS_ENV, "").split(",")
        if item.strip()
    ]
    return AesGcmCodec(_parse(current, CODEC_KEY_ENV), old)


def data_converter(environ: Mapping[str, str] | None = None) -> DataConverter:
    """The project's converter: pydantic JSON, encrypted when a codec key is set."""
    codec = codec_from_env(environ)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)
