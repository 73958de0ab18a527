"""The review API and the web inbox (`hitl serve`): FastAPI over the reviews library.

Thin presentation over `hitl.reviews.Reviews`, in FastAPI's tutorial layout: routers,
a dependency that authenticates the reviewer, and response models that are the
project's own (`ApprovalRecord`, `PendingApproval`, `DecisionEntry`, ...).

Who decides comes from the bearer token (the reviewers file, `HITL_REVIEWERS`), never
from the request. The API checks the reviewer's rules itself, so a refusal is a clear
403 before anything is sent, and signs every decision as issuer `api`
(`HITL_SIGNING_KEY`), so a worker that requires signed decisions (`HITL_DECISION_KEYS`
with `api:KEY`) takes them, while the same decision typed into `temporal workflow
signal` is refused. The run is still the judge: a decision call answers once the run
has confirmed it, with the run's own sentence when it refused.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from hitl import contract, policy
from hitl.decisions import AnyDecision, current_digest
from hitl.models import (
    MAX_REASON_CHARS,
    MAX_REVIEWER_CHARS,
    MAX_TASK_CHARS,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    DecisionEntry,
    ModelSettings,
    ModifyDecision,
    PendingApproval,
    RefusedDecision,
    RejectDecision,
    RevokeDecision,
    RunInput,
    ScriptedTurn,
)
from hitl.reviewers import ReviewerConfig, ReviewerConfigError, load_config
from hitl.reviews import (
    CONFIRM_SECONDS,
    QUERY_TIMEOUT,
    ApprovalNotFound,
    NotAnApprovalId,
    Outcome,
    RecordUnavailable,
    ReviewError,
    Reviews,
    RunNotFound,
)
from hitl.starting import signed_input
from hitl.terminal import schema_problem

log = logging.getLogger("hitl.api")

ANONYMOUS = "anonymous"
"""Who decides on a server started with --insecure-no-auth when the body names no one."""
MAX_BODY_BYTES = 256 * 1024
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 10.0
EVENT_QUEUE = 10_000
"""Events a slow /events subscriber may fall behind by before its stream is closed."""
READ_CONCURRENCY = 8
ANNOUNCED_SECONDS = 120.0
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "inbox.js": "text/javascript; charset=utf-8",
    "inbox.css": "text/css; charset=utf-8",
}
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
# The sentences of hitl.reviewers (signatures, reviewer rules) the worker refuses with.
_NOT_ALLOWED = (
    "not a reviewer",
    "may not decide",
    "may approve up to",
    "started this run",
    "must be signed",
    "signature",
    "not an issuer",
    "signs only",
    "reviewer configuration is unusable",
    "could not be verified",
)
_NOT_APPLICABLE = ("does not take modified arguments", "can't be granted")


# --- what the API answers ----------------------------------------------------------------------


class Problem(BaseModel):
    """Why a request was not done, in one sentence that says what to do."""

    detail: str
    entry: DecisionEntry | None = None
    """For a decision the run refused: its entry in the decision log."""
    record: ApprovalRecord | None = None
    """For a decision the run refused: the approval as it is now (who decided, when)."""


class ApprovalItem(PendingApproval):
    """A listed approval: the memo's summary, with where it stands."""

    status: ApprovalStatus = ApprovalStatus.PENDING
    reviewer: str | None = None
    reviewed_at: datetime | None = None

    @classmethod
    def of(cls, record: ApprovalRecord) -> "ApprovalItem":
        return cls(
            **record.summary().model_dump(),
            status=record.status,
            reviewer=record.reviewer,
            reviewed_at=record.reviewed_at,
        )


class ApprovalPage(BaseModel):
    items: list[ApprovalItem]
    next_page_token: str | None = None
    """Pass it as `page_token` for the next page; null on the last one."""


class Decided(BaseModel):
    """A decision the run took (200), or sent and not yet confirmed (202)."""

    outcome: Literal["applied", "sent"]
    message: str
    entry: DecisionEntry | None = None
    record: ApprovalRecord | None = None


class RunSummary(BaseModel):
    id: str
    run_id: str
    workflow_type: str
    state: str
    status: str
    pending: int
    started_at: datetime
    task: str


class RunDetail(BaseModel):
    """Every approval of a workflow id, across continue-as-new, with every decision."""

    id: str
    status: str
    runs: list[str]
    approvals: list[ApprovalRecord]
    refused_decisions: list[RefusedDecision]


class StartBody(BaseModel):
    """A run to start; who asks for it is the token's reviewer, never a field here."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS)
    workspace: str = Field(
        min_length=1,
        max_length=1000,
        description="A folder under the server's HITL_WORKSPACE_ROOT, as a path relative to it",
    )
    tools: list[str] | None = Field(
        default=None, max_length=64, description="Tool names; default every tool of the worker"
    )
    script: list[ScriptedTurn] | None = Field(
        default=None, description="Fixed turns for the offline scripted model"
    )
    model: str | None = Field(
        default=None,
        max_length=100,
        description="`scripted`, or a model name for the worker's own endpoint",
    )
    max_steps: int = Field(default=12, ge=1, le=1000)
    approval_timeout_seconds: float | None = Field(
        default=None, gt=0, description="Shorter than the worker's; never longer"
    )
    auto_approve_below: int | None = Field(
        default=None, ge=0, le=101, description="Lower than the worker's threshold; never higher"
    )
    id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:-]{1,200}$", description="The workflow id"
    )


class Started(BaseModel):
    id: str
    run_id: str
    requested_by: str
    """The token's reviewer: the run records them as who asked (the worker verifies it)."""
    signed: bool
    """Signed as `api`: a worker that takes only signed starts accepts the run."""


