"""The agent run as version 1 of the workflow code executed it, frozen.

Runs that started on version 1 (before the approval gate became `hitl.gate`) may sit
paused on an approval for days. Temporal replays their history on today's worker,
so they must keep issuing exactly the commands version 1 issued: `AgentWorkflow`
sends every run that started without the `hitl-gate-v2` patch marker here.

Nothing in this module may change (tests/histories/v1-*.json replay it), and it
imports only models, which only ever gain fields. It keeps its own copy of the
version-1 tool specs and decision rules, because today's differ. Delete it (and
`workflow.deprecate_patch`) once no version-1 run remains (docs/upgrades.md).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

    from hitl import contract
    from hitl.models import (
        DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        SCRIPTED_BANNER,
        ApprovalContext,
        ApprovalRecord,
        ApprovalStatus,
        AssistantTurn,
        ChatMessage,
        DecisionEntry,
        DecisionKind,
        LlmRequest,
        PendingApproval,
        RefusedDecision,
        RunInput,
        RunResult,
        RunState,
        RunStatus,
        ToolAction,
        ToolCall,
        ToolPreview,
        ToolRequest,
        ToolResult,
        ToolRun,
    )

# --- version 1 decision payloads ---------------------------------------------------------


class _DecisionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_id: str = Field(min_length=1)
    reviewer: str = Field(min_length=1)
    decision_id: str | None = None
    action_digest: str | None = None


class ApproveDecision(_DecisionBase):
    kind: Literal["approve"] = "approve"
    comment: str = ""


class RejectDecision(_DecisionBase):
    kind: Literal["reject"] = "reject"
    reason: str = ""


class ModifyDecision(_DecisionBase):
    kind: Literal["modify"] = "modify"
    args: dict[str, Any]
    comment: str = ""


# --- version 1 tool specs ------------------------------------------------------------------

_CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".json", ".env")
_DANGEROUS_PROGRAMS = {"rm", "sudo", "dd", "mkfs", "curl", "wget", "chmod", "chown", "kill", "sh"}
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


class _Args(BaseModel):
    # Unknown argument names are an error the model should hear about, not noise to drop.
    model_config = ConfigDict(extra="forbid")


class FindFilesArgs(_Args):
    """Find files in the workspace by glob pattern and age."""

    pattern: str = Field(default="*", description="Glob pattern, e.g. '*.log' or 'logs/**/*.log'.")
    older_than_days: float | None = Field(
        default=None, ge=0, description="Only files last modified more than this many days ago."
    )


class ReadFileArgs(_Args):
    """Read a text file from the workspace."""

    path: str = Field(description="Path relative to the workspace.")


class DeleteFilesArgs(_Args):
    """Delete exactly these files from the workspace."""

    paths: list[str] = Field(min_length=1, description="Paths relative to the workspace.")

    @field_validator("paths")
    @classmethod
    def _no_duplicates(cls, paths: list[str]) -> list[str]:
        if len(set(paths)) != len(paths):
            raise ValueError("paths must not repeat")
        return paths


class WriteFileArgs(_Args):
    """Create or replace a text file in the workspace."""

    path: str = Field(description="Path relative to the workspace.")
    content: str = Field(description="The whole new content of the file.")


class RunCommandArgs(_Args):
    """Run a program in the workspace (no shell) and return its exit code and output."""

    argv: list[str] = Field(min_length=1, description="Program and arguments, e.g. ['ls', '-l'].")
    timeout_seconds: float = Field(default=60, gt=0, le=3600, description="Time limit.")


class SendEmailArgs(_Args):
    """Send an email."""

    to: list[str] = Field(min_length=1, description="Recipient addresses.")
    subject: str = Field(min_length=1)
    body: str

    @field_validator("to", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [address for address in value if not _EMAIL.match(address)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return value


RiskFn = Callable[[Any, ToolPreview], int]
ApprovalPredicate = Callable[[Any], bool]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the agent and the approval gate see it."""

    name: str
    description: str
    args_model: type[_Args]
    requires_approval: bool | ApprovalPredicate = False
    """True, False, or a predicate over the validated arguments."""
    risk: RiskFn = field(default=lambda args, preview: 50)
    """0 (harmless) to 100, from the arguments and the preview."""
    approval_timeout: timedelta | None = None
    """This tool's own approval timeout; None means the run's default."""
    idempotent: bool = True
    """False: the implementation must use the idempotency key to act at most once."""
    read_only: bool = False
    """Changes nothing and is quick: runs as a local activity, saving a server round trip."""
    execution_timeout: Callable[[Any], timedelta] = field(
        default=lambda args: timedelta(seconds=60)
    )

    def needs_approval(self, args: _Args) -> bool:
        if callable(self.requires_approval):
            return bool(self.requires_approval(args))
        return self.requires_approval

    def schema(self) -> dict[str, Any]:
        """The Chat Completions tool definition, derived from the arguments model."""
        parameters = self.args_model.model_json_schema()
        parameters.pop("title", None)
        parameters.pop("description", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }


