"""An offline stand-in for the model: an OpenAI-compatible Chat Completions server on
loopback that plays the example's scenario and says, in every answer, that it is offline.

It speaks the real wire protocol, so the worker runs the real `openai` client and the
SDK's own `OpenAIChatCompletionsModel` against it: only the answers are scripted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hitl.models import SCRIPTED_BANNER, SCRIPTED_MODEL_NAME

ORDER = "A-1001"


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The next turn: propose a refund and an email at once; then report the outcome."""
    results = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "tool"]
    if not results:
        content = (
            f"{SCRIPTED_BANNER} Order {ORDER} arrived damaged: refunding it and telling "
            "the customer."
        )
        calls = [
            ("refund", {"order_id": ORDER, "amount_eur": 40}),
            (
                "send_email",
                {
                    "to": "customer@example.com",
                    "subject": f"Your refund for order {ORDER}",
                    "body": f"We refunded 40 EUR on order {ORDER}. Sorry for the trouble.",
                },
            ),
        ]
    else:
        content = f"{SCRIPTED_BANNER} Done. " + " / ".join(results)
        calls = []
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{len(results)}_{index}",
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
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class ScriptedServer:
    """`with ScriptedServer() as server:` ... `server.base_url`; `script` answers a
    request body with a completion (default: the example's scenario)."""

    def __init__(self, script: Callable[[dict[str, Any]], dict[str, Any]] = answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path.rstrip("/").endswith("/chat/completions"):
                    status, payload = 200, script(body)
                else:
                    status, payload = 404, {"error": {"message": "only chat completions here"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
