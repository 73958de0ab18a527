"""Auto-approval rules on their own, no Temporal: the rules file and its errors, the
predicate language, Cedar, the guards no rule passes, and the backtest over records and
over a JSON Lines export (`hitl policy test --from`). Milliseconds each."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitl.backtest import backtest, read_export
from hitl.cli import run
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
from hitl.rules import Call, RulesError, compile_condition, judge, load_rules, parse_rules, same

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

RULES = """
mode = "act"

[[rule]]
name = "no-prod-deploys"
effect = "deny"
reason = "production deploys go through the release process"
tool = "deploy"
args = { path = "env", equals = "prod" }

[[rule]]
name = "docs-writes"
effect = "approve"
reason = "small edits under docs/ are routine"
tool = ["write_*"]
risk = { lt = 40 }
args = [{ path = "path", prefix = "docs/" }, { path = "size", le = 10000 }]

[[rule]]
name = "ci-bot"
effect = "approve"
requester = "ci-*"
tool = "run_tests"
"""


def rules(text: str = RULES) -> Any:
    return parse_rules(text, Path("rules.toml"))


def call(tool: str, args: dict[str, Any], risk: int = 10, **who: Any) -> Call:
    return Call(tool=tool, args=args, risk=risk, **who)


# --- the file --------------------------------------------------------------------------


def test_the_first_matching_rule_decides_and_no_match_asks() -> None:
    loaded = rules()
    assert loaded.mode == "act" and len(loaded.digest) == 16
    denied = loaded.evaluate(call("deploy", {"env": "prod"}))
    assert (denied.verdict, denied.rule) == ("deny", "no-prod-deploys")
    assert denied.reason == "production deploys go through the release process"
    assert denied.policy_digest == loaded.digest
    approved = loaded.evaluate(call("write_file", {"path": "docs/a.md", "size": 10}))
    assert (approved.verdict, approved.rule) == ("approve", "docs-writes")
    for missed in (
        call("write_file", {"path": "src/a.py", "size": 10}),
        call("write_file", {"path": "docs/a.md", "size": 10}, risk=40),
        call("write_file", {"path": "docs/a.md"}),  # size missing: the condition fails
        call("deploy", {"env": "dev"}),
    ):
        verdict = loaded.evaluate(missed)
        assert (verdict.verdict, verdict.rule, verdict.error) == ("ask", "", None), missed


def test_the_digest_is_the_rules_content_not_their_layout_or_mode() -> None:
    spaced = RULES.replace('mode = "act"', 'mode = "shadow"\n\n# a comment\n')
    assert rules(spaced).digest == rules().digest
    assert rules(spaced).mode == "shadow"
    assert rules(RULES.replace("lt = 40", "lt = 41")).digest != rules().digest


def test_a_new_rule_set_shadows_unless_it_says_act() -> None:
    assert rules(RULES.replace('mode = "act"', "")).mode == "shadow"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[[rule]]\nname = 'a'\neffect = 'maybe'\n", "#1 ('a') in rules.toml: effect is"),
        ("[[rule]]\neffect = 'ask'\n", "[[rule]] #1 in rules.toml: name is required"),
        (
            "[[rule]]\nname='a'\neffect='ask'\n[[rule]]\nname='a'\neffect='ask'\n",
            "#2 ('a') in rules.toml: another rule is already called 'a'",
        ),
        ("[[rule]]\nname='a'\neffect='ask'\ntools='x'\n", "unknown keys tools"),
        ("[[rule]]\nname='a'\neffect='ask'\nargs={path='x', matches='.*'}\n", "unknown test"),
        ("[[rule]]\nname='a'\neffect='ask'\nargs={path='x', lt='3'}\n", "lt is a number"),
        ("[[rule]]\nname='a'\neffect='ask'\nrisk=40\n", "risk is a table"),
        ("[[rule]]\nname='a'\neffect='ask'\nargs={all=[], path='x'}\n", "stands alone"),
        ("mode = 'live'\n", 'mode is "act" or "shadow"'),
        ("[[rule]]\nname = 'a'\neffect = \n", "is not valid TOML: Invalid value (at line 3"),
        (
            "[[rule]]\nname='a'\neffect='approve'\nrequester='bob'\nrequester_verified=false\n",
            "an approve rule can't trust a requester's name",
        ),
        ("[[rule]]\nname='c'\ncedar_policies='permit(principal, action, '\n", "don't parse"),
        ("[[rule]]\nname='c'\ncedar='missing.cedar'\n", "the Cedar file missing.cedar"),
    ],
)
def test_a_bad_rules_file_names_the_rule_and_what_to_fix(text: str, said: str) -> None:
    with pytest.raises(RulesError) as raised:
        rules(text)
    assert said in str(raised.value)


def test_rules_come_from_the_file_hitl_rules_names(tmp_path: Path) -> None:
    assert load_rules(environ={}) is None
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    found = load_rules(environ={"HITL_RULES": str(path)})
    assert found is not None and found.digest == rules().digest and found.path == path
    with pytest.raises(RulesError, match=r"can.t be read.*HITL_RULES"):
        load_rules(environ={"HITL_RULES": str(tmp_path / "nope.toml")})


# --- the predicate language -------------------------------------------------------------


def holds(condition: Any, args: dict[str, Any]) -> bool:
    return compile_condition(condition, "test")(args)


def test_predicates_over_json_paths() -> None:
    args = {"a": {"b": [1, {"c": "x.txt"}]}, "n": 3, "flag": True, "dotted.key": "v"}
    assert holds({"path": "a.b.0", "equals": 1}, args)
    assert holds({"path": "a.b.1.c", "glob": "*.txt"}, args)
    assert holds({"path": "a.b.-1.c", "prefix": ["y", "x."]}, args)
    assert holds({"path": ["dotted.key"], "in": ["v", "w"]}, args)
    assert holds({"path": "n", "gt": 2, "le": 3}, args)
    assert not holds({"path": "n", "lt": 3}, args)
    assert holds({"path": "missing", "exists": False}, args)
    assert not holds({"path": "missing", "equals": None}, args)
    assert holds({"not": {"path": "missing", "exists": True}}, args)
    assert holds({"any": [{"path": "n", "equals": 4}, {"path": "flag", "equals": True}]}, args)
    assert not holds({"all": [{"path": "n", "equals": 3}, {"path": "flag", "equals": 1}]}, args)


def test_a_path_part_of_other_digits_is_a_key_not_a_crash() -> None:
    # "²" and "٣" are digits to str.isdigit but not to int(): loading the file raised.
    assert holds({"path": "a.²", "equals": 1}, {"a": {"²": 1}})
    assert holds({"path": "a.٣", "exists": False}, {"a": [0, 1, 2, 3]})
    assert holds({"path": "a.-1", "equals": 3}, {"a": [0, 1, 2, 3]})


def test_json_equality_is_strict_about_booleans() -> None:
    assert not same(True, 1) and not same(0, False) and same(1, 1.0)
    assert not holds({"path": "flag", "in": [1]}, {"flag": True})


def test_a_test_of_the_wrong_type_is_an_error_and_asks_a_person() -> None:
    loaded = rules()
    verdict = loaded.evaluate(call("write_file", {"path": ["docs/a"], "size": 1}))
    assert verdict.verdict == "ask" and verdict.rule == "docs-writes"
    assert verdict.error and "tests a string, but the value is a list" in verdict.error
    verdict = loaded.evaluate(call("write_file", {"path": "docs/a", "size": "1"}))
    assert verdict.verdict == "ask" and "compares a number" in (verdict.error or "")
    # Python's json reads -Infinity and NaN: neither is a number a bound can judge.
    for odd in (float("-inf"), float("nan")):
        verdict = loaded.evaluate(call("write_file", {"path": "docs/a", "size": odd}))
        assert verdict.verdict == "ask" and "compares a number" in (verdict.error or ""), odd


@given(
    st.dictionaries(
        st.sampled_from(["a", "b"]),
        st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.none()),
    ),
    st.sampled_from(["a", "b"]),
    st.one_of(st.integers(), st.text(max_size=3), st.booleans()),
)
def test_not_is_the_negation_and_equals_agrees_with_in(
    args: dict[str, Any], key: str, value: Any
) -> None:
    condition = {"path": key, "equals": value}
    assert holds({"not": condition}, args) is not holds(condition, args)
    assert holds(condition, args) is holds({"path": key, "in": [value]}, args)


def test_requester_names_match_only_verified_requesters() -> None:
    loaded = rules()
    claimed = loaded.evaluate(call("run_tests", {}, requester="ci-7", verified=False))
    assert claimed.verdict == "ask"
    proven = loaded.evaluate(call("run_tests", {}, requester="ci-7", verified=True))
    assert (proven.verdict, proven.rule) == ("approve", "ci-bot")


def test_no_rule_approves_a_quorum_a_tool_that_always_asks_or_a_failed_preview() -> None:
    loaded = rules()
    docs = call("write_file", {"path": "docs/a", "size": 1})
    assert judge(loaded, docs).verdict == "approve"
    for guard, why in (
        ({"quorum": 2}, "needs 2 approvers"),
        ({"auto_approve": False}, "auto_approve=False"),
        ({"failed": True}, "preview failed"),
    ):
        verdict = judge(loaded, docs, **guard)
        assert verdict.verdict == "ask" and verdict.rule == "docs-writes"
        assert why in verdict.reason
    # A deny is stricter: it always stands.
    assert judge(loaded, call("deploy", {"env": "prod"}), quorum=3).verdict == "deny"


# --- Cedar ---------------------------------------------------------------------------------

CEDAR = """
@id("no-prod")
forbid(principal, action, resource == Tool::"deploy")
when { context.args has env && context.args.env == "prod" };

