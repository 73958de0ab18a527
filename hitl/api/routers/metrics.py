"""/metrics: the API's metrics as Prometheus text (HITL_PROMETHEUS=1).

Behind a reviewer's token like every other route: the counts name tools and how many of
their approvals wait, which is for the deployment's people, not for whoever reaches the
port. A scraper gets a reviewer of its own who may decide nothing (`hitl reviewers add
prometheus --tools none`) and sends its token as `authorization: Bearer` (Prometheus'
`authorization` setting).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from hitl.api.deps import Who
from hitl.api.errors import responses

router = APIRouter(tags=["metrics"], responses=responses(401))


@router.get(
    "/metrics",
    response_class=Response,
    summary="Metrics as Prometheus text",
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(who: Who) -> Response:
    """The pending approvals by tool (`hitl_approvals_pending`) and whatever else this
    process's meter provider holds, in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