class Health(BaseModel):
    status: Literal["ok"]
    auth: Literal["bearer", "none"]
    """`none`: started with --insecure-no-auth; decisions are unauthenticated."""
    signing: bool
    """Decisions are signed as issuer `api` (HITL_SIGNING_KEY)."""
    reviewer: str | None = None
    """Who the request's token names, if it sent one."""


class ApprovalEvent(BaseModel):
    """One change to the set of pending approvals, as /events sends it."""

    type: Literal["approval.pending", "approval.updated", "approval.decided", "approval.timed_out"]
    id: str
    session_id: str
    tool: str
    at: datetime
    """When the API noticed the change (its delay after the change is the delivery delay)."""
    approval: PendingApproval | None = None
    """For pending and updated: the approval's summary."""
    status: ApprovalStatus | None = None
    """For decided and timed out: how it ended (null when its record could not be read)."""
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    reason: str | None = None


# --- request bodies ----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer: str | None = Field(default=None, max_length=MAX_REVIEWER_CHARS)
    """Who decides comes from your token; a name here must be yours (else 403)."""
    action_digest: str | None = Field(default=None, max_length=100)
    """Decide only if the action is still this one (the record's `action_digest`, or the
    digest of its modification); default: the action as it is now."""


class ApproveBody(_Body):
    comment: str = Field(default="", max_length=MAX_REASON_CHARS)
    scope: Literal["once", "action", "tool"] = "once"
    """`action`: approve this exact action for the rest of the run; `tool`: any call of
    this tool up to `max_risk` for the rest of the run (revoke with .../revoke)."""
    max_risk: int | None = Field(default=None, ge=0, le=100)


_BLANK = " \t\n\r\f\v"


class RejectBody(_Body):
    reason: str = Field(
        max_length=MAX_REASON_CHARS,
        # Stated in the schema too; the validator below says it in words.
        json_schema_extra={"minLength": 1, "pattern": "[^ \\t\\n\\r\\f\\v]"},
    )
    """Why: the agent reads it."""

    @field_validator("reason")
    @classmethod
    def _given(cls, value: str) -> str:
        if not value.strip(_BLANK):
            raise ValueError("a reason is required: the agent reads it")
        return value


class ModifyBody(_Body):
    args: dict[str, Any]
    """The new arguments, checked against the record's `args_schema` before sending."""
    comment: str = Field(default="", max_length=MAX_REASON_CHARS)


class RevokeBody(_Body):
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


# --- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        entry: DecisionEntry | None = None,
        record: ApprovalRecord | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.entry, self.record = status, detail, entry, record
        self.headers = headers


def _problem(
    status: int,
    detail: str,
    entry: DecisionEntry | None = None,
    record: ApprovalRecord | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(detail=detail, entry=entry, record=record)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


def _rpc_problem(error: RPCError) -> ApiError:
    if error.status is RPCStatusCode.INVALID_ARGUMENT:
        return ApiError(422, f"Temporal refused the request: {error.message}")
    if error.status is RPCStatusCode.NOT_FOUND:
        return ApiError(404, f"not found: {error.message}")
    if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return ApiError(
            503,
            f"the run did not answer within {QUERY_TIMEOUT.total_seconds():g} s: is a worker "
            "polling its task queue? (`hitl doctor`)",
        )
    if error.status is RPCStatusCode.UNAVAILABLE:
        return ApiError(503, f"the Temporal server is unavailable: {error.message}")
    return ApiError(502, f"Temporal refused the request: {error.message}")


def _validation_sentence(error: RequestValidationError | ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "request"
        parts.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts) or "the request is invalid"


_BODY_EXAMPLES = {
    "approve": '{"comment": "old logs"}',
    "reject": '{"reason": "keep them for the audit"}',
    "modify": '{"args": {"paths": ["logs/a.log"]}}',
    "revoke": '{"reason": "no longer needed"}',
}


def _not_json(request: Request, error: RequestValidationError) -> str | None:
    """The 400 sentence for a body that is not JSON at all (as opposed to JSON of the wrong
    shape, a 422), saying what to send instead; None when the body was JSON."""
    problem = None
    for item in error.errors():
        where = tuple(item.get("loc") or ())
        if not where or where[0] != "body":
            continue
        if item.get("type") == "json_invalid":
            why = str((item.get("ctx") or {}).get("error") or item.get("msg") or "")
            at = f" at character {where[1]}" if len(where) > 1 else ""
            problem = f"the body is not JSON: {why}{at}"
        elif len(where) == 1 and item.get("type") == "missing":
            problem = "the body is not JSON: it is empty"
        elif len(where) == 1 and isinstance(item.get("input"), bytes | bytearray):
            kind = request.headers.get("content-type") or "none"
            problem = (
                f"the body is not JSON: it was sent as {kind}; send it with Content-Type: "
                "application/json"
            )
        if problem is not None:
            break
    if problem is None:
        return None
    example = _BODY_EXAMPLES.get(request.url.path.rstrip("/").rsplit("/", 1)[-1], "{}")
    return f"{problem}; send a JSON object such as {example}"


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return _problem(
            error.status,
            error.detail,
            entry=error.entry,
            record=error.record,
            headers=error.headers,
        )

    async def invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        not_json = _not_json(request, error)
        if not_json is not None:
            return _problem(400, not_json)
        return _problem(422, _validation_sentence(error))

    async def review_error(request: Request, error: Exception) -> Response:
        status = 422
        if isinstance(error, (ApprovalNotFound, RunNotFound, NotAnApprovalId)):
            status = 404
        elif isinstance(error, RecordUnavailable):
            status = 503
        return _problem(status, str(error))

    async def rpc_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RPCError)
        problem = _rpc_problem(error)
        return _problem(problem.status, problem.detail)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        detail = str(error.detail)
        if error.status_code == 400 and "parsing the body" in detail:
            detail = "the body is not JSON; send a JSON object (Content-Type: application/json)"
        return _problem(error.status_code, detail, headers=getattr(error, "headers", None))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ReviewError, review_error)
    app.add_exception_handler(RPCError, rpc_error)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "the body is not JSON (the sentence says what to send instead)",
        401: "no token, or not a reviewer's token",
        403: "this reviewer may not make this decision (the sentence says why)",
        404: "no such approval or run",
        409: "the run refused the decision: already decided, timed out, or the action changed",
        413: "the request body is too large",
        422: "invalid request, or arguments that fail the tool's schema",
        503: "Temporal or the run did not answer",
    }
    return {code: {"model": Problem, "description": meaning[code]} for code in codes}


