"""The worker's auto-approval rules: load them, and judge a call by them. Pure: no
temporalio, no I/O beyond reading the rules file (and the Cedar file it names).

A rules file (TOML, path in `HITL_RULES`, read by the worker's check activity as it is
now, like the reviewers file) is an ordered list of rules; the first that matches a call
decides it, and no match passes it to a person:

    mode = "shadow"                 # or "act"; shadow (the default) only records verdicts

    [[rule]]
    name = "docs-writes"            # unique: recorded with every verdict
    effect = "approve"              # approve | deny | ask
    reason = "small edits under docs/ are routine"
    tool = ["write_file"]           # names or globs (fnmatch), any of them
    risk = { lt = 40 }              # lt, le, gt, ge, equals
    requester = ["alice", "ci-*"]   # names or globs; only a verified requester matches
    args = [                        # every condition must hold
      { path = "path", prefix = "docs/" },
      { any = [ { path = "mode", in = ["append", "create"] }, { path = "mode", exists = false } ] },
    ]

    [[rule]]
    name = "team-policy"            # Cedar: permit approves, forbid denies, neither passes on
    cedar = "policies.cedar"        # beside this file; or cedar_policies = '''...'''

Conditions: `{ path = P, OP = V, ... }` (every OP must hold) with OPs `equals`, `in`,
`glob`, `prefix` (strings, one or a list; a value with a `..` segment is an error),
`lt`/`le`/`gt`/`ge` (numbers) and `exists`;
`{ all = [...] }`, `{ any = [...] }`, `{ not = {...} }`. A path is `a.b.0` (keys, list
indexes) or a list `["a.b", 0]` for keys holding dots. A path that is missing makes its
condition false (`exists = false` tests for that); a string test on a non-string or a
comparison with a non-number is an error, and an error passes the call to a person with
the error recorded. Nothing is evaluated as code.

Cedar (`pip install 'hitl-agents[rules]'`): principal `User::"<requester>"` when a signed
start proved the requester, else `Unverified::"<requester>"` (so a policy naming a `User`
never matches a name a run only claims), action
`Action::"call"`, resource `Tool::"<tool>"`, context `{args, risk, requester_verified}`
(a null argument is left out: test it with `has`). An explicit forbid denies; a permit
with no forbid approves; no policy that applies passes to the next rule. A forbid policy
that fails to evaluate passes the call to a person (it might have denied it).

What a rule may never do (`guarded`): approve a call that needs more than one approver,
a call of a tool defined with `auto_approve=False`, or a call whose preview failed; then
the verdict is `ask`. The rule set's `digest` (its rules and Cedar text, not its mode)
is recorded with every verdict.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hitl.models import RuleVerdict, canonical_json

RULES_ENV = "HITL_RULES"
EFFECTS = ("approve", "deny", "ask")
MODES = ("act", "shadow")
MAX_RULES = 1_000
MAX_DEPTH = 16
MAX_REASON_CHARS = 500
MAX_ERROR_CHARS = 500
MAX_RULE_NAME_CHARS = 200
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
PATH_OPS = ("equals", "in", "glob", "prefix", *COMPARISONS, "exists")
RULE_KEYS = frozenset(
    {"name", "effect", "reason", "tool", "risk", "requester", "requester_verified", "args"}
)
CEDAR_KEYS = frozenset({"name", "cedar", "cedar_policies", "reason"})


class RulesError(ValueError):
    """The rules file can't be used; the message names the file, the rule and the fix."""


class RuleEvalError(Exception):
    """A rule could not judge a call (a type it can't compare, a Cedar error)."""


@dataclass(frozen=True)
class Call:
    """What a rule sees of a call: its tool, arguments, risk and requester."""

    tool: str
    args: Mapping[str, Any]
    risk: int
    requester: str = ""
    verified: bool = False
    """`requester` was proven by a signed start (else it is only a claim)."""


# --- conditions --------------------------------------------------------------------------

_MISSING = object()
Condition = Callable[[Mapping[str, Any]], bool]