def _clamp(value: float) -> int:
    return max(0, min(100, round(value)))


def _delete_risk(args: DeleteFilesArgs, preview: ToolPreview) -> int:
    count = int(preview.facts.get("existing", len(args.paths)))
    megabytes = float(preview.facts.get("total_bytes", 0)) / 1_000_000
    return _clamp(30 + 4 * count + 2 * megabytes)


def _write_risk(args: WriteFileArgs, preview: ToolPreview) -> int:
    config = args.path.lower().endswith(_CONFIG_SUFFIXES) or "config" in args.path.lower()
    overwrite = bool(preview.facts.get("exists"))
    return _clamp(35 + (25 if config else 0) + (15 if overwrite else 0))


def _command_risk(args: RunCommandArgs, preview: ToolPreview) -> int:
    program = args.argv[0].rsplit("/", 1)[-1]
    return _clamp(60 + (35 if program in _DANGEROUS_PROGRAMS else 0))


def _email_risk(args: SendEmailArgs, preview: ToolPreview) -> int:
    return _clamp(45 + 5 * len(args.to))


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="find_files",
        description=(
            "Find files in the workspace matching a glob pattern, optionally only those "
            "older than N days. Returns relative path, size in bytes and modification time."
        ),
        args_model=FindFilesArgs,
        risk=lambda args, preview: 0,
        read_only=True,
    ),
    ToolSpec(
        name="read_file",
        description="Read a UTF-8 text file from the workspace (at most 64 KiB is returned).",
        args_model=ReadFileArgs,
        risk=lambda args, preview: 0,
        read_only=True,
    ),
    ToolSpec(
        name="delete_files",
        description=(
            "Delete the listed files from the workspace. Needs a human reviewer's approval; "
            "exactly the approved list is deleted."
        ),
        args_model=DeleteFilesArgs,
        requires_approval=True,
        risk=_delete_risk,
    ),
    ToolSpec(
        name="write_file",
        description=(
            "Create or overwrite a text file in the workspace (for example a configuration "
            "file). Needs a human reviewer's approval, who sees a diff."
        ),
        args_model=WriteFileArgs,
        requires_approval=True,
        risk=_write_risk,
    ),
    ToolSpec(
        name="run_command",
        description=(
            "Run a program with arguments (no shell) in the workspace, with a time limit. "
            "Needs a human reviewer's approval. Returns the exit code and output."
        ),
        args_model=RunCommandArgs,
        requires_approval=True,
        risk=_command_risk,
        idempotent=False,
        execution_timeout=lambda args: timedelta(seconds=args.timeout_seconds + 30),
    ),
    ToolSpec(
        name="send_email",
        description="Send an email. Needs a human reviewer's approval; sent at most once.",
        args_model=SendEmailArgs,
        requires_approval=True,
        risk=_email_risk,
        idempotent=False,
    ),
)

REGISTRY: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}


def tool_schemas() -> list[dict[str, Any]]:
    return [spec.schema() for spec in TOOLS]