# --- the app's state and its dependencies --------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The authenticated reviewer; None on a server started with --insecure-no-auth."""

    name: str | None

    def may_read(self, config: ReviewerConfig, tool: str) -> bool:
        """Whether this reviewer sees approvals of this tool (list, record, events): those
        they may decide, and those the reviewers file lets them `read`. Asked of the file
        as it is now; without authentication, everything."""
        return self.name is None or config.may_read(self.name, tool)


@dataclass
class ApiState:
    reviews: Reviews
    loaded: ReviewerConfig
    insecure: bool
    feed: "EventFeed"
    page_key: bytes
    """Authenticates the page tokens this API gives out."""
    task_queue: str = contract.DEFAULT_TASK_QUEUE
    """Where runs started here go."""
    workspace_root: PurePosixPath | None = None
    """HITL_WORKSPACE_ROOT: runs started here get a workspace under it; None: no starts."""
    text: bytes | None = None
    """The reviewers file as last read."""

    @property
    def signing(self) -> bool:
        return self.reviews.signer is not None

    @property
    def config(self) -> ReviewerConfig:
        """The reviewers file as it is now: a reviewer removed from it (or a token replaced)
        is refused from the next request on, as the worker refuses them, no restart."""
        path = self.loaded.path
        if path is None:
            return self.loaded
        try:
            # Read whole each time (a few hundred bytes): a timestamp can stay the same
            # across two quick writes.
            text = path.read_bytes()
            if text != self.text:
                self.loaded, self.text = load_config(path), text
        except (OSError, ReviewerConfigError) as error:
            # Fail closed, as the worker does: no file that can be read, no reviewer.
            raise ApiError(503, f"the reviewers file can't be read: {error}") from error
        return self.loaded


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.hitl
    return state


bearer = HTTPBearer(
    auto_error=False,
    description="A reviewer's token from the reviewers file (`hitl reviewers add NAME`).",
)
State = Annotated[ApiState, Depends(state_of)]


async def authenticated(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Identity:
    """The reviewer the bearer token names: the only source of a decision's reviewer."""
    if state.insecure:
        return Identity(None)
    config = state.config
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401,
            "send your reviewer token as `Authorization: Bearer TOKEN` "
            "(`hitl reviewers add NAME` makes one)",
            headers=challenge,
        )
    reviewer = config.by_token(credentials.credentials)
    if reviewer is None:
        raise ApiError(
            401,
            "this token is not in the reviewers file; ask for a new one "
            "(`hitl reviewers add NAME`)",
            headers=challenge,
        )
    return Identity(reviewer.name)


Who = Annotated[Identity, Depends(authenticated)]


def _decider(identity: Identity, named: str | None) -> str:
    """The reviewer a decision goes out as: the token's, whatever the body says."""
    if identity.name is None:
        return (named or "").strip() or ANONYMOUS
    if named is not None and named.strip() != identity.name:
        raise ApiError(
            403,
            f"your token is {identity.name}'s: decisions go out as {identity.name}, never as "
            "another reviewer; leave `reviewer` out of the body",
        )
    return identity.name


# --- approvals -----------------------------------------------------------------------------------

approvals = APIRouter(
    prefix="/approvals",
    tags=["approvals"],
    responses=_responses(401, 404, 422, 503),
)
ApprovalId = Annotated[str, Path(max_length=200, description="e.g. apr_1a2b3c4d5e6f7a8b")]


_BAD_PAGE_TOKEN = "page_token is not one this API gave out; leave it out to start from page one"


