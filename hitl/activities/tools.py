"""The activities every tool call goes through, for whatever tools a worker has.

`describe_tools` tells a run which tools it has (descriptors, recorded in history);
`check_tool` runs a tool's own rules on a proposed call: validation, the approval
predicate, the preview, the risk score and the standing-approval scope key; `run_tool`
carries out a validated (and, where flagged, approved) call exactly as approved, at
most once for a tool that is not idempotent. Tool code is user code: it runs here, never
in workflow code, so what it answered is recorded and a change to it cannot break a
paused run.

Secret values the worker holds never leave these activities (`hitl.secrets`), and each
heartbeats while it works, so a dead worker is noticed in seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from hitl import contract
from hitl.activities.callers import approval_refusal
from hitl.activities.heartbeat import heartbeating
from hitl.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    EscalationPolicy,
    RuleVerdict,
    ToolCheck,
    ToolCheckRequest,
    ToolDescriptor,
    ToolPreview,
    ToolRequest,
    ToolResult,
    canonical_json,
)
from hitl.policy import format_validation_error
from hitl.reviewers import ReviewerConfig, ReviewerConfigError, load_config
from hitl.rules import Call, RulesError, broken, judge, load_rules
from hitl.secrets import redact_model
from hitl.text import clip, quoted, visible
from hitl.toolkits.workspace import JOURNAL_DIR, Journal
from hitl.tools import (
    SCOPE_KEY_FAILED,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistrationError,
    ToolRegistry,
)

log = structlog.get_logger("hitl.tools")

MAX_SUMMARY_CHARS = 200
MAX_DETAILS_CHARS = 16 * 1024
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 300
MAX_ERROR_CHARS = 2000
MAX_OUTPUT_CHARS = 256 * 1024
"""What a tool may return; a larger output is cut, saying so."""


def bounded_preview(preview: ToolPreview) -> ToolPreview:
    """A preview whose text can't grow without bound, whatever the tool or workspace holds."""
    warnings = [clip(warning, MAX_WARNING_CHARS) for warning in preview.warnings[:MAX_WARNINGS]]
    if len(preview.warnings) > MAX_WARNINGS:
        warnings[-1] = (
            f"... and {len(preview.warnings) - MAX_WARNINGS + 1} more warnings; "
            "the details list every entry"
        )
    return preview.model_copy(
        update={
            "summary": clip(preview.summary, MAX_SUMMARY_CHARS),
            "details": clip(preview.details, MAX_DETAILS_CHARS),
            "warnings": warnings,
        }
    )


def bounded_result(result: ToolResult) -> ToolResult:
    output = result.output
    try:
        text = canonical_json(output)
    except (TypeError, ValueError):
        text = str(output)
        output = clip(text, MAX_OUTPUT_CHARS)
    if len(text) > MAX_OUTPUT_CHARS:
        output = clip(text, MAX_OUTPUT_CHARS) + " [the output was cut short]"
    return result.model_copy(
        update={
            "output": output,
            "summary": clip(result.summary, MAX_SUMMARY_CHARS),
            "error": clip(result.error, MAX_ERROR_CHARS) if result.error else None,
        }
    )


def _failure(text: str) -> str:
    return clip(visible(text), MAX_ERROR_CHARS)


def _refused(name: str, error: ToolError) -> ToolResult:
    return ToolResult(
        ok=False, error=str(error), summary=clip(f"{name} refused: {error}", MAX_SUMMARY_CHARS)
    )


