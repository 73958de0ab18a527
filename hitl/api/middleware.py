"""What every request passes through before a route: security headers on every answer,
trusted host names on a server without authentication, a bound on request bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hitl.api.errors import problem

MAX_BODY_BYTES = 256 * 1024
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class SecurityHeaders:
    """The inbox's content security policy and its companions on every answer, unless the
    route set one of them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in SECURITY_HEADERS if n not in names),
                ]
            await send(message)

        await self.app(scope, receive, secured)


_ADMITTED = "hitl.trusted_host"


class TrustedHosts:
    """starlette's `TrustedHostMiddleware`, with its refusal answered as this API answers
    (a `Problem`, 421 Misdirected Request) instead of a plain 400.

    On a server without authentication only loopback names are answered, so a web page
    can't rebind its DNS name to 127.0.0.1 and decide through the reviewer's browser.
    """

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = sorted(hosts)
        # The Host header keeps the brackets of an IPv6 literal; so must the names.
        allowed = [f"[{host}]" if ":" in host else host for host in self.hosts]
        self.check = TrustedHostMiddleware(
            self._admitted, allowed_hosts=allowed, www_redirect=False
        )

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_ADMITTED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def answer(message: Message) -> None:
            nonlocal refused
            if scope.get(_ADMITTED):
                await send(message)
            elif not refused:  # the middleware's own refusal: said our way, once
                refused = True
                detail = "this server runs without authentication and answers only to " + ", ".join(
                    self.hosts
                )
                await problem(421, detail)(scope, receive, send)

        await self.check(scope, receive, answer)


class BodyLimit:
    """Request bodies of at most `MAX_BODY_BYTES`, whether their length is said or not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        too_large = problem(413, f"a request body is at most {MAX_BODY_BYTES // 1024} KiB")
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await too_large(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        # A chunked body says no length: read it first, up to the bound, and answer 413
        # when it passes it, as for a body whose length is said. The app then gets it
        # whole, in one message.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body ended: nobody to answer
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: list[dict[str, Any]] = [
            {"type": "http.request", "body": bytes(body), "more_body": False}
        ]

        async def replayed() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replayed, send)