def _encode_token(key: bytes, token: bytes | None) -> str | None:
    if not token:
        return None
    tag = hmac.new(key, token, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(tag + token).decode().rstrip("=")


def _decode_token(key: bytes, text: str) -> bytes:
    """Temporal's token, if this API made it: the server answers a made-up one with an
    internal error (and the client retries it for seconds), so it never gets one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    tag, token = raw[:16], raw[16:]
    if not token or not hmac.compare_digest(
        tag, hmac.new(key, token, hashlib.sha256).digest()[:16]
    ):
        raise ApiError(422, _BAD_PAGE_TOKEN)
    return token


@approvals.get("", response_model=ApprovalPage, summary="List approvals")
async def list_approvals(
    state: State,
    who: Who,
    status: Annotated[
        Literal["pending", "approved", "rejected", "modified", "decided", "all"], Query()
    ] = "pending",
    tool: Annotated[str | None, Query(max_length=200)] = None,
    run: Annotated[str | None, Query(max_length=1000, description="a workflow id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> ApprovalPage:
    """Pending approvals of every run, a page at a time (newest runs first), from
    visibility alone. Decided ones are listed for one run (`run=`), in one page. Only
    approvals of tools this reviewer may read are listed (a page may then come short
    while `next_page_token` says more follow)."""
    if status != "pending":
        if run is None:
            raise ApiError(
                422,
                f"status={status} lists one run's approvals: add run=WORKFLOW_ID (GET /runs "
                "lists runs); across all runs only pending approvals are listed",
            )
        audit = await state.reviews.audit(run)
        wanted = {
            "approved": {ApprovalStatus.APPROVED},
            "rejected": {ApprovalStatus.REJECTED},
            "modified": {ApprovalStatus.MODIFIED},
            "decided": {ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.MODIFIED},
            "all": set(ApprovalStatus),
        }[status]
        config = state.config
        return ApprovalPage(
            items=[
                ApprovalItem.of(record)
                for record in audit.approvals
                if record.status in wanted
                and (tool is None or record.action_json.tool == tool)
                and who.may_read(config, record.action_json.tool)
            ]
        )
    token = _decode_token(state.page_key, page_token) if page_token is not None else None
    page = await state.reviews.pending_page(limit, token, tool=tool, run=run)
    config = state.config
    return ApprovalPage(
        items=[
            ApprovalItem(**item.model_dump())
            for item in page.items
            if who.may_read(config, item.tool)
        ],
        next_page_token=_encode_token(state.page_key, page.next_page_token),
    )


def _unseen(approval_id: str) -> ApprovalNotFound:
    """An approval this reviewer may not read is answered as one that does not exist, word
    for word, so the answer does not tell that it does."""
    return ApprovalNotFound(
        f"no run has an approval {approval_id}; `hitl pending` lists the pending ones"
    )


@approvals.get("/{approval_id}", response_model=ApprovalRecord, summary="One approval")
async def get_approval(state: State, who: Who, approval_id: ApprovalId) -> ApprovalRecord:
    """The full record: request, reasoning, exact action, preview, risk, votes, decisions.
    An approval of a tool this reviewer may not read is a 404, as an unknown one is."""
    record = await state.reviews.get(approval_id)
    if not who.may_read(state.config, record.action_json.tool):
        raise _unseen(approval_id)
    return record


@dataclass(frozen=True)
class _Target:
    """What a decision is checked against before it is sent."""

    workflow_id: str
    tool: str
    risk: int
    requested_by: str
    digest: str
    record: ApprovalRecord | None


async def _target(state: ApiState, who: Identity, approval_id: str, full: bool) -> _Target:
    """The approval to decide: from its run's memo summary when that says all (pending, no
    vote yet, so no modification counting votes either), else from the run's record. One
    this reviewer may not read is not found."""
    located = await state.reviews.locate(approval_id)
    item = located.summary
    if item is not None and not who.may_read(state.config, item.tool):
        raise _unseen(approval_id)
    if (
        not full
        and item is not None
        and item.action_digest is not None
        and item.votes == 0
        and located.running
    ):
        # One visibility query instead of that and a query of the run: the decision
        # reaches the run sooner. A stale summary costs nothing: the run refuses a
        # decision on an action that changed, and the answer says so.
        return _Target(
            located.workflow_id, item.tool, item.risk, item.requested_by, item.action_digest, None
        )
    records = await state.reviews.approvals_of(located.workflow_id, located.run_id, located.status)
    record = next((r for r in records if r.id == approval_id), None)
    if record is None or not who.may_read(state.config, record.action_json.tool):
        raise _unseen(approval_id)
    return _Target(
        record.session_id,
        record.action_json.tool,
        record.risk,
        record.context.requested_by,
        current_digest(record),
        record,
    )


async def _decide(
    state: ApiState,
    identity: Identity,
    approval_id: str,
    body: _Body,
    kind: str,
    build: Callable[[str, str], AnyDecision],
    check: Callable[[ApprovalRecord], Awaitable[None]] | None = None,
) -> JSONResponse:
    name = _decider(identity, body.reviewer)
    target = await _target(state, identity, approval_id, full=check is not None)
    config = state.config
    if config.reviewers:
        # The one authorizer, as the worker asks it again: a refusal is a clear 403 here,
        # before anything reaches the run.
        refusal = config.refusal(
            name,
            kind,
            target.tool,
            target.risk,
            target.requested_by,
            scope=body.scope if isinstance(body, ApproveBody) else None,
            max_risk=body.max_risk if isinstance(body, ApproveBody) else None,
        )
        if refusal is not None:
            raise ApiError(403, refusal)
    if check is not None and target.record is not None:
        await check(target.record)
    try:
        decision = build(name, body.action_digest or target.digest)
    except ValidationError as error:
        raise ApiError(422, _validation_sentence(error)) from error
    outcome = await state.reviews.decide(decision, workflow_id=target.workflow_id)
    return await _answer(state, outcome)


async def _answer(state: ApiState, outcome: Outcome) -> JSONResponse:
    """The run's verdict as an HTTP answer: its own sentence when it refused."""
    if outcome.rejected is not None:
        raise ApiError(422, outcome.rejected)
    if outcome.ended:
        record = outcome.record
        if record is not None and record.status is not ApprovalStatus.PENDING:
            raise ApiError(409, policy.refusal_for_decided(record), record=record)
        raise ApiError(
            409,
            f"run {outcome.workflow_id} has ended; approval {outcome.approval_id} can no "
            "longer be decided",
            record=record,
        )
    entry = outcome.entry
    if entry is None:
        sent = Decided(
            outcome="sent",
            message=f"the decision was sent to run {outcome.workflow_id}, but the run did not "
            f"confirm it within {CONFIRM_SECONDS:g} s; it applies when a worker runs the "
            "workflow (`hitl doctor` checks for workers)",
        )
        return JSONResponse(sent.model_dump(mode="json"), status_code=202)
    record = await _fresh(state, outcome)
    if entry.outcome == "applied" and record is not None:
        state.feed.announce(record)
    if entry.outcome == "applied":
        done = Decided(
            outcome="applied", message=_applied(entry, record), entry=entry, record=record
        )
        return JSONResponse(done.model_dump(mode="json"))
    refusal = entry.refusal or "refused"
    status = 409  # already decided, timed out, late, a changed action, a second vote
    if record is None or record.status is ApprovalStatus.PENDING:
        if entry.kind == "modify" and refusal.startswith("modified arguments"):
            status = 422
        elif any(marker in refusal for marker in _NOT_ALLOWED):
            status = 403
        elif any(marker in refusal for marker in _NOT_APPLICABLE):
            status = 422
    raise ApiError(status, refusal, entry=entry, record=record)


