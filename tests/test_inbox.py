"""The web inbox in headless Chromium (Debian's), against the API, the dev server and a worker.

A reviewer signs in with their token, approves one approval, rejects one with a reason,
edits one's arguments, and sees a run that starts meanwhile, and a decision made
elsewhere, arrive without a reload; a model that writes markup and terminal controls
gets them shown as text. The screenshot is kept: test-artifacts/inbox.png.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl.text import visible
from tests.conftest import NEW_LOGS, OLD_LOGS, make_logs
from tests.helpers import CLEANUP_TASK, start_run, turn, wait_pending
from tests.review_api import ServedApi, wait_listed, worker_env, write_reviewers
from tests.test_text import HOSTILE

pytestmark = pytest.mark.usefixtures("worker")
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A file name and reasoning that, shown as markup, would run script; shown raw on a
# terminal, would erase a line; and would read right to left from the U+202E on.
HOSTILE_NAME = "logs/<img src=x onerror=window.__pwned=1>\u202egol.exe\x1b[2K.log"
HOSTILE_REASONING = "<script>window.__pwned=2</script>\x1b[2K\rDeleting \u202eharmless"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    # Never skipped: a missing browser fails the test, here as in CI.
    assert CHROMIUM.exists(), f"no browser at {CHROMIUM}: `make test` installs it (as root)"
    async with async_playwright() as playwright:
        # A fresh profile each time; the browser is Debian's, never one downloaded.
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1100, "height": 1600},
        )
        context.set_default_timeout(15_000)
        yield context
        await context.close()


@pytest.fixture
async def api(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ServedApi, dict[str, str]]]:
    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    for name, value in worker_env(reviewers).items():
        monkeypatch.setenv(name, value)
    async with ServedApi(env.client, reviewers) as served:
        yield served, tokens


def card(page: Page, approval_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'article[data-approval-id="{approval_id}"]')


async def test_a_reviewer_decides_in_the_inbox_and_sees_changes_live(
    api: tuple[ServedApi, dict[str, str]], browser: BrowserContext, client: Client,
    task_queue: str, tmp_path: Path,
) -> None:  # fmt: skip
    served, tokens = api
    three = await start_run(
        client, task_queue, make_logs(tmp_path / "a"),
        script=[turn(*[("delete_files", {"paths": [path]}) for path in OLD_LOGS])],
    )  # fmt: skip
    hostile_workspace = make_logs(tmp_path / "h")
    (hostile_workspace / HOSTILE_NAME).write_text("x")
    hostile = await start_run(
        client, task_queue, hostile_workspace,
        script=[turn(("delete_files", {"paths": [HOSTILE_NAME]}), content=HOSTILE_REASONING)],
    )  # fmt: skip
    by_path = {r.action_json.args["paths"][0]: r.id for r in await wait_pending(three, 3)}
    approve_id, reject_id, modify_id = (by_path[path] for path in OLD_LOGS)
    [bad] = await wait_pending(hostile)
    async with served.http(tokens["alice"]) as alice:
        await wait_listed(alice, three.id, 3)
        await wait_listed(alice, hostile.id)

    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(served.url + "/")
    await page.fill("#token", tokens["alice"])
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#who")).to_have_text("signed in as alice")
    await expect(page.locator("#live")).to_have_text("live")
    assert tokens["alice"] not in page.url
    for approval_id in (approve_id, reject_id, modify_id):
        await expect(card(page, approval_id).locator(".request-text")).to_have_text(CLEANUP_TASK)
    await expect(card(page, approve_id).locator(".votes")).to_have_text("0 of 1")
    await expect(card(page, approve_id).locator(".risk")).to_have_text("risk 34/100")
    await expect(card(page, approve_id).locator(".expires")).to_contain_text("then auto-rejected")

    # Approve one, reject one with a reason, edit one's arguments.
    await card(page, approve_id).locator("button.approve").click()
    await expect(card(page, approve_id).locator(".outcome")).to_have_text("approved by alice")
    rejecting = card(page, reject_id)
    await rejecting.locator("button.reject").click()
    await expect(rejecting.locator(".outcome")).to_contain_text("a reason is required")
    await rejecting.locator(".reason").fill("keep it for the audit")
    await rejecting.locator("button.reject").click()
    await expect(rejecting.locator(".outcome")).to_have_text(
        "rejected by alice: keep it for the audit"
    )
    editing = card(page, modify_id)
    await editing.locator("button.edit").click()
    await editing.locator(".args").fill("{not json")
    await editing.locator("button.send-modify").click()
    await expect(editing.locator(".outcome")).to_contain_text("not valid JSON")
    await editing.locator(".args").fill('{"paths": "logs"}')
    await editing.locator("button.send-modify").click()
    await expect(editing.locator(".outcome")).to_contain_text(
        "Refused (422): not sent: the arguments are invalid for delete_files: paths:"
    )
    await editing.locator(".args").fill(json.dumps({"paths": [NEW_LOGS[0]]}))
    await editing.locator("button.send-modify").click()
    await expect(editing.locator(".outcome")).to_have_text("modified by alice")
    result = await three.result()
    # The three calls were checked side by side: their records come in any order.
    assert {r.id: r.status.value for r in result.approvals} == {
        approve_id: "approved",
        reject_id: "rejected",
        modify_id: "modified",
    }

    # The hostile approval: every character shown, none of it markup or a control.
    hostile_card = card(page, bad.id)
    await expect(hostile_card.locator(".reasoning-text")).to_contain_text(
        " <script>window.__pwned=2</script>\\x1b[2K\\rDeleting \\u202eharmless"
    )
    await expect(hostile_card.locator(".action")).to_contain_text(
        '"logs/<img src=x onerror=window.__pwned=1>\\u202egol.exe\\u001b[2K.log"'
    )
    assert await page.evaluate("window.__pwned") is None
    assert await page.evaluate("document.querySelectorAll('img, script:not([src])').length") == 0
    shown = await page.evaluate("document.body.innerText")
    assert "\x1b" not in shown and "\u202e" not in shown and "\r" not in shown

    # Changes arrive from /events without a reload: a new approval, and a decision made
    # elsewhere.
    await page.evaluate("window.__sameDocument = true")
    later = await start_run(client, task_queue, make_logs(tmp_path / "l"), script=[
        turn(("delete_files", {"paths": [OLD_LOGS[0]]}))
    ])  # fmt: skip
    [arriving] = await wait_pending(later)
    await expect(card(page, arriving.id)).to_have_class("card live-new")
    async with served.http(tokens["bob"]) as bob:
        elsewhere = await bob.post(f"/approvals/{bad.id}/reject", json={"reason": "no"})
        assert elsewhere.status_code == 200, elsewhere.text
    await expect(hostile_card.locator(".outcome")).to_have_text("rejected by bob: no")
    assert await page.evaluate("window.__sameDocument") is True

    screenshot = tmp_path / "inbox.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    kept = ROOT / "test-artifacts" / "inbox.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, kept)
    assert errors == []
    await later.terminate("test done")
    await hostile.result()


async def test_the_inbox_shows_text_exactly_as_the_terminal_does(
    browser: BrowserContext, api: tuple[ServedApi, dict[str, str]]
) -> None:
    served, _ = api
    page = await browser.new_page()
    await page.goto(served.url + "/")
    # Lone surrogates can't travel as UTF-8 (nor in a record): what reaches a page can't hold them.
    samples = [text for text in [*HOSTILE, "".join(HOSTILE)] if "\udc9b" not in text]
    samples += ["tab\there\nnext line", "e\u0301 a\u0301\u0301\u0301\u0301\u0301 /\u0301", "日本"]
    for sample in samples:
        for multiline in (False, True):
            shown = await page.evaluate(
                "([text, multiline]) => window.hitlText.visible(text, multiline)",
                [sample, multiline],
            )
            assert shown == visible(sample, multiline=multiline), repr(sample)


async def test_an_approval_nobody_decided_shows_as_expired(
    api: tuple[ServedApi, dict[str, str]], browser: BrowserContext, client: Client,
    task_queue: str, tmp_path: Path,
) -> None:  # fmt: skip
    served, tokens = api
    run = await start_run(
        client, task_queue, make_logs(tmp_path / "e"), tool_approval_timeouts={"delete_files": 5}
    )
    [record] = await wait_pending(run)
    async with served.http(tokens["alice"]) as alice:
        await wait_listed(alice, run.id)
    page = await browser.new_page()
    await page.goto(served.url + "/")
    await page.fill("#token", tokens["alice"])
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#live")).to_have_text("live")
    await expect(card(page, record.id).locator(".request-text")).to_have_text(CLEANUP_TASK)
    # Told apart from a person's rejection: expired, not "rejected by system:timeout".
    await expect(card(page, record.id).locator(".outcome")).to_contain_text(
        "expired: no decision in time, so rejected", timeout=20_000
    )
    await expect(card(page, record.id).locator(".outcome")).not_to_contain_text("rejected by")