# --- version 1 decision rules --------------------------------------------------------------

TIMEOUT_REVIEWER = "system:timeout"
POLICY_REVIEWER = "policy"


DECISION_MODELS: dict[DecisionKind, type[ApproveDecision | RejectDecision | ModifyDecision]] = {
    DecisionKind.APPROVE: ApproveDecision,
    DecisionKind.REJECT: RejectDecision,
    DecisionKind.MODIFY: ModifyDecision,
}
"""The payload each signal takes; the signal's name decides the kind."""


def approval_timeout(spec: ToolSpec, run: RunInput) -> timedelta:
    """Run-and-tool override, then the run's override, then the tool's, then 30 minutes."""
    if spec.name in run.tool_approval_timeouts:
        return timedelta(seconds=run.tool_approval_timeouts[spec.name])
    if run.approval_timeout_seconds is not None:
        return timedelta(seconds=run.approval_timeout_seconds)
    if spec.approval_timeout is not None:
        return spec.approval_timeout
    return timedelta(seconds=DEFAULT_APPROVAL_TIMEOUT_SECONDS)


def auto_approved(risk: int, threshold: int) -> bool:
    """Below the run's threshold the policy approves; threshold 0 approves nothing."""
    return risk < threshold


def format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """What a decision does to an approval: refused with a reason, or applied."""

    refusal: str | None = None
    modified_action: ToolAction | None = None


def judge(
    record: ApprovalRecord,
    decision: ApproveDecision | RejectDecision | ModifyDecision,
    spec: ToolSpec,
) -> Verdict:
    """First valid decision wins; everything else is refused with a reason to act on."""
    if record.status is not ApprovalStatus.PENDING:
        when = record.reviewed_at.isoformat() if record.reviewed_at else "an earlier time"
        if record.reviewer == TIMEOUT_REVIEWER:
            return Verdict(
                refusal=f"approval {record.id} timed out at {when} and was auto-rejected; "
                "a decision can no longer change it"
            )
        return Verdict(
            refusal=f"approval {record.id} was already {record.status.value} by "
            f"{record.reviewer} at {when}"
        )
    if decision.action_digest is not None and decision.action_digest != record.action_digest:
        return Verdict(
            refusal=f"the decision names action {decision.action_digest}, but approval "
            f"{record.id} is for action {record.action_digest}; look at it again and decide "
            "on what it is now"
        )
    if isinstance(decision, ModifyDecision):
        try:
            args = spec.args_model.model_validate(decision.args)
        except ValidationError as error:
            return Verdict(
                refusal=f"modified arguments are invalid for {spec.name}: "
                f"{format_validation_error(error)}; the approval is still pending"
            )
        return Verdict(
            modified_action=ToolAction(tool=spec.name, args=args.model_dump(mode="json"))
        )
    return Verdict()


# --- version 1 agent -----------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You are an operations agent working inside one workspace directory. Use the tools to do "
    "the user's task. Inspect before you act. Tools that change things (deleting or writing "
    "files, running commands, sending email) are reviewed by a human first: they may approve, "
    "modify or reject. If an action is rejected, do not propose the same action again: find "
    "another way or stop and explain. Finish with a short answer saying what you did."
)

LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)


def _error(message: str) -> ToolResult:
    return ToolResult(ok=False, error=message, summary=message)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


