"""The production-shaped stack and connecting to any Temporal: what can be checked here.

No Docker engine runs on the development machines, so the compose file is checked
against the Compose specification and against the code: every variable it passes is one
the code reads, every variable the code reads is documented, the images are pinned, the
ports bound to 127.0.0.1, no secret written in, the commands the ones the docs give.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"  # see compose-spec.NOTICE beside it
PROJECT_IMAGE = "hitl-agents:local"
CODE = [*ROOT.glob("hitl/**/*.py"), *ROOT.glob("activities/*.py"), *ROOT.glob("workflows/*.py"),
        ROOT / "worker.py", ROOT / "starter.py"]  # fmt: skip
ENVCONFIG = {
    # Read by temporalio.envconfig itself (hitl.config.load_settings uses it).
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
}


@pytest.fixture(scope="module")
def prod() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.prod.yml").read_text())


def read_by_code() -> set[str]:
    names: set[str] = set()
    for path in CODE:
        names |= set(re.findall(r"[\"']((?:HITL|OPENAI)_[A-Z0-9_]+)[\"']", path.read_text()))
    return names | ENVCONFIG


def project_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == PROJECT_IMAGE}


def test_the_production_stack_follows_the_compose_specification(prod: dict) -> None:
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(prod)


def test_images_are_pinned_and_health_gates_the_start_order(prod: dict) -> None:
    services = prod["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert re.search(r":\d+(\.\d+)+$", image) or image == PROJECT_IMAGE, (name, image)
    for name in ("postgresql", "temporal"):
        assert "healthcheck" in services[name], name
    assert services["temporal-schema"]["depends_on"]["postgresql"]["condition"] == (
        "service_healthy"
    )
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    for name in project_services(prod):
        assert services[name]["depends_on"]["temporal-setup"]["condition"] == (
            "service_completed_successfully"
        )
    assert "auto-setup" not in json.dumps(prod), "the auto-setup image is deprecated"
    scripts = [s["entrypoint"][-1] for s in services.values() if "entrypoint" in s]
    for script in scripts:
        assert (ROOT / "deploy" / "scripts" / Path(script).name).exists(), script
    setup = (ROOT / "deploy" / "scripts" / "setup-namespace.sh").read_text()
    from hitl import contract

    for key in contract.SEARCH_ATTRIBUTES:
        assert key.name in setup, f"the setup step registers {key.name}"


def test_ports_stay_on_loopback_and_workers_can_scale(prod: dict) -> None:
    for name, service in prod["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        assert "container_name" not in service, name
    worker = prod["services"]["worker"]
    assert "ports" not in worker, "three workers can't share a host port"


def test_no_secret_is_written_into_the_file(prod: dict) -> None:
    secret = re.compile(r"(KEY|KEYS|TOKEN|SECRET|PASSWORD|PWD|URL)$")
    for name, service in prod["services"].items():
        assert "env_file" not in service, name
        for variable, value in (service.get("environment") or {}).items():
            if secret.search(variable) and variable not in ("HITL_INBOX_URL",):
                assert "${" in str(value), f"{name}.{variable} must come from .env"
    commands = prod["services"]["commands"]
    assert set(commands["environment"]) <= {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"}


def test_every_variable_passed_is_read_and_every_variable_read_is_documented(
    prod: dict,
) -> None:
    read = read_by_code()
    for name, service in project_services(prod).items():
        for variable in service.get("environment") or {}:
            assert variable in read, f"{name} passes {variable}, which no code reads"
    documented = (ROOT / "README.md").read_text() + "".join(
        path.read_text() for path in (ROOT / "docs").glob("*.md")
    )
    for variable in sorted(read - ENVCONFIG):
        assert variable in documented, f"{variable} is read by the code but not documented"
    example = (ROOT / ".env.example").read_text()
    interpolated = set(
        re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.prod.yml").read_text())
    )
    for variable in interpolated - {"HITL_WORKSPACES"}:
        assert re.search(rf"^#? ?{variable}=", example, re.MULTILINE), f"{variable} in .env.example"


def test_the_commands_the_stack_runs_are_the_documented_ones(prod: dict) -> None:
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "production.md").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    [cmd] = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    default = " ".join(json.loads(cmd.removeprefix("CMD ")))
    assert default in docs
    for name, service in project_services(prod).items():
        command = shlex.join(service["command"])
        assert command in docs, f"{name} runs `{command}`, which the docs don't show"
    copied = [
        word
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for word in shlex.split(line)[1:-1]
    ]
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"


async def test_doctor_reads_a_profile_with_tls_and_an_api_key_and_masks_them(
    tmp_path: Path,
) -> None:
    import asyncio

    from hitl.devserver import free_port

    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (certs / name).write_text(f"-----BEGIN {name}-----\nnot a real one\n")
    api_key = "tk_cloud_secret_0123456789abcdef"
    config = tmp_path / "temporal.toml"
    config.write_text(
        f"""
[profile.default]
address = "127.0.0.1:1"

[profile.cloud]
address = "127.0.0.1:{free_port()}"
namespace = "agents.a1b2c"
api_key = "{api_key}"

[profile.cloud.tls]
client_cert_path = "{certs / "client.pem"}"
client_key_path = "{certs / "client.key"}"
server_ca_cert_path = "{certs / "ca.pem"}"
server_name = "agents.a1b2c.tmprl.cloud"
"""
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hitl.cli",
        "doctor",
        env={
            "PATH": "/usr/bin:/bin",
            "TEMPORAL_CONFIG_FILE": str(config),
            "TEMPORAL_PROFILE": "cloud",
            "HOME": str(tmp_path),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = out.decode()
    assert "profile       cloud  [env TEMPORAL_PROFILE]" in text
    assert "namespace     agents.a1b2c  [config file]" in text
    assert f"api key       set, {len(api_key)} characters, masked  [config file]" in text
    assert str(certs / "client.key") in text and "contents never shown" in text
    assert "tls           on (server name agents.a1b2c.tmprl.cloud)" in text
    assert api_key not in text and "not a real one" not in text
    assert "DOWN" in text, "nothing listens there: doctor says so, after the profile"
