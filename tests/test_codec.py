"""Encrypted payloads: nothing readable at rest, everything readable to those with the key."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.codec import (
    ENCODING,
    NONCE_BYTES,
    UNDECRYPTABLE,
    AesGcmCodec,
    CodecConfigError,
    codec_from_env,
    data_converter,
    new_key,
)
from hitl.codec_server import codec_app
from hitl.devserver import free_port, temporal_binary
from hitl.reviews import UNREADABLE_MEMO, Reviews
from tests.conftest import NEW_LOGS, OTHER, files_in
from tests.helpers import (
    approvals,
    decision,
    start_run,
    status,
    temporal_cli,
    wait_decisions,
    wait_pending,
)
from tests.review_api import ServedApi
from tests.test_cli import Hitl
from worker import build_worker

KEY = new_key("k2026")
TASK = "Delete all log files older than 7 days"


async def test_payloads_round_trip_and_foreign_ones_are_marked_not_raised() -> None:
    codec = codec_from_env({"HITL_CODEC_KEY": KEY})
    assert codec is not None
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"secret": "plans"}')
    [sealed] = await codec.encode([plain])
    assert sealed.metadata["encoding"] == ENCODING and b"plans" not in sealed.data
    assert (await codec.decode([sealed])) == [plain]
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + b"\x00")
    unknown = Payload(metadata={**sealed.metadata, "encryption-key-id": b"k1999"}, data=sealed.data)
    for bad in (tampered, unknown):
        [marked] = await codec.decode([bad])
        assert marked.metadata["encoding"] == UNDECRYPTABLE
    assert (await codec.decode([plain])) == [plain], "never-encrypted payloads pass through"
    rotated = codec_from_env({"HITL_CODEC_KEY": new_key("k2027"), "HITL_CODEC_OLD_KEYS": KEY})
    assert rotated is not None and (await rotated.decode([sealed])) == [plain]
    with pytest.raises(CodecConfigError, match="32 bytes"):
        codec_from_env({"HITL_CODEC_KEY": "k:" + base64.b64encode(b"short").decode()})


async def test_an_encrypted_run_is_unreadable_at_rest_and_decided_with_the_key(
    env: WorkflowEnvironment, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = env.client.service_client.config.target_host
    monkeypatch.setenv("HITL_CODEC_KEY", KEY)
    client = await Client.connect(address, data_converter=data_converter())
    task_queue = f"tq-codec-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, task_queue):
        handle = await start_run(client, task_queue, workspace, task=TASK)
        [record] = await wait_pending(handle)
        history = await env.client.get_workflow_handle(handle.id).fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        for secret in (TASK.encode(), b"app-2026-10-01.log", b"delete 3 files"):
            assert secret not in raw, f"{secret!r} readable in history"
        description = await env.client.get_workflow_handle(handle.id).describe()
        memo = description.raw_description.workflow_execution_info.memo
        assert all(payload.metadata["encoding"] == ENCODING for payload in memo.fields.values()), (
            "the memo (the pending approvals' summaries) is encrypted too"
        )
        # The reviewer's tools read it all with the key ...
        hitl = Hitl(address, task_queue)
        for _ in range(100):
            code, out, _ = await hitl("pending", "--json", HITL_CODEC_KEY=KEY)
            if code == 0 and record.id in out:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"`hitl pending` with the key never listed {record.id}")
        code, out, _ = await hitl("show", record.id, HITL_CODEC_KEY=KEY, COLUMNS="300")
        assert code == 0 and "app-2026-10-01.log" in out and TASK in out
        # Without the key, listings still answer (one encrypted run used to fail them all)
        # and say what they can't read, never the secret.
        code, out, err = await hitl("runs", "--json", HITL_CODEC_KEY="")
        assert code == 0, err
        [listed] = [run for run in json.loads(out) if run["id"] == handle.id]
        assert listed["task"] == UNREADABLE_MEMO and listed["pending"] == 1
        code, out, err = await hitl("pending", "--json", HITL_CODEC_KEY="")
        assert code == 0 and record.id not in out and TASK not in out, err
        # ... and a forged payload the codec can't open is refused, not fatal.
        forged = Payload(
            metadata={"encoding": ENCODING, "encryption-key-id": b"k2026"}, data=b"0" * 40
        )
        # Sent by a client without the codec, exactly as forged.
        await env.client.get_workflow_handle(handle.id).signal(
            contract.SIGNAL_APPROVE, RawValue(forged)
        )
        [refused] = await wait_decisions(client.get_workflow_handle(handle.id), None, 1)
        assert "binary/hitl-undecryptable" in refused.refusal
        # The review API, on a client with the key, shows the record in clear and decides.
        async with ServedApi(client, None) as api, api.http() as http:
            answer = await http.get(f"/approvals/{record.id}")
            assert answer.status_code == 200, answer.text
            shown = answer.json()
            assert shown["context"]["original_request"] == TASK
            assert "app-2026-10-01.log" in json.dumps(shown["action_json"])
            answer = await http.post(f"/approvals/{record.id}/approve", json={})
            assert answer.status_code == 200, answer.text
            done = answer.json()
            assert done["outcome"] == "applied" and done["record"]["status"] == "approved"
        await client.get_workflow_handle(handle.id).result()
        code, out, err = await hitl("audit", handle.id, HITL_CODEC_KEY=KEY)
        assert code == 0 and "approved" in out, err
        # A range read by a process without the key (an export, stats, the inbox's
        # history) names the encrypted run among what it could not read, and goes on.
        problems: list[str] = []
        since = record.created_at - timedelta(seconds=1)
        read = [r async for r in Reviews(env.client).records(since, problems=problems)]
        assert all(r.session_id != handle.id for r in read)
        [said] = [p for p in problems if handle.id in p]
        assert "encrypted with a key this process lacks" in said and TASK not in said
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)


async def test_the_codec_server_decodes_for_the_web_ui_and_only_for_its_origin() -> None:
    import uvicorn

    codec = codec_from_env({"HITL_CODEC_KEY": KEY})
    assert isinstance(codec, AesGcmCodec)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(codec_app(codec), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "the codec server did not start"
        [sealed] = await codec.encode(
            [Payload(metadata={"encoding": b"json/plain"}, data=b'"the plan"')]
        )
        from google.protobuf.json_format import MessageToDict

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            decoded = await http.post("/decode", json={"payloads": [MessageToDict(sealed)]})
            [payload] = decoded.json()["payloads"]
            assert base64.b64decode(payload["data"]) == b'"the plan"'
            preflight = {"Access-Control-Request-Method": "POST"}
            allowed = await http.options(
                "/decode", headers={"Origin": "http://localhost:8233", **preflight}
            )
            assert allowed.headers["access-control-allow-origin"] == "http://localhost:8233"
            other = await http.options(
                "/decode", headers={"Origin": "http://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in other.headers
            assert json.loads((await http.post("/encode", json={"payloads": []})).text) == {
                "payloads": []
            }
    finally:
        server.should_exit = True
        await serving


# --- malformed encrypted payloads: marked, never raised -----------------------------------

CODEC = codec_from_env({"HITL_CODEC_KEY": KEY})
assert CODEC is not None
KEY_ID_BYTES = KEY.partition(":")[0].encode()
MAX_REASON = 120


def seal(plain: bytes, key_id: bytes = KEY_ID_BYTES, nonce: bytes = b"n" * NONCE_BYTES) -> Payload:
    """A payload sealed with the run's key exactly as the codec seals, around any bytes."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = base64.urlsafe_b64decode(KEY.partition(":")[2])
    sealed = AESGCM(key).encrypt(nonce, plain, None)
    return Payload(
        metadata={"encoding": ENCODING, "encryption-key-id": key_id}, data=nonce + sealed
    )


PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"approval_id": "apr_1"}')
SEALED = seal(PLAIN.SerializeToString())


def assert_marked(payload: Payload) -> None:
    assert payload.metadata["encoding"] == UNDECRYPTABLE, payload
    assert list(payload.metadata) == ["encoding"]
    assert 0 < len(payload.data) <= MAX_REASON, payload.data


def decode_now(payloads: list[Payload]) -> list[Payload]:
    # The codec's decode awaits nothing: run it to completion without an event loop.
    coroutine = CODEC.decode(payloads)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return list(done.value)
    raise AssertionError("decode awaited something")


@st.composite
def encrypted_payloads(draw: st.DrawFn) -> Payload:
    """Anything a client can send as `binary/encrypted`: junk, or a real seal mangled."""
    key_id = draw(
        st.one_of(st.just(KEY_ID_BYTES), st.binary(max_size=300), st.just(b"\xff\xfek2026"))
    )
    how = draw(st.sampled_from(["junk", "truncated", "flipped", "sealed junk", "no key id"]))
    metadata = {"encoding": ENCODING, "encryption-key-id": key_id}
    if how == "junk":
        data = draw(st.binary(max_size=200))
    elif how == "truncated":
        data = SEALED.data[: draw(st.integers(0, len(SEALED.data) - 1))]
    elif how == "flipped":
        at = draw(st.integers(0, len(SEALED.data) - 1))
        bit = 1 << draw(st.integers(0, 7))
        data = SEALED.data[:at] + bytes([SEALED.data[at] ^ bit]) + SEALED.data[at + 1 :]
    elif how == "sealed junk":
        # Sealed with the right key, around bytes that are not a Payload protobuf.
        inner = b"\xff" + draw(st.binary(max_size=60))
        sealed = seal(inner, key_id)
        metadata, data = dict(sealed.metadata), sealed.data
    else:
        metadata = {"encoding": ENCODING}
        data = draw(st.binary(max_size=80)) or SEALED.data
    extra = draw(st.dictionaries(st.text(max_size=8), st.binary(max_size=8), max_size=3))
    return Payload(metadata={**extra, **metadata}, data=data)


