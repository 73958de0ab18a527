"""docker-compose.yml is for users' machines (no Docker engine here): it must still be right."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from hitl import contract
from hitl.devserver import SERVER_TUNING, server_command

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"  # see compose-spec.NOTICE beside it


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_follows_the_compose_specification(compose: dict) -> None:
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose)


def test_compose_server_registers_what_the_dev_server_registers(compose: dict) -> None:
    server = compose["services"]["temporal"]
    flags = [arg for arg in server["command"] if arg.startswith("--search-attribute")]
    ours = server_command(Path("x.db"))
    expected = [
        f"--search-attribute={ours[i + 1]}"
        for i, arg in enumerate(ours)
        if arg == "--search-attribute"
    ]
    assert flags == expected and len(flags) == len(contract.SEARCH_ATTRIBUTES)
    assert "7233:7233" in server["ports"] and "8233:8233" in server["ports"]
    tuning = [
        f"{flag}={value}"
        for flag, value in zip(SERVER_TUNING[::2], SERVER_TUNING[1::2], strict=True)
    ]
    assert [arg for arg in server["command"] if arg.startswith(("--sqlite", "--dynamic"))] == tuning


def test_compose_worker_reaches_the_server_and_builds_from_this_repo(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert worker["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert worker["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert worker["image"] == compose["services"]["temporal"]["image"]
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_compose_runs_commands_on_a_worker_that_holds_no_secrets(compose: dict) -> None:
    commands = compose["services"]["commands"]
    assert "--tools-only" in commands["command"]
    queue = commands["command"][commands["command"].index("--task-queue") + 1]
    assert set(commands["environment"]) <= {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"}
    assert "env_file" not in commands
    routed = compose["services"]["worker"]["environment"]["HITL_TOOL_QUEUES"]
    assert routed == f"run_command={queue}"


def test_every_package_is_installed_not_only_in_an_editable_checkout() -> None:
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for top in ("hitl", "workflows", "activities")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"pyproject.toml does not install {sorted(found - listed)}"