def _resolve(args: Any, path: tuple[str | int, ...]) -> Any:
    value = args
    for step in path:
        if isinstance(value, Mapping) and isinstance(step, str) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and -len(value) <= step < len(value):
            value = value[step]
        else:
            return _MISSING
    return value


def same(a: Any, b: Any) -> bool:
    """JSON equality: `true` is not `1`, `1` is `1.0`, lists and objects compared deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        # -Infinity is below every bound: `lt = 100` must not approve it.
        raise RuleEvalError(f"{where} compares a number, but the value is {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RuleEvalError(f"{where} tests a string, but the value is {_kind(value)}")
    return value


_PARENT = re.compile(r"(^|[/\\])\.\.($|[/\\])")


def _pathlike(value: Any, where: str) -> str:
    """A string for `glob` and `prefix`, which mostly judge paths: one that climbs out of
    where it starts (`docs/../.env` begins with `docs/`) can't be judged by its text, so
    it is an error and a person decides."""
    text = _string(value, where)
    if _PARENT.search(text):
        raise RuleEvalError(f"{where} tests a path, but the value climbs with '..': {text!r}"[:300])
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "a list" if isinstance(value, list) else "an object"
    )


_INDEX = re.compile(r"-?[0-9]+")


def _path(raw: Any, where: str) -> tuple[str | int, ...]:
    if isinstance(raw, str):
        if not raw:
            raise RulesError(f'{where}: path is empty; name an argument, e.g. path = "path"')
        # ASCII digits only: "²".isdigit() holds, and int("²") raised a ValueError that no
        # caller expects (the worker crashed at start, the check failed mid-run).
        return tuple(int(part) if _INDEX.fullmatch(part) else part for part in raw.split("."))
    if isinstance(raw, list) and raw and all(isinstance(p, str | int) for p in raw):
        return tuple(raw)
    raise RulesError(f'{where}: path is "a.b.0" or a list of keys and indexes, e.g. ["a.b", 0]')


def _strings(value: Any, where: str, op: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise RulesError(f"{where}: {op} is a string or a list of strings")
    return tuple(items)


def compile_condition(raw: Any, where: str, depth: int = 0) -> Condition:
    """A condition table as a function of the arguments (raises RulesError if malformed)."""
    if depth > MAX_DEPTH:
        raise RulesError(f"{where}: conditions are nested more than {MAX_DEPTH} deep")
    if isinstance(raw, list):
        parts = [compile_condition(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(raw)]
        return lambda args: all(part(args) for part in parts)
    if not isinstance(raw, Mapping):
        raise RulesError(f'{where}: a condition is a table such as {{ path = "x", equals = 1 }}')
    combinators = [key for key in ("all", "any", "not") if key in raw]
    if combinators:
        key = combinators[0]
        if len(raw) != 1:
            raise RulesError(f"{where}: {key} stands alone in its table (found {sorted(raw)})")
        if key == "not":
            inner = compile_condition(raw["not"], f"{where}.not", depth + 1)
            return lambda args: not inner(args)
        items = raw[key]
        if not isinstance(items, list) or not items:
            raise RulesError(f"{where}: {key} is a non-empty list of conditions")
        parts = [
            compile_condition(item, f"{where}.{key}[{i}]", depth + 1)
            for i, item in enumerate(items)
        ]
        if key == "all":
            return lambda args: all(part(args) for part in parts)
        return lambda args: any(part(args) for part in parts)
    if "path" not in raw:
        raise RulesError(
            f"{where}: a condition has a path (with {', '.join(PATH_OPS)}), or all, any, not"
        )
    path = _path(raw["path"], where)
    shown = ".".join(str(p) for p in path)
    ops = {key: value for key, value in raw.items() if key != "path"}
    unknown = set(ops) - set(PATH_OPS)
    if unknown or not ops:
        raise RulesError(
            f"{where}: "
            + (f"unknown test {', '.join(sorted(unknown))}; " if unknown else "no test; ")
            + f"the tests are {', '.join(PATH_OPS)}"
        )
    tests: list[Callable[[Any], bool]] = []
    for op, expected in ops.items():
        label = f"{where} ({shown} {op})"
        tests.append(_test(op, expected, label, where))
    exists = ops.get("exists")

    def holds(args: Mapping[str, Any]) -> bool:
        value = _resolve(args, path)
        if value is _MISSING:
            return exists is False
        return all(test(value) for test in tests)

    return holds


def _test(op: str, expected: Any, label: str, where: str) -> Callable[[Any], bool]:
    if op == "equals":
        return lambda value: same(value, expected)
    if op == "in":
        if not isinstance(expected, list):
            raise RulesError(f"{where}: in is a list of values")
        return lambda value: any(same(value, item) for item in expected)
    if op == "exists":
        if not isinstance(expected, bool):
            raise RulesError(f"{where}: exists is true or false")
        return lambda value: expected
    if op in ("glob", "prefix"):
        patterns = _strings(expected, where, op)
        if op == "glob":
            return lambda value: any(
                fnmatch.fnmatchcase(_pathlike(value, label), p) for p in patterns
            )
        return lambda value: _pathlike(value, label).startswith(patterns)
    bound = expected
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
        raise RulesError(f"{where}: {op} is a number")
    compare = COMPARISONS[op]
    return lambda value: compare(_number(value, label), bound)


# --- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredicateRule:
    name: str
    effect: Literal["approve", "deny", "ask"]
    reason: str
    tools: tuple[str, ...] | None
    risk: Condition | None
    requesters: tuple[str, ...] | None
    verified_only: bool
    args: Condition | None

    def judge(self, call: Call) -> tuple[str, str, str] | None:
        """(verdict, reason, rule name) when the rule applies to the call, else None."""
        if self.tools is not None and not any(
            fnmatch.fnmatchcase(call.tool, p) for p in self.tools
        ):
            return None
        if self.verified_only and not call.verified:
            return None
        if self.requesters is not None and not any(
            fnmatch.fnmatchcase(call.requester, p) for p in self.requesters
        ):
            return None
        if self.risk is not None and not self.risk({"risk": call.risk}):
            return None
        if self.args is not None and not self.args(call.args):
            return None
        return self.effect, self.reason, self.name


@dataclass(frozen=True)
class CedarRule:
    name: str
    text: str
    policies: Any
    """cedarpy.PolicySet, parsed once at load."""
    effects: Mapping[str, str]
    """Policy id → `permit` or `forbid`."""
    labels: Mapping[str, str]
    """Policy id → its `@id("...")` annotation, where it has one."""
    reason: str = ""

    def judge(self, call: Call) -> tuple[str, str, str] | None:
        """(verdict, reason, `name/policy`) for an explicit forbid or permit, else None."""
        import cedarpy

        request = {
            # Only a proven name is a User: a policy on `User::"alice"` must not approve a
            # run that merely claims to be alice's (its input can say anything).
            "principal": {"type": "User" if call.verified else "Unverified", "id": call.requester},
            "action": {"type": "Action", "id": "call"},
            "resource": {"type": "Tool", "id": call.tool},
            "context": {
                "args": _cedar_value(dict(call.args), "args"),
                "risk": call.risk,
                "requester_verified": call.verified,
            },
        }
        try:
            result = cedarpy.is_authorized(request, self.policies, [])
        except Exception as failure:  # cedarpy raises its own types for bad requests
            raise RuleEvalError(f"Cedar could not evaluate the call: {failure}") from None
        reasons = list(result.diagnostics.reasons)
        errors = [str(e) for e in result.diagnostics.errors]
        forbids = [p for p in reasons if self.effects.get(p) == "forbid"]
        if forbids:
            return "deny", self._why("forbid", forbids), self._named(forbids)
        for error in errors:
            failed = _POLICY_IN_ERROR.findall(error)
            # A request Cedar could not build judged nothing; a forbid that could not be
            # evaluated might have denied. (A failed permit could only have approved.)
            if not failed or any(self.effects.get(p) == "forbid" for p in failed):
                raise RuleEvalError("Cedar: " + "; ".join(errors[:3]))
        permits = [p for p in reasons if self.effects.get(p) == "permit"]
        if permits and result.allowed:
            return "approve", self._why("permit", permits), self._named(permits)
        return None

    def _why(self, effect: str, ids: Sequence[str]) -> str:
        names = ", ".join(self.labels.get(p, p) for p in ids)
        return self.reason or f"Cedar {effect} ({names})"

    def _named(self, ids: Sequence[str]) -> str:
        return f"{self.name}/{self.labels.get(ids[0], ids[0])}"


CEDAR_ESCAPES = frozenset({"__entity", "__extn", "__expr"})
_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")


def _cedar_value(value: Any, where: str) -> Any:
    """Arguments as a Cedar value: nulls left out (absent, `has`), integral floats as
    longs, other floats as decimals where exact (Cedar has no floating point)."""
    if isinstance(value, Mapping):
        reserved = CEDAR_ESCAPES.intersection(str(k) for k in value)
        if reserved:
            # Cedar's JSON reads these keys as an entity or extension value, not a record:
            # arguments the model wrote could pose as `User::"alice"` or an IP address.
            raise RuleEvalError(
                f"{where} holds the key {sorted(reserved)[0]}, which Cedar would read as an "
                "entity or extension value rather than an argument"
            )
        return {str(k): _cedar_value(v, f"{where}.{k}") for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_cedar_value(v, f"{where}[{i}]") for i, v in enumerate(value) if v is not None]
    if isinstance(value, float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise RuleEvalError(f"{where} is {value!r}, which Cedar has no value for")
        if value.is_integer() and abs(value) < 2**63:
            return int(value)
        text = repr(value)
        if "e" not in text and len(text.split(".")[1]) <= 4 and abs(value) < 9e14:
            return {"__extn": {"fn": "decimal", "arg": text}}
        raise RuleEvalError(f"{where} is {text}, a number Cedar can't represent exactly")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise RuleEvalError(f"{where} is outside Cedar's 64-bit integers")
    return value


Rule = PredicateRule | CedarRule


@dataclass(frozen=True)
class RuleSet:
    """A loaded rule set: its rules in order, its mode and its digest."""

    rules: tuple[Rule, ...] = ()
    mode: Literal["act", "shadow"] = "shadow"
    digest: str = ""
    path: Path | None = None
    source: list[dict[str, Any]] = field(default_factory=list, compare=False)

    def evaluate(self, call: Call) -> RuleVerdict:
        """The first rule that matches decides; none: `ask`. A rule that fails: `ask`, with
        the error (never a crash, never an approval)."""
        for rule in self.rules:
            try:
                found = rule.judge(call)
            except RuleEvalError as error:
                return self.verdict(
                    rule.name,
                    "ask",
                    f"rule {rule.name!r} could not judge this call, so a person decides",
                    error=_clip(str(error), MAX_ERROR_CHARS),
                )
            except Exception as error:  # a bug in a rule must not fail the check
                return self.verdict(
                    rule.name,
                    "ask",
                    f"rule {rule.name!r} failed, so a person decides",
                    error=_clip(f"{type(error).__name__}: {error}", MAX_ERROR_CHARS),
                )
            if found is not None:
                verdict, reason, name = found
                return self.verdict(name, verdict, reason or f"rule {rule.name!r}")
        return self.verdict("", "ask", "no rule matched")

    def verdict(
        self, rule: str, verdict: str, reason: str, error: str | None = None
    ) -> RuleVerdict:
        return RuleVerdict(
            rule=_clip(rule, MAX_RULE_NAME_CHARS),
            verdict=verdict,
            reason=_clip(reason, MAX_REASON_CHARS),
            policy_digest=self.digest,
            error=error,
        )


def guarded(
    verdict: RuleVerdict,
    *,
    quorum: int = 1,
    auto_approve: bool = True,
    failed: bool = False,
    unsure: str | None = None,
) -> RuleVerdict:
    """A rule's verdict as the worker may act on it: an approval never stands in for a
    quorum, never covers a tool defined to always ask a person, never a call whose
    preview failed, nor when the worker is `unsure` of its own policy (the reason); those
    become `ask`, saying why. A deny always stands."""
    if verdict.verdict != "approve":
        return verdict
    why = unsure
    if why is None and quorum > 1:
        why = f"the call needs {quorum} approvers and a rule never stands in for them"
    elif why is None and not auto_approve:
        why = "its tool is defined to always ask a person (auto_approve=False)"
    elif why is None and failed:
        why = "its preview failed, so nothing was seen to approve"
    if why is None:
        return verdict
    return verdict.model_copy(
        update={
            "verdict": "ask",
            "reason": _clip(f"rule {verdict.rule!r} would approve, but {why}", MAX_REASON_CHARS),
        }
    )


def judge(
    rules: RuleSet,
    call: Call,
    *,
    quorum: int = 1,
    auto_approve: bool = True,
    failed: bool = False,
    unsure: str | None = None,
) -> RuleVerdict:
    """The one evaluation the worker's check and the backtest share."""
    return guarded(
        rules.evaluate(call),
        quorum=quorum,
        auto_approve=auto_approve,
        failed=failed,
        unsure=unsure,
    )


