"""A small OpenAI-compatible Chat Completions server on loopback, for tests.

It answers like a tool-using model would, from the conversation it receives, and
records every request so tests can check what the real `openai` SDK sent. A responder
returns `(status, payload)`, or `Raw` for a body and headers of its own (a malformed
body, Retry-After), or `HANG` to answer nothing until the server stops. For a refused
connection there is `refused_base_url`: a port where nothing listens.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Raw:
    """An answer exactly as given: any status, body bytes and headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class _Hang:
    """Answer nothing: hold the connection until the client gives up or the server stops."""


HANG = _Hang()

Responder = Callable[[dict[str, Any]], "tuple[int, dict[str, Any]] | Raw | _Hang"]


def completion(
    content: str | None,
    *calls: tuple[str, dict[str, Any]],
    model: str = "fake-gpt-1",
    call_prefix: str = "call",
) -> dict[str, Any]:
    tool_calls = [
        {
            "id": f"{call_prefix}_{index}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        for index, (name, args) in enumerate(calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
    }


class FakeOpenAI:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    answer: Any = (404, {"error": {"message": f"no route {self.path}"}})
                else:
                    answer = fake.responder(body)
                if isinstance(answer, _Hang):
                    fake.released.wait(timeout=120)
                    return
                if not isinstance(answer, Raw):
                    answer = Raw(answer[0], json.dumps(answer[1]).encode())
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def refused_base_url() -> str:
    """A loopback URL where nothing listens, so connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def tool_calls_completion(count: int, name: str = "read_file") -> dict[str, Any]:
    """One turn proposing `count` tool calls."""
    return completion(
        f"{count} calls", *[(name, {"path": f"f{index}.txt"}) for index in range(count)]
    )


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in body["messages"] if message["role"] == "tool"]


def cleanup_model(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Plans "delete old logs" from what the tools returned, as a real model would."""
    results = tool_messages(body)
    if not results:
        return 200, completion(
            "Listing the old logs first.",
            ("find_files", {"pattern": "*.log", "older_than_days": 7}),
        )
    last = json.loads(results[-1]["content"])
    if len(results) == 1:
        paths = [item["path"] for item in last["output"]["files"]]
        return 200, completion(
            f"These {len(paths)} logs are older than 7 days; deleting them.",
            ("delete_files", {"paths": paths}),
            call_prefix="call_delete",
        )
    verdict = "deleted them" if last["ok"] else f"could not: {last['error']}"
    return 200, completion(f"Final: I {verdict}")
