"""The API's dependencies: its state, and the reviewer a request's token names.

Who decides comes from the bearer token, looked up in the reviewers file as it is now
(`hitl.reviewers`, the one authorizer the worker asks too), never from the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hitl import contract
from hitl.api.errors import ApiError
from hitl.api.feed import EventFeed
from hitl.decisions import RefusalCode
from hitl.reviewers import ReviewerConfig, ReviewerConfigError, load_config
from hitl.reviews import Reviews

ANONYMOUS = "anonymous"
"""Who decides on a server started with --insecure-no-auth when the body names no one."""


@dataclass(frozen=True)
class Identity:
    """The authenticated reviewer; None on a server started with --insecure-no-auth."""

    name: str | None

    def may_read(self, config: ReviewerConfig, tool: str) -> bool:
        """Whether this reviewer sees approvals of this tool (list, record, events): those
        they may decide, and those the reviewers file lets them `read`. Asked of the file
        as it is now; without authentication, everything."""
        return self.name is None or config.may_read(self.name, tool)

    def decider(self, named: str | None) -> str:
        """The reviewer a decision goes out as: the token's, whatever the body says."""
        if self.name is None:
            return (named or "").strip() or ANONYMOUS
        if named is not None and named.strip() != self.name:
            raise ApiError.refused(
                RefusalCode.NOT_ALLOWED,
                f"your token is {self.name}'s: decisions go out as {self.name}, never as "
                "another reviewer; leave `reviewer` out of the body",
            )
        return self.name


@dataclass
class ApiState:
    reviews: Reviews
    loaded: ReviewerConfig
    insecure: bool
    feed: EventFeed
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


State = Annotated[ApiState, Depends(state_of)]

bearer = HTTPBearer(
    auto_error=False,
    description="A reviewer's token from the reviewers file (`hitl reviewers add NAME`).",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def authenticated(state: State, credentials: Credentials) -> Identity:
    """The reviewer the bearer token names: the only source of a decision's reviewer."""
    if state.insecure:
        return Identity(None)
    config = state.config
    if credentials is None:
        raise ApiError(
            401,
            "send your reviewer token as `Authorization: Bearer TOKEN` "
            "(`hitl reviewers add NAME` makes one)",
            headers=_CHALLENGE,
        )
    reviewer = config.by_token(credentials.credentials)
    if reviewer is None:
        raise ApiError(
            401,
            "this token is not in the reviewers file; ask for a new one "
            "(`hitl reviewers add NAME`)",
            headers=_CHALLENGE,
        )
    return Identity(reviewer.name)


Who = Annotated[Identity, Depends(authenticated)]