class ToolActivities:
    """The tool activities of one worker, over the tools it was given."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    def all(self) -> list[Callable[..., Any]]:
        return [self.describe_tools, self.check_tool, self.run_tool, self.preview_tool]

    def _context(self, request: ToolRequest | ToolCheckRequest) -> ToolContext:
        info = activity.info() if activity.in_activity() else None
        return ToolContext(
            workspace_path=request.workspace,
            workspace_root=request.workspace_root,
            approval_id=getattr(request, "idempotency_key", None),
            preview=getattr(request, "preview", None),
            workflow_id=(info.workflow_id or "") if info else "",
            run_id=(info.workflow_run_id or "") if info else "",
            activity_id=info.activity_id if info else "",
        )

    def _tool(self, name: str, digest: str | None) -> Tool:
        found = self.registry.get(name)
        if found is None:
            raise ToolError(
                f"there is no tool {quoted(name)} on this worker; it has "
                f"{', '.join(self.registry.names) or 'none'}"
            )
        if digest is not None and found.descriptor().digest != digest:
            raise ToolError(
                f"tool {found.name} has changed since this run started (its definition "
                f"{digest} is now {found.descriptor().digest}); the run keeps the tools it "
                "began with, so this call is not carried out. Start a new run to use it."
            )
        return found

    @staticmethod
    def _validate(found: Tool, raw: Any) -> Any:
        try:
            return found.validate(raw)
        except ValidationError as error:
            raise InvalidArguments(found.name, format_validation_error(error)) from None

    # --- describe ---------------------------------------------------------------------------

    @activity.defn(name=contract.ACTIVITY_DESCRIBE_TOOLS)
    async def describe_tools(self, names: list[str] | None) -> list[ToolDescriptor]:
        """The tools a run may use, as this worker defines them: recorded for the run's life."""
        try:
            return self.registry.descriptors(names)
        except ToolRegistrationError as error:
            raise ApplicationError(str(error), type="UnknownTool", non_retryable=True) from None

    # --- check -------------------------------------------------------------------------------

    @activity.defn(name=contract.ACTIVITY_CHECK_TOOL)
    async def check_tool(self, request: ToolCheckRequest) -> ToolCheck:
        """A proposed call judged by its tool's own code: valid? needs approval? preview, risk."""
        check = await heartbeating(self._check(request))
        log.bind(tool=request.tool, **_where()).info(
            "tool.check",
            ok=check.ok,
            needs_approval=check.needs_approval,
            risk=check.risk,
            summary=check.preview.summary if check.preview else None,
        )
        return redact_model(check)

    async def _check(self, request: ToolCheckRequest) -> ToolCheck:
        try:
            found = self._tool(request.tool, request.digest)
            args = self._validate(found, request.args)
        except InvalidArguments as error:
            return ToolCheck(ok=False, error=str(error), invalid=error.detail)
        except ToolError as error:
            return ToolCheck(ok=False, error=str(error))
        normalized = args.model_dump(mode="json")
        timeout = None
        notes: list[str] = []
        try:
            timeout = found.timeout_for(args).total_seconds()
        except Exception as error:
            notes.append(_failure(f"the execution timeout could not be computed: {error}"))
        if request.modification:
            needs = True
        else:
            try:
                needs = found.needs_approval(args)
            except Exception as error:
                # Fails closed: a rule that can't answer asks a person, who is told why.
                needs = True
                notes.append(
                    _failure(
                        f"the approval rule of {found.name} failed ({type(error).__name__}: "
                        f"{error}), so a reviewer decides"
                    )
                )
        if not needs:
            return ToolCheck(
                ok=True, args=normalized, needs_approval=False, risk=0,
                execution_timeout_seconds=timeout,
            )  # fmt: skip
        preview = await self._preview(found, args, self._context(request))
        preview.warnings = [*notes, *preview.warnings]
        try:
            risk = found.score(args, preview)
        except Exception as error:
            risk = 100
            preview.warnings.append(
                _failure(f"the risk could not be scored ({type(error).__name__}: {error}); 100")
            )
        scope_key = found.scope_key(args)
        if scope_key is not None and scope_key.startswith(SCOPE_KEY_FAILED):
            # The marker's second part names what failed; a rule of the user's that
            # answers the marker itself must not break the check.
            failed = scope_key.split(":")[1] if ":" in scope_key else "no reason"
            preview.warnings.append(
                _failure(
                    f"the standing-approval scope of {found.name} could not be computed "
                    f"({failed}), so no standing approval covers this call"
                )
            )
        # The worker's policy, not the run's: quorum, auto-approval and the approval
        # timeout come from the tool's definition and the reviewers file as it is now.
        worker = worker_policy(
            risk,
            quorum=found.quorum,
            approval_timeout=found.approval_timeout,
            tool=found.name,
            call=CallFacts(
                tool=found.name,
                args=normalized,
                requested_by=request.requested_by,
                requester_verified=request.requester_verified,
                auto_approve=found.auto_approve,
                failed=preview.failed,
            ),
        )
        if request.modification:
            # A reviewer's modification is judged by the reviewer, but a deny stands over a
            # person as over a standing approval: modifying a call into one the worker's
            # rules forbid is refused (the approval stays pending). Nothing else of the
            # rules' verdict applies to a modification.
            if worker.rule is not None and worker.rule.verdict == "deny":
                return ToolCheck(
                    ok=False,
                    error=clip(
                        f"the worker's rule {quoted(worker.rule.rule)} denies the modified "
                        f"call: {worker.rule.reason}",
                        1_000,
                    ),
                )
        else:
            preview.warnings.extend(worker.notes)
        lapsed: dict[str, str] = {}
        if worker.config is not None:
            lapsed = _lapsed(worker.config, request.standing_grantors, found.name, risk)
            preview.warnings.extend(
                f"{name}'s standing approval of {found.name} no longer applies: {reason}"
                for name, reason in lapsed.items()
            )
        else:
            preview.warnings.append(worker.problem or "the reviewers file is unusable")
            lapsed = {name: "the reviewers file is unusable" for name in request.standing_grantors}
        return ToolCheck(
            ok=True,
            args=normalized,
            needs_approval=True,
            risk=risk,
            preview=bounded_preview(preview),
            execution_timeout_seconds=timeout,
            quorum=worker.quorum,
            scope_key=scope_key,
            approval_timeout_seconds=worker.approval_timeout_seconds,
            escalation=worker.escalation,
            auto_approve_below=worker.auto_approve_below,
            lapsed_grantors=lapsed,
            rule=worker.rule,
            shadow=worker.shadow,
        )

    async def _preview(self, found: Tool, args: Any, ctx: ToolContext) -> ToolPreview:
        name = quoted(found.name)
        try:
            return await found.dry_run(ctx, args)
        except ToolError as error:
            return ToolPreview(
                summary=f"{name}: cannot be carried out as asked", warnings=[str(error)]
            )
        except Exception as error:
            # The reviewer still decides; they are told what failed, and execution has no
            # preview to check against.
            log.exception("tool.preview_failed", tool=found.name)
            return ToolPreview(
                summary=f"{name}: the preview failed",
                warnings=[_failure(f"the preview failed: {type(error).__name__}: {error}")],
                failed=True,
            )
        finally:
            ctx.close()

    @activity.defn(name=contract.ACTIVITY_PREVIEW)
    async def preview_tool(self, request: ToolRequest) -> ToolPreview:
        """Dry run only: what the action would change (version 1 runs ask for this)."""
        try:
            found = self._tool(request.action.tool, request.digest)
            args = self._validate(found, request.action.args)
        except ToolError as error:
            preview = ToolPreview(
                summary=f"{quoted(request.action.tool)}: cannot be carried out as asked",
                warnings=[str(error)],
            )
        else:
            preview = await heartbeating(self._preview(found, args, self._context(request)))
        return redact_model(bounded_preview(preview))

    # --- run ---------------------------------------------------------------------------------

    @activity.defn(name=contract.ACTIVITY_RUN_TOOL)
    async def run_tool(self, request: ToolRequest) -> ToolResult:
        """Carry out one validated (and, where flagged, approved) tool call."""
        bound = log.bind(tool=request.action.tool, approval_id=request.idempotency_key, **_where())
        bound.info("tool.start", args=request.action.args)
        result = redact_model(bounded_result(await heartbeating(self._run(request))))
        bound.info("tool.done", ok=result.ok, summary=result.summary, error=result.error)
        return result

    async def _run(self, request: ToolRequest) -> ToolResult:
        name = quoted(request.action.tool)
        ctx = self._context(request)
        try:
            found = self._tool(request.action.tool, request.digest)
            args = self._validate(found, request.action.args)
            action = request.action.model_dump(mode="json")
            key = request.idempotency_key
            needs = _needs_approval(found, args)
            if key is None and needs:
                # The worker's own rule, whatever the run was told: a call that needs
                # approval runs only as an approval the gate settled.
                raise ToolError(
                    f"{found.name} needs a reviewer's approval on this worker and this call "
                    "carries none, so it was not carried out"
                )
            if key is not None and needs and activity.in_activity():
                # An approval id is only a claim: the run that asked says whether it
                # settled that approval for exactly this action.
                refusal = await approval_refusal(key, request.action)
                if refusal is not None:
                    raise ToolError(
                        f"{found.name} was not carried out: {refusal}; a call that needs "
                        "approval runs only as the action its run approved"
                    )
            journal = ctx.workspace.journal(key) if key and request.workspace else None
            if journal is not None:
                done = _journal_start(found, journal, action)
                if done is not None:
                    return done
            elif key and not found.idempotent and activity.in_activity():
                # No workspace journal: Temporal's own attempt count tells whether an
                # earlier attempt of this approved action was dispatched and never reported.
                if activity.info().attempt > 1:
                    return _not_repeated(found.name)
            return await _carry_out(found, args, ctx, journal, action)
        except ToolError as error:
            return _refused(name, error)
        finally:
            ctx.close()


