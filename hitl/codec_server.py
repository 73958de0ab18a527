"""Temporal's codec-server protocol over HTTP, so the Web UI can show encrypted payloads.

`hitl codec serve` runs it; in the Web UI set "Codec Server" to its address. Only the
origins given (the Web UI's) may call it from a browser; it listens on 127.0.0.1 by
default, since whoever reaches it can decrypt.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
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
        body = await request.json()
        payloads = [ParseDict(item, Payload()) for item in body.get("payloads", [])]
        done = await (codec.encode(payloads) if encode else codec.decode(payloads))
        return {"payloads": [MessageToDict(payload) for payload in done]}

    @app.post("/encode")
    async def encode(request: Request) -> dict[str, object]:
        return await convert(request, True)

    @app.post("/decode")
    async def decode(request: Request) -> dict[str, object]:
        return await convert(request, False)

    return app