@id("alice-low-risk")
permit(principal == User::"alice", action == Action::"call", resource)
when { context.requester_verified && context.risk < 50 };

permit(principal, action, resource == Tool::"measure")
when { context.args.size < 10 };
"""


def cedar_rules(tmp_path: Path, policies: str = CEDAR) -> Any:
    (tmp_path / "team.cedar").write_text(policies)
    path = tmp_path / "rules.toml"
    path.write_text(
        'mode = "act"\n[[rule]]\nname = "team"\ncedar = "team.cedar"\n'
        '[[rule]]\nname = "fallback"\neffect = "deny"\nreason = "nothing else"\n'
        'tool = "measure"\n'
    )
    return load_rules(path)


def test_cedar_permit_approves_forbid_denies_and_no_policy_passes_on(tmp_path: Path) -> None:
    loaded = cedar_rules(tmp_path)
    denied = loaded.evaluate(call("deploy", {"env": "prod"}, requester="alice", verified=True))
    assert (denied.verdict, denied.rule) == ("deny", "team/no-prod")
    approved = loaded.evaluate(call("deploy", {"env": "dev"}, requester="alice", verified=True))
    assert (approved.verdict, approved.rule) == ("approve", "team/alice-low-risk")
    # Cedar's default deny (no policy applies) is not a forbid: the next rule decides.
    claimed = loaded.evaluate(call("deploy", {"env": "dev"}, requester="alice"))
    assert (claimed.verdict, claimed.rule) == ("ask", "")
    small = loaded.evaluate(call("measure", {"size": 3.0, "note": None}))
    assert (small.verdict, small.rule) == ("approve", "team/policy2")
    big = loaded.evaluate(call("measure", {"size": 30}))
    assert (big.verdict, big.rule) == ("deny", "fallback")


def test_a_cedar_forbid_that_fails_to_evaluate_asks_a_person(tmp_path: Path) -> None:
    loaded = cedar_rules(
        tmp_path,
        'forbid(principal, action, resource) when { context.args.env == "prod" };\n'
        "permit(principal, action, resource);\n",
    )
    verdict = loaded.evaluate(call("deploy", {}))
    assert verdict.verdict == "ask" and verdict.rule == "team"
    assert "does not have the attribute `env`" in (verdict.error or "")
    # A value Cedar has no type for: asked, not approved.
    odd = loaded.evaluate(call("deploy", {"env": "dev", "ratio": 0.123456}))
    assert odd.verdict == "ask" and "can't represent exactly" in (odd.error or "")


# --- the backtest ------------------------------------------------------------------------


def record(
    n: int,
    tool: str,
    args: dict[str, Any],
    outcome: str,
    *,
    risk: int = 10,
    quorum: int = 1,
) -> ApprovalRecord:
    status = {
        "approved": ApprovalStatus.APPROVED,
        "modified": ApprovalStatus.MODIFIED,
        "rejected": ApprovalStatus.REJECTED,
        "expired": ApprovalStatus.REJECTED,
        "auto": ApprovalStatus.APPROVED,
        "pending": ApprovalStatus.PENDING,
    }[outcome]
    reviewer = {"expired": "system:timeout", "auto": "policy", "pending": None}.get(
        outcome, "alice"
    )
    kind = {
        "approved": DecisionKind.APPROVE,
        "modified": DecisionKind.MODIFY,
        "rejected": DecisionKind.REJECT,
        "expired": DecisionKind.TIMEOUT,
        "auto": DecisionKind.POLICY,
    }.get(outcome)
    action = ToolAction(tool=tool, args=args)
    return ApprovalRecord(
        id=f"apr_{n:04d}",
        session_id=f"run-{n % 7}",
        action_json=action,
        action_digest=action.digest(),
        status=status,
        created_at=T0 + timedelta(minutes=n),
        expires_at=T0 + timedelta(minutes=n + 30),
        reviewer=reviewer,
        reason="not under docs, \x1b[31mred\x1b[0m" if outcome == "rejected" else None,
        context=ApprovalContext(original_request="task"),
        preview=ToolPreview(summary="s"),
        risk=risk,
        quorum=quorum,
        decisions=[]
        if kind is None
        else [DecisionEntry(kind=kind, reviewer=reviewer or "", received_at=T0, outcome="applied")],
    )


def history() -> list[ApprovalRecord]:
    return [
        record(1, "write_file", {"path": "docs/a", "size": 1}, "approved"),
        record(2, "write_file", {"path": "docs/b", "size": 1}, "rejected"),
        record(3, "write_file", {"path": "docs/c", "size": 1}, "expired"),
        record(4, "write_file", {"path": "docs/d", "size": 1}, "modified"),
        record(5, "deploy", {"env": "prod"}, "approved"),
        record(6, "deploy", {"env": "prod"}, "rejected"),
        record(7, "write_file", {"path": "src/x", "size": 1}, "approved"),
        record(8, "write_file", {"path": "docs/e", "size": 1}, "approved", quorum=2),
        record(9, "write_file", {"path": "docs/f", "size": 1}, "auto"),
        record(10, "write_file", {"path": "docs/g", "size": 1}, "pending"),
    ]


def test_the_backtest_counts_removed_prompts_and_lists_every_dangerous_case() -> None:
    report = backtest(rules(), history())
    assert report.records == 10 and report.decided == 8
    assert dict(report.skipped) == {"auto": 1, "pending": 1}
    # docs a-d approved by the rule, both deploys denied; src/x and the quorum ask.
    assert report.removed == 6
    assert dict(report.by_rule) == {"docs-writes": 4, "no-prod-deploys": 2}
    dangerous = {(case.id, case.outcome) for case in report.dangerous}
    assert dangerous == {
        ("apr_0002", "rejected"),
        ("apr_0003", "expired"),
        ("apr_0004", "modified"),
    }
    [denied] = report.denied_approved
    assert (denied.id, denied.outcome, denied.verdict.rule) == (
        "apr_0005",
        "approved",
        "no-prod-deploys",
    )
    rejected = next(case for case in report.dangerous if case.id == "apr_0002")
    assert rejected.reviewer == "alice" and rejected.reason.startswith("not under docs")
    assert rejected.args == '{"path":"docs/b","size":1}'
    assert next(c for c in report.dangerous if c.outcome == "expired").reviewer == ""


def test_a_rule_set_that_only_approves_what_people_approved_has_no_dangerous_case() -> None:
    safe = rules(
        RULES.replace(
            'args = [{ path = "path", prefix = "docs/" }',
            'args = [{ path = "path", equals = "docs/a" }',
        )
    )
    report = backtest(safe, history())
    assert report.dangerous == [] and report.removed == 3  # docs/a, two deploys


def export(path: Path, records: list[ApprovalRecord], junk: bool = True) -> Path:
    lines = [r.model_dump_json() for r in records]
    if junk:
        lines.insert(2, '{"not": "a record"}')
        lines.insert(4, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_export_is_read_line_by_line_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = export(tmp_path / "audit.jsonl", history())
    problems: list[str] = []
    read = list(read_export(path, problems, since=T0 + timedelta(minutes=2)))
    assert [r.id for r in read] == [f"apr_{n:04d}" for n in range(2, 11)]
    assert len(problems) == 1 and problems[0].startswith(f"{path}:3: not an approval record")


async def hitl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`hitl ARGS` in this process (it needs no Temporal with --from): exit code, output."""
    code = await run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_hitl_policy_test_from_an_export_exits_1_on_a_dangerous_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    path = export(tmp_path / "audit.jsonl", history())
    code, out, err = await hitl(capsys, "policy", "test", str(rules_file), "--from", str(path))
    assert code == 1, err
    assert "prompts removed: 6 (75%)" in out
    assert "apr_0002" in out and "docs-writes" in out
    assert "\x1b" not in out  # the reviewer's reason is shown escaped
    assert "3 dangerous disagreement(s)" in out
    assert f"{path}:3" in err
    code, out, _ = await hitl(
        capsys, "policy", "test", str(rules_file), "--from", str(path), "--json"
    )
    report = json.loads(out)
    assert code == 1 and report["prompts_removed"] == 6
    assert {case["id"] for case in report["dangerous"]} == {"apr_0002", "apr_0003", "apr_0004"}
    assert report["policy_digest"] == rules(RULES).digest
    safe = tmp_path / "safe.toml"
    safe.write_text('[[rule]]\nname = "nothing"\neffect = "ask"\n')
    code, out, _ = await hitl(
        capsys, "policy", "test", str(safe), "--from", str(path), "--since", "2026-11-01T12:05"
    )
    assert code == 0 and "No dangerous disagreement." in out
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rule]]\nname = 'x'\n")
    code, _, err = await hitl(capsys, "policy", "test", str(broken), "--from", str(path))
    assert code == 2 and "effect is" in err


