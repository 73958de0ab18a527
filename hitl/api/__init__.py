"""The review API and the web inbox (`hitl serve`): FastAPI over the reviews library.

Thin presentation over `hitl.reviews.Reviews`, in FastAPI's own layout:

- `app`: `create_app`, the exception handlers and the middleware, assembled;
- `deps`: the app's state and the reviewer a request's bearer token names;
- `schemas`: the API's own bodies and answers; approvals, decisions and receipts are
  the library's models (`ApprovalRecord`, `PendingApproval`, `DecisionEntry`, ...);
- `errors`: the `Problem` answer; a refused decision's status comes from its code;
- `routers`: approvals, runs, events (server-sent, fed by `feed`), the inbox;
- `middleware`: security headers, trusted hosts, the body bound.

Who decides comes from the bearer token (the reviewers file, `HITL_REVIEWERS`), never
from the request. The API checks the reviewer's rules itself, so a refusal is a clear
403 before anything is sent, and signs every decision as issuer `api`
(`HITL_SIGNING_KEY`), so a worker that requires signed decisions (`HITL_DECISION_KEYS`
with `api:KEY`) takes them, while the same decision typed into `temporal workflow
signal` is refused. The run is still the judge: a decision call answers once the run
has confirmed it, with the run's receipt, and with the run's own sentence and code when
it refused.
"""

from hitl.api.app import create_app

__all__ = ["create_app"]
