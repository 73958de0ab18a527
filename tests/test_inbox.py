"""The web inbox in headless Chromium (Debian's), against the API, the dev server and a worker.

A reviewer signs in with their token, approves one approval, rejects one with a reason,
edits one's arguments, and sees a run that starts meanwhile, and a decision made
elsewhere, arrive without a reload; a model that writes markup and terminal controls
gets them shown as text. The screenshot is kept: test-artifacts/inbox.png.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl.models import RunResult
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


def row(page: Page, approval_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#rows .row[data-approval-id="{approval_id}"]')


async def row_ids(page: Page) -> list[str]:
    ids: list[str] = await page.evaluate(
        "[...document.querySelectorAll('#rows .row')].map(r => r.dataset.approvalId)"
    )
    return ids


async def rows_become(page: Page, ids: list[str]) -> None:
    """Wait until the list shows exactly these approvals, in this order."""
    await page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#rows .row')]"
        ".map(r => r.dataset.approvalId)) === JSON.stringify(ids)",
        arg=ids,
    )


async def sign_in(page: Page, served: ServedApi, token: str, hash: str = "") -> None:
    await page.goto(served.url + "/" + hash)
    await page.fill("#token", token)
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#live")).to_have_text("live")
    assert token not in page.url


def keep(name: str, shot: Path) -> None:
    """A screenshot kept as a test artifact (test-artifacts/NAME)."""
    kept = ROOT / "test-artifacts" / name
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)


async def test_a_reviewer_decides_in_the_inbox_and_sees_changes_live(
    api: tuple[ServedApi, dict[str, str]], browser: BrowserContext, client: Client,
    task_queue: str, tmp_path: Path,
) -> None:  # fmt: skip
    served, tokens = api
    asker = f"req-{uuid.uuid4().hex[:8]}"  # this test's runs, and only they, are listed
    three = await start_run(
        client, task_queue, make_logs(tmp_path / "a"), requested_by=asker,
        script=[turn(*[("delete_files", {"paths": [path]}) for path in OLD_LOGS])],
    )  # fmt: skip
    hostile_workspace = make_logs(tmp_path / "h")
    (hostile_workspace / HOSTILE_NAME).write_text("x")
    hostile = await start_run(
        client, task_queue, hostile_workspace, requested_by=asker,
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
    await sign_in(page, served, tokens["alice"], f"#requester={asker}")
    await expect(page.locator("#who")).to_have_text("signed in as alice")
    await expect(page.locator("#rows .row")).to_have_count(4)
    await expect(row(page, approve_id).locator(".risk")).to_have_text("34")
    await expect(row(page, approve_id).locator(".requester")).to_have_text(asker)

    # The detail pane shows the row chosen.
    await row(page, approve_id).click()
    await expect(row(page, approve_id)).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(page.locator("#d-request")).to_have_text(CLEANUP_TASK)
    await expect(page.locator("#d-votes")).to_have_text("0 of 1")
    await expect(page.locator("#d-risk")).to_have_text("risk 34/100")
    await expect(page.locator("#d-expires")).to_contain_text("then auto-rejected")
    await expect(page.locator("#d-action")).to_contain_text(OLD_LOGS[0])

    # Approve one, reject one with a reason, edit one's arguments.
    await page.click("#d-approve")
    await expect(row(page, approve_id).locator(".row-outcome")).to_have_text("approved by alice")
    await expect(page.locator("#d-outcome")).to_have_text("approved by alice")
    await row(page, reject_id).click()
    await expect(page.locator("#d-action")).to_contain_text(OLD_LOGS[1])
    await page.click("#d-reject")
    await expect(page.locator("#d-outcome")).to_contain_text("a reason is required")
    await page.fill("#d-reason", "keep it for the audit")
    await page.click("#d-reject")
    await expect(row(page, reject_id).locator(".row-outcome")).to_have_text(
        "rejected by alice: keep it for the audit"
    )
    await row(page, modify_id).click()
    await expect(page.locator("#d-action")).to_contain_text(OLD_LOGS[2])
    await page.click("#d-edit")
    await page.fill("#d-args", "{not json")
    await page.click("#d-send-modify")
    await expect(page.locator("#d-outcome")).to_contain_text("not valid JSON")
    await page.fill("#d-args", '{"paths": "logs"}')
    await page.click("#d-send-modify")
    await expect(page.locator("#d-outcome")).to_contain_text(
        "refused (invalid arguments): not sent: the arguments are invalid for delete_files: paths:"
    )
    await page.fill("#d-args", json.dumps({"paths": [NEW_LOGS[0]]}))
    await page.click("#d-send-modify")
    await expect(row(page, modify_id).locator(".row-outcome")).to_have_text("modified by alice")
    result = await three.result()
    # The three calls were checked side by side: their records come in any order.
    assert {r.id: r.status.value for r in result.approvals} == {
        approve_id: "approved",
        reject_id: "rejected",
        modify_id: "modified",
    }

    # The hostile approval: every character shown, none of it markup or a control.
    await row(page, bad.id).click()
    await expect(page.locator("#d-reasoning")).to_contain_text(
        " <script>window.__pwned=2</script>\\x1b[2K\\rDeleting \\u202eharmless"
    )
    await expect(page.locator("#d-action")).to_contain_text(
        '"logs/<img src=x onerror=window.__pwned=1>\\u202egol.exe\\u001b[2K.log"'
    )
    assert await page.evaluate("window.__pwned") is None
    assert await page.evaluate("document.querySelectorAll('img, script:not([src])').length") == 0
    shown = await page.evaluate("document.body.innerText")
    assert "\x1b" not in shown and "\u202e" not in shown and "\r" not in shown

    # Changes arrive from /events without a reload: new approvals; a decision made
    # elsewhere, on the approval being read (it stays, marked) and on another (it goes).
    await page.evaluate("window.__sameDocument = true")
    later = await start_run(
        client, task_queue, make_logs(tmp_path / "l"), requested_by=asker,
        script=[turn(*[("delete_files", {"paths": [path]}) for path in OLD_LOGS[:2]])],
    )  # fmt: skip
    arriving = [r.id for r in await wait_pending(later, 2)]
    for approval_id in arriving:
        await expect(row(page, approval_id)).to_have_class(re.compile(r"\blive-new\b"))
    await expect(row(page, bad.id)).to_have_class(re.compile(r"\bcurrent\b"))
    async with served.http(tokens["bob"]) as bob:
        elsewhere = await bob.post(f"/approvals/{bad.id}/reject", json={"reason": "no"})
        assert elsewhere.status_code == 200, elsewhere.text
        await expect(row(page, bad.id).locator(".row-outcome")).to_have_text("rejected by bob: no")
        gone = await bob.post(f"/approvals/{arriving[0]}/approve", json={})
        assert gone.status_code == 200, gone.text
    await expect(row(page, arriving[0])).to_have_count(0)
    await expect(row(page, arriving[1])).to_have_count(1)
    await expect(row(page, bad.id)).to_have_class(re.compile(r"\bcurrent\b"))
    assert await page.evaluate("window.__sameDocument") is True

    screenshot = tmp_path / "inbox.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    keep("inbox.png", screenshot)
    assert errors == []
    async with served.http(tokens["bob"]) as bob:
        last = await bob.post(f"/approvals/{arriving[1]}/reject", json={"reason": "done"})
        assert last.status_code == 200, last.text
    await later.result()
    await hostile.result()


async def test_the_inbox_shows_text_exactly_as_the_terminal_does(
    browser: BrowserContext, api: tuple[ServedApi, dict[str, str]]
) -> None:
    served, _ = api
    # Text reaches the page only as text: nothing of it is ever parsed as markup.
    for name in ("inbox.js", "common.js"):
        script = (ROOT / "hitl" / "web" / name).read_text()
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)
    # Lone surrogates can't travel as UTF-8 (nor in a record): what reaches a page can't hold them.
    samples = [text for text in [*HOSTILE, "".join(HOSTILE)] if "\udc9b" not in text]
    samples += ["tab\there\nnext line", "e\u0301 a\u0301\u0301\u0301\u0301\u0301 /\u0301", "日本"]
    # Both pages escape with the one `visible` (common.js), the terminal's rules.
    for path in ("/", "/insights.html"):
        page = await browser.new_page()
        await page.goto(served.url + path)
        for sample in samples:
            for multiline in (False, True):
                shown = await page.evaluate(
                    "([text, multiline]) => window.hitlWeb.visible(text, multiline)",
                    [sample, multiline],
                )
                assert shown == visible(sample, multiline=multiline), (path, repr(sample))
        await page.close()


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
    await sign_in(page, served, tokens["alice"], f"#run={run.id}")
    await row(page, record.id).click()
    await expect(page.locator("#d-request")).to_have_text(CLEANUP_TASK)
    # Told apart from a person's rejection: expired, not "rejected by system:timeout".
    outcome = row(page, record.id).locator(".row-outcome")
    await expect(outcome).to_contain_text(
        "expired: no decision in time, so rejected", timeout=20_000
    )
    await expect(outcome).not_to_contain_text("rejected by")
    await expect(page.locator("#d-outcome")).to_contain_text("expired: no decision in time")


async def three_runs(client: Client, task_queue: str, tmp_path: Path, asker: str) -> dict[str, str]:
    """Pending approvals of three runs: low risk expiring last, middle, high expiring first."""
    started = {
        # delete one file: risk 34; write a new file: risk 35; delete three: risk 42
        "low": ([("delete_files", {"paths": [OLD_LOGS[0]]})], 900),
        "mid": ([("write_file", {"path": "notes/new.txt", "content": "hi"})], 600),
        "high": ([("delete_files", {"paths": OLD_LOGS})], 300),
    }
    found = {}
    for name, (calls, timeout) in started.items():
        handle = await start_run(
            client, task_queue, make_logs(tmp_path / name), script=[turn(*calls)],
            requested_by=asker, approval_timeout_seconds=timeout,
        )  # fmt: skip
        [record] = await wait_pending(handle)
        found[name], found[name + "_run"] = record.id, handle.id
    return found


async def test_filters_sort_and_keys_decide_and_a_reload_keeps_the_view(
    api: tuple[ServedApi, dict[str, str]], browser: BrowserContext, client: Client,
    task_queue: str, tmp_path: Path,
) -> None:  # fmt: skip
    served, tokens = api
    asker = f"req-{uuid.uuid4().hex[:8]}"
    runs = await three_runs(client, task_queue, tmp_path, asker)
    low, mid, high = runs["low"], runs["mid"], runs["high"]
    async with served.http(tokens["alice"]) as alice:
        for name in ("low", "mid", "high"):
            await wait_listed(alice, runs[name + "_run"])
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in(page, served, tokens["alice"], f"#requester={asker}&sort=risk:desc")
    await expect(page.locator("#rows .row")).to_have_count(3)
    assert await row_ids(page) == [high, mid, low]
    await expect(page.locator("#f-sort")).to_have_value("risk:desc")
    await expect(page.locator("#keys-hint")).to_contain_text("j/k move")

    # The key map, on ? and off again.
    await page.keyboard.press("?")
    await expect(page.locator("#keymap")).to_be_visible()
    await expect(page.locator("#keymap")).to_contain_text("approve every selected one")
    shot = tmp_path / "keys.png"
    await page.screenshot(path=str(shot))
    keep("inbox-keys.png", shot)
    await page.keyboard.press("?")
    await expect(page.locator("#keymap")).to_be_hidden()

    # / goes to the tool filter; what is typed there is text, not keys ("r", "x", "a"...).
    await page.keyboard.press("/")
    await expect(page.locator("#f-tool")).to_be_focused()
    await page.keyboard.type("write_file")
    await expect(page.locator("#f-tool")).to_be_focused()
    await expect(page.locator("#rows .row")).to_have_count(1)
    assert await row_ids(page) == [mid]
    assert "tool=write_file" in page.url and f"requester={asker}" in page.url
    await page.reload()
    await expect(page.locator("#live")).to_have_text("live")
    await expect(page.locator("#f-tool")).to_have_value("write_file")
    await expect(page.locator("#f-sort")).to_have_value("risk:desc")
    await expect(page.locator("#rows .row")).to_have_count(1)
    await page.fill("#f-tool", "")
    await expect(page.locator("#rows .row")).to_have_count(3)
    await page.select_option("#f-sort", "expires_at:desc")
    await rows_become(page, [low, mid, high])
    await page.fill("#f-risk-min", "35")
    await expect(page.locator("#rows .row")).to_have_count(2)
    await page.fill("#f-risk-max", "20")
    await expect(page.locator("#filter-error")).to_contain_text("risk_min=35 is above risk_max=20")
    await page.fill("#f-risk-max", "")
    await page.fill("#f-risk-min", "")
    await page.select_option("#f-sort", "risk:desc")
    await expect(page.locator("#rows .row")).to_have_count(3)
    await rows_become(page, [high, mid, low])

    # Decisions by key. The cursor stayed on the approval it was on through the filters.
    await page.keyboard.press("Escape")
    await expect(row(page, mid)).to_have_class(re.compile(r"\bcurrent\b"))
    await page.keyboard.press("k")
    await expect(row(page, high)).to_have_class(re.compile(r"\bcurrent\b"))
    await page.keyboard.press("j")
    await expect(row(page, mid)).to_have_class(re.compile(r"\bcurrent\b"))
    await page.keyboard.press("k")
    await expect(row(page, high)).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(page.locator("#d-action")).to_contain_text(OLD_LOGS[2])
    await page.keyboard.press("a")
    await expect(row(page, high).locator(".row-outcome")).to_have_text("approved by alice")
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("#d-tool")).to_have_text("write_file")
    await page.keyboard.press("r")
    await expect(page.locator("#d-reason")).to_be_focused()
    await page.keyboard.type("not now, ask again tomorrow")
    await page.keyboard.press("Enter")
    await expect(row(page, mid).locator(".row-outcome")).to_have_text(
        "rejected by alice: not now, ask again tomorrow"
    )
    await page.keyboard.press("Escape")
    await page.keyboard.press("j")
    await expect(row(page, low)).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(page.locator("#d-request")).to_have_text(CLEANUP_TASK)
    await page.keyboard.press("m")
    await expect(page.locator("#d-args")).to_be_focused()
    await page.fill("#d-args", json.dumps({"paths": [OLD_LOGS[1]]}))
    await page.keyboard.press("Control+Enter")
    await expect(row(page, low).locator(".row-outcome")).to_have_text("modified by alice")
    statuses = {}
    for name in ("low", "mid", "high"):
        handle = client.get_workflow_handle(runs[name + "_run"], result_type=RunResult)
        result = await handle.result()
        [record] = result.approvals
        statuses[name] = (record.status.value, record.reviewer)
    assert statuses == {
        "low": ("modified", "alice"),
        "mid": ("rejected", "alice"),
        "high": ("approved", "alice"),
    }
    assert errors == []


# A reason that would be markup, turns text right to left, and is long.
HOSTILE_REASON = "<img src=x onerror=window.__pwned=3>\u202eevil " + "very long " * 150


async def test_several_approved_at_once_one_refused_as_stale_and_the_history(
    api: tuple[ServedApi, dict[str, str]], browser: BrowserContext, client: Client,
    task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    served, tokens = api
    # The worker asks two approvers for risk 40 and up: a modification by one of them is
    # then a vote, and the approval stays pending with another action than it had.
    stricter = tmp_path / "quorum.toml"
    stricter.write_text(
        (tmp_path / "reviewers.toml").read_text() + "\n[[quorum]]\nmin_risk = 40\napprovals = 2\n"
    )
    monkeypatch.setenv("HITL_REVIEWERS", str(stricter))
    asker = f"req-{uuid.uuid4().hex[:8]}"
    handles = [
        await start_run(
            client,
            task_queue,
            make_logs(tmp_path / f"r{index}"),
            requested_by=asker,
            script=[turn(("delete_files", {"paths": paths}))],
        )
        for index, paths in enumerate([[OLD_LOGS[0]], [OLD_LOGS[1]], [OLD_LOGS[2]], OLD_LOGS])
    ]
    ids = [(await wait_pending(handle))[0].id for handle in handles]
    *singles, quorum = ids
    async with served.http(tokens["alice"]) as alice:
        for handle in handles:
            await wait_listed(alice, handle.id)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in(page, served, tokens["alice"], f"#requester={asker}&sort=risk:desc")
    await expect(page.locator("#rows .row")).to_have_count(4)
    assert (await row_ids(page))[0] == quorum

    # Choose all four (x on each), then another reviewer changes one of them.
    await page.locator("#rows").focus()
    for _ in ids:
        await page.keyboard.press("x")
        await page.keyboard.press("j")
    await expect(page.locator("#bulk-count")).to_have_text("4 selected")
    async with served.http(tokens["bob"]) as bob:
        changed = await bob.post(
            f"/approvals/{quorum}/modify", json={"args": {"paths": [OLD_LOGS[0]]}}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["record"]["status"] == "pending"
    await page.keyboard.press("Shift+A")
    for approval_id in singles:
        await expect(row(page, approval_id).locator(".row-outcome")).to_have_text(
            "approved by alice"
        )
    stale = row(page, quorum).locator(".row-outcome")
    await expect(stale).to_contain_text("refused (the action changed): ")
    await expect(page.locator("#bulk-count")).to_have_text("1 selected")
    shot = tmp_path / "bulk.png"
    await page.screenshot(path=str(shot), full_page=True)
    keep("inbox-bulk.png", shot)
    for handle in handles[:3]:
        [record] = (await handle.result()).approvals
        assert (record.status.value, record.reviewer) == ("approved", "alice")

    # The one left: looked at again (it shows the change), chosen again as it is now, and
    # rejected with Shift+R and a hostile reason, which the history shows as text.
    await row(page, quorum).click()
    await expect(page.locator("#d-modified")).to_contain_text(OLD_LOGS[0])
    await page.keyboard.press("x")
    await expect(page.locator("#bulk")).to_be_hidden()
    await page.keyboard.press("x")
    await expect(page.locator("#bulk-count")).to_have_text("1 selected")
    await page.keyboard.press("Shift+R")
    await expect(page.locator("#bulk-reason")).to_be_focused()
    await page.fill("#bulk-reason", HOSTILE_REASON)
    await page.keyboard.press("Enter")
    await expect(row(page, quorum).locator(".row-outcome")).to_contain_text("rejected by alice")
    await expect(page.locator("#bulk")).to_be_hidden()
    await page.click("#tab-history")
    assert "tab=history" in page.url
    history = page.locator("#history-rows tr")
    # Every page reads the range's runs: one whose worker is gone answers late (10 s).
    for approval_id in ids:
        mine = history.and_(page.locator(f'[data-approval-id="{approval_id}"]'))
        await expect(mine).to_have_count(1, timeout=40_000)
    newest = history.first
    await expect(newest).to_have_attribute("data-approval-id", quorum)
    await expect(newest.locator(".who")).to_have_text("alice")
    await expect(newest.locator(".outcome")).to_have_text("rejected")
    await expect(newest.locator(".reason")).to_have_text(
        HOSTILE_REASON.replace("\u202e", "\\u202e").strip()
    )
    await expect(newest.locator(".when")).to_contain_text(" UTC")
    single = page.locator(f'#history-rows tr[data-approval-id="{singles[0]}"]')
    await expect(single.locator(".outcome")).to_have_text("approved")
    await expect(single.locator(".who")).to_have_text("alice")
    assert await page.evaluate("window.__pwned") is None
    assert await page.evaluate("document.querySelectorAll('img').length") == 0
    assert "\u202e" not in await page.evaluate("document.body.innerText")
    shot = tmp_path / "history.png"
    await page.screenshot(path=str(shot), full_page=True)
    keep("inbox-history.png", shot)
    await page.reload()
    await expect(page.locator("#history-rows tr").first).to_have_attribute(
        "data-approval-id", quorum, timeout=40_000
    )
    assert errors == []