async def _fresh(state: ApiState, outcome: Outcome) -> ApprovalRecord | None:
    """The approval as it is after the decision (the update path answers with the entry only)."""
    try:
        records = await state.reviews.approvals_of(outcome.workflow_id)
    except (ReviewError, RPCError):
        return outcome.record
    return next((r for r in records if r.id == outcome.approval_id), outcome.record)


def _applied(entry: DecisionEntry, record: ApprovalRecord | None) -> str:
    if entry.kind == "revoke":
        return f"standing approval revoked by {entry.reviewer}"
    if record is not None and record.status is ApprovalStatus.PENDING and entry.note:
        return f"{entry.note}: it waits for more approvers"
    status = record.status.value if record is not None else entry.kind.value
    return f"{status} by {record.reviewer if record and record.reviewer else entry.reviewer}"


_DECISION_RESPONSES = {
    **_responses(400, 403, 409, 413),
    202: {"model": Decided, "description": "sent; the run has not confirmed it yet"},
}


@approvals.post(
    "/{approval_id}/approve",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Approve",
)
async def approve(
    state: State, who: Who, approval_id: ApprovalId, body: ApproveBody
) -> JSONResponse:
    """Approve the exact action (or, with `scope`, keep approving it for the rest of the
    run). Answers once the run confirms: with a quorum, `entry.note` says "1 of 2
    approvals" and the approval stays pending."""
    return await _decide(
        state,
        who,
        approval_id,
        body,
        "approve",
        lambda name, digest: ApproveDecision(
            approval_id=approval_id,
            reviewer=name,
            comment=body.comment,
            action_digest=digest,
            scope=body.scope,
            max_risk=body.max_risk,
        ),
    )


@approvals.post(
    "/{approval_id}/reject",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Reject",
)
async def reject(state: State, who: Who, approval_id: ApprovalId, body: RejectBody) -> JSONResponse:
    """Reject; the agent is told the reason and not to retry."""
    return await _decide(
        state,
        who,
        approval_id,
        body,
        "reject",
        lambda name, digest: RejectDecision(
            approval_id=approval_id, reviewer=name, reason=body.reason, action_digest=digest
        ),
    )


@approvals.post(
    "/{approval_id}/modify",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Run with other arguments",
)
async def modify(state: State, who: Who, approval_id: ApprovalId, body: ModifyBody) -> JSONResponse:
    """Run the action with new arguments. They are checked against the record's
    `args_schema` before anything is sent (422 with what is wrong); the run checks them
    again with the tool's own code."""

    async def valid(record: ApprovalRecord) -> None:
        problem = schema_problem(record, body.args)
        if problem is not None:
            raise ApiError(
                422, f"not sent: the arguments are invalid for {record.action_json.tool}: {problem}"
            )

    return await _decide(
        state,
        who,
        approval_id,
        body,
        "modify",
        lambda name, digest: ModifyDecision(
            approval_id=approval_id,
            reviewer=name,
            args=body.args,
            comment=body.comment,
            action_digest=digest,
        ),
        check=valid,
    )


