"""schemathesis against /openapi.json of a real `hitl serve`: no input makes a 5xx.

The server is the command a user runs (`hitl serve`, a process of its own); the worker
runs on a thread of its own (tests/background.py), because schemathesis drives each
example from a plain function. Paused runs give it real approval ids to decide.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from hitl.devserver import free_port
from hitl.reviewers import SIGNING_KEY_ENV
from tests.background import Background
from tests.conftest import OLD_LOGS, make_logs
from tests.helpers import start_run, turn, wait_pending
from tests.review_api import API_KEY, worker_env, write_reviewers

ROOT = Path(__file__).resolve().parent.parent
PENDING_ONLY = ("requester", "risk_min", "risk_max", "expires_within", "sort")
"""The listing's filters of pending approvals only."""


@dataclass
class Served:
    url: str
    headers: dict[str, str]
    ids: list[str]


@pytest.fixture(scope="module")
def served(env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("schema")
    reviewers = folder / "reviewers.toml"
    token = write_reviewers(reviewers)["bob"]
    address = env.client.service_client.config.target_host
    queue = f"schema-{os.getpid()}"
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in worker_env(reviewers).items():
            patch.setenv(name, value)  # the worker thread reads them as a worker process would
        with Background(address, queue) as worker, (folder / "serve.log").open("w") as log:
            handles = [
                worker.run(
                    start_run(
                        worker.client, queue, make_logs(folder / f"ws{i}"),
                        script=[turn(*[("delete_files", {"paths": [p]}) for p in OLD_LOGS])],
                    )
                )
                for i in range(2)
            ]  # fmt: skip
            ids = [r.id for handle in handles for r in worker.run(wait_pending(handle, 3))]
            server = subprocess.Popen(
                [sys.executable, "-m", "hitl.cli", "serve", "--port", str(port)],
                cwd=ROOT,
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
                    "TEMPORAL_ADDRESS": address,
                    "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
                    "HITL_REVIEWERS": str(reviewers),
                    SIGNING_KEY_ENV: API_KEY,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                for _ in range(300):
                    try:
                        if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert server.poll() is None, (folder / "serve.log").read_text()
                    time.sleep(0.05)
                yield Served(url, {"Authorization": f"Bearer {token}"}, ids)
            finally:
                server.terminate()
                server.wait(20)
                for handle in handles:
                    # Examples may have approved every action: then the run has finished.
                    with contextlib.suppress(RPCError):
                        worker.run(handle.terminate("test done"))


def test_no_request_makes_the_api_fail(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    # The event stream never ends by itself; tests/test_api.py reads it. /audit, /insights
    # and /approvals/history read every run in their range, which on a dev server that
    # other tests leave runs on without workers takes seconds per example:
    # tests/test_audit_export.py and tests/test_api_inbox.py check their answers, ranges
    # and errors.
    left_out = schema.exclude(path=["/events", "/audit", "/insights", "/approvals/history"])
    operations = [result.ok() for result in left_out.get_all_operations()]
    assert len(operations) == 10, [operation.label for operation in operations]
    for operation in operations:
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        strategies = [operation.as_strategy(mode) for mode in modes]
        if "{approval_id}" in operation.path:
            # Real approvals too, so decisions reach a run and come back decided or refused.
            strategies += [
                operation.as_strategy(mode, path_parameters={"approval_id": approval_id})
                for approval_id in served.ids
                for mode in modes
            ]

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
            derandomize=True,
            database=None,
        )
        def no_server_error(case: schemathesis.Case) -> None:
            query = case.query or {}
            excluded = []
            # Rules OpenAPI can't state, each answered with a 422 that says what to do:
            # new arguments must fit the approval's own tool (its `args_schema`); decided
            # approvals live in their runs, so they are listed one run at a time, without
            # the pending listing's filters; a risk range must not be empty; an order needs
            # a sort; the history's range is two moments, the first before the second.
            risks = [query.get(name) for name in ("risk_min", "risk_max")]
            if (
                case.operation.path.endswith(("/modify", "/history"))
                or (
                    query.get("status", "pending") != "pending"
                    and (not query.get("run") or set(query) & set(PENDING_ONLY))
                )
                or (None not in risks and int(risks[0]) > int(risks[1]))  # type: ignore[arg-type]
                or (query.get("order") is not None and query.get("sort") is None)
                or query.get("expires_within") is not None
            ):
                excluded = [positive_data_acceptance]
            case.call_and_validate(headers=served.headers, excluded_checks=excluded)

        no_server_error()