@settings(max_examples=400, deadline=None)
@given(payloads=st.lists(encrypted_payloads(), min_size=1, max_size=4))
def test_no_encrypted_payload_makes_decode_raise_each_comes_back_marked(
    payloads: list[Payload],
) -> None:
    decoded = decode_now(payloads)
    assert len(decoded) == len(payloads)
    for payload in decoded:
        assert_marked(payload)


@settings(max_examples=200, deadline=None)
@given(
    metadata=st.dictionaries(
        st.sampled_from(["encoding", "encryption-key-id"]) | st.text(max_size=12),
        st.sampled_from([ENCODING, UNDECRYPTABLE, b"json/plain", KEY_ID_BYTES])
        | st.binary(max_size=24),
        max_size=4,
    ),
    data=st.binary(max_size=200),
)
def test_any_payload_at_all_decodes_to_itself_or_a_marker(
    metadata: dict[str, bytes], data: bytes
) -> None:
    payload = Payload(metadata=metadata, data=data)
    [decoded] = decode_now([payload])
    if metadata.get("encoding") == ENCODING:
        assert_marked(decoded)
    else:
        assert decoded == payload, "what was never encrypted passes through"


def test_each_way_of_failing_says_why_briefly() -> None:
    reasons = {
        "short": Payload(metadata=dict(SEALED.metadata), data=b"abc"),
        "empty": Payload(metadata=dict(SEALED.metadata), data=b""),
        "tampered": Payload(metadata=dict(SEALED.metadata), data=SEALED.data[:-1]),
        "sealed junk": seal(b"\xff\xff\xff"),
        "long key id": Payload(
            metadata={"encoding": ENCODING, "encryption-key-id": b"\xff" * 10_000},
            data=SEALED.data,
        ),
    }
    said = {name: decode_now([payload])[0] for name, payload in reasons.items()}
    for payload in said.values():
        assert_marked(payload)
    assert b"too short" in said["short"].data and b"too short" in said["empty"].data
    assert b"altered" in said["tampered"].data
    assert b"not a payload" in said["sealed junk"].data
    assert b"lacks" in said["long key id"].data
    assert decode_now([SEALED]) == [PLAIN], "a sound payload still opens"


MALFORMED = {
    # name: (key id, data) as a client without the key would send them
    "three bytes": (b"k2026", b"abc"),
    "empty": (b"k2026", b""),
    "nonce only": (b"k2026", b"n" * NONCE_BYTES),
    "truncated": (b"k2026", SEALED.data[:-3]),
    "not a payload inside": (b"k2026", seal(b"\xff\xff\xff").data),
    "non-UTF-8 key id": (b"\xff\xfe", SEALED.data),
}


