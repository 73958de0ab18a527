"""Encrypted payloads: approval records, previews and conversations unreadable at rest.

With `HITL_CODEC_KEY` set (on workers, the starter, `hitl`, the review API), every
payload is encrypted with AES-256-GCM before it leaves the process, so whoever operates
the Temporal cluster sees only ciphertext; search attributes (approval ids, state,
pending count) stay readable, since listings need them. `hitl codec serve`
(hitl/codec_server.py) serves Temporal's codec-server protocol, so the Web UI can show
the payloads to those who may see them.

    HITL_CODEC_KEY=k2026:<base64 of 32 bytes>      # `hitl codec key` makes one
    HITL_CODEC_OLD_KEYS=k2025:<base64>,...          # still decrypted after a rotation

A payload this codec can't decrypt (unknown key id, tampered data) is not an error
that stops a workflow: it decodes to a payload marked `binary/hitl-undecryptable`,
which fails to convert like any foreign encoding, so a forged decision is refused into
the decision log instead of wedging the run. Payloads that were never encrypted pass
through unchanged.
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
        self._keys = {key_id: AESGCM(key) for key_id, key in [*old, current]}

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
        from cryptography.exceptions import InvalidTag

        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._keys.get(key_id)
        if cipher is None:
            return _undecryptable(f"encrypted with key {key_id!r}, which this process lacks")
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            return _undecryptable("the ciphertext was altered or the key is wrong")
        return Payload.FromString(plain)


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