@dataclass(frozen=True)
class WorkerPolicy:
    """The worker's policy for one flagged call, from the reviewers file as it is now."""

    quorum: int
    approval_timeout_seconds: float
    auto_approve_below: int
    config: ReviewerConfig | None
    """None: the reviewers file is unusable (`problem` says why); the call's own quorum
    and timeout apply, and nothing is approved by policy."""
    problem: str | None = None
    escalation: EscalationPolicy | None = None
    """The first `[[escalation]]` rule covering the call (tool, risk), resolved."""
    rule: RuleVerdict | None = None
    """The auto-approval rules' verdict, to act on (`HITL_RULES` in mode `act`)."""
    shadow: RuleVerdict | None = None
    """The auto-approval rules' verdict, to record only (mode `shadow`)."""
    notes: tuple[str, ...] = ()
    """What the reviewer should read about the rules (one failed, one asked for a person)."""


@dataclass(frozen=True)
class CallFacts:
    """What the worker's rules judge a call by, besides its risk."""

    tool: str
    args: Any
    requested_by: str = ""
    requester_verified: bool = False
    auto_approve: bool = True
    """False: the tool is defined to always ask a person."""
    failed: bool = False
    """The preview failed: nothing was seen to approve."""


def worker_policy(
    risk: int,
    *,
    quorum: int = 1,
    approval_timeout: float | None = None,
    tool: str = "",
    call: CallFacts | None = None,
) -> WorkerPolicy:
    """Quorum, approval timeout and auto-approve threshold for a call at `risk`: the
    tool's own (`quorum`, `approval_timeout`) under the reviewers file's `[[quorum]]`
    rules and `[policy]` (`approval_timeout` for tools without their own, 30 minutes
    without either), and, for `call`, the verdict of the worker's auto-approval rules
    (`HITL_RULES`). Shared by `check_tool` and `check_call`: the one place both judge."""
    try:
        config = load_config()
    except ReviewerConfigError as error:
        problem = _failure(f"the reviewers file is unusable: {error}")
        base = WorkerPolicy(
            quorum=quorum,
            approval_timeout_seconds=approval_timeout or DEFAULT_APPROVAL_TIMEOUT_SECONDS,
            auto_approve_below=0,
            config=None,
            problem=problem,
        )
        return _with_rules(base, risk, call, unsure="the reviewers file is unusable")
    timeout = approval_timeout or config.policy.approval_timeout or DEFAULT_APPROVAL_TIMEOUT_SECONDS
    # Working hours turn the policy's working time into calendar time from now (the
    # approval opens right after this check; the run keeps the answer, so replays agree).
    escalation, timeout = config.timed_escalation(tool, risk, timeout, datetime.now(UTC))
    base = WorkerPolicy(
        quorum=config.quorum_for(risk, own=quorum),
        approval_timeout_seconds=timeout,
        auto_approve_below=config.policy.auto_approve_below,
        config=config,
        escalation=escalation,
    )
    return _with_rules(base, risk, call)