def broken(error: str) -> RuleVerdict:
    """The verdict when the rules file itself can't be used: a person decides."""
    return RuleVerdict(
        rule="",
        verdict="ask",
        reason="the rules file is unusable, so a person decides",
        error=_clip(error, MAX_ERROR_CHARS),
    )


# --- loading -----------------------------------------------------------------------------


def rules_path(environ: Mapping[str, str] | None = None) -> Path | None:
    text = (os.environ if environ is None else environ).get(RULES_ENV, "").strip()
    return Path(text) if text else None


def load_rules(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> RuleSet | None:
    """The rule set in `path` (default `HITL_RULES`); None when none is configured."""
    file = Path(path) if path is not None else rules_path(environ)
    if file is None:
        return None
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RulesError(
            f"the rules file {file} can't be read ({type(error).__name__}: {error}); "
            f"check {RULES_ENV}"
        ) from None
    return parse_rules(text, file)


def parse_rules(text: str, file: Path | None = None) -> RuleSet:
    where = str(file) if file is not None else "the rules"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{where} is not valid TOML: {error}; fix that line") from None
    unknown = set(data) - {"mode", "rule"}
    if unknown:
        raise RulesError(
            f"{where} has unknown keys {', '.join(sorted(unknown))}; it holds mode and "
            "[[rule]] tables"
        )
    mode = data.get("mode", "shadow")
    if mode not in MODES:
        raise RulesError(f'{where}: mode is "act" or "shadow", not {mode!r}')
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise RulesError(f"{where}: rules are [[rule]] tables")
    if len(raw_rules) > MAX_RULES:
        raise RulesError(f"{where} has {len(raw_rules)} rules; at most {MAX_RULES}")
    rules: list[Rule] = []
    source: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_rules):
        label = f"[[rule]] #{index + 1}" + (
            f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else ""
        )
        at = f"{label} in {where}"
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise RulesError(f"{at}: name is required (a short text, unique in the file)")
        if name in names:
            raise RulesError(f"{at}: another rule is already called {name!r}; names are unique")
        names.add(name)
        rule: Rule
        if "cedar" in raw or "cedar_policies" in raw:
            rule, kept = _cedar_rule(raw, at, file)
        else:
            rule, kept = _predicate_rule(raw, at)
        rules.append(rule)
        source.append(kept)
    digest = hashlib.sha256(canonical_json(source).encode()).hexdigest()[:16]
    return RuleSet(tuple(rules), mode, digest, file, source)


