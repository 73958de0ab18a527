"""Temporal's codec-server protocol over HTTP, so the Web UI can show encrypted payloads.

`hitl codec serve` runs it; in the Web UI set "Codec Server" to its address. Only the
origins given (the Web UI's) may call it from a browser; it listens on 127.0.0.1 by
default, since whoever reaches it can decrypt.

A body that isn't `{"payloads": [...]}` in protobuf JSON is answered 400 with what is
wrong; a well-formed payload the codec can't decrypt comes back as a
`binary/hitl-undecryptable` payload whose data says why, as the worker sees it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf.json_format import MessageToDict, ParseDict
from temporalio.api.common.v1 import Payload

from hitl.codec import AesGcmCodec


def codec_app(codec: AesGcmCodec, origins: Sequence[str] = ("http://localhost:8233",)) -> FastAPI:
    """POST /encode and /decode, each `{"payloads": [...]}` in protobuf JSON."""
    app = FastAPI(title="hitl-agents codec server", docs_url=None, redoc_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["POST"],
        allow_headers=["content-type", "x-namespace", "authorization"],
    )

    async def convert(request: Request, encode: bool) -> dict[str, object]:
        payloads = _payloads(await request.body())
        done = await (codec.encode(payloads) if encode else codec.decode(payloads))
        return {"payloads": [MessageToDict(payload) for payload in done]}

    @app.post("/encode")
    async def encode(request: Request) -> dict[str, object]:
        return await convert(request, True)

    @app.post("/decode")
    async def decode(request: Request) -> dict[str, object]:
        return await convert(request, False)

    return app


def _payloads(body: bytes) -> list[Payload]:
    """The payloads of a codec request, or a 400 that says what is wrong with it."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        raise HTTPException(400, 'the body is not JSON; send {"payloads": [...]}') from None
    items = parsed.get("payloads", []) if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise HTTPException(400, 'the body is {"payloads": [...]}, a list of payloads')
    payloads = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise HTTPException(400, f"payload {index} is not an object")
        try:
            payloads.append(ParseDict(item, Payload()))
        except Exception as error:  # ParseError, and TypeError on odd shapes
            raise HTTPException(
                400, f"payload {index} is not a payload in protobuf JSON ({type(error).__name__})"
            ) from None
    return payloads
