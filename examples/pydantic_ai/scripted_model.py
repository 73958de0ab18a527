"""An offline model for the example: an OpenAI-compatible Chat Completions server on
loopback that plays a fixed support script and says, in every answer, that it is one.

It reads the conversation like a tool-using model would: look the order up, then
propose the refund and the email side by side, then report what the tools answered
(a rejection included). No LLM is called.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hitl.models import SCRIPTED_BANNER, SCRIPTED_MODEL_NAME


def _answer(content: str, *calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": f"{SCRIPTED_BANNER} {content}"}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{name}_{index}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for index, (name, args) in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": SCRIPTED_MODEL_NAME,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def respond(body: dict[str, Any]) -> dict[str, Any]:
    results = [m for m in body.get("messages", []) if m.get("role") == "tool"]
    if not results:
        return _answer("First I look the order up.", ("lookup_order", {"order": "A-1001"}))
    if len(results) == 1:
        return _answer(
            "Order A-1001 arrived broken; I propose a full refund and an apology email.",
            ("refund", {"order": "A-1001", "amount_cents": 4200}),
            (
                "send_email",
                {
                    "to": "customer-1042@example.com",
                    "subject": "Your refund for order A-1001",
                    "body": "Sorry your parcel arrived broken: we refunded it in full.",
                },
            ),
        )
    said = "; ".join(str(m.get("content")) for m in results[1:])
    return _answer(f"Done. What happened: {said}")


class ScriptedServer:
    """The offline model on a loopback port, for the length of a `with` block."""

    def __init__(self, port: int = 0) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                data = json.dumps(respond(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
