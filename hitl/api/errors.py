"""What the API answers when it does not do a request: a `Problem`, with its status.

A refused decision is answered from its `RefusalCode` through the one table,
`hitl.decisions.FORMS`, and carries the code; never from the words of its sentence.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode

from hitl.api.schemas import BODY_EXAMPLES, Problem
from hitl.decisions import RefusalCode, form_of
from hitl.models import ApprovalRecord, DecisionEntry
from hitl.reviews import QUERY_TIMEOUT


class ApiError(Exception):
    """A request not done: raised anywhere, answered as a `Problem` by the app."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        entry: DecisionEntry | None = None,
        record: ApprovalRecord | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code
        self.entry, self.record, self.headers = entry, record, headers

    @classmethod
    def refused(
        cls,
        code: str | None,
        detail: str,
        *,
        entry: DecisionEntry | None = None,
        record: ApprovalRecord | None = None,
    ) -> ApiError:
        """A refusal answered as its code says (`FORMS`): the status is the code's."""
        return cls(form_of(code).http, detail, code=code, entry=entry, record=record)

    def response(self) -> JSONResponse:
        return problem(
            self.status,
            self.detail,
            code=self.code,
            entry=self.entry,
            record=self.record,
            headers=self.headers,
        )


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    entry: DecisionEntry | None = None,
    record: ApprovalRecord | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    title = form_of(code).title if code else None
    body = Problem(detail=detail, code=code, title=title, entry=entry, record=record)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


def rpc_problem(error: RPCError) -> ApiError:
    if error.status is RPCStatusCode.INVALID_ARGUMENT:
        return ApiError(422, f"Temporal refused the request: {error.message}")
    if error.status is RPCStatusCode.NOT_FOUND:
        return ApiError(404, f"not found: {error.message}", code=RefusalCode.NOT_FOUND)
    if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return ApiError(
            503,
            f"the run did not answer within {QUERY_TIMEOUT.total_seconds():g} s: is a worker "
            "polling its task queue? (`hitl doctor`)",
        )
    if error.status is RPCStatusCode.UNAVAILABLE:
        return ApiError(503, f"the Temporal server is unavailable: {error.message}")
    return ApiError(502, f"Temporal refused the request: {error.message}")


def validation_sentence(error: RequestValidationError | ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "request"
        parts.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts) or "the request is invalid"


def not_json(request: Request, error: RequestValidationError) -> str | None:
    """The 400 sentence for a body that is not JSON at all (as opposed to JSON of the wrong
    shape, a 422), saying what to send instead; None when the body was JSON."""
    said = None
    for item in error.errors():
        where = tuple(item.get("loc") or ())
        if not where or where[0] != "body":
            continue
        if item.get("type") == "json_invalid":
            why = str((item.get("ctx") or {}).get("error") or item.get("msg") or "")
            at = f" at character {where[1]}" if len(where) > 1 else ""
            said = f"the body is not JSON: {why}{at}"
        elif len(where) == 1 and item.get("type") == "missing":
            said = "the body is not JSON: it is empty"
        elif len(where) == 1 and isinstance(item.get("input"), bytes | bytearray):
            kind = request.headers.get("content-type") or "none"
            said = (
                f"the body is not JSON: it was sent as {kind}; send it with Content-Type: "
                "application/json"
            )
        if said is not None:
            break
    if said is None:
        return None
    example = BODY_EXAMPLES.get(request.url.path.rstrip("/").rsplit("/", 1)[-1], "{}")
    return f"{said}; send a JSON object such as {example}"


_MEANING = {
    400: "the body is not JSON (the sentence says what to send instead)",
    401: "no token, or not a reviewer's token",
    403: "this reviewer may not make this decision (the sentence says why, `code` what)",
    404: "no such approval or run",
    409: "the run refused the decision: already decided, timed out, or the action changed "
    "(`code` says which)",
    413: "the request body is too large",
    422: "invalid request, or arguments that fail the tool's schema",
    503: "Temporal or the run did not answer",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of these problem answers."""
    return {status: {"model": Problem, "description": _MEANING[status]} for status in statuses}