class AgentV1:
    """Version 1 of the agent run, driven by `AgentWorkflow` for runs that began on it.

    Its signal and query handlers are registered by name when it is created; they
    decode and behave exactly as version 1's decorated handlers did.
    """

    def __init__(self, run: RunInput) -> None:
        self._run = run
        self._state = RunState.RUNNING
        self._step = 0
        self._answer: str | None = None
        self._approvals: dict[str, ApprovalRecord] = {}
        self._rejected: dict[str, ApprovalRecord] = {}
        self._refused: list[RefusedDecision] = []
        self._tool_runs: list[ToolRun] = []
        self._models_seen: list[str] = []
        workflow.set_signal_handler(contract.SIGNAL_APPROVE, self.approve)
        workflow.set_signal_handler(contract.SIGNAL_REJECT, self.reject)
        workflow.set_signal_handler(contract.SIGNAL_MODIFY, self.modify)
        workflow.set_query_handler(contract.QUERY_APPROVALS, self.approvals)
        workflow.set_query_handler(contract.QUERY_STATUS, self.status)

    async def run(self, run: RunInput) -> RunResult:
        started_at = workflow.now()
        messages = [
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content=run.task),
        ]
        schemas = tool_schemas()
        self._publish()
        while self._answer is None:
            if self._step >= run.max_steps:
                self._state = RunState.STEP_LIMIT
                self._answer = (
                    f"Stopped after {run.max_steps} steps without a final answer "
                    "(raise max_steps to allow more)."
                )
                break
            self._step += 1
            turn = await self._next_turn(messages, schemas)
            messages.append(
                ChatMessage(role="assistant", content=turn.content, tool_calls=turn.tool_calls)
            )
            if not turn.tool_calls:
                self._state = RunState.COMPLETED
                self._answer = turn.content
                break
            step = self._step
            results = await asyncio.gather(
                *(self._handle_call(step, call, turn.content) for call in turn.tool_calls)
            )
            for call, result in zip(turn.tool_calls, results, strict=True):
                messages.append(
                    ChatMessage(
                        role="tool",
                        tool_call_id=call.id,
                        content=json.dumps(
                            result.model_dump(mode="json", exclude={"summary"}),
                            ensure_ascii=False,
                        ),
                    )
                )
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        info = workflow.info()
        return RunResult(
            state=self._state,
            answer=self._answer,
            steps=self._step,
            approvals=list(self._approvals.values()),
            tool_runs=self._tool_runs,
            refused_decisions=self._refused,
            evidence={
                "workflow_id": info.workflow_id,
                "run_id": info.run_id,
                "task_queue": info.task_queue,
                "task": run.task,
                "workspace": run.workspace,
                "model": {
                    "provider": run.model.provider,
                    "requested": run.model.name,
                    "base_url": run.model.base_url,
                    "answered_by": self._models_seen,
                },
                "started_at": started_at.isoformat(),
                "finished_at": workflow.now().isoformat(),
                "state": self._state.value,
                "steps": self._step,
                "answer": self._answer,
                "origin": run.origin,
            },
        )

    # --- signals and queries ------------------------------------------------------

    def approve(self, payload: Any) -> None:
        self._receive(DecisionKind.APPROVE, payload)

    def reject(self, payload: Any) -> None:
        self._receive(DecisionKind.REJECT, payload)

    def modify(self, payload: Any) -> None:
        self._receive(DecisionKind.MODIFY, payload)

    def approvals(self) -> list[ApprovalRecord]:
        return list(self._approvals.values())

    def status(self) -> RunStatus:
        return RunStatus(
            state=self._current_state(),
            task=self._run.task,
            step=self._step,
            max_steps=self._run.max_steps,
            pending=self._pending(),
            approvals_total=len(self._approvals),
            refused_decisions=self._refused,
            answer=self._answer,
        )

    # --- the decision path ----------------------------------------------------------

    def _receive(self, kind: DecisionKind, payload: Any) -> None:
        """Apply or refuse one decision; never raise, so no signal can fail the run."""
        now = workflow.now()
        raw = dict(payload) if isinstance(payload, dict) else payload
        if isinstance(raw, dict):
            raw.pop("kind", None)
        try:
            decision = DECISION_MODELS[kind].model_validate(raw)
        except ValidationError as error:
            refusal = f"malformed {kind.value} decision: {format_validation_error(error)}"
            fields: dict[str, Any] = raw if isinstance(raw, dict) else {}

            def text(name: str) -> str | None:
                value = fields.get(name)
                return value if isinstance(value, str) else None

            record = self._approvals.get(text("approval_id") or "")
            if record is None:
                self._refuse_unattached(now, payload, refusal)
            else:
                record.decisions.append(
                    DecisionEntry(
                        decision_id=text("decision_id"),
                        kind=kind,
                        reviewer=text("reviewer") or "unknown",
                        received_at=now,
                        outcome="refused",
                        refusal=refusal,
                    )
                )
                workflow.logger.warning("Refused decision on %s: %s", record.id, refusal)
            return

        record = self._approvals.get(decision.approval_id)
        if record is None:
            known = ", ".join(self._approvals) or "none yet"
            self._refuse_unattached(
                now,
                payload,
                f"unknown approval id {decision.approval_id!r}: this run's approvals are {known}",
            )
            return

        verdict = judge(record, decision, REGISTRY[record.action_json.tool])
        entry = DecisionEntry(
            decision_id=decision.decision_id,
            kind=kind,
            reviewer=decision.reviewer,
            reason=decision.reason if isinstance(decision, RejectDecision) else decision.comment,
            args=decision.args if isinstance(decision, ModifyDecision) else None,
            received_at=now,
            outcome="refused" if verdict.refusal else "applied",
            refusal=verdict.refusal,
        )
        record.decisions.append(entry)
        if verdict.refusal:
            workflow.logger.warning("Refused decision on %s: %s", record.id, verdict.refusal)
            return
        record.reviewer = decision.reviewer
        record.reviewed_at = now
        record.reason = entry.reason or None
        if isinstance(decision, RejectDecision):
            record.status = ApprovalStatus.REJECTED
            record.reason = decision.reason or "no reason given"
        elif verdict.modified_action is not None:
            record.status = ApprovalStatus.MODIFIED
            record.modified_action_json = verdict.modified_action
        else:
            record.status = ApprovalStatus.APPROVED
        workflow.logger.info(
            "Approval %s %s by %s", record.id, record.status.value, decision.reviewer
        )

    def _refuse_unattached(self, now: datetime, payload: Any, refusal: str) -> None:
        self._refused.append(RefusedDecision(received_at=now, payload=payload, refusal=refusal))
        workflow.logger.warning("Refused decision: %s", refusal)

    # --- one tool call ---------------------------------------------------------------

    async def _handle_call(self, step: int, call: ToolCall, reasoning: str) -> ToolResult:
        spec = REGISTRY.get(call.name)
        args_seen: Any = call.arguments
        approval_id: str | None = None
        if spec is None:
            result = _error(f"unknown tool {call.name!r}; the tools are: {', '.join(REGISTRY)}")
        else:
            try:
                args_seen = json.loads(call.arguments or "{}")
            except json.JSONDecodeError as error:
                result = _error(f"the arguments of {call.name} are not valid JSON: {error}")
            else:
                try:
                    args = spec.args_model.model_validate(args_seen)
                except ValidationError as error:
                    result = _error(
                        f"invalid arguments for {call.name}: {format_validation_error(error)}"
                    )
                else:
                    action = ToolAction(tool=spec.name, args=args.model_dump(mode="json"))
                    if spec.needs_approval(args):
                        approval_id, result = await self._gated(step, spec, args, action, reasoning)
                    else:
                        result = await self._execute(action, None, None)
        self._tool_runs.append(
            ToolRun(
                step=step,
                call_id=call.id,
                tool=call.name,
                args=args_seen,
                approval_id=approval_id,
                result=result,
            )
        )
        return result

    async def _gated(
        self, step: int, spec: ToolSpec, args: Any, action: ToolAction, reasoning: str
    ) -> tuple[str | None, ToolResult]:
        earlier = self._rejected.get(action.key())
        if earlier is not None:
            return None, _error(
                f"this exact action was already rejected in this run (approval {earlier.id}, "
                f"by {earlier.reviewer}): {earlier.reason}. It was not asked again. Do not "
                "propose it again; find another way or stop and explain."
            )
        preview = await self._preview(action)
        now = workflow.now()
        info = workflow.info()
        record = ApprovalRecord(
            id=f"apr_{workflow.uuid4().hex[:16]}",
            session_id=info.workflow_id,
            run_id=info.run_id,
            action_json=action,
            action_digest=action.digest(),
            created_at=now,
            expires_at=now + approval_timeout(spec, self._run),
            context=ApprovalContext(
                original_request=self._run.task, reasoning=reasoning, step=step
            ),
            preview=preview,
            risk=spec.risk(args, preview),
        )
        self._approvals[record.id] = record
        if auto_approved(record.risk, self._run.auto_approve_below or 0):
            self._settle_by_system(
                record,
                DecisionKind.POLICY,
                ApprovalStatus.APPROVED,
                POLICY_REVIEWER,
                f"risk {record.risk} is below the run's auto-approve threshold "
                f"{self._run.auto_approve_below}",
            )
        else:
            await self._await_decision(record)
        return record.id, await self._conclude(record)

    async def _await_decision(self, record: ApprovalRecord) -> None:
        self._publish()
        workflow.logger.info(
            "Approval %s pending: %s %s (risk %d, expires %s)",
            record.id,
            record.action_json.tool,
            record.preview.summary,
            record.risk,
            record.expires_at.isoformat(),
        )
        try:
            await workflow.execute_activity(
                contract.ACTIVITY_NOTIFY,
                record,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=TOOL_RETRY,
                summary=f"notify reviewers: {record.id}",
            )
        except ActivityError as error:
            # A notification that can't be delivered must not cost the approval.
            workflow.logger.warning("Notification for %s failed: %s", record.id, error.cause)
        timeout = record.expires_at - record.created_at
        try:
            await workflow.wait_condition(
                lambda: record.status is not ApprovalStatus.PENDING,
                timeout=timeout,
                timeout_summary=f"approval {record.id} timeout",
            )
        except TimeoutError:
            pass
        # The status, not which of the two woke us, is the truth: a decision and the
        # timer can land in the same workflow task, and the decision came first.
        if record.status is ApprovalStatus.PENDING:
            self._settle_by_system(
                record,
                DecisionKind.TIMEOUT,
                ApprovalStatus.REJECTED,
                TIMEOUT_REVIEWER,
                f"no decision came within {_duration(timeout)}; auto-rejected at "
                f"{workflow.now().isoformat()}",
            )
            workflow.logger.warning("Approval %s timed out: %s", record.id, record.reason)
        self._publish()

    @staticmethod
    def _settle_by_system(
        record: ApprovalRecord,
        kind: DecisionKind,
        status: ApprovalStatus,
        reviewer: str,
        reason: str,
    ) -> None:
        """A decision the run makes itself (policy, timeout), logged like a reviewer's."""
        now = workflow.now()
        record.status, record.reviewer, record.reviewed_at, record.reason = (
            status,
            reviewer,
            now,
            reason,
        )
        record.decisions.append(
            DecisionEntry(
                kind=kind, reviewer=reviewer, reason=reason, received_at=now, outcome="applied"
            )
        )

    async def _conclude(self, record: ApprovalRecord) -> ToolResult:
        if record.status is ApprovalStatus.REJECTED:
            self._rejected[record.action_json.key()] = record
            who = "nobody (timeout)" if record.reviewer == TIMEOUT_REVIEWER else (record.reviewer)
            return _error(
                f"REJECTED by {who}: {record.reason}. The action was not performed. Do not "
                "retry the same action; find another way to do the task or stop and explain."
            )
        preview = record.preview
        if record.modified_action_json is not None:
            record.modified_preview = await self._preview(record.modified_action_json)
            preview = record.modified_preview
        result = await self._execute(record.effective_action, record.id, preview)
        record.executed_at = workflow.now()
        record.result = result
        if record.status is ApprovalStatus.MODIFIED and result.ok:
            result = result.model_copy(
                update={
                    "summary": f"{result.summary} (arguments modified by {record.reviewer})",
                    "output": {
                        "reviewer_modified_arguments": record.effective_action.args,
                        "result": result.output,
                    },
                }
            )
        return result

    # --- activities ------------------------------------------------------------------

    async def _next_turn(self, messages: list[ChatMessage], schemas: list[dict]) -> AssistantTurn:
        model = self._run.model
        try:
            turn: AssistantTurn = await workflow.execute_activity(
                contract.ACTIVITY_LLM,
                LlmRequest(model=model, messages=messages, tools=schemas),
                result_type=AssistantTurn,
                start_to_close_timeout=timedelta(minutes=3),
                retry_policy=LLM_RETRY,
                summary=f"step {self._step}: ask {model.provider}:{model.name}",
            )
        except ActivityError as error:
            raise ApplicationError(
                f"the model could not be asked at step {self._step}: {error.cause}",
                non_retryable=True,
            ) from error
        if turn.model and turn.model not in self._models_seen:
            self._models_seen.append(turn.model)
        if turn.scripted and not turn.content.startswith(SCRIPTED_BANNER):
            turn.content = f"{SCRIPTED_BANNER} {turn.content}".strip()
        return turn

    async def _preview(self, action: ToolAction) -> ToolPreview:
        try:
            preview: ToolPreview = await workflow.execute_activity(
                contract.ACTIVITY_PREVIEW,
                ToolRequest(action=action, workspace=self._run.workspace),
                result_type=ToolPreview,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=TOOL_RETRY,
                summary=f"preview {action.tool}",
            )
        except ActivityError as error:
            # The reviewer still decides; they are told the preview is missing.
            return ToolPreview(
                summary=f"{action.tool}: no preview available",
                warnings=[f"the preview failed: {error.cause}"],
            )
        return preview

    async def _execute(
        self, action: ToolAction, approval_id: str | None, preview: ToolPreview | None
    ) -> ToolResult:
        spec = REGISTRY[action.tool]
        args = spec.args_model.model_validate(action.args)
        label = f"{action.tool}" + (f" (approval {approval_id})" if approval_id else "")
        request = ToolRequest(
            action=action,
            workspace=self._run.workspace,
            idempotency_key=approval_id,
            preview=preview,
        )
        # A read-only tool is quick and changes nothing: a local activity runs it inside
        # the current workflow task, without a round trip through the server.
        start = workflow.execute_local_activity if spec.read_only else workflow.execute_activity
        try:
            result: ToolResult = await start(
                contract.ACTIVITY_RUN_TOOL,
                request,
                result_type=ToolResult,
                start_to_close_timeout=spec.execution_timeout(args),
                retry_policy=TOOL_RETRY,
                summary=label,
            )
        except ActivityError as error:
            return _error(f"{action.tool} failed: {error.cause}")
        return result

    # --- visibility ------------------------------------------------------------------

    def _pending(self) -> list[PendingApproval]:
        return [
            record.summary()
            for record in self._approvals.values()
            if record.status is ApprovalStatus.PENDING
        ]

    def _current_state(self) -> RunState:
        if self._answer is not None:
            return self._state
        return RunState.AWAITING_APPROVAL if self._pending() else RunState.RUNNING

    def _publish(self) -> None:
        """Mirror the run's approval state to search attributes, memo and current details."""
        pending = self._pending()
        state = self._current_state()
        workflow.upsert_search_attributes(
            [
                contract.STATE_KEY.value_set(state.value),
                contract.PENDING_KEY.value_set(len(pending)),
                contract.APPROVAL_IDS_KEY.value_set(list(self._approvals)),
            ]
        )
        workflow.upsert_memo(
            {
                contract.MEMO_PENDING: [item.model_dump(mode="json") for item in pending],
                contract.MEMO_TASK: self._run.task,
            }
        )
        if pending:
            details = "\n".join(
                f"awaiting approval: {item.tool}, {item.summary}, expires "
                f"{item.expires_at:%H:%M} UTC ({item.id})"
                for item in pending
            )
        elif self._answer is not None:
            details = f"{state.value}: {self._answer}"
        else:
            details = f"running: step {self._step} of at most {self._run.max_steps}"
        workflow.set_current_details(details)
