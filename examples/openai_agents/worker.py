"""The example's worker: `python -m examples.openai_agents.worker`.

The model: OpenAI's when OPENAI_API_KEY is set (HITL_MODEL names it); an OpenAI-compatible
server at OPENAI_BASE_URL; otherwise the offline scripted server (`scripted.py`), which
says so in every answer. Connection from the environment (TEMPORAL_ADDRESS, ...).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import structlog
from agents import Model, ModelProvider, OpenAIChatCompletionsModel, set_tracing_disabled
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import Worker

from examples.openai_agents.activities import send_email
from examples.openai_agents.scripted import ScriptedServer
from examples.openai_agents.workflow import SupportAgentWorkflow
from hitl.config import load_settings
from hitl.logs import configure_logging
from hitl.models import SCRIPTED_MODEL_NAME
from hitl.plugin import HitlPlugin

TASK_QUEUE = "openai-agents-example"
log = structlog.get_logger("examples.openai_agents")


class ChatCompletions(ModelProvider):
    """Every model name answered by one OpenAI-compatible Chat Completions endpoint."""

    def __init__(self, base_url: str, api_key: str, name: str | None = None) -> None:
        # max_retries=0: Temporal's retry policy is the one retry mechanism.
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        self.name = name

    def get_model(self, model_name: str | None) -> Model:
        return OpenAIChatCompletionsModel(self.name or model_name or "", openai_client=self.client)


class OpenAIByName(ModelProvider):
    """OpenAI's own models (Responses API), HITL_MODEL in place of the agent's model."""

    def __init__(self, name: str | None) -> None:
        from agents import OpenAIProvider

        self.provider = OpenAIProvider(openai_client=AsyncOpenAI(max_retries=0))
        self.name = name

    def get_model(self, model_name: str | None) -> Model:
        return self.provider.get_model(self.name or model_name)


@asynccontextmanager
async def model_provider(env: Mapping[str, str]) -> AsyncIterator[tuple[ModelProvider, str]]:
    """The model the environment asks for, and a line saying which."""
    name = env.get("HITL_MODEL") or None
    if env.get("OPENAI_BASE_URL"):
        url = env["OPENAI_BASE_URL"]
        yield ChatCompletions(url, env.get("OPENAI_API_KEY") or "unused", name), f"{url}"
    elif env.get("OPENAI_API_KEY"):
        yield OpenAIByName(name), f"OpenAI ({name or 'the agent model'})"
    else:
        set_tracing_disabled(True)  # offline: no trace export either
        with ScriptedServer() as server:
            yield (
                ChatCompletions(server.base_url, "offline", SCRIPTED_MODEL_NAME),
                "the offline scripted model (no OPENAI_API_KEY: no LLM is called)",
            )


async def connect(
    address: str, namespace: str, provider: ModelProvider, **options: object
) -> Client:
    """A client for the example: OpenAIAgentsPlugin first, then HitlPlugin (the one order
    that works: OpenAIAgentsPlugin refuses a payload converter set before it)."""
    return await Client.connect(
        address,
        namespace=namespace,
        plugins=[
            OpenAIAgentsPlugin(
                model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=60)),
                model_provider=provider,
            ),
            HitlPlugin(),
        ],
        **options,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running_worker(
    env: Mapping[str, str], task_queue: str = TASK_QUEUE
) -> AsyncIterator[tuple[Client, str]]:
    settings = load_settings(env)
    async with AsyncExitStack() as stack:
        provider, model = await stack.enter_async_context(model_provider(env))
        client = await connect(settings.address, settings.namespace, provider, **settings.connect)
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[SupportAgentWorkflow],
            activities=[send_email],
        )
        await stack.enter_async_context(worker)
        log.info("worker.started", address=settings.address, task_queue=task_queue, model=model)
        yield client, model


async def main() -> None:
    configure_logging()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_worker(os.environ, os.environ.get("HITL_TASK_QUEUE") or TASK_QUEUE):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