def _predicate_rule(raw: dict[str, Any], at: str) -> tuple[PredicateRule, dict[str, Any]]:
    unknown = set(raw) - RULE_KEYS
    if unknown:
        raise RulesError(
            f"{at} has unknown keys {', '.join(sorted(unknown))}; a rule has "
            f"{', '.join(sorted(RULE_KEYS))} (or name and cedar for Cedar)"
        )
    effect = raw.get("effect")
    if effect not in EFFECTS:
        raise RulesError(f'{at}: effect is "approve", "deny" or "ask", not {effect!r}')
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise RulesError(f"{at}: reason is text (the agent reads a deny's reason)")
    tools = _strings(raw["tool"], at, "tool") if "tool" in raw else None
    requesters = _strings(raw["requester"], at, "requester") if "requester" in raw else None
    verified = raw.get("requester_verified", requesters is not None)
    if not isinstance(verified, bool):
        raise RulesError(f"{at}: requester_verified is true or false")
    if effect == "approve" and requesters is not None and not verified:
        raise RulesError(
            f"{at}: an approve rule can't trust a requester's name that no signed start "
            "proved; remove requester_verified = false"
        )
    risk = None
    if "risk" in raw:
        table = raw["risk"]
        if not isinstance(table, dict) or not table:
            raise RulesError(
                f"{at}: risk is a table such as {{ lt = 40 }} (lt, le, gt, ge, equals)"
            )
        if set(table) - {"lt", "le", "gt", "ge", "equals"}:
            raise RulesError(f"{at}: risk takes lt, le, gt, ge, equals")
        risk = compile_condition({"path": "risk", **table}, f"{at} risk")
    args = compile_condition(raw["args"], f"{at} args") if "args" in raw else None
    rule = PredicateRule(
        name=raw["name"],
        effect=effect,
        reason=reason,
        tools=tools,
        risk=risk,
        requesters=requesters,
        verified_only=verified,
        args=args,
    )
    return rule, {**raw, "requester_verified": verified}


