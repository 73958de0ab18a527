"""Imports run one way: the library (`hitl`) never imports the reference agent, which
uses it; a worker serves the workflows it is told to serve."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from hitl.plugin import HitlPlugin, activity_name
from hitl.runworker import WorkflowModuleError, load_workflows, workflow_modules

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_AGENT = {"workflows", "activities", "worker", "starter"}


def test_no_library_module_imports_the_reference_agent_even_lazily() -> None:
    found = []
    for path in sorted((ROOT / "hitl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] in REFERENCE_AGENT
            ]
    assert not found, found


def test_the_library_imports_without_the_reference_agent_loaded() -> None:
    import subprocess

    program = (
        "import sys, hitl.plugin, hitl.runworker, hitl.demo, hitl.start, hitl.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(REFERENCE_AGENT)}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_plugin_alone_serves_the_gate_with_no_workflow_and_no_model() -> None:
    plugin = HitlPlugin()
    names = {activity_name(item) for item in plugin.activities_added}
    assert {"notify_approval", "verify_decision", "verify_start", "check_tool"} <= names
    assert "llm_next_step" not in names and not plugin.workflows
    assert not plugin.registry.names


def test_a_worker_serves_the_workflows_and_activities_its_modules_list(tmp_path: Path) -> None:
    from activities import llm_next_step
    from workflows import AgentWorkflow

    assert load_workflows(["workflows", "activities"]) == ([AgentWorkflow], [llm_next_step])
    assert workflow_modules(None, "workflows,activities", {}) == ["workflows", "activities"]
    assert workflow_modules(None, "x", {"HITL_WORKFLOWS": "a, b"}) == ["a", "b"]
    assert workflow_modules("c", "x", {"HITL_WORKFLOWS": "a"}) == ["c"]
    assert workflow_modules(None, None, {}) == []
    with pytest.raises(WorkflowModuleError, match="lists no WORKFLOWS"):
        load_workflows(["hitl.text"])
    with pytest.raises(WorkflowModuleError, match="could not be imported"):
        load_workflows(["no_such_module_here"])


async def test_the_reference_worker_adds_the_agent_and_its_model_call(
    client: Client, task_queue: str
) -> None:
    from worker import build_worker
    from workflows import AgentWorkflow

    agent = build_worker(client, task_queue).config(active_config=True)
    assert agent["workflows"] == [AgentWorkflow]
    assert "llm_next_step" in {activity_name(item) for item in agent["activities"]}
    commands = build_worker(client, f"{task_queue}-commands", tools_only=True).config(
        active_config=True
    )
    assert commands["workflows"] == []
    assert "llm_next_step" not in {activity_name(item) for item in commands["activities"]}
