"""The app: the routers, the exception handlers that answer every problem as a `Problem`,
and the middleware, over one `Reviews` and one event feed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import PurePosixPath

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client
from temporalio.service import RPCError

from hitl import contract
from hitl.api.deps import ApiState
from hitl.api.errors import ApiError, not_json, problem, rpc_problem, validation_sentence
from hitl.api.feed import POLL_SECONDS, EventFeed
from hitl.api.middleware import LOOPBACK, BodyLimit, SecurityHeaders, TrustedHosts
from hitl.api.routers import approvals, events, inbox, insights, metrics, runs, slack
from hitl.decisions import RefusalCode
from hitl.reviewers import ReviewerConfig
from hitl.reviews import (
    CONFIRM_SECONDS,
    ApprovalNotFound,
    NotAnApprovalId,
    RecordUnavailable,
    ReviewError,
    Reviews,
    RunNotFound,
)
from hitl.telemetry import Telemetry, pending_by_tool


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error.response()

    async def invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        said = not_json(request, error)
        if said is not None:
            return problem(400, said)
        return problem(422, validation_sentence(error))

    async def review_error(request: Request, error: Exception) -> Response:
        if isinstance(error, (ApprovalNotFound, RunNotFound, NotAnApprovalId)):
            return ApiError.refused(RefusalCode.NOT_FOUND, str(error)).response()
        return problem(503 if isinstance(error, RecordUnavailable) else 422, str(error))

    async def rpc_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RPCError)
        return rpc_problem(error).response()

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        detail = str(error.detail)
        if error.status_code == 400 and "parsing the body" in detail:
            detail = "the body is not JSON; send a JSON object (Content-Type: application/json)"
        return problem(error.status_code, detail, headers=getattr(error, "headers", None))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ReviewError, review_error)
    app.add_exception_handler(RPCError, rpc_error)


def create_app(
    client: Client,
    config: ReviewerConfig,
    signer: tuple[str, bytes] | None,
    insecure: bool = False,
    host: str = "127.0.0.1",
    poll_seconds: float = POLL_SECONDS,
    confirm_seconds: float = CONFIRM_SECONDS,
    task_queue: str = contract.DEFAULT_TASK_QUEUE,
    workspace_root: str | None = None,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """The API and the inbox over a connected client.

    `config`: the reviewers (an empty one only with `insecure`); `signer`: (issuer, key)
    that signs every decision, or None to send them unsigned. `telemetry`
    (`hitl.telemetry.install`): the pending approvals as a gauge, and `/metrics` where
    HITL_PROMETHEUS asks for it.
    """
    if not config.reviewers and not insecure:
        raise ValueError("no reviewers configured: pass insecure=True to serve without auth")
    reviews = Reviews(client, confirm_seconds=confirm_seconds, signer=signer or False)
    feed = EventFeed(reviews, poll_seconds)

    gauge = None
    if telemetry is not None and telemetry.meter_provider is not None:

        async def pending_now() -> dict[str, int]:
            # What an open inbox's feed holds is as current as a listing, and costs none.
            held = await feed.snapshot(wait=0)
            return pending_by_tool(held if held is not None else await reviews.pending())

        gauge = telemetry.pending_gauge(pending_now)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if gauge is not None:
            gauge.start()
        yield
        feed.close()
        if gauge is not None:
            gauge.stop()

    app = FastAPI(
        title="hitl-agents review API",
        version="1",
        summary="Review, approve, reject and modify what AI agents want to do.",
        docs_url=None,  # Swagger UI loads scripts from a CDN: not under this CSP, not offline
        redoc_url=None,
        lifespan=lifespan,
    )
    # Derived from the signing key, so every replica behind one address takes the others'
    # page tokens; without one, this process's own.
    page_key = (
        hmac.new(signer[1], b"hitl page tokens", hashlib.sha256).digest()
        if signer
        else secrets.token_bytes(32)
    )
    app.state.hitl = ApiState(
        reviews,
        config,
        insecure,
        feed,
        page_key,
        task_queue=task_queue,
        workspace_root=PurePosixPath(workspace_root) if workspace_root else None,
    )
    _install_error_handlers(app)
    # Slack's interactivity endpoint, when the signing secret is set: its requests carry
    # Slack's signature, not a reviewer's token (`hitl.api.routers.slack`).
    app.state.slack = slack.receiver()
    for module in (approvals, runs, events, inbox, insights, slack):
        app.include_router(module.router)
    if telemetry is not None and telemetry.settings.prometheus:
        app.include_router(metrics.router)
    # The last added runs first: headers on every answer, then the host, then the body.
    app.add_middleware(BodyLimit)
    if insecure and host not in ("0.0.0.0", "::"):
        app.add_middleware(TrustedHosts, hosts=LOOPBACK | {host.strip("[]")})
    app.add_middleware(SecurityHeaders)
    return app
