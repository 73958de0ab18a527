"""docker-compose.yml is for users' machines (no Docker engine here): it must still be right."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from hitl import contract
from hitl.api.routers.inbox import WEB_FILES
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


def test_the_package_installs_the_library_whole_and_no_other_top_level_name(
    tmp_path: Path,
) -> None:
    """What `pip install` puts in site-packages (setuptools' build_py, as a wheel holds it):
    every package under hitl/ with its web assets, and no top-level module besides `hitl`
    (not the reference agent's `workflows`, `activities`, `worker`, `starter`)."""
    pytest.importorskip("setuptools", reason="builds with setuptools, as pip does")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "worker.py", "starter.py"):
        shutil.copy(ROOT / name, source / name)
    for name in ("hitl", "workflows", "activities"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = tmp_path / "lib"
    setup = "import setuptools; setuptools.setup()"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", setup, "-q", "build_py", "--build-lib", str(built)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in built.iterdir()) == ["hitl"]
    packages = {
        init.parent.relative_to(ROOT).as_posix()
        for init in (ROOT / "hitl").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    missing = sorted(name for name in packages if not (built / name / "__init__.py").exists())
    assert not missing, f"pyproject.toml does not install {missing}"
    assert (built / "hitl" / "web" / "index.html").exists()
    # Every file the API serves, the vendored charting library and its licence included.
    for name in WEB_FILES:
        assert (built / "hitl" / "web" / name).exists(), f"the package lacks web/{name}"
