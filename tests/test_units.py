"""Pure pieces: policy, specs, the scripted model, configuration and argument parsing."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from activities.scripted import scripted_turn
from hitl import policy
from hitl.config import choose_model, load_settings
from hitl.decisions import RefusalCode
from hitl.durations import parse_duration
from hitl.ledger import precheck
from hitl.models import (
    SCRIPTED_BANNER,
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    ChatMessage,
    LlmRequest,
    ModelSettings,
    ModifyDecision,
    RunResult,
    RunState,
    ToolAction,
    ToolPreview,
)
from hitl.start import print_result
from hitl.terminal import Prompter, ask_decision, format_approval, reviewer_identity
from hitl.toolkits.email import SendEmailArgs
from hitl.toolkits.files import DeleteFilesArgs
from hitl.tools import Tool, load_tools


def record(**changes: object) -> ApprovalRecord:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    action = ToolAction(tool="delete_files", args={"paths": ["a.log", "b.log"]})
    base = ApprovalRecord(
        id="apr_1",
        session_id="run-1",
        action_json=action,
        action_digest=action.digest(),
        created_at=now,
        expires_at=now + timedelta(minutes=30),
        context=ApprovalContext(original_request="clean up", reasoning="they are old"),
        preview=ToolPreview(summary="delete 2 files (1 KB)", details="  a.log\n  b.log"),
        risk=38,
        args_schema=load_tools()["delete_files"].parameters(),
    )
    return base.model_copy(update=changes)


def test_timeouts_take_the_most_specific_setting() -> None:
    own = None  # delete_files has no timeout of its own
    assert policy.approval_timeout("delete_files", own) == timedelta(minutes=30)
    assert policy.approval_timeout("delete_files", timedelta(hours=1)) == timedelta(hours=1)
    assert policy.approval_timeout("delete_files", own, 60) == timedelta(seconds=60)
    assert policy.approval_timeout("delete_files", own, 60, {"delete_files": 5}) == timedelta(
        seconds=5
    )
    assert policy.approval_timeout("write_file", own, 60, {"delete_files": 5}) == timedelta(
        seconds=60
    )


def test_judge_refuses_decided_and_late_decisions_and_hands_modifications_on() -> None:
    pending = record()
    on_time = pending.created_at + timedelta(minutes=1)
    approve = ApproveDecision(approval_id="apr_1", reviewer="a")
    assert precheck(pending, approve, on_time, True).refusal is None
    decided = record(
        status=ApprovalStatus.APPROVED,
        reviewer="bob",
        reviewed_at=datetime(2026, 11, 24, 12, 5, tzinfo=UTC),
    )
    refusal = precheck(decided, approve, on_time, True).refusal
    assert refusal is not None and refusal.code is RefusalCode.ALREADY_DECIDED
    assert "already approved by bob at 2026-11-24T12:05:00+00:00" in refusal.sentence
    late = precheck(pending, approve, pending.expires_at, True).refusal
    assert late is not None and late.code is RefusalCode.LATE
    assert "at or after approval apr_1's deadline" in late.sentence
    modify = ModifyDecision(approval_id="apr_1", reviewer="a", args={"paths": ["a.log"]})
    assert precheck(pending, modify, on_time, True).check_args == {"paths": ["a.log"]}
    fixed = precheck(pending, modify, on_time, False).refusal
    assert fixed is not None and fixed.code is RefusalCode.NOT_MODIFIABLE
    assert "does not take modified arguments" in fixed.sentence


def test_flags_and_schemas_come_from_the_tools() -> None:
    registry = load_tools()
    flagged = {d.name for d in registry.descriptors() if d.approval != "never"}
    assert flagged == {"delete_files", "write_file", "run_command", "send_email"}
    command = registry["run_command"]
    assert command.score(
        command.validate({"argv": ["rm", "-rf", "x"]}), ToolPreview(summary="")
    ) > (command.score(command.validate({"argv": ["ls"]}), ToolPreview(summary="")))
    with pytest.raises(ValueError, match="not an email address: nobody"):
        SendEmailArgs(to="nobody", subject="s", body="b")


def test_a_predicate_flags_only_the_calls_it_matches() -> None:
    def delete_many(args: DeleteFilesArgs) -> None:
        """Delete many files."""

    bulk_only = Tool(delete_many, requires_approval=lambda args: len(args.paths) > 1)
    assert bulk_only.descriptor().approval == "predicate"
    assert not bulk_only.needs_approval(DeleteFilesArgs(paths=["a.log"]))
    assert bulk_only.needs_approval(DeleteFilesArgs(paths=["a.log", "b.log"]))


def test_the_scripted_model_always_says_it_is_scripted() -> None:
    request = LlmRequest(
        model=ModelSettings(),
        messages=[ChatMessage(role="user", content="Write me a poem")],
        tools=[],
    )
    turn = scripted_turn(request)
    assert turn.scripted and turn.content.startswith(SCRIPTED_BANNER)
    assert "OPENAI_API_KEY" in turn.content and not turn.tool_calls
    request.messages[0].content = "Delete all tmp files older than 3 days"
    [call] = scripted_turn(request).tool_calls
    assert json.loads(call.arguments) == {"pattern": "*.tmp", "older_than_days": 3.0}


def test_model_choice_falls_back_to_scripted_without_credentials() -> None:
    assert choose_model(None, {}).provider == "scripted"
    assert choose_model(None, {"OPENAI_API_KEY": "k"}).name == "gpt-4o-mini"
    chosen = choose_model(
        None, {"OPENAI_BASE_URL": "http://localhost:11434/v1", "HITL_MODEL": "llama3.1"}
    )
    assert (chosen.provider, chosen.name, chosen.base_url) == (
        "openai",
        "llama3.1",
        "http://localhost:11434/v1",
    )
    assert choose_model("scripted", {"OPENAI_API_KEY": "k"}).provider == "scripted"


def test_settings_say_where_each_value_came_from() -> None:
    settings = load_settings(
        {
            "TEMPORAL_ADDRESS": "temporal:7233",
            "HITL_TASK_QUEUE": "q",
            "TEMPORAL_CONFIG_FILE": "/nonexistent.toml",
        }
    )
    assert (settings.address, settings.namespace, settings.task_queue) == (
        "temporal:7233",
        "default",
        "q",
    )
    assert settings.sources == {
        "address": "env TEMPORAL_ADDRESS",
        "namespace": "default",
        "task_queue": "env HITL_TASK_QUEUE",
    }


def test_durations() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400 and parse_duration("45") == 45
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration("soon")


def test_a_timeout_is_said_as_it_was_set_not_cut_to_whole_seconds() -> None:
    said = policy.duration_text
    assert said(1.5) == "1.5 s" and said(timedelta(seconds=1.5)) == "1.5 s"
    assert said(0.25) == "0.25 s" and said(90.5) == "90.5 s"
    assert said(1) == "1 s" and said(90) == "90 s" and said(0.1 + 0.2) == "0.3 s"
    assert said(1800) == "30 min" and said(5400) == "90 min" and said(7200) == "2 h"
    assert said(timedelta(days=400)) == "more than a year"


def test_the_policy_approves_only_below_its_threshold() -> None:
    # At the threshold a person decides: "auto-approve below 42" never approves risk 42.
    assert policy.auto_approved(41, 42)
    assert not policy.auto_approved(42, 42)
    assert not policy.auto_approved(43, 42)
    assert not policy.auto_approved(0, 0), "threshold 0 approves nothing"
    assert policy.auto_approved(100, 101), "101 approves everything"
    # A run may lower the worker's threshold, never raise it.
    assert policy.stricter_threshold(50, 42) == (42, [])
    assert policy.stricter_threshold(50, None) == (50, [])
    kept, notes = policy.stricter_threshold(42, 43)
    assert kept == 42 and "the worker's threshold 42 applies" in notes[0]


def test_the_summary_shows_what_a_reviewer_decides_on() -> None:
    text = format_approval(record(), now=datetime(2026, 11, 24, 12, 10, tzinfo=UTC))
    for expected in [
        "clean up",
        "they are old",
        "delete_files",
        "a.log",
        "b.log",
        "delete 2 files (1 KB)",
        "Risk:      38/100",
        "in 20 min; then auto-rejected",
    ]:
        assert expected in text


def test_the_prompt_takes_y_n_and_edits_and_asks_again_on_nonsense() -> None:
    def answers(*lines: str) -> Prompter:
        return Prompter(
            stdin=io.StringIO("".join(f"{line}\n" for line in lines)), stdout=io.StringIO()
        )

    approve = ask_decision(record(), "ann", answers("maybe", "y"))
    assert approve is not None and approve.kind == "approve" and approve.reviewer == "ann"
    assert approve.action_digest == record().action_digest
    reject = ask_decision(record(), "ann", answers("n", "too broad"))
    assert reject is not None and reject.kind == "reject" and reject.reason == "too broad"
    edit = ask_decision(record(), "ann", answers("e", '{"paths": []}', "e", '{"paths": ["a.log"]}'))
    assert edit is not None and edit.kind == "modify" and edit.args == {"paths": ["a.log"]}
    assert ask_decision(record(), "ann", answers()) is None


def test_the_edit_prompt_shows_arguments_escaped_and_the_editor_gets_json_that_parses() -> None:
    args = {"paths": ["a.log\x1b[2K\rb.log", "c\u202e.log"]}
    action = ToolAction(tool="delete_files", args=args)
    hostile = record(action_json=action, action_digest=action.digest())
    stdout = io.StringIO()
    typed = Prompter(stdin=io.StringIO('y\x1b[2K\r\ne\n{"paths": ["a.log"]}\n'), stdout=stdout)
    edit = ask_decision(hostile, "ann", typed)
    assert edit is not None and edit.kind == "modify"
    shown = stdout.getvalue()
    assert "\x1b" not in shown and "\r" not in shown and "\u202e" not in shown
    assert '"a.log\\u001b[2K\\rb.log"' in shown and '"c\\u202e.log"' in shown
    assert "y\\x1b[2K\\r" in shown  # the piped answer, echoed escaped, then asked again

    seen: list[str] = []
    in_editor = Prompter(
        stdin=io.StringIO("e\n"),
        stdout=io.StringIO(),
        editor=lambda text: seen.append(text) or '{"paths": ["a.log"]}',
    )
    assert ask_decision(hostile, "ann", in_editor) is not None
    [text] = seen
    assert "\x1b" not in text and "\u202e" not in text and json.loads(text) == args


def test_the_run_s_outcome_shows_the_answer_and_decisions_escaped() -> None:
    rejected = record(
        status=ApprovalStatus.REJECTED, reviewer="eve\u3164", reason="no\x1b[2K\rapproved"
    )
    result = RunResult(
        state=RunState.COMPLETED,
        answer="Done.\nAction:    delete_files\x1b]8;;https://evil.example\x1b\\",
        steps=2,
        approvals=[rejected],
        tool_runs=[],
        evidence={"workflow_id": "run\r1"},
    )
    out = io.StringIO()
    print_result(result, "http://localhost:8233/workflows/run\r1", out)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\u3164" not in text
    # The model's second line sits behind the gutter: it can't pass for a line of ours.
    assert "\n        │ Action:    delete_files\\x1b]8;;https://evil.example\\x1b\\\n" in text
    assert "rejected by eve\\u3164 (no\\x1b[2K\\rapproved)" in text
    assert "Run run\\r1 completed" in text


def test_a_reviewer_signing_with_their_own_key_decides_as_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HITL_SIGNER=alice and her key, `hitl approve ID` decided as the OS user, and
    the worker refused it: "alice's key signs only alice's own decisions"."""
    for name in ("HITL_REVIEWER", "HITL_SIGNER", "HITL_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "osuser")
    monkeypatch.setenv("LOGNAME", "osuser")
    assert reviewer_identity() == "osuser"
    monkeypatch.setenv("HITL_SIGNER", "alice")
    assert reviewer_identity() == "osuser"  # a signer without a key signs nothing
    monkeypatch.setenv("HITL_SIGNING_KEY", "k" * 44)
    assert reviewer_identity() == "alice"
    assert reviewer_identity("bob") == "bob"  # said explicitly: the worker judges it
    monkeypatch.setenv("HITL_REVIEWER", "carol")
    assert reviewer_identity() == "carol"
    monkeypatch.delenv("HITL_REVIEWER")
    monkeypatch.setenv("HITL_SIGNER", "api")  # the API's key signs for anyone it names
    assert reviewer_identity() == "osuser"


def test_an_unsigned_decision_is_refused_with_how_to_sign_it() -> None:
    from hitl.reviewers import verify

    refusal = verify(
        {"approval_id": "apr_1", "reviewer": "root"}, {"api": b"k" * 32}, datetime.now(UTC)
    )
    assert refusal is not None and "an unsigned signal is refused" in refusal
    assert "HITL_SIGNER=NAME" in refusal and "HITL_DECISION_KEYS" in refusal


async def test_a_script_that_cant_be_used_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    from hitl import start

    cases = {
        "missing.json": None,
        "broken.json": "{",
        "object.json": '{"content": "hi"}',
        "wrong.json": '[{"content": "ok"}, {"content": 3}]',
    }
    said = {}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        out = io.StringIO()
        code = await start.run(
            ["task", "--workspace", str(tmp_path), "--script", str(tmp_path / name)], out=out
        )
        assert code == 2 and out.getvalue().count("\n") == 1, out.getvalue()
        said[name] = out.getvalue()
    assert "can't be read (No such file or directory)" in said["missing.json"]
    assert "is not JSON" in said["broken.json"]
    assert "is not a JSON list of turns" in said["object.json"]
    assert "turn 2 is not {content, tool_calls}: content:" in said["wrong.json"]


def test_an_approvals_outcome_names_who_ended_it() -> None:
    from datetime import UTC, datetime, timedelta

    from hitl.models import (
        ApprovalContext,
        ApprovalRecord,
        ApprovalStatus,
        DecisionEntry,
        DecisionKind,
        RuleVerdict,
        ToolAction,
        ToolPreview,
    )

    now = datetime(2026, 1, 1, tzinfo=UTC)
    action = ToolAction(tool="delete_files", args={"paths": ["a"]})

    def record(status: ApprovalStatus, kind: DecisionKind | None = None, **extra: object):
        decisions = (
            [DecisionEntry(kind=kind, reviewer="x", received_at=now, outcome="applied")]
            if kind
            else []
        )
        return ApprovalRecord(
            id="apr_1",
            session_id="s",
            action_json=action,
            action_digest=action.digest(),
            status=status,
            created_at=now,
            expires_at=now + timedelta(minutes=30),
            context=ApprovalContext(original_request="r"),
            preview=ToolPreview(summary="s"),
            decisions=decisions,
            **extra,
        )

    assert record(ApprovalStatus.PENDING).outcome == "pending"
    assert record(ApprovalStatus.APPROVED, DecisionKind.APPROVE).outcome == "approved"
    assert record(ApprovalStatus.MODIFIED, DecisionKind.MODIFY).outcome == "modified"
    assert record(ApprovalStatus.REJECTED, DecisionKind.REJECT).outcome == "rejected"
    timed_out = record(ApprovalStatus.REJECTED, DecisionKind.TIMEOUT, reviewer="system:timeout")
    assert timed_out.outcome == "expired"
    assert record(ApprovalStatus.APPROVED, DecisionKind.POLICY).outcome == "auto"
    assert record(ApprovalStatus.APPROVED, DecisionKind.STANDING).outcome == "auto"
    ruled = RuleVerdict(rule="deny-prod", verdict="deny")
    assert record(ApprovalStatus.REJECTED, DecisionKind.POLICY, rule=ruled).outcome == "auto"
