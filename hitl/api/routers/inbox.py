"""The web inbox and the Insights page (static files from `hitl/web/`), and /healthz, which
the inbox checks a token with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import RPCError

from hitl.api.deps import State
from hitl.api.errors import ApiError, responses
from hitl.api.schemas import Health
from hitl.reviews import QUERY_TIMEOUT

WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    # What both pages share (escaping untrusted text, the API client), loaded before their own.
    "common.js": "text/javascript; charset=utf-8",
    "inbox.js": "text/javascript; charset=utf-8",
    "inbox.css": "text/css; charset=utf-8",
    # The Insights page, and the charting library it draws with (vendored, with its licence).
    "insights.html": "text/html; charset=utf-8",
    "insights.js": "text/javascript; charset=utf-8",
    "insights.css": "text/css; charset=utf-8",
    "vendor/chart.umd.min.js": "text/javascript; charset=utf-8",
    "vendor/chart.js.LICENSE.md": "text/plain; charset=utf-8",
}

router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    responses=responses(503),
    summary="Health",
)
async def healthz(state: State, request: Request) -> Health:
    """Up when the Temporal server answers; says whether decisions are authenticated, and
    whom a bearer token names (the inbox checks a token with it). Needs no token."""
    try:
        await state.reviews.client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=QUERY_TIMEOUT
        )
    except RPCError as error:
        raise ApiError(503, f"the Temporal server does not answer: {error.message}") from error
    reviewer = None
    # Read by hand rather than through `bearer`, which would mark the route as needing it.
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token and not state.insecure:
        found = state.config.by_token(token.strip())
        reviewer = found.name if found else None
    return Health(
        status="ok",
        auth="none" if state.insecure else "bearer",
        signing=state.signing,
        reviewer=reviewer,
    )


def _web_file(name: str) -> Callable[[], Awaitable[Response]]:
    body = resources.files("hitl").joinpath("web", *name.split("/")).read_bytes()

    async def serve() -> Response:
        return Response(body, media_type=WEB_FILES[name])

    return serve


for _name in WEB_FILES:
    router.add_api_route(
        "/" if _name == "index.html" else f"/{_name}",
        _web_file(_name),
        methods=["GET"],
        include_in_schema=False,
    )