def _with_rules(
    base: WorkerPolicy, risk: int, call: CallFacts | None, unsure: str | None = None
) -> WorkerPolicy:
    """The policy with the rules' verdict on the call. A rules file that can't be used, a
    rule that fails or a rule that says `ask` turns the risk threshold off for the call:
    a person decides (a broken file might have held a deny)."""
    if call is None:
        return base
    threshold = base.auto_approve_below if call.auto_approve and not call.failed else 0
    try:
        rules = load_rules()
    except RulesError as error:
        verdict = broken(str(error))
        return replace(
            base,
            auto_approve_below=0,
            rule=verdict,
            notes=(_failure(f"{error}; a person decides"),),
        )
    if rules is None:
        return replace(base, auto_approve_below=threshold)
    verdict = judge(
        rules,
        Call(
            tool=call.tool,
            args=call.args if isinstance(call.args, dict) else {},
            risk=risk,
            requester=call.requested_by,
            verified=call.requester_verified,
        ),
        quorum=base.quorum,
        auto_approve=call.auto_approve,
        failed=call.failed,
        unsure=unsure,
    )
    if rules.mode == "shadow":
        return replace(base, auto_approve_below=threshold, shadow=verdict)
    notes: tuple[str, ...] = ()
    if verdict.verdict == "ask" and (verdict.rule or verdict.error):
        threshold = 0
        notes = (
            _failure(
                f"{verdict.reason}"
                + (f" ({verdict.error})" if verdict.error else "")
                + (f" [rules {verdict.policy_digest}]" if verdict.policy_digest else "")
            ),
        )
    return replace(base, auto_approve_below=threshold, rule=verdict, notes=notes)


