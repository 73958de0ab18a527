"""Encrypted payloads: nothing readable at rest, everything readable to those with the key."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.codec import (
    ENCODING,
    UNDECRYPTABLE,
    AesGcmCodec,
    CodecConfigError,
    codec_from_env,
    data_converter,
    new_key,
)
from hitl.codec_server import codec_app
from hitl.devserver import free_port
from tests.conftest import NEW_LOGS, OTHER, files_in
from tests.helpers import start_run, wait_decisions, wait_pending
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
            if record.id in out:
                break
            await asyncio.sleep(0.1)
        code, out, _ = await hitl("show", record.id, HITL_CODEC_KEY=KEY, COLUMNS="300")
        assert code == 0 and "app-2026-10-01.log" in out and TASK in out
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
        while not server.started:
            await asyncio.sleep(0.05)
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
