// The web inbox: pending approvals as a list and a detail pane, filtered, sorted and paged
// by the server, decided here one or several at a time, by mouse or key, updated live from
// /events; and a history of decided approvals.
//
// Everything an approval carries is untrusted: it reaches the page only through textContent
// (never innerHTML), after `visible` (common.js, the terminal's rules) has made every
// character that could hide or reorder text show as an escape. The token stays in this
// tab's sessionStorage and goes in the Authorization header, never in a URL.
"use strict";

(() => {
  const { visible, visibleJson, detailOf, TOKEN_KEY, REFUSED } = window.hitlWeb;

  function setText(element, text, multiline = false) {
    element.textContent = visible(text, multiline);
  }

  // --- state --------------------------------------------------------------------------------

  const PAGE = 50;
  const DETAIL_TIMEOUT_MS = 15000;
  const BULK_CONCURRENCY = 4;
  const FILTER_DELAY_MS = 250;
  const FILTERS = ["tool", "risk_min", "risk_max", "run", "requester", "expires_within", "sort"];
  const state = {
    token: null,
    insecure: false,
    name: null,
    rows: new Map(), // approval id -> { item, record, el, seen, decided }
    current: null, // the approval under the cursor, shown in the detail pane
    checked: new Set(), // the approvals selected for a decision on several
    nextPage: null,
    listing: 0, // the newest listing asked for: an older answer is dropped
    freshListing: 0, // a new listing (not a merge, not a next page) not answered yet
    detailing: 0,
    stream: null,
    generation: 0,
    filters: {},
    tab: "pending",
    since: "7d",
    historyNext: null,
    historyListing: 0,
    tools: new Set(),
  };
  const $ = (id) => document.getElementById(id);

  // --- talking to the API -------------------------------------------------------------------

  const { api, headers } = window.hitlWeb.client(state, signOut);

  // A refusal in a few words from its code (the API's `title`, from the one table), then
  // the run's sentence.
  function refusalOf(result) {
    const title = result.data && typeof result.data.title === "string" ? result.data.title : null;
    return "refused" + (title ? " (" + title + ")" : " (" + result.status + ")") + ": " + detailOf(result);
  }

  // --- the URL hash keeps the view: a reload shows the same ---------------------------------

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.filters = {};
    for (const name of FILTERS) {
      const value = params.get(name);
      if (value) state.filters[name] = value;
    }
    state.tab = params.get("tab") === "history" ? "history" : "pending";
    state.since = params.get("since") || "7d";
    state.current = params.get("id") || state.current;
  }

  function writeHash() {
    const params = new URLSearchParams();
    for (const name of FILTERS) if (state.filters[name]) params.set(name, state.filters[name]);
    if (state.tab === "history") {
      params.set("tab", "history");
      params.set("since", state.since);
    }
    if (state.current) params.set("id", state.current);
    const hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  function showFilters() {
    $("f-tool").value = state.filters.tool || "";
    $("f-risk-min").value = state.filters.risk_min || "";
    $("f-risk-max").value = state.filters.risk_max || "";
    $("f-run").value = state.filters.run || "";
    $("f-requester").value = state.filters.requester || "";
    $("f-expires").value = state.filters.expires_within || "";
    $("f-sort").value = state.filters.sort || "";
    if ($("f-sort").value !== (state.filters.sort || "")) $("f-sort").value = "";
    $("h-since").value = state.since;
  }

  function filtersFromForm() {
    const value = (id) => $(id).value.trim();
    const filters = {
      tool: value("f-tool"),
      risk_min: value("f-risk-min"),
      risk_max: value("f-risk-max"),
      run: value("f-run"),
      requester: value("f-requester"),
      expires_within: value("f-expires"),
      sort: value("f-sort"),
    };
    for (const name of FILTERS) if (!filters[name]) delete filters[name];
    return filters;
  }

  function listingQuery(pageToken) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    for (const name of FILTERS) {
      const value = state.filters[name];
      if (!value) continue;
      if (name === "sort") {
        const [sort, order] = value.split(":");
        query.set("sort", sort);
        if (order) query.set("order", order);
      } else query.set(name, value);
    }
    if (pageToken) query.set("page_token", pageToken);
    return query;
  }

  // --- signing in ---------------------------------------------------------------------------

  async function start() {
    readHash();
    showFilters();
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token").value.trim());
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("more").addEventListener("click", () => load({ pageToken: state.nextPage }));
    $("history-more").addEventListener("click", () => loadHistory(state.historyNext));
    $("tab-pending").addEventListener("click", () => showTab("pending"));
    $("tab-history").addEventListener("click", () => showTab("history"));
    $("h-since").addEventListener("change", () => {
      state.since = $("h-since").value;
      writeHash();
      loadHistory(null);
    });
    let waiting = null;
    const changed = () => {
      clearTimeout(waiting);
      waiting = setTimeout(applyFilters, FILTER_DELAY_MS);
    };
    $("filters").addEventListener("input", changed);
    $("filters").addEventListener("change", changed);
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(waiting);
      applyFilters();
    });
    $("f-clear").addEventListener("click", () => {
      state.filters = {};
      showFilters();
      applyFilters();
    });
    $("rows").addEventListener("click", (event) => {
      const row = event.target.closest(".row");
      if (!row) return;
      if (event.target.classList.contains("check")) toggleChecked(row.dataset.approvalId, event.target.checked);
      moveTo(row.dataset.approvalId);
    });
    $("d-approve").addEventListener("click", () => state.current && approve(state.current));
    $("d-reject").addEventListener("click", () => state.current && reject(state.current));
    $("d-reason").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        if (state.current) reject(state.current);
      }
    });
    $("d-edit").addEventListener("click", openEditor);
    $("d-cancel-edit").addEventListener("click", () => {
      $("d-editor").hidden = true;
      $("rows").focus();
    });
    $("d-args").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (state.current) modify(state.current);
      }
    });
    $("d-send-modify").addEventListener("click", () => state.current && modify(state.current));
    $("bulk-approve").addEventListener("click", () => bulk("approve"));
    $("bulk-reject").addEventListener("click", () => bulk("reject"));
    $("bulk-reason").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        bulk("reject");
      }
    });
    $("bulk-clear").addEventListener("click", () => {
      for (const id of [...state.checked]) toggleChecked(id, false);
    });
    $("keymap-close").addEventListener("click", () => $("keymap").close());
    document.addEventListener("keydown", keyPressed);
    // One health check says both how the server authenticates and whom a saved token
    // names, so a reload lists sooner.
    const saved = sessionStorage.getItem(TOKEN_KEY);
    state.token = saved;
    const health = await api("/healthz");
    state.token = null;
    state.insecure = Boolean(health.data && health.data.auth === "none");
    if (state.insecure) {
      $("insecure").hidden = false;
      $("token-label").textContent = "Your name";
      $("token").type = "text";
    }
    if (saved) signIn(saved, health);
    else $("signin").hidden = false;
    setInterval(tick, 1000);
  }

  async function signIn(token, checked = null) {
    $("signin-error").textContent = "";
    if (!token) return;
    state.token = token;
    let name = token;
    if (!state.insecure) {
      const health = checked || (await api("/healthz"));
      name = health.data && health.data.reviewer;
      if (!name) {
        signOut("That is not a reviewer's token.");
        return;
      }
    }
    state.name = name;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("signin").hidden = true;
    $("signout").hidden = false;
    $("tabs").hidden = false;
    setText($("who"), "signed in as " + name);
    showTab(state.tab);
    // The first page is asked for at once, not after the feed's first listing; when the
    // feed is ready the page is read again, so nothing falls between the two.
    load({});
    connect();
  }

  function signOut(message) {
    state.generation += 1;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stream) state.stream.abort();
    state.stream = null;
    $("rows").replaceChildren();
    $("history-rows").replaceChildren();
    state.rows.clear();
    state.checked.clear();
    showDetail();
    showBulk();
    $("signout").hidden = true;
    $("tabs").hidden = true;
    $("pending-view").hidden = true;
    $("history-view").hidden = true;
    $("who").textContent = "";
    $("signin").hidden = false;
    setLive(false, "not connected");
    $("signin-error").textContent = message;
  }

  function showTab(tab) {
    state.tab = tab;
    $("tab-pending").setAttribute("aria-pressed", String(tab === "pending"));
    $("tab-history").setAttribute("aria-pressed", String(tab === "history"));
    $("pending-view").hidden = tab !== "pending";
    $("history-view").hidden = tab !== "history";
    $("notice").textContent = ""; // what it said was about the other tab
    writeHash();
    if (tab === "history") loadHistory(null);
  }

  // --- live updates: /events read with fetch, so the token stays in a header -----------------

  function setLive(on, text) {
    const live = $("live");
    live.classList.toggle("off", !on);
    live.textContent = text;
  }

  async function connect() {
    const generation = state.generation;
    const controller = new AbortController();
    state.stream = controller;
    try {
      const response = await fetch("/events", {
        headers: headers(false),
        signal: controller.signal,
        cache: "no-store",
        credentials: "omit",
      });
      if (response.status === 401) {
        signOut(REFUSED);
        return;
      }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          received(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (generation !== state.generation) return;
    setLive(false, "reconnecting…");
    setTimeout(() => generation === state.generation && connect(), 2000);
  }

  function received(block) {
    let type = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (type === "ready") {
      // From here on every change is reported: the first page is read again now, so
      // nothing that changed before falls between it and the stream.
      setLive(true, "live");
      load({ merge: true });
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    const entry = state.rows.get(event.id);
    if (type === "approval.pending" && !entry && event.approval) {
      if (matches(event.approval)) insertLive(event.approval);
    } else if (type === "approval.updated" && entry && event.approval) {
      entry.item = event.approval;
      renderRow(entry);
      // It may hold another action now: the one shown is read again at once (what it
      // showed stays until then), any other when it is shown.
      if (state.current === event.id) openDetail(event.id, true);
      else entry.record = null;
    } else if ((type === "approval.decided" || type === "approval.timed_out") && entry) {
      // Expired (no decision in time) is told apart from a person's rejection.
      const expired = type === "approval.timed_out" || event.expired === true;
      const text = event.status
        ? ending({ ...event, expired })
        : (expired ? "expired: " : "") + "no longer pending: " + (event.reason || "");
      endedElsewhere(entry, text);
    }
  }

  // An approval that ended: a row the reviewer is looking at, or chose, stays (marked);
  // any other leaves the list.
  function endedElsewhere(entry, text) {
    const id = entry.item.id;
    if (id === state.current || state.checked.has(id) || entry.el.querySelector(".row-outcome").textContent) {
      decided(entry, text, "applied");
    } else {
      entry.el.remove();
      state.rows.delete(id);
      $("empty").hidden = state.rows.size > 0;
    }
  }

  // The same test the server applies, for approvals that arrive live.
  function matches(item) {
    const f = state.filters;
    if (f.tool && item.tool !== f.tool) return false;
    if (f.run && item.session_id !== f.run) return false;
    if (f.requester && item.requested_by !== f.requester) return false;
    if (f.risk_min && item.risk < Number(f.risk_min)) return false;
    if (f.risk_max && item.risk > Number(f.risk_max)) return false;
    if (f.expires_within) {
      const seconds = durationSeconds(f.expires_within);
      if (seconds !== null && Date.parse(item.expires_at) > Date.now() + seconds * 1000) return false;
    }
    return true;
  }

  function durationSeconds(text) {
    const found = /^([0-9]{1,7})(s|m|h|d)?$/.exec(text);
    return found ? Number(found[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[found[2] || "s"] : null;
  }

  // Where an approval falls in the listing's order (the server's `sort_key`).
  function sortKey(item) {
    const [sort, order] = (state.filters.sort || "").split(":");
    const expires = Date.parse(item.expires_at);
    const desc = order === "desc";
    if (sort === "expires_at") return [desc ? -expires : expires, item.id];
    if (sort === "risk") return [desc ? -item.risk : item.risk, expires, item.id];
    return null;
  }

  function before(a, b) {
    for (let i = 0; i < a.length; i += 1) {
      if (a[i] < b[i]) return true;
      if (a[i] > b[i]) return false;
    }
    return false;
  }

  function insertLive(item) {
    const key = sortKey(item);
    let after = null; // the row it goes before
    if (key === null) after = $("rows").firstElementChild;
    else {
      for (const row of $("rows").children) {
        const other = state.rows.get(row.dataset.approvalId);
        if (other && before(key, sortKey(other.item))) {
          after = row;
          break;
        }
      }
      // Past the last row shown while more pages follow: it comes with its page.
      if (after === null && state.nextPage) return;
    }
    const entry = addRow(item, after);
    entry.el.classList.add("live-new");
  }

  // --- the listing --------------------------------------------------------------------------

  function applyFilters() {
    const filters = filtersFromForm();
    if (JSON.stringify(filters) === JSON.stringify(state.filters)) return;
    state.filters = filters;
    writeHash();
    load({});
  }

  // A page of the listing: the first (replacing the rows), the next (`pageToken`), or the
  // first again to add what the rows miss (`merge`).
  async function load({ pageToken = null, merge = false }) {
    if (!state.token) return;
    // A new listing still on its way is answered by this one: it must replace the rows too.
    if (merge && state.freshListing === state.listing) merge = false;
    const query = listingQuery(pageToken);
    const asked = ++state.listing;
    if (!pageToken && !merge) state.freshListing = asked;
    document.body.dataset.loading = "1";
    const result = await api("/approvals?" + query.toString());
    if (asked !== state.listing) return;
    delete document.body.dataset.loading;
    state.freshListing = 0;
    if (result.status !== 200) {
      setText($("filter-error"), "Could not list approvals: " + detailOf(result));
      return;
    }
    $("filter-error").textContent = "";
    const items = result.data.items;
    if (!pageToken && !merge) {
      // A new listing: the rows chosen or being read stay if it still has them.
      const kept = new Set(items.map((item) => item.id));
      for (const [id, entry] of state.rows) {
        if (!kept.has(id)) {
          entry.el.remove();
          state.rows.delete(id);
          state.checked.delete(id);
        }
      }
      showBulk();
    }
    let previous = null;
    for (const item of items) {
      let entry = state.rows.get(item.id);
      if (!entry) entry = addRow(item, null);
      else {
        if (!entry.decided) {
          entry.item = item;
          renderRow(entry);
        }
        if (pageToken) continue; // shown already: it keeps its place
      }
      if (!pageToken) {
        // The rows in the listing's order; after a merge, the rows it did not have follow.
        if (previous === null) $("rows").prepend(entry.el);
        else previous.after(entry.el);
        previous = entry.el;
      }
    }
    // A merge keeps the place reached by "load more".
    state.nextPage = merge ? (state.nextPage ?? result.data.next_page_token) : result.data.next_page_token;
    $("more").hidden = !state.nextPage;
    $("empty").hidden = state.rows.size > 0;
    // A filtered page reads a bounded number of runs: none found yet is not none at all.
    $("empty").textContent = state.nextPage
      ? "None in the runs read so far: load more to look further."
      : "No pending approvals match.";
    $("rows").dataset.query = query.toString();
    if (!state.current || !state.rows.has(state.current)) {
      const first = $("rows").firstElementChild;
      if (first && !pageToken) moveTo(first.dataset.approvalId, { focus: false });
      else if (!first) showDetail();
    } else {
      markCurrent();
      if (!pageToken && !merge) openDetail(state.current, false);
    }
  }

  function addRow(item, beforeRow) {
    const el = $("row-template").content.firstElementChild.cloneNode(true);
    el.dataset.approvalId = item.id;
    const entry = { item, record: null, el, seen: null, decided: false };
    state.rows.set(item.id, entry);
    renderRow(entry);
    if (beforeRow) beforeRow.before(el);
    else $("rows").append(el);
    $("empty").hidden = true;
    if (state.checked.has(item.id)) el.querySelector(".check").checked = true;
    if (!state.tools.has(item.tool) && state.tools.size < 500) {
      state.tools.add(item.tool);
      const option = document.createElement("option");
      option.value = visible(item.tool);
      $("tool-names").append(option);
    }
    return entry;
  }

  function renderRow(entry) {
    const { item, el } = entry;
    const cell = (name) => el.querySelector("." + name);
    setText(cell("tool"), item.tool);
    setText(cell("summary"), item.summary);
    riskBadge(cell("risk"), item.risk, String(item.risk));
    setText(cell("run"), item.session_id);
    setText(cell("requester"), item.requested_by || "—");
    el.dataset.expiresAt = item.expires_at;
    el.title = visible(item.tool) + ": " + visible(item.summary);
    tickRow(el, Date.now());
  }

  function riskBadge(element, risk, text) {
    setText(element, text);
    element.classList.toggle("high", risk >= 70);
    element.classList.toggle("mid", risk >= 40 && risk < 70);
  }

  // --- the cursor and the detail pane -------------------------------------------------------

  function markCurrent() {
    for (const row of $("rows").querySelectorAll(".row.current")) {
      row.classList.remove("current");
      row.setAttribute("aria-selected", "false");
    }
    const entry = state.rows.get(state.current);
    if (!entry) return null;
    entry.el.classList.add("current");
    entry.el.setAttribute("aria-selected", "true");
    return entry;
  }

  function moveTo(id, { focus = true } = {}) {
    if (!state.rows.has(id)) return;
    state.current = id;
    const entry = markCurrent();
    entry.el.scrollIntoView({ block: "nearest" });
    if (focus && document.activeElement !== $("rows")) $("rows").focus({ preventScroll: true });
    writeHash();
    openDetail(id, false);
  }

  function step(by) {
    const rows = [...$("rows").children];
    if (!rows.length) return;
    let at = rows.findIndex((row) => row.dataset.approvalId === state.current);
    at = at < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, at + by));
    moveTo(rows[at].dataset.approvalId);
  }

  // The summary at once; the full record (one query of its run) after.
  function openDetail(id, refresh) {
    const entry = state.rows.get(id);
    if (!entry) return showDetail();
    const fresh = $("detail").dataset.approvalId !== id;
    showDetail(entry, fresh);
    if (entry.record && !refresh) return;
    if (entry.decided && entry.record) return;
    const asked = ++state.detailing;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), DETAIL_TIMEOUT_MS);
    api("/approvals/" + encodeURIComponent(id), { signal: controller.signal }).then((result) => {
      clearTimeout(timer);
      if (result.status === 200) {
        entry.record = result.data;
        if (result.data.status !== "pending" && !entry.decided) decided(entry, ending(result.data), "applied");
      }
      if (asked !== state.detailing || state.current !== id) return;
      if (result.status === 200) showDetail(entry, false);
      else setText($("d-request"), "details unavailable: " + detailOf(result));
    });
  }

  function showDetail(entry, fresh) {
    const detail = $("detail");
    if (!entry) {
      delete detail.dataset.approvalId;
      $("detail-empty").hidden = false;
      $("detail-body").hidden = true;
      return;
    }
    const { item, record } = entry;
    detail.dataset.approvalId = item.id;
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    detail.classList.toggle("decided-detail", entry.decided);
    if (fresh) {
      $("d-reason").value = "";
      $("d-editor").hidden = true;
      $("d-args").value = "";
      const outcome = entry.el.querySelector(".row-outcome");
      setOutcome($("d-outcome"), outcome.textContent, outcome.dataset.kind || "");
    }
    setText($("d-tool"), item.tool);
    setText($("d-summary"), item.summary);
    riskBadge($("d-risk"), item.risk, "risk " + item.risk + "/100");
    setText($("d-id"), item.id);
    setText($("d-run"), item.session_id);
    setText($("d-requested-by"), item.requested_by || "(not recorded)");
    setText($("d-escalated"), (item.escalated_to || []).join(", ") || "—");
    tickDetail(Date.now());
    if (!record) {
      setText($("d-votes"), item.votes + " of " + item.quorum);
      if (fresh) {
        $("d-request").textContent = "loading…";
        $("d-reasoning").textContent = "";
        $("d-preview").textContent = "";
        $("d-warnings").replaceChildren();
        $("d-modified-part").hidden = true;
        $("d-action").textContent = item.action_json
          ? visible(item.action_json.tool) + " " + visibleJson(item.action_json.args)
          : "";
      }
      return;
    }
    setText($("d-request"), record.context.original_request, true);
    setText($("d-reasoning"), record.context.reasoning || "(none given)", true);
    setText($("d-requested-by"), record.context.requested_by || "(not recorded)");
    setText(
      $("d-action"),
      record.action_json.tool + "  (digest " + record.action_digest + ")\n" + visibleJson(record.action_json.args),
      true,
    );
    const modified = record.modified_action_json;
    $("d-modified-part").hidden = !modified;
    if (modified) setText($("d-modified"), visibleJson(modified.args), true);
    const preview = record.modified_preview || record.preview;
    // The summary is one line: a line break in it must not pass for the details' first.
    $("d-preview").textContent =
      visible(preview.summary) + (preview.details ? "\n\n" + visible(preview.details, true) : "");
    $("d-warnings").replaceChildren(
      ...preview.warnings.map((warning) => {
        const li = document.createElement("li");
        setText(li, warning);
        return li;
      }),
    );
    setText($("d-votes"), record.votes.length + " of " + record.quorum + votersOf(record));
    const escalated = [];
    for (const step of record.escalations || []) for (const name of step.to || []) if (!escalated.includes(name)) escalated.push(name);
    setText($("d-escalated"), escalated.join(", ") || "—");
    if ($("d-editor").hidden) $("d-args").value = visibleJson((modified || record.action_json).args);
  }

  // How an approval ended, the same words whether the answer or an event says it first.
  function ending(record) {
    if (record.expired || (record.status === "rejected" && record.reviewer === "system:timeout")) {
      return "expired: no decision in time, so rejected" + (record.reason ? " (" + record.reason + ")" : "");
    }
    return record.status + " by " + (record.reviewer || "unknown") + (record.reason ? ": " + record.reason : "");
  }

  function votersOf(record) {
    return record.votes.length ? " (" + record.votes.map((vote) => vote.reviewer).join(", ") + ")" : "";
  }

  function openEditor() {
    if (!state.current) return;
    $("d-editor").hidden = false;
    $("d-args").focus();
  }

  // --- deciding -----------------------------------------------------------------------------

  // The digest of the action the reviewer sees: the proposed one, or, while a quorum
  // counts votes for a modification, that modification (the digest its votes carry).
  function digestOf(entry) {
    const record = entry.record;
    if (!record) return entry.item.action_digest || null;
    if (!record.modified_action_json) return record.action_digest;
    if (record.votes.length) return record.votes[record.votes.length - 1].action_digest;
    return null;
  }

  function bodyFor(entry, digest) {
    const body = {};
    if (digest) body.action_digest = digest;
    if (state.insecure) body.reviewer = state.token;
    return body;
  }

  async function approve(id) {
    const entry = state.rows.get(id);
    if (entry && !entry.decided) await send(entry, "approve", bodyFor(entry, digestOf(entry)));
  }

  async function reject(id) {
    const entry = state.rows.get(id);
    if (!entry || entry.decided) return;
    const reason = $("d-reason").value.trim();
    if (!reason) {
      say(entry, "Not sent: a reason is required (the agent reads it).", "error");
      $("d-reason").focus();
      return;
    }
    await send(entry, "reject", { ...bodyFor(entry, digestOf(entry)), reason });
  }

  async function modify(id) {
    const entry = state.rows.get(id);
    if (!entry || entry.decided) return;
    let args;
    try {
      args = JSON.parse($("d-args").value);
    } catch (error) {
      say(entry, "Not sent: the arguments are not valid JSON (" + error.message + ").", "error");
      return;
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      say(entry, 'Not sent: the arguments must be a JSON object, e.g. {"paths": ["a.log"]}.', "error");
      return;
    }
    await send(entry, "modify", { ...bodyFor(entry, digestOf(entry)), args });
  }

  // One decision, its outcome in its row (and the detail pane while it shows it).
  async function send(entry, kind, body) {
    const id = entry.item.id;
    if (state.current === id) busy(true);
    say(entry, "Sending…", "");
    const result = await api("/approvals/" + encodeURIComponent(id) + "/" + kind, { method: "POST", body });
    if (state.current === id) busy(false);
    const data = result.data || {};
    if (result.status === 200) {
      const record = data.record;
      if (record) entry.record = record; // the record as the run has it now
      if (!record) decided(entry, data.message, "applied");
      else if (record.status === "pending") say(entry, data.message, "applied");
      else decided(entry, ending(record), "applied");
      if (state.current === id) showDetail(entry, false);
      return true;
    }
    if (result.status === 202) {
      say(entry, data.message, "");
      return true;
    }
    say(entry, refusalOf(result), "refused");
    if (data.record && data.record.id === id) {
      // The approval as it is now: what a stale decision's reviewer must look at again.
      entry.record = data.record;
      if (data.record.status !== "pending") decided(entry, refusalOf(result), "refused");
      if (state.current === id) showDetail(entry, false);
    }
    return false;
  }

  function busy(on) {
    for (const button of $("detail").querySelectorAll("button")) button.disabled = on;
  }

  function setOutcome(element, text, kind) {
    setText(element, text);
    element.className = element.className.replace(/ ?(applied|refused|error)\b/g, "");
    if (kind) element.classList.add(kind);
    element.dataset.kind = kind;
  }

  function say(entry, text, kind) {
    setOutcome(entry.el.querySelector(".row-outcome"), text, kind);
    if (state.current === entry.item.id) setOutcome($("d-outcome"), text, kind);
  }

  function decided(entry, text, kind) {
    entry.decided = true;
    entry.el.classList.add("decided");
    entry.el.classList.remove("live-new");
    if (state.checked.has(entry.item.id)) toggleChecked(entry.item.id, false);
    say(entry, text, kind);
    tickRow(entry.el, Date.now());
    if (state.current === entry.item.id) {
      $("detail").classList.add("decided-detail");
      tickDetail(Date.now());
    }
  }

  // --- several at once ----------------------------------------------------------------------

  // A selected approval keeps the digest of the action as it was when chosen: if the action
  // changes after that, the run refuses the decision as stale instead of applying it to an
  // action the reviewer did not choose.
  function toggleChecked(id, on) {
    const entry = state.rows.get(id);
    if (!entry) return;
    if (on === undefined) on = !state.checked.has(id);
    if (on && entry.decided) on = false;
    if (on) {
      state.checked.add(id);
      entry.seen = digestOf(entry);
    } else {
      state.checked.delete(id);
      entry.seen = null;
    }
    entry.el.querySelector(".check").checked = on;
    entry.el.classList.toggle("checked", on);
    showBulk();
  }

  function showBulk() {
    const count = state.checked.size;
    $("bulk").hidden = count === 0;
    setText($("bulk-count"), count + " selected");
  }

  async function bulk(kind) {
    const entries = [...state.checked].map((id) => state.rows.get(id)).filter((e) => e && !e.decided);
    if (!entries.length) return;
    const reason = $("bulk-reason").value.trim();
    if (kind === "reject" && !reason) {
      setText($("bulk-count"), entries.length + " selected: a reason is required to reject them (the agent reads it)");
      $("bulk-reason").focus();
      return;
    }
    for (const button of $("bulk").querySelectorAll("button")) button.disabled = true;
    const queue = [...entries];
    // Each one on its own: a refusal of one never hides what became of the others.
    const worker = async () => {
      for (let entry = queue.shift(); entry; entry = queue.shift()) {
        const body = bodyFor(entry, entry.seen || digestOf(entry));
        if (kind === "reject") body.reason = reason;
        const applied = await send(entry, kind, body);
        if (applied && state.checked.has(entry.item.id)) toggleChecked(entry.item.id, false);
      }
    };
    await Promise.all(Array.from({ length: Math.min(BULK_CONCURRENCY, entries.length) }, worker));
    for (const button of $("bulk").querySelectorAll("button")) button.disabled = false;
    if (kind === "reject") $("bulk-reason").value = "";
    showBulk();
    $("rows").focus();
  }

  // --- keys ---------------------------------------------------------------------------------

  function keyPressed(event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    // Enter and space on a button press it.
    if (target instanceof Element && target.closest("button") && (event.key === "Enter" || event.key === " ")) return;
    if (target instanceof Element && target.closest("input, textarea, select, [contenteditable]")) {
      // Typing: no key acts, except Escape, which leaves the field for the list.
      if (event.key === "Escape") {
        target.blur();
        $("rows").focus();
      }
      return;
    }
    if ($("keymap").open) {
      if (event.key === "?") {
        event.preventDefault();
        $("keymap").close();
      }
      return;
    }
    if (!state.token) return;
    if (event.key === "?") {
      event.preventDefault();
      $("keymap").showModal();
      return;
    }
    if (state.tab !== "pending") return;
    const current = state.current;
    const acts = {
      j: () => step(1),
      ArrowDown: () => step(1),
      k: () => step(-1),
      ArrowUp: () => step(-1),
      Enter: () => current && (openDetail(current, true), $("detail").focus()),
      o: () => current && (openDetail(current, true), $("detail").focus()),
      a: () => current && approve(current),
      r: () => current && $("d-reason").focus(),
      m: openEditor,
      x: () => current && toggleChecked(current),
      A: () => bulk("approve"),
      R: () => ($("bulk").hidden ? null : $("bulk-reason").focus()),
      "/": () => $("f-tool").focus(),
    };
    const act = acts[event.key];
    if (!act) return;
    event.preventDefault();
    act();
  }

  // --- history ------------------------------------------------------------------------------

  async function loadHistory(pageToken) {
    if (!state.token) return;
    const query = new URLSearchParams({ since: state.since, limit: String(PAGE) });
    if (pageToken) query.set("page_token", pageToken);
    const asked = ++state.historyListing;
    const result = await api("/approvals/history?" + query.toString());
    if (asked !== state.historyListing) return;
    if (result.status !== 200) {
      setText($("notice"), "Could not read the history: " + detailOf(result));
      return;
    }
    const problems = result.data.problems || [];
    if (result.data.complete === false) {
      setText($("notice"), "The history may be incomplete: " + (problems.slice(0, 3).join("; ") || "the range holds more than one listing reads"));
    } else $("notice").textContent = "";
    if (!pageToken) $("history-rows").replaceChildren();
    for (const item of result.data.items) $("history-rows").append(historyRow(item));
    state.historyNext = result.data.next_page_token;
    $("history-more").hidden = !state.historyNext;
    $("history-empty").hidden = $("history-rows").children.length > 0;
  }

  function historyRow(item) {
    const row = document.createElement("tr");
    row.dataset.approvalId = item.id;
    const word = item.outcome || (item.expired ? "expired" : item.status);
    const cells = [
      ["when", item.reviewed_at ? new Date(Date.parse(item.reviewed_at)).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "—"],
      ["outcome outcome-" + word, word],
      ["who", item.expired ? "(nobody in time)" : item.reviewer || "—"],
      ["reason", item.reason || ""],
      ["tool", item.tool],
      ["summary", item.summary],
      ["run", item.session_id],
    ];
    for (const [name, text] of cells) {
      const cell = document.createElement("td");
      cell.className = name;
      // A long reason scrolls in its cell instead of stretching the table.
      const inner = document.createElement("div");
      inner.className = "cell";
      setText(inner, text);
      cell.append(inner);
      row.append(cell);
    }
    return row;
  }

  // --- the expiry countdown -----------------------------------------------------------------

  function tick() {
    const now = Date.now();
    for (const entry of state.rows.values()) tickRow(entry.el, now);
    tickDetail(now);
  }

  function tickRow(el, now) {
    const expires = Date.parse(el.dataset.expiresAt);
    const cell = el.querySelector(".expires");
    if (Number.isNaN(expires)) return;
    const left = Math.round((expires - now) / 1000);
    cell.textContent = el.classList.contains("decided") ? "—" : left <= 0 ? "expired" : duration(left);
    cell.classList.toggle("soon", left > 0 && left < 300);
  }

  function tickDetail(now) {
    const entry = state.rows.get($("detail").dataset.approvalId);
    if (!entry) return;
    const expires = Date.parse((entry.record || entry.item).expires_at);
    if (Number.isNaN(expires)) return;
    const left = Math.round((expires - now) / 1000);
    const at = new Date(expires).toISOString().slice(11, 19) + " UTC";
    const element = $("d-expires");
    if (entry.decided) element.textContent = at;
    else if (left <= 0) element.textContent = "expired at " + at + " (auto-rejected)";
    else element.textContent = "in " + duration(left) + " (" + at + "; then auto-rejected)";
  }

  function duration(seconds) {
    if (seconds < 120) return seconds + " s";
    if (seconds < 7200) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  start();
})();