def _lapsed(config: ReviewerConfig, grantors: list[str], tool: str, risk: int) -> dict[str, str]:
    """The grantors whose standing approvals no longer cover this call, with why: a grant
    is only as good as its grantor is now (the reviewers file as it is, the policy)."""
    off = config.policy_refusal("approve", "tool")
    lapsed = {}
    for name in grantors:
        refusal = off
        if refusal is None and config.reviewers:
            refusal = config.refusal(name, "approve", tool, risk, "", scope="tool")
        if refusal is not None:
            lapsed[name] = clip(refusal, 300)
    return lapsed


def _needs_approval(found: Tool, args: Any) -> bool:
    try:
        return found.needs_approval(args)
    except Exception:
        return True  # a rule that can't answer asks a person


class InvalidArguments(ToolError):
    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"invalid arguments for {tool}: {detail}")
        self.detail = detail


def _where() -> dict[str, Any]:
    if not activity.in_activity():
        return {}
    info = activity.info()
    return {"workflow_id": info.workflow_id, "attempt": info.attempt}


def _not_repeated(name: str) -> ToolResult:
    return ToolResult(
        ok=False,
        error=f"an earlier attempt of this approved {name} started but did not report back "
        "(the worker may have died); it is not repeated, so it happens at most once. Check "
        "its effect before proposing it again.",
        summary=f"{name} not repeated after an interrupted attempt",
    )


def _journal_start(found: Tool, journal: Journal, action: dict[str, Any]) -> ToolResult | None:
    """The first result when this approved action already ran; else claim it (None)."""
    try:
        entry = journal.read()
        if entry and entry.get("status") == "done":
            return ToolResult.model_validate(entry["result"])
        claimed = journal.begin(action)
    except (OSError, ValidationError) as error:
        return ToolResult(
            ok=False,
            error=_failure(
                f"{found.name} was not carried out: the workspace's journal ({JOURNAL_DIR}/) "
                f"could not be used: {type(error).__name__}: {error}"
            ),
            summary=f"{found.name} not carried out",
        )
    if not claimed and not found.idempotent:
        return _not_repeated(found.name)
    return None


async def _carry_out(
    found: Tool, args: Any, ctx: ToolContext, journal: Journal | None, action: dict[str, Any]
) -> ToolResult:
    try:
        result = await found.run(ctx, args)
    except ToolError as error:
        # Refused up front: nothing happened, so a later attempt may act.
        if journal is not None:
            journal.abandon()
        return _refused(found.name, error)
    except Exception as error:
        if found.idempotent:
            # Doing it again is harmless, so Temporal's retry policy gets its chance; the
            # activity's failure names this exception.
            if journal is not None:
                journal.abandon()
            raise
        log.exception("tool.failed", tool=found.name)
        result = ToolResult(
            ok=False,
            error=_failure(
                f"{found.name} failed: {type(error).__name__}: {error}. It is not retried, so "
                "it happens at most once; it may or may not have taken effect, so check "
                "before proposing it again."
            ),
            summary=f"{found.name} failed",
        )
    result = bounded_result(result)
    if journal is not None:
        try:
            # For a failure too: a retry of this activity then reports what failed, not a
            # vanished worker.
            await asyncio.to_thread(journal.finish, action, json.loads(result.model_dump_json()))
        except OSError:
            log.exception("tool.journal_failed", tool=found.name)
    return result