@approvals.post(
    "/{approval_id}/revoke",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Revoke a standing approval",
)
async def revoke(state: State, who: Who, approval_id: ApprovalId, body: RevokeBody) -> JSONResponse:
    """End the standing approval granted with this approval (approve with scope `action`
    or `tool`); later calls ask again."""

    async def granted(record: ApprovalRecord) -> None:
        if not any(
            entry.outcome == "applied" and entry.scope in ("action", "tool")
            for entry in record.decisions
        ):
            raise ApiError(
                409,
                f"approval {record.id} granted no standing approval (only an approval with "
                "scope action or tool does); nothing to revoke",
            )

    return await _decide(
        state,
        who,
        approval_id,
        body,
        "revoke",
        lambda name, digest: RevokeDecision(
            approval_id=approval_id, reviewer=name, reason=body.reason
        ),
        check=granted,
    )


# --- runs ----------------------------------------------------------------------------------------

runs = APIRouter(prefix="/runs", tags=["runs"], responses=_responses(401, 404, 422, 503))


@runs.post(
    "",
    response_model=Started,
    status_code=201,
    summary="Start a run",
    responses=_responses(400, 403, 409),
)
async def start_run(state: State, who: Who, body: StartBody) -> Started:
    """Start an agent run asked for by the token's reviewer.

    The run's input says who asked (`requested_by`) and is signed as `api` with the
    server's key, so the worker can prove it: that reviewer may then not approve the
    run's actions (separation of duties). The workspace must be under the server's
    `HITL_WORKSPACE_ROOT`; without one, starting runs here is off (403).
    """
    if state.workspace_root is None:
        raise ApiError(
            403,
            "starting runs through the API is off: set HITL_WORKSPACE_ROOT on `hitl serve` to "
            "the folder the workers see the workspaces in",
        )
    workspace = _under(state.workspace_root, body.workspace)
    requested_by = who.name or ANONYMOUS
    model = ModelSettings(provider="scripted", script=body.script)
    if body.model not in (None, "scripted") and body.script is None:
        model = ModelSettings(provider="openai", name=body.model)
    workflow_id = body.id or f"agent-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    run = signed_input(
        RunInput(
            task=body.task,
            workspace=workspace,
            model=model,
            max_steps=body.max_steps,
            approval_timeout_seconds=body.approval_timeout_seconds,
            auto_approve_below=body.auto_approve_below,
            tool_names=body.tools,
            origin={"started_by": "hitl serve", "reviewer": requested_by},
            # The check above is on the name; the worker reaches the folder from the root
            # without following a link, so one planted under the root can't lead out.
            workspace_root=str(state.workspace_root),
        ),
        workflow_id,
        requested_by,
        state.reviews.signer or None,
    )
    try:
        handle = await state.reviews.client.start_workflow(
            contract.WORKFLOW_NAME,
            run,
            id=workflow_id,
            task_queue=state.task_queue,
            static_summary=body.task[:400],
            # A workflow id names one request: the audit of an id gathers every run under
            # it, so a reviewer must not add a run of theirs to someone else's finished one.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise ApiError(
            409, f"a run with id {workflow_id!r} is already running or has run; choose another id"
        ) from None
    except RPCError as error:
        raise _rpc_problem(error) from error
    return Started(
        id=handle.id,
        run_id=handle.result_run_id or "",
        requested_by=requested_by,
        signed=run.start_signature is not None,
    )


def _under(root: PurePosixPath, asked: str) -> str:
    """`asked` as a folder under `root`, refused if it names anything outside it."""
    relative = PurePosixPath(asked)
    parts = [part for part in relative.parts if part not in ("", ".")]
    if relative.is_absolute() or ".." in parts or not parts or "\x00" in asked:
        raise ApiError(
            400,
            f"workspace {asked!r} must be a folder under the server's workspace root, given "
            "relative to it (e.g. `demo`), with no `..`",
        )
    return str(root.joinpath(*parts))


