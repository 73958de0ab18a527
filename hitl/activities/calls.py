"""The worker's word on a call of a tool that is not a `hitl` tool (a framework's tool).

`ApprovalGate.ask` runs `check_call` before it asks a reviewer: the preview and risk
come from a previewer the worker registered for that tool's name (`HitlPlugin(
previewers=...)`), else a default preview of the tool and its arguments; the quorum,
approval timeout and auto-approve threshold come from the reviewers file, as they do
for `hitl` tools (`worker_policy`, shared with `check_tool`). Policy comes from the
worker: the workflow may only make it stricter. Like the tools' activities, what it
returns is bounded and the worker's secrets are redacted from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from temporalio import activity

from hitl.activities.heartbeat import heartbeating
from hitl.activities.tools import CallFacts, _failure, bounded_preview, worker_policy
from hitl.models import ToolCheck, ToolCheckRequest, ToolPreview, canonical_json
from hitl.secrets import redact_model
from hitl.text import clip, visible, visible_json
from hitl.tools import Previewer

log = structlog.get_logger("hitl.calls")

ACTIVITY_CHECK_CALL = "check_call"
DEFAULT_RISK = 50
"""A call's risk when the worker has no previewer that scores it."""
FAILED_RISK = 100
"""A call whose preview failed: its risk could not be scored (fails closed, like a tool's
risk function that raises)."""
MAX_NAME_CHARS = 100


def default_preview(tool: str, args: Any) -> ToolPreview:
    """The tool and its arguments, escaped and bounded: what a reviewer sees of a call the
    worker has no previewer for."""
    name = visible(clip(tool, MAX_NAME_CHARS))
    try:
        compact = canonical_json(args)
        details = visible_json(args, indent=2)
    except (TypeError, ValueError):
        compact = details = repr(args)
    return ToolPreview(summary=f"{name} {visible(compact)}", details=details)


class CallActivities:
    """The `check_call` activity over the worker's previewers (by tool name)."""

    def __init__(self, previewers: Mapping[str, Previewer] | None = None) -> None:
        self.previewers = dict(previewers or {})

    def all(self) -> list[Callable[..., Any]]:
        return [self.check_call]

    @activity.defn(name=ACTIVITY_CHECK_CALL)
    async def check_call(self, request: ToolCheckRequest) -> ToolCheck:
        """A call of a tool that is not a hitl tool: its preview and risk, and the worker's
        quorum, approval timeout and auto-approve threshold for it."""
        check = await heartbeating(self._check(request))
        log.info(
            "call.check",
            tool=clip(request.tool, MAX_NAME_CHARS),
            previewed=check.previewed,
            risk=check.risk,
            quorum=check.quorum,
            failed=bool(check.preview and check.preview.failed),
        )
        return redact_model(check)

    async def _check(self, request: ToolCheckRequest) -> ToolCheck:
        found = self.previewers.get(request.tool)
        risk: int | None = None
        if found is None:
            preview = default_preview(request.tool, request.args)
        else:
            try:
                preview, risk = await found.preview(dict(request.args or {}))
            except Exception as error:
                # The reviewer still decides, on the raw arguments, told what failed.
                log.exception("call.preview_failed", tool=found.name)
                preview = default_preview(request.tool, request.args)
                preview.summary = f"{visible(found.name)} (the preview failed): {preview.summary}"
                preview.warnings = [
                    _failure(
                        f"the preview of {found.name} failed ({type(error).__name__}: "
                        f"{error}); the arguments are shown as sent, and the risk is "
                        f"{FAILED_RISK}"
                    )
                ]
                preview.failed = True
                risk = FAILED_RISK
        if risk is None:
            risk = DEFAULT_RISK
        preview = preview.model_copy(deep=True)
        if request.min_risk is not None and request.min_risk > risk:
            risk = max(0, min(100, request.min_risk))
        worker = worker_policy(
            risk,
            tool=request.tool,
            call=CallFacts(
                tool=request.tool,
                args=request.args,
                requested_by=request.requested_by,
                requester_verified=request.requester_verified,
                failed=preview.failed,
            ),
        )
        if worker.problem is not None:
            preview.warnings.append(worker.problem)
        preview.warnings.extend(worker.notes)
        return ToolCheck(
            ok=True,
            needs_approval=True,
            risk=risk,
            preview=bounded_preview(preview),
            quorum=worker.quorum,
            approval_timeout_seconds=worker.approval_timeout_seconds,
            escalation=worker.escalation,
            # A preview that failed is never approved by policy: a person decides.
            auto_approve_below=0 if preview.failed else worker.auto_approve_below,
            previewed=found is not None,
            rule=worker.rule,
            shadow=worker.shadow,
        )


__all__ = ["ACTIVITY_CHECK_CALL", "CallActivities", "default_preview"]
