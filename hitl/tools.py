"""Define a tool once: arguments, description, approval rule, risk, timeouts, code, preview.

    from pydantic import BaseModel, Field
    from hitl.tools import ToolContext, tool

    class RefundArgs(BaseModel):
        order_id: str
        amount: float = Field(gt=0, description="In dollars.")

    @tool(requires_approval=lambda args: args.amount > 100, idempotent=False)
    def refund(ctx: ToolContext, args: RefundArgs) -> dict:
        \"\"\"Refund an order.\"\"\"              # what the model reads
        return payments.refund(args.order_id, args.amount, key=ctx.idempotency_key)

    @refund.preview
    def _(ctx: ToolContext, args: RefundArgs) -> str:
        return f"refund ${args.amount:.2f} on order {args.order_id}"

A typed signature works too (`def refund(order_id: str, amount: float)`); its
arguments model is made from it. A worker loads tools from modules
(`hitl worker --tools myapp.tools`, `HITL_TOOLS`, `build_worker(..., tools=[...])`);
the built-in tools are toolkits written this way (`hitl.toolkits.files`, `.commands`,
`.email`).

None of this runs in workflow code. A run knows its tools as `ToolDescriptor`s (name,
description, JSON schema, digest, flags). The approval predicate, the risk function,
the standing-approval scope, the preview and the implementation run in activities, so
their answers are recorded in history and changing a tool's rules never breaks a run
paused on the old ones: new rules apply to new calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import os
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from hitl.models import ToolDescriptor, ToolPreview, ToolResult, canonical_json
from hitl.text import visible
from hitl.toolerror import ToolError

if TYPE_CHECKING:
    from hitl.toolkits.workspace import Workspace

BUILTIN_TOOLKITS = ("hitl.toolkits.files", "hitl.toolkits.commands", "hitl.toolkits.email")
"""What a worker loads when it is given no tools: the built-in toolkits."""
TOOLS_ENV = "HITL_TOOLS"
WORKSPACE_ROOT_ENV = "HITL_WORKSPACE_ROOT"
"""On a worker: the folder every run's workspace must lie in, reached without following a
symbolic link below it (the review API's `POST /runs` uses the same variable)."""
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_EXECUTION_TIMEOUT = timedelta(seconds=60)
MAX_SCOPE_KEY_CHARS = 256
"""A longer scope key is kept as its start and a hash of the whole: still unique."""
SCOPE_KEY_FAILED = "!error"
"""How a scope key that could not be computed starts; it is never equal to another."""


class ToolRegistrationError(ValueError):
    """A tool that can't be registered: a duplicate name, an invalid schema, a bad option."""


@dataclass
class ToolContext:
    """What a tool's code gets besides its arguments."""

    workspace_path: str = ""
    """The run's workspace, if it has one (the built-in file tools need it)."""
    workspace_root: str | None = None
    """The folder the workspace lies in, reached from it without following a link (the
    review API's); the worker's own `HITL_WORKSPACE_ROOT` takes its place."""
    approval_id: str | None = None
    """The approval this call carries out: use it as the idempotency key of any side effect
    (e.g. a payment API's Idempotency-Key), so a retry never acts twice."""
    preview: ToolPreview | None = None
    """At execution: the preview the reviewer saw, to refuse what changed since."""
    workflow_id: str = ""
    run_id: str = ""
    activity_id: str = ""
    _workspace: Workspace | None = field(default=None, repr=False)

    @property
    def idempotency_key(self) -> str | None:
        """A key that is the same on every retry of this call and differs between calls.

        The approval id for an approved call; for a call that ran without approval,
        `<workflow id>/<run id>/<activity id>` (Temporal keeps the activity id across
        retries). None only outside a tool activity (calling the tool directly in a test).
        """
        if self.approval_id:
            return self.approval_id
        if self.workflow_id and self.activity_id:
            return f"{self.workflow_id}/{self.run_id}/{self.activity_id}"
        return None

    @property
    def facts(self) -> dict[str, Any]:
        return self.preview.facts if self.preview is not None else {}

    @property
    def workspace(self) -> Workspace:
        """The workspace, opened for race-free, confined access (`hitl.toolkits.workspace`)."""
        if self._workspace is None:
            from hitl.toolkits.workspace import Workspace

            if not self.workspace_path:
                raise ToolError("this run has no workspace; start it with one")
            within = os.environ.get(WORKSPACE_ROOT_ENV) or self.workspace_root
            self._workspace = Workspace.open(self.workspace_path, within)
        return self._workspace

    def heartbeat(self, *details: Any) -> None:
        """Tell Temporal a long call is alive (the activity already does this every 2 s)."""
        from temporalio import activity

        if activity.in_activity():
            activity.heartbeat(*details)

    def close(self) -> None:
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None


Predicate = Callable[[Any], bool]
RiskFn = Callable[[Any, ToolPreview], int]
ScopeFn = Callable[[Any], str]
Implementation = Callable[..., Any]


class Tool:
    """One tool: the single place its arguments, rules, code and preview are defined."""

    def __init__(
        self,
        fn: Implementation,
        *,
        name: str | None = None,
        description: str | None = None,
        args_model: type[BaseModel] | None = None,
        requires_approval: bool | Predicate = False,
        risk: int | RiskFn = 50,
        approval_timeout: timedelta | float | None = None,
        read_only: bool = False,
        idempotent: bool = True,
        execution_timeout: timedelta | float | Callable[[Any], timedelta] = (
            DEFAULT_EXECUTION_TIMEOUT
        ),
        preview: Callable[..., Any] | None = None,
        quorum: int = 1,
        standing_scope: ScopeFn | None = None,
        auto_approve: bool = True,
    ) -> None:
        self.fn = fn
        self.auto_approve = bool(auto_approve)
        self.quorum = max(1, int(quorum))
        self.name = (name or fn.__name__).strip()
        self.description = _description(description, fn)
        self.args_model, self._spread = _arguments(fn, args_model, self.name)
        self.requires_approval = requires_approval
        self.risk = risk
        self.approval_timeout = _seconds(approval_timeout, "approval_timeout", self.name)
        self.read_only = read_only
        self.idempotent = idempotent
        self.execution_timeout = execution_timeout
        self.preview_fn = preview
        self.standing_scope = standing_scope
        self._check_options()

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The plain function, for calling and testing it directly."""
        return self.fn(*args, **kwargs)

    def preview(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: the dry run a reviewer sees (returns a ToolPreview, a str or a dict)."""
        self.preview_fn = fn
        return fn

    def _check_options(self) -> None:
        if not _NAME.match(self.name):
            raise ToolRegistrationError(
                f"tool name {self.name!r} is not usable: use 1-64 letters, digits, _ or -"
            )
        if not (isinstance(self.requires_approval, bool) or callable(self.requires_approval)):
            raise ToolRegistrationError(
                f"tool {self.name}: requires_approval is True, False or a predicate over "
                "the validated arguments"
            )
        if not (isinstance(self.risk, int) or callable(self.risk)):
            raise ToolRegistrationError(
                f"tool {self.name}: risk is a number 0-100 or a function (args, preview) -> int"
            )
        if not (self.standing_scope is None or callable(self.standing_scope)):
            raise ToolRegistrationError(
                f"tool {self.name}: standing_scope is None or a function (args) -> str"
            )
        if self.read_only and self.requires_approval is not False:
            raise ToolRegistrationError(
                f"tool {self.name}: a read-only tool runs at once; it can't also need approval"
            )

    # --- what a run records about the tool -------------------------------------------------

    def parameters(self) -> dict[str, Any]:
        try:
            schema = self.args_model.model_json_schema()
        except Exception as error:
            raise ToolRegistrationError(
                f"tool {self.name}: its arguments can't be described as JSON Schema "
                f"({type(error).__name__}: {error}); use JSON-compatible types"
            ) from None
        if schema.get("type") != "object":
            raise ToolRegistrationError(f"tool {self.name}: its arguments must be an object")
        schema.pop("title", None)
        schema.pop("description", None)
        return schema

    def descriptor(self) -> ToolDescriptor:
        """What a run records about the tool. Worked out once (its JSON Schema costs about
        a millisecond, and every run and every call asks), again only if the tool's
        defining fields are changed afterwards."""
        key = (
            self.name,
            self.description,
            self.args_model,
            self.requires_approval,
            self.read_only,
            self.idempotent,
            self.execution_timeout,
            self.approval_timeout,
            self.quorum,
        )
        cached = getattr(self, "_descriptor", None)
        if cached is None or cached[0] != key:
            cached = (key, self._describe())
            self._descriptor = cached
        return cached[1]

    def _describe(self) -> ToolDescriptor:
        parameters = self.parameters()
        approval = (
            "predicate"
            if callable(self.requires_approval)
            else ("always" if self.requires_approval else "never")
        )
        fixed = self.execution_timeout
        timeout = (
            fixed.total_seconds()
            if isinstance(fixed, timedelta)
            else float(fixed)
            if isinstance(fixed, int | float)
            else None
        )
        shape = {
            "name": self.name,
            "description": self.description,
            "parameters": parameters,
            "approval": approval,
            "read_only": self.read_only,
            "idempotent": self.idempotent,
        }
        if self.quorum > 1:
            shape["quorum"] = self.quorum
        return ToolDescriptor(
            **shape,
            digest=hashlib.sha256(canonical_json(shape).encode()).hexdigest()[:16],
            approval_timeout_seconds=self.approval_timeout,
            execution_timeout_seconds=timeout or DEFAULT_EXECUTION_TIMEOUT.total_seconds(),
            quorum=self.quorum,
        )

    # --- what the activities call ----------------------------------------------------------

    def validate(self, raw: Any) -> BaseModel:
        """The arguments as the model sent them, validated (ValidationError if not)."""
        return self.args_model.model_validate(raw)

    def needs_approval(self, args: BaseModel) -> bool:
        if callable(self.requires_approval):
            return bool(self.requires_approval(args))
        return self.requires_approval

    def score(self, args: BaseModel, preview: ToolPreview) -> int:
        value = self.risk(args, preview) if callable(self.risk) else self.risk
        return max(0, min(100, round(float(value))))

    def scope_key(self, args: BaseModel) -> str | None:
        """What a standing approval granted on this call covers besides the tool: a
        `tool`-scope grant covers only calls with an equal key (and a risk within the
        grant). None when the tool has no `standing_scope`. A rule that raises, or
        answers something other than a string, fails closed: the key is unique, so no
        standing approval covers the call."""
        if self.standing_scope is None:
            return None
        try:
            key = self.standing_scope(args)
            if not isinstance(key, str):
                raise TypeError(f"it returned {type(key).__name__}, not a str")
        except Exception as error:
            return f"{SCOPE_KEY_FAILED}:{type(error).__name__}:{uuid.uuid4().hex}"
        if len(key) > MAX_SCOPE_KEY_CHARS:
            digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
            key = f"{key[: MAX_SCOPE_KEY_CHARS - 80]}… sha256:{digest}"
        return key

    def timeout_for(self, args: BaseModel) -> timedelta:
        value = self.execution_timeout
        if isinstance(value, timedelta):
            return value
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        return value(args)

    async def dry_run(self, ctx: ToolContext, args: BaseModel) -> ToolPreview:
        if self.preview_fn is None:
            arguments = canonical_json(args.model_dump(mode="json"))
            return ToolPreview(summary=f"{self.name} {visible(arguments)}")
        value = await _call(self.preview_fn, ctx, args, self._spread)
        return as_preview(value, self.name)

    async def run(self, ctx: ToolContext, args: BaseModel) -> ToolResult:
        value = await _call(self.fn, ctx, args, self._spread)
        if isinstance(value, ToolResult):
            return value
        return ToolResult(ok=True, output=value, summary=f"{self.name} done")


def tool(
    fn: Implementation | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    args_model: type[BaseModel] | None = None,
    requires_approval: bool | Predicate = False,
    risk: int | RiskFn = 50,
    approval_timeout: timedelta | float | None = None,
    read_only: bool = False,
    idempotent: bool = True,
    execution_timeout: timedelta | float | Callable[[Any], timedelta] = DEFAULT_EXECUTION_TIMEOUT,
    preview: Callable[..., Any] | None = None,
    quorum: int = 1,
    standing_scope: ScopeFn | None = None,
    auto_approve: bool = True,
) -> Any:
    """Make a function a tool: `@tool` or `@tool(requires_approval=..., risk=..., ...)`.

    - `requires_approval`: True, False, or a predicate over the validated arguments. A
      predicate that raises asks for approval (fails closed) and tells the reviewer.
    - `risk`: 0-100, or `(args, preview) -> int`; one that raises scores 100.
    - `approval_timeout`: this tool's own, under the run's overrides (30 min default).
    - `read_only`: changes nothing and is quick; runs at once, as a local activity.
    - `idempotent`: False means an attempt that died midway is never repeated, so it
      happens at most once; use `ctx.idempotency_key` to make retries safe instead.
    - `execution_timeout`: a duration, or a function of the arguments.
    - `preview`: the dry run a reviewer sees; or decorate one with `@the_tool.preview`.
    - `quorum`: how many different reviewers must approve (the reviewers file may ask
      for more on risky calls).
    - `standing_scope`: `(args) -> str`, what a standing approval granted on a call
      covers besides the tool: a `tool`-scope grant then covers only calls whose key is
      equal (and whose risk is within the grant), e.g. `run_command`'s program and
      options. One that raises fails closed: no standing approval covers the call.
      Like `risk`, it runs in the check activity and is not part of the tool's digest.
    - `auto_approve`: False means a person always decides a flagged call: neither the
      worker's auto-approval rules (`HITL_RULES`) nor its risk threshold approve it (a
      deny rule still denies). Read by the check activity; not part of the digest.
    """

    def make(function: Implementation) -> Tool:
        return Tool(
            function,
            name=name,
            description=description,
            args_model=args_model,
            requires_approval=requires_approval,
            risk=risk,
            approval_timeout=approval_timeout,
            read_only=read_only,
            idempotent=idempotent,
            execution_timeout=execution_timeout,
            preview=preview,
            quorum=quorum,
            standing_scope=standing_scope,
            auto_approve=auto_approve,
        )

    return make(fn) if fn is not None else make


def as_preview(value: Any, name: str) -> ToolPreview:
    """What a preview function returned, as a `ToolPreview` (a str is the summary)."""
    if isinstance(value, ToolPreview):
        return value
    if isinstance(value, str):
        return ToolPreview(summary=value)
    if isinstance(value, Mapping):
        return ToolPreview.model_validate(value)
    raise TypeError(
        f"the preview of {name} returned {type(value).__name__}; return a "
        "ToolPreview, a str (the summary) or a dict"
    )


def args_model_of(fn: Callable[..., Any], name: str | None = None) -> type[BaseModel]:
    """The arguments model of a function's typed signature (a `ToolContext` parameter left
    out; a single pydantic-model parameter is that model), as `@tool` makes it.

    For a tool that is not a `hitl` tool: `gate.ask(..., validate=args_model_of(fn))`
    checks a reviewer's modification against the function's signature, and the record
    carries its JSON Schema for the reviewers' tools.
    """
    return _arguments(fn, None, name or str(getattr(fn, "__name__", "tool")))[0]


# --- previews of tools that are not hitl tools --------------------------------------------

PreviewFn = Callable[[dict[str, Any]], Any]
"""`fn(args) -> ToolPreview | tuple[ToolPreview, int]` (a str or dict for the preview,
the int a risk 0-100), sync or async, over the call's arguments as the model sent them."""


class Previewer:
    """The worker's preview (and risk) of a tool that is not a `hitl` tool (a framework's
    function tool), by that tool's name; run in the `check_call` activity that
    `ApprovalGate.ask` runs first, so its answer is recorded and the worker's secrets are
    redacted from it. A previewer that raises, or returns something else, fails closed:
    the reviewer is asked with a failed preview of the raw arguments, at risk 100."""

    def __init__(self, name: str, fn: PreviewFn) -> None:
        if not _NAME.match(name):
            raise ToolRegistrationError(
                f"previewer name {name!r} is not usable: use the tool's name (1-64 letters, "
                "digits, _ or -)"
            )
        if not callable(fn):
            raise ToolRegistrationError(f"the previewer of {name} is not callable")
        self.name = name
        self.fn = fn

    def __repr__(self) -> str:
        return f"<Previewer {self.name}>"

    def __call__(self, args: dict[str, Any]) -> Any:
        return self.fn(args)

    async def preview(self, args: dict[str, Any]) -> tuple[ToolPreview, int | None]:
        """The preview and, if the function gave one, the risk (clamped to 0-100)."""
        if inspect.iscoroutinefunction(self.fn):
            value = await self.fn(args)
        else:
            # Blocking code runs off the event loop, so the activity keeps heartbeating.
            value = await asyncio.to_thread(self.fn, args)
            if inspect.isawaitable(value):
                value = await value
        risk = None
        if isinstance(value, tuple):
            if (
                len(value) != 2
                or isinstance(value[1], bool)
                or not isinstance(value[1], int | float)
            ):
                raise TypeError(
                    f"the previewer of {self.name} returned a tuple; return (preview, risk) "
                    "with an int risk 0-100"
                )
            value, score = value
            risk = max(0, min(100, round(float(score))))
        return as_preview(value, self.name), risk


def previewer(name: str) -> Callable[[PreviewFn], Previewer]:
    """Decorator: the worker's preview of calls of the tool `name` (not a `hitl` tool).

        @previewer("send_invoice")
        def _(args: dict) -> tuple[ToolPreview, int]:
            return ToolPreview(summary=f"invoice {args['customer']}"), 60

    Load the module with `HitlPlugin(previewers=["myapp.previews"])`.
    """

    def make(fn: PreviewFn) -> Previewer:
        return Previewer(name, fn)

    return make


def previewers_in(module: Any) -> list[Previewer]:
    """Every previewer a module defines at its top level."""
    found = [value for value in vars(module).values() if isinstance(value, Previewer)]
    return list({id(item): item for item in found}.values())


def load_previewers(
    entries: Mapping[str, PreviewFn] | Sequence[str | Previewer] | None,
) -> dict[str, Previewer]:
    """The worker's previewers by tool name: from `{name: fn}`, or from module names and
    `Previewer`s (`@previewer("name")`). Two for one tool name are refused."""
    found: list[Previewer] = []
    if entries is None:
        return {}
    if isinstance(entries, Mapping):
        found = [
            fn if isinstance(fn, Previewer) and fn.name == name else Previewer(name, fn)
            for name, fn in entries.items()
        ]
    else:
        for entry in entries:
            if isinstance(entry, Previewer):
                found.append(entry)
                continue
            try:
                module = importlib.import_module(entry.strip())
            except Exception as error:
                raise ToolRegistrationError(
                    f"previewer module {entry!r} could not be imported ({_said(error)})"
                ) from None
            defined = previewers_in(module)
            if not defined:
                raise ToolRegistrationError(
                    f"module {entry!r} defines no previewers (functions decorated with "
                    "@hitl.tools.previewer(name) at its top level)"
                )
            found.extend(defined)
    registry: dict[str, Previewer] = {}
    for item in found:
        if item.name in registry:
            raise ToolRegistrationError(f"two previewers are given for tool {item.name!r}")
        registry[item.name] = item
    return registry


# --- the registry ------------------------------------------------------------------------


def decode_key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().casefold().replace("-", "_")


class ToolRegistry:
    """The tools a worker (or a starter) knows, by name; names are unique and normalized."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._keys: dict[str, str] = {}
        for item in tools:
            self.add(item)

    def add(self, item: Tool) -> None:
        if not isinstance(item, Tool):
            raise ToolRegistrationError(
                f"{item!r} is not a tool; make it one with @hitl.tools.tool"
            )
        key = decode_key(item.name)
        if key in self._keys:
            raise ToolRegistrationError(
                f"two tools are named {item.name!r} and {self._keys[key]!r}: tool names must "
                "differ by more than case, dashes or spaces; rename one"
            )
        item.descriptor()  # refuses a tool whose schema can't be made, now, not mid-run
        self._keys[key] = item.name
        self._tools[item.name] = item

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def select(self, names: Sequence[str] | None) -> list[Tool]:
        """The named tools (all when None), or a clear error naming what is unknown."""
        if names is None:
            return list(self._tools.values())
        unknown = [name for name in names if name not in self._tools]
        if unknown:
            raise ToolRegistrationError(
                f"unknown tool(s) {', '.join(unknown)}; this worker has "
                f"{', '.join(self._tools) or 'none'}"
            )
        return [self._tools[name] for name in dict.fromkeys(names)]

    def descriptors(self, names: Sequence[str] | None = None) -> list[ToolDescriptor]:
        return [item.descriptor() for item in self.select(names)]


def tools_in(module: Any) -> list[Tool]:
    """Every tool a module defines at its top level, in definition order."""
    found = [value for value in vars(module).values() if isinstance(value, Tool)]
    return list({id(item): item for item in found}.values())


def load_tools(modules: Sequence[str | Tool] | None = None) -> ToolRegistry:
    """A registry from module names (and tools): `["myapp.tools", "hitl.toolkits.files"]`.

    None means the built-in toolkits; `"builtin"` in the list stands for them too.
    """
    registry = ToolRegistry()
    for entry in modules if modules is not None else BUILTIN_TOOLKITS:
        if isinstance(entry, Tool):
            registry.add(entry)
            continue
        names = BUILTIN_TOOLKITS if entry.strip() == "builtin" else (entry.strip(),)
        for module_name in names:
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise ToolRegistrationError(
                    f"tool module {module_name!r} could not be imported ({_said(error)}); "
                    f"check {TOOLS_ENV} / --tools, and that the worker's Python finds it (run "
                    "the worker with PYTHONPATH set to the folder that holds the module's "
                    "package, or install it; only the worker imports tool modules)"
                ) from None
            except Exception as error:  # the module's own code raised: one sentence, redacted
                raise ToolRegistrationError(
                    f"tool module {module_name!r} raised {type(error).__name__} while it was "
                    f"imported: {_said(error)}; fix the module (run `python -c 'import "
                    f"{module_name}'` to see where)"
                ) from None
            found = tools_in(module)
            if not found:
                raise ToolRegistrationError(
                    f"module {module_name!r} defines no tools (functions decorated with "
                    "@hitl.tools.tool at its top level)"
                )
            for item in found:
                registry.add(item)
    return registry


def modules_from(text: str | None, environ: Mapping[str, str] | None = None) -> list[str] | None:
    """Tool modules from `--tools A,B`, else HITL_TOOLS, else None (the built-ins)."""
    value = text if text else (os.environ if environ is None else environ).get(TOOLS_ENV, "")
    modules = [part.strip() for part in value.split(",") if part.strip()]
    return modules or None


# --- helpers ------------------------------------------------------------------------------


def _said(error: BaseException) -> str:
    """What an exception says, safe to print: secrets redacted, escaped, one short line."""
    from hitl.secrets import redact_text
    from hitl.text import clip

    return clip(visible(redact_text(str(error))), 300)


def _description(given: str | None, fn: Implementation) -> str:
    text = given or inspect.getdoc(fn) or ""
    # The first paragraph is for the model; an "Args:" section describes the fields.
    first = re.split(r"\n\s*\n|\n\s*(?:Args|Arguments|Parameters):", text, maxsplit=1)[0]
    return " ".join(first.split()) or f"The {fn.__name__} tool."


def _seconds(value: timedelta | float | None, what: str, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ToolRegistrationError(f"tool {name}: {what} must be positive")
    return seconds


def _arguments(
    fn: Implementation, given: type[BaseModel] | None, name: str
) -> tuple[type[BaseModel], bool]:
    """The arguments model, and whether the function takes its fields as parameters."""
    if given is not None:
        return given, False
    try:
        hints = get_type_hints(fn)
    except Exception as error:
        raise ToolRegistrationError(
            f"tool {name}: its type hints can't be read ({error})"
        ) from None
    parameters = [
        p for p in inspect.signature(fn).parameters.values() if hints.get(p.name) is not ToolContext
    ]
    if len(parameters) == 1:
        hint = hints.get(parameters[0].name)
        if inspect.isclass(hint) and issubclass(hint, BaseModel):
            return hint, False
    fields: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolRegistrationError(f"tool {name}: *args and **kwargs can't be described")
        if parameter.name not in hints:
            raise ToolRegistrationError(
                f"tool {name}: parameter {parameter.name!r} needs a type annotation"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    try:
        model = create_model(
            f"{name.title().replace('_', '')}Args",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
    except Exception as error:
        raise ToolRegistrationError(
            f"tool {name}: its arguments can't be described as JSON Schema "
            f"({type(error).__name__}: {error}); use JSON-compatible types"
        ) from None
    return model, True


async def _call(fn: Callable[..., Any], ctx: ToolContext, args: BaseModel, spread: bool) -> Any:
    """Call a tool's code with what it asks for: the context and the arguments, sync or async."""
    hints = get_type_hints(fn)
    takes_context = any(hint is ToolContext for hint in hints.values())
    positional: list[Any] = [ctx] if takes_context else []
    keywords: dict[str, Any] = {}
    if spread:
        keywords = {name: getattr(args, name) for name in type(args).model_fields}
    else:
        positional.append(args)
    if inspect.iscoroutinefunction(fn):
        return await fn(*positional, **keywords)
    # Blocking code runs off the event loop, so the activity keeps heartbeating.
    return await asyncio.to_thread(fn, *positional, **keywords)


__all__ = [
    "BUILTIN_TOOLKITS",
    "PreviewFn",
    "Previewer",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistrationError",
    "ToolRegistry",
    "ValidationError",
    "args_model_of",
    "as_preview",
    "load_previewers",
    "load_tools",
    "modules_from",
    "previewer",
    "previewers_in",
    "tool",
    "tools_in",
]