async def test_hitl_policy_test_reads_times_as_every_range_command_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --since and --until are read by hitl.durations, as hitl audit and hitl stats read
    # them: a moment at the calendar's edge, or a range that ends before it begins, is a
    # usage error that says so, never a traceback or an empty report.
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    path = export(tmp_path / "audit.jsonl", history())
    source = ("policy", "test", str(rules_file), "--from", str(path))
    code, _, err = await hitl(capsys, *source, "--since", "0001-01-01T00:00:00+23:59")
    assert code == 2 and "out of range" in err and "Traceback" not in err
    code, _, err = await hitl(
        capsys, *source, "--since", "2026-11-02T00:00", "--until", "2026-11-01T00:00"
    )
    assert code == 2 and "ends" in err and "before it begins" in err


def test_the_verdict_record_fields_round_trip() -> None:
    verdict = RuleVerdict(rule="r", verdict="approve", policy_digest="abc")
    assert RuleVerdict.model_validate_json(verdict.model_dump_json()) == verdict


def test_a_worker_with_an_unusable_rules_file_does_not_start(tmp_path: Path) -> None:
    broken = tmp_path / "rules.toml"
    broken.write_text('mode = "act"\n[[rule]]\nname = "half"\n')
    done = subprocess.run(
        [sys.executable, "-m", "hitl.cli", "worker", "--tools-only"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        env={
            "PATH": "/usr/bin:/bin",
            "HITL_RULES": str(broken),
            "TEMPORAL_ADDRESS": "127.0.0.1:1",
            "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
        },
    )
    assert done.returncode == 2
    assert "[[rule]] #1 ('half') in " in done.stdout and "effect is" in done.stdout


def test_a_cedar_policy_on_a_user_matches_only_a_proven_requester(tmp_path: Path) -> None:
    # The run's input names its requester; only a signed start proves it. A team writing
    # the natural policy must not have it approve whoever claims the name.
    loaded = cedar_rules(tmp_path, 'permit(principal == User::"alice", action, resource);\n')
    claimed = loaded.evaluate(call("deploy", {}, requester="alice"))
    assert claimed.verdict == "ask" and claimed.rule == ""
    proven = loaded.evaluate(call("deploy", {}, requester="alice", verified=True))
    assert proven.verdict == "approve"


def test_arguments_can_not_pose_as_cedar_entities_or_extension_values(tmp_path: Path) -> None:
    loaded = cedar_rules(
        tmp_path,
        "permit(principal, action, resource) when { context.args.owner == principal };\n",
    )
    posing = {"owner": {"__entity": {"type": "User", "id": "bob"}}}
    verdict = loaded.evaluate(call("deploy", posing, requester="bob", verified=True))
    assert verdict.verdict == "ask" and "__entity" in (verdict.error or "")
    nested = {"a": [{"__extn": {"fn": "ip", "arg": "10.0.0.1"}}]}
    assert loaded.evaluate(call("deploy", nested, requester="bob", verified=True)).verdict == "ask"


def test_a_path_that_climbs_out_of_a_prefix_or_glob_asks_a_person() -> None:
    # The documented rules approve writes under logs/ or docs/*.md; the model chooses the
    # path, and "logs/../.env" begins with "logs/".
    loaded = parse_rules(
        'mode = "act"\n[[rule]]\nname = "logs"\neffect = "approve"\ntool = "write_file"\n'
        'args = { any = [ { path = "path", prefix = "logs/" }, '
        '{ path = "path", glob = "docs/*.md" } ] }\n'
    )
    assert loaded.evaluate(call("write_file", {"path": "logs/a.log"})).verdict == "approve"
    assert loaded.evaluate(call("write_file", {"path": "docs/a..b.md"})).verdict == "approve"
    for climbing in ("logs/../.env", "docs/../secrets/x.md", "logs/..", "logs\\..\\x"):
        verdict = loaded.evaluate(call("write_file", {"path": climbing}))
        assert verdict.verdict == "ask" and "'..'" in (verdict.error or ""), climbing