def _cedar_rule(
    raw: dict[str, Any], at: str, file: Path | None
) -> tuple[CedarRule, dict[str, Any]]:
    unknown = set(raw) - CEDAR_KEYS
    if unknown:
        raise RulesError(
            f"{at} has unknown keys {', '.join(sorted(unknown))}; a Cedar rule has name, "
            "cedar (a file) or cedar_policies (the text), and reason"
        )
    if ("cedar" in raw) == ("cedar_policies" in raw):
        raise RulesError(f"{at}: give cedar (a .cedar file) or cedar_policies, not both")
    if "cedar" in raw:
        name = raw["cedar"]
        if not isinstance(name, str):
            raise RulesError(f"{at}: cedar is a file name")
        target = Path(name) if file is None else file.parent / name
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RulesError(f"{at}: the Cedar file {target} can't be read ({error})") from None
    else:
        text = raw["cedar_policies"]
        if not isinstance(text, str):
            raise RulesError(f"{at}: cedar_policies is the policies' text")
    try:
        import cedarpy
    except ImportError:
        raise RulesError(
            f"{at} uses Cedar, which is not installed: pip install 'hitl-agents[rules]' (cedarpy)"
        ) from None
    try:
        policies = cedarpy.PolicySet.from_str(text)
        shape = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as error:
        raise RulesError(f"{at}: the Cedar policies don't parse: {error}") from None
    static = shape.get("staticPolicies") or {}
    if shape.get("templates"):
        raise RulesError(f"{at}: Cedar templates are not supported; write static policies")
    if not static:
        raise RulesError(f"{at}: the Cedar text holds no policy")
    effects = {pid: str(p.get("effect")) for pid, p in static.items()}
    labels = {
        pid: str(p["annotations"]["id"])
        for pid, p in static.items()
        if isinstance(p.get("annotations"), dict) and "id" in p["annotations"]
    }
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise RulesError(f"{at}: reason is text")
    rule = CedarRule(raw["name"], text, policies, effects, labels, reason)
    return rule, {"name": raw["name"], "cedar_policies": text, "reason": reason}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