def malformed(key_id: bytes, data: bytes) -> Payload:
    return Payload(metadata={"encoding": ENCODING, "encryption-key-id": key_id}, data=data)


async def test_malformed_encrypted_decisions_are_refused_and_a_valid_one_still_applies(
    env: WorkflowEnvironment, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = env.client.service_client.config.target_host
    monkeypatch.setenv("HITL_CODEC_KEY", KEY)
    client = await Client.connect(address, data_converter=data_converter())
    task_queue = f"tq-codec-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, task_queue):
        handle = await start_run(client, task_queue, workspace, task=TASK)
        [record] = await wait_pending(handle)
        # A client without the key sends the bytes exactly as given ...
        raw = env.client.get_workflow_handle(handle.id)
        for key_id, data in MALFORMED.values():
            await raw.signal(contract.SIGNAL_APPROVE, RawValue(malformed(key_id, data)))
        # ... and so does Temporal's own CLI, with raw payload options.
        cli = ["workflow", "signal", "--address", address, "--workflow-id", handle.id]
        for data in (b"abc", SEALED.data[:20], seal(b"\xff").data):
            await temporal_cli(
                *cli,
                "--name",
                contract.SIGNAL_APPROVE,
                "--input-meta",
                "encoding=binary/encrypted",
                "--input-meta",
                "encryption-key-id=k2026",
                "--input-base64",
                "--input",
                base64.b64encode(data).decode(),
            )
        sent = len(MALFORMED) + 3
        # A decision as an update with a malformed payload is rejected, run untouched.
        with pytest.raises(WorkflowUpdateFailedError):
            await raw.execute_update(contract.UPDATE_DECIDE, RawValue(malformed(b"k2026", b"abc")))
        update = await asyncio.create_subprocess_exec(
            temporal_binary(),
            *["workflow", "update", "execute", "--address", address],
            *["--workflow-id", handle.id, "--name", contract.UPDATE_DECIDE],
            *["--input-meta", "encoding=binary/encrypted", "--input-meta", "encryption-key-id=x"],
            *["--input-base64", "--input", base64.b64encode(b"\x00" * 5).decode()],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(update.communicate(), 30)
        assert update.returncode != 0, out.decode()
        assert "hitl-undecryptable" in err.decode(), err.decode()
        refused = await wait_decisions(handle, None, sent)
        assert len(refused) == sent, refused
        for entry in refused:
            assert entry.signal == contract.SIGNAL_APPROVE, entry
            assert "binary/hitl-undecryptable" in entry.refusal, entry
        # Each malformed payload was refused, none wedged the run: the valid one applies.
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.state == "completed", result
        [approved] = await approvals(handle)
        assert approved.status.value == "approved" and approved.reviewer == "alice"
        assert len((await status(handle)).refused_decisions) == sent
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)


async def test_the_codec_server_answers_malformed_requests_with_400_or_a_marker() -> None:
    from google.protobuf.json_format import MessageToDict

    transport = httpx.ASGITransport(app=codec_app(CODEC))
    async with httpx.AsyncClient(transport=transport, base_url="http://codec") as http:
        payloads = [MessageToDict(malformed(k, d)) for k, d in MALFORMED.values()]
        answer = await http.post("/decode", json={"payloads": payloads})
        assert answer.status_code == 200, answer.text
        for payload in answer.json()["payloads"]:
            assert base64.b64decode(payload["metadata"]["encoding"]) == UNDECRYPTABLE
        for body in (
            b"not json",
            b"\xff\xfe",
            b"[1, 2]",
            b'{"payloads": 5}',
            b'{"payloads": [5]}',
            b'{"payloads": [{"metadata": 5}]}',
            b'{"payloads": [{"data": 5}]}',
            b'{"payloads": [{"bogus": 1}]}',
            b"[" * 100_000 + b"]" * 100_000,
        ):
            for route in ("/decode", "/encode"):
                answer = await http.post(route, content=body)
                assert answer.status_code == 400, (body[:40], answer.text)
                assert answer.json()["detail"], answer.text
