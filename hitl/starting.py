"""Starting runs with a proven requester: what `starter.py`, `hitl` and the API share.

A run records who asked for it (`RunInput.requested_by`), and the worker keeps that
person from approving the run's actions themselves. A name in an input is not identity,
so the start is signed (`RunInput.start_signature`): with the starter's own key
(`HITL_SIGNER`, `HITL_SIGNING_KEY`: the same key that signs their decisions), or by the
review API for the reviewer its token authenticated. The worker verifies the signature
over the whole input and the workflow id (`verify_start`), and a worker that takes only
signed decisions refuses an unsigned start.
"""

from __future__ import annotations

from datetime import datetime

from hitl.models import RunInput, StartSignature
from hitl.reviewers import API_ISSUER, sign_start


def signed_input(
    run: RunInput,
    workflow_id: str,
    requested_by: str,
    signing: tuple[str, bytes] | None,
    now: datetime | None = None,
) -> RunInput:
    """`run` with `requested_by` set and, given a key, signed for `workflow_id`.

    A key of a person (issuer other than `api`) signs only for that person, so the
    requester is then the issuer whatever `requested_by` says.
    """
    if signing is None:
        return run.model_copy(update={"requested_by": requested_by, "start_signature": None})
    issuer, key = signing
    who = requested_by if issuer == API_ISSUER else issuer
    unsigned = run.model_copy(update={"requested_by": who, "start_signature": None})
    fields = unsigned.model_dump(mode="json", exclude_defaults=True, exclude={"carry"})
    signature = StartSignature.model_validate(sign_start(fields, workflow_id, issuer, key, now))
    return unsigned.model_copy(update={"start_signature": signature})