@runs.get("", response_model=list[RunSummary], summary="List runs")
async def list_runs(
    state: State,
    who: Who,
    run_state: Annotated[
        str | None,
        Query(
            alias="state",
            pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
            description="running, awaiting_approval, completed, step_limit, ...",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[RunSummary]:
    """Workflows that use the gate, newest first. A run without a title of its own is
    titled by its first pending approval, shown only to who may read that tool's."""
    listed = []
    config = state.config  # read once for the page, not once per run
    for run in await state.reviews.runs(run_state, limit):
        tool = run.pop("task_tool", None)
        if tool is not None and not who.may_read(config, tool):
            run["task"] = ""
        listed.append(RunSummary(**run))
    return listed


@runs.get("/{workflow_id}", response_model=RunDetail, summary="One run's audit")
async def get_run(
    state: State, who: Who, workflow_id: Annotated[str, Path(max_length=1000)]
) -> RunDetail:
    """Where the run stands, every approval with every decision, and refused decisions.
    Only approvals of tools this reviewer may read are shown; the refused decisions that
    named no approval (excerpts of whatever was sent) only to a reviewer who may read
    every tool (`tools` or `read` holding "*")."""
    audit = await state.reviews.audit(workflow_id)
    config = state.config
    return RunDetail(
        id=audit.workflow_id,
        status=audit.status,
        runs=audit.runs,
        approvals=[r for r in audit.approvals if who.may_read(config, r.action_json.tool)],
        refused_decisions=audit.refused if who.may_read(config, "*") else [],
    )


# --- events --------------------------------------------------------------------------------------


class EventFeed:
    """One poller for every /events subscriber: the pending set, diffed every half second.

    Visibility (the memo's pending summaries) is read as `hitl pending` reads it; an
    approval that left the set is read from its run to say how it ended. Polling starts
    with the first subscriber and stops with the last. A `ready` event tells a
    subscriber from when on changes are reported (a client reloads its listing then).
    A decision made through this API is announced as soon as the run confirms it,
    without waiting for a poll.
    """

    def __init__(self, reviews: Reviews, interval: float = POLL_SECONDS) -> None:
        self.reviews = reviews
        self.interval = interval
        self.ready = asyncio.Event()
        self._subscribers: set[asyncio.Queue[ApprovalEvent | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._known: dict[str, PendingApproval] | None = None
        self._announced: dict[str, float] = {}
        """Approvals announced as ended, and when: a listing begun before the decision may
        still show them pending, and must not announce them again."""

    def announce(self, record: ApprovalRecord) -> None:
        """An approval this API saw end: said now, and not again by the poller."""
        if not self._subscribers or record.status is ApprovalStatus.PENDING:
            return
        if self._known is not None:
            self._known.pop(record.id, None)
        self._finish(record.summary(), record, datetime.now(UTC))

    def _finish(self, item: PendingApproval, record: ApprovalRecord, at: datetime) -> None:
        """Say how an approval ended, once, whichever of the API and the poller sees it first."""
        now = asyncio.get_running_loop().time()
        self._announced = {
            approval_id: when
            for approval_id, when in self._announced.items()
            if now - when < ANNOUNCED_SECONDS
        }
        if item.id not in self._announced:
            self._announced[item.id] = now
            self._emit(_ended(item, record, at))

    def subscribe(self) -> asyncio.Queue[ApprovalEvent | None]:
        queue: asyncio.Queue[ApprovalEvent | None] = asyncio.Queue(EVENT_QUEUE)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ApprovalEvent | None]) -> None:
        self._subscribers.discard(queue)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task, self._known = None, None
            self.ready.clear()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for queue in list(self._subscribers):
            self._drop(queue)
        if self._task is not None:
            self._task.cancel()

    def _drop(self, queue: asyncio.Queue[ApprovalEvent | None]) -> None:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def _emit(self, event: ApprovalEvent) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # Too far behind to catch up: its stream ends, and the client reloads.
                self._drop(queue)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                current = {item.id: item for item in await self.reviews.pending()}
                if self._known is not None:
                    current = await self._diff(self._known, current)
                self._known = current
                self.ready.set()
            except Exception:
                # Whatever one listing hit, the next may not: a poller that died would
                # leave every subscriber waiting on a stream that says nothing.
                log.exception("events: the pending approvals could not be listed")
            # A listing reads every pending approval, so it costs more the more wait (about
            # 5 s of this process's CPU over 10,000, docs/benchmarks.md). The pause after
            # one is at least as long as the listing took: the feed never takes more than
            # half of a core from the decisions it serves, and events come later instead.
            took = loop.time() - began
            await asyncio.sleep(max(self.interval - took, took))

    async def _diff(
        self, known: dict[str, PendingApproval], current: dict[str, PendingApproval]
    ) -> dict[str, PendingApproval]:
        now = datetime.now(UTC)
        current = {k: v for k, v in current.items() if k not in self._announced}
        for approval_id, item in current.items():
            before = known.get(approval_id)
            if before is None:
                self._emit(_event("approval.pending", item, now, approval=item))
            elif (before.votes, before.action_digest) != (item.votes, item.action_digest):
                self._emit(_event("approval.updated", item, now, approval=item))
        gone = [item for approval_id, item in known.items() if approval_id not in current]
        runs: dict[str, list[PendingApproval]] = {}
        for item in gone:
            runs.setdefault(item.session_id, []).append(item)
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def ended(workflow_id: str, items: list[PendingApproval]) -> list[PendingApproval]:
            """How each approval of one run ended; those still pending are kept."""
            async with limit:
                try:
                    records = {r.id: r for r in await self.reviews.approvals_of(workflow_id)}
                    problem = None
                except (ReviewError, RPCError, ValidationError) as error:
                    records, problem = {}, str(error)
            kept = []
            for item in items:
                record = records.get(item.id)
                if record is not None and record.status is ApprovalStatus.PENDING:
                    # Visibility lags a continue-as-new: the new run carries it, still pending.
                    kept.append(item)
                    continue
                if record is None:
                    reason = f"no longer pending; its record could not be read ({problem})"
                    self._emit(_event("approval.decided", item, now, reason=reason))
                    continue
                self._finish(item, record, now)
            return kept

        carried = await asyncio.gather(*(ended(wf, items) for wf, items in runs.items()))
        return {**current, **{item.id: item for items in carried for item in items}}


def _event(kind: str, item: PendingApproval, at: datetime, **fields: Any) -> ApprovalEvent:
    return ApprovalEvent.model_validate(
        {"type": kind, "id": item.id, "session_id": item.session_id, "tool": item.tool, "at": at}
        | fields
    )


def _ended(item: PendingApproval, record: ApprovalRecord, at: datetime) -> ApprovalEvent:
    timed_out = record.reviewer == policy.TIMEOUT_REVIEWER
    return _event(
        "approval.timed_out" if timed_out else "approval.decided",
        item,
        at,
        status=record.status,
        reviewer=record.reviewer,
        reviewed_at=record.reviewed_at,
        reason=record.reason,
    )


def _sse(kind: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n"


events = APIRouter(tags=["events"], responses=_responses(401))


@events.get(
    "/events",
    summary="Server-sent events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream: `ready`, then `approval.pending`, "
            "`approval.updated`, `approval.decided`, `approval.timed_out`, each with an "
            "ApprovalEvent as JSON data",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_events(state: State, who: Who, request: Request) -> StreamingResponse:
    """Changes to the pending approvals as they happen (polled every 0.5 s), for the tools
    this reviewer may read. Read it with `fetch` (the token goes in the Authorization
    header, never in the URL)."""
    feed = state.feed
    _, token = get_authorization_scheme_param(request.headers.get("authorization"))

    def current() -> ReviewerConfig | None:
        """The reviewers file as it is now, read once per event; None: it can't be read."""
        try:
            return state.config
        except ApiError:
            return None

    def still_theirs(config: ReviewerConfig | None) -> bool:
        """The token still names the reviewer who opened the stream: a token removed or
        replaced in the reviewers file ends the stream at its next event or keepalive."""
        if who.name is None:
            return True
        if config is None:
            return False  # the reviewers file can't be read: fail closed
        found = config.by_token(token)
        return found is not None and found.name == who.name

    def shown(event: ApprovalEvent, config: ReviewerConfig | None) -> bool:
        """Events about approvals of tools the reviewer may not read are not theirs to see."""
        return config is not None and who.may_read(config, event.tool)

    queue = feed.subscribe()

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": hitl events\n\n"
            await feed.ready.wait()
            yield _sse("ready", json.dumps({"at": datetime.now(UTC).isoformat()}))
            count = 0
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    if not still_theirs(current()):
                        return
                    yield ": keepalive\n\n"  # and a closed connection shows on this write
                    continue
                config = current()
                if event is None or not still_theirs(config):
                    return
                if not shown(event, config):
                    continue
                count += 1
                yield _sse(event.type, event.model_dump_json(), count)
        finally:
            feed.unsubscribe(queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


# --- health and the inbox ----------------------------------------------------------------------

meta = APIRouter()


@meta.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    responses=_responses(503),
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
    body = (resources.files("hitl") / "web" / name).read_bytes()

    async def serve() -> Response:
        return Response(body, media_type=WEB_FILES[name])

    return serve


for _name in WEB_FILES:
    meta.add_api_route(
        "/" if _name == "index.html" else f"/{_name}",
        _web_file(_name),
        methods=["GET"],
        include_in_schema=False,
    )


# --- the app -------------------------------------------------------------------------------------


class Guard:
    """Security headers on every answer, a bound on request bodies, and, without
    authentication, only loopback host names (a web page can't rebind its DNS name to
    127.0.0.1 and decide through the browser)."""

    def __init__(self, app: Any, hosts: set[str] | None) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])

        async def secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in SECURITY_HEADERS if n not in names),
                ]
            await send(message)

        if self.hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0].strip("[]")
            if host not in self.hosts:
                await _plain(
                    secured,
                    421,
                    "this server runs without authentication and answers only to "
                    f"{', '.join(sorted(self.hosts))}",
                )
                return
        too_large = f"a request body is at most {MAX_BODY_BYTES // 1024} KiB"
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _plain(secured, 413, too_large)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, secured)
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
                await _plain(secured, 413, too_large)
                return
            if not message.get("more_body", False):
                break
        whole: list[MutableMapping[str, Any]] = [
            {"type": "http.request", "body": bytes(body), "more_body": False}
        ]

        async def replayed() -> MutableMapping[str, Any]:
            return whole.pop() if whole else await receive()

        await self.app(scope, replayed, secured)


async def _plain(
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]], status: int, detail: str
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
) -> FastAPI:
    """The API and the inbox over a connected client.

    `config`: the reviewers (an empty one only with `insecure`); `signer`: (issuer, key)
    that signs every decision, or None to send them unsigned.
    """
    if not config.reviewers and not insecure:
        raise ValueError("no reviewers configured: pass insecure=True to serve without auth")
    reviews = Reviews(client, confirm_seconds=confirm_seconds, signer=signer or False)
    feed = EventFeed(reviews, poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        feed.close()

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
        else (secrets.token_bytes(32))
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
    for router in (approvals, runs, events, meta):
        app.include_router(router)
    hosts = None
    if insecure and host not in ("0.0.0.0", "::"):
        hosts = LOOPBACK | {host.strip("[]")}
    app.add_middleware(Guard, hosts=hosts)
    return app
