// The web inbox: pending approvals, decided here, updated live from /events.
//
// Everything an approval carries was written by the model, the workspace or a decision,
// so it is untrusted: it reaches the page only through textContent (never innerHTML),
// after `visible` has made every character that could hide or reorder text show as an
// escape, with the same rules as hitl.text.visible on a terminal. The token stays in this
// tab's sessionStorage and goes in the Authorization header, never in a URL.
"use strict";

(() => {
  // --- untrusted text made visible (hitl/text.py, the same rules) --------------------------

  // Control, format (bidi, zero-width), surrogate, private use, unassigned, line and
  // paragraph separators.
  const HIDDEN = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]$/u;
  const MARK = /^[\p{Mn}\p{Me}]$/u;
  const BASE = /^[\p{L}\p{N}\p{M}]$/u;
  const SPACE = /^\p{Zs}$/u;
  // Default-ignorable code points the categories miss: drawn as nothing.
  const IGNORABLE = [
    [0x034f, 0x034f], [0x115f, 0x1160], [0x17b4, 0x17b5], [0x180b, 0x180f],
    [0x3164, 0x3164], [0xfe00, 0xfe0f], [0xffa0, 0xffa0], [0xe0100, 0xe01ef],
  ];
  const NAMED = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  const MAX_MARKS = 4;

  const hex = (code, width) => code.toString(16).padStart(width, "0");

  function escapeChar(ch) {
    if (NAMED[ch]) return NAMED[ch];
    const code = ch.codePointAt(0);
    if (code <= 0xff) return "\\x" + hex(code, 2);
    if (code <= 0xffff) return "\\u" + hex(code, 4);
    return "\\U" + hex(code, 8);
  }

  function jsonEscapeChar(ch) {
    let code = ch.codePointAt(0);
    if (code <= 0xffff) return "\\u" + hex(code, 4);
    code -= 0x10000;
    return "\\u" + hex(0xd800 + (code >> 10), 4) + "\\u" + hex(0xdc00 + (code & 0x3ff), 4);
  }

  function shown(text, keep, spaces, escape) {
    let out = "";
    let base = false; // a combining mark may only sit on a letter or digit
    let marks = 0;
    for (const ch of text) {
      const code = ch.codePointAt(0);
      const mark = MARK.test(ch);
      let show = true;
      if (keep.includes(ch)) show = true;
      else if (HIDDEN.test(ch) || IGNORABLE.some(([lo, hi]) => lo <= code && code <= hi)) show = false;
      else if (mark) show = base && marks < MAX_MARKS;
      else if (!spaces && ((SPACE.test(ch) && ch !== " ") || ch === "\u2800")) show = false;
      if (!show) {
        out += escape(ch);
        base = false;
        marks = 0;
      } else if (mark) {
        out += ch;
        marks += 1;
      } else {
        out += ch;
        base = BASE.test(ch);
        marks = 0;
      }
    }
    return out;
  }

  // Single-line text (names, ids, arguments) shows line breaks as \n; multiline text
  // (reasoning, diffs) keeps them and tabs.
  function visible(text, multiline = false) {
    const value = text === null || text === undefined ? "" : String(text);
    return multiline ? shown(value, "\n\t", true, escapeChar) : shown(value, "", false, escapeChar);
  }

  // JSON that reads like the text it holds and hides nothing; still valid JSON for the
  // same value, so it can be edited and sent back.
  function visibleJson(value) {
    return shown(JSON.stringify(value, null, 2), "\n", false, jsonEscapeChar);
  }

  window.hitlText = Object.freeze({ visible, visibleJson });

  function setText(element, text, multiline = false) {
    element.textContent = visible(text, multiline);
  }

  // --- talking to the API -------------------------------------------------------------------

  const TOKEN_KEY = "hitl.token";
  const DETAIL_CONCURRENCY = 2;
  const DETAIL_TIMEOUT_MS = 15000;
  const state = {
    token: null,
    insecure: false,
    cards: new Map(),
    records: new Map(),
    waiting: [],
    fetching: 0,
    nextPage: null,
    stream: null,
    generation: 0,
  };
  const $ = (id) => document.getElementById(id);

  function headers(json) {
    const result = { Accept: "application/json" };
    if (state.token && !state.insecure) result.Authorization = "Bearer " + state.token;
    if (json) result["Content-Type"] = "application/json";
    return result;
  }

  async function api(path, { method = "GET", body, signal } = {}) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      return { status: 0, data: { detail: "the server did not answer: " + error.message } };
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401) signOut("The server refused the token; sign in again.");
    return { status: response.status, data };
  }

  function detailOf(result) {
    const detail = result.data && result.data.detail;
    return typeof detail === "string" ? detail : "HTTP " + result.status;
  }

  // --- signing in ---------------------------------------------------------------------------

  async function start() {
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token").value.trim());
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("more").addEventListener("click", () => load(state.nextPage));
    const health = await api("/healthz");
    state.insecure = Boolean(health.data && health.data.auth === "none");
    if (state.insecure) {
      $("insecure").hidden = false;
      $("token-label").textContent = "Your name";
      $("token").type = "text";
    }
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else $("signin").hidden = false;
    setInterval(tick, 1000);
  }

  async function signIn(token) {
    $("signin-error").textContent = "";
    if (!token) return;
    state.token = token;
    let name = token;
    if (!state.insecure) {
      const health = await api("/healthz");
      name = health.data && health.data.reviewer;
      if (!name) {
        signOut("That is not a reviewer's token.");
        return;
      }
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("signin").hidden = true;
    $("signout").hidden = false;
    setText($("who"), "signed in as " + name);
    connect();
  }

  function signOut(message) {
    state.generation += 1;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stream) state.stream.abort();
    state.stream = null;
    for (const card of state.cards.values()) card.remove();
    state.cards.clear();
    state.records.clear();
    $("signout").hidden = true;
    $("who").textContent = "";
    $("signin").hidden = false;
    setLive(false, "not connected");
    $("signin-error").textContent = message;
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
        signOut("The server refused the token; sign in again.");
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
      // From here on every change is reported: the listing is read now, so nothing falls
      // between it and the stream.
      setLive(true, "live");
      load(null);
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    const card = state.cards.get(event.id);
    if (type === "approval.pending" && !card && event.approval) {
      add(event.approval, true);
    } else if (type === "approval.updated" && card && event.approval) {
      summarize(card, event.approval);
      fetchDetails(event.id, true);
    } else if ((type === "approval.decided" || type === "approval.timed_out") && card) {
      // Expired (no decision in time) is told apart from a person's rejection.
      const expired = type === "approval.timed_out" || event.expired === true;
      const text = event.status
        ? ending({ ...event, expired })
        : (expired ? "expired: " : "") + "no longer pending: " + (event.reason || "");
      decided(card, text, "applied");
    }
  }

  // --- the listing --------------------------------------------------------------------------

  async function load(token) {
    const query = new URLSearchParams({ limit: "50" });
    if (token) query.set("page_token", token);
    const result = await api("/approvals?" + query.toString());
    if (result.status !== 200) {
      setText($("notice"), "Could not list approvals: " + detailOf(result));
      return;
    }
    $("notice").textContent = "";
    for (const item of result.data.items) if (!state.cards.has(item.id)) add(item, false);
    state.nextPage = result.data.next_page_token;
    $("more").hidden = !state.nextPage;
    $("empty").hidden = state.cards.size > 0;
  }

  function part(card, name) {
    return card.querySelector("." + name);
  }

  function add(item, live) {
    const card = $("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.approvalId = item.id;
    card.dataset.expiresAt = item.expires_at;
    if (item.action_digest) card.dataset.actionDigest = item.action_digest;
    if (live) card.classList.add("live-new");
    summarize(card, item);
    const list = $("list");
    if (live) list.prepend(card);
    else list.append(card);
    state.cards.set(item.id, card);
    $("empty").hidden = true;
    part(card, "approve").addEventListener("click", () => approve(card, item.id));
    part(card, "reject").addEventListener("click", () => reject(card, item.id));
    part(card, "edit").addEventListener("click", () => {
      part(card, "editor").hidden = false;
      part(card, "args").focus();
    });
    part(card, "cancel-edit").addEventListener("click", () => (part(card, "editor").hidden = true));
    part(card, "send-modify").addEventListener("click", () => modify(card, item.id));
    tickCard(card, Date.now());
    fetchDetails(item.id, live);
  }

  // What the memo's summary says: enough to decide on while the details load.
  function summarize(card, item) {
    setText(part(card, "tool"), item.tool);
    setText(part(card, "summary"), item.summary);
    const risk = part(card, "risk");
    setText(risk, "risk " + item.risk + "/100");
    risk.classList.toggle("high", item.risk >= 70);
    risk.classList.toggle("mid", item.risk >= 40 && item.risk < 70);
    setText(part(card, "approval-id"), item.id);
    setText(part(card, "run"), item.session_id);
    setText(part(card, "requested-by"), item.requested_by || "(not recorded)");
    setText(part(card, "votes"), item.votes + " of " + item.quorum);
    if (item.action_json && !state.records.has(item.id)) {
      setText(part(card, "action"), item.action_json.tool + " " + visibleJson(item.action_json.args), true);
    }
  }

  // Full records come one request each; a few at a time, live ones first, so a run
  // whose worker is gone (its query waits out a timeout) holds up no others for long.
  function fetchDetails(id, urgent) {
    if (urgent) state.waiting.unshift(id);
    else state.waiting.push(id);
    pump();
  }

  function pump() {
    while (state.fetching < DETAIL_CONCURRENCY && state.waiting.length) {
      const id = state.waiting.shift();
      const card = state.cards.get(id);
      if (!card || card.classList.contains("decided")) continue;
      state.fetching += 1;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), DETAIL_TIMEOUT_MS);
      api("/approvals/" + encodeURIComponent(id), { signal: controller.signal })
        .then((result) => {
          if (result.status === 200) show(card, result.data);
          else setText(part(card, "request-text"), "details unavailable: " + detailOf(result));
        })
        .finally(() => {
          clearTimeout(timer);
          state.fetching -= 1;
          pump();
        });
    }
  }

  function show(card, record) {
    state.records.set(record.id, record);
    card.dataset.expiresAt = record.expires_at;
    setText(part(card, "request-text"), record.context.original_request, true);
    setText(part(card, "reasoning-text"), record.context.reasoning || "(none given)", true);
    setText(part(card, "requested-by"), record.context.requested_by || "(not recorded)");
    setText(
      part(card, "action"),
      record.action_json.tool + "  (digest " + record.action_digest + ")\n" + visibleJson(record.action_json.args),
      true,
    );
    const modified = record.modified_action_json;
    part(card, "modified").hidden = !modified;
    if (modified) setText(part(card, "modified-action"), visibleJson(modified.args), true);
    const preview = record.modified_preview || record.preview;
    // The summary is one line: a line break in it must not pass for the details' first.
    part(card, "details").textContent =
      visible(preview.summary) + (preview.details ? "\n\n" + visible(preview.details, true) : "");
    const warnings = part(card, "warnings");
    warnings.replaceChildren(
      ...preview.warnings.map((warning) => {
        const item = document.createElement("li");
        setText(item, warning);
        return item;
      }),
    );
    setText(part(card, "votes"), record.votes.length + " of " + record.quorum + votersOf(record));
    const args = part(card, "args");
    if (part(card, "editor").hidden) args.value = visibleJson((modified || record.action_json).args);
    if (record.status !== "pending") decided(card, ending(record), "applied");
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

  // --- deciding -----------------------------------------------------------------------------

  // The decision names the action the reviewer saw: the proposed one, or, while a quorum
  // counts votes for a modification, that modification (the digest its votes carry). If
  // another reviewer changed it since, the run refuses the decision and the answer says so.
  function common(id) {
    const record = state.records.get(id);
    const body = {};
    let digest = null;
    if (!record) {
      const card = state.cards.get(id);
      digest = card ? card.dataset.actionDigest : null;
    } else if (!record.modified_action_json) {
      digest = record.action_digest;
    } else if (record.votes.length) {
      digest = record.votes[record.votes.length - 1].action_digest;
    }
    if (digest) body.action_digest = digest;
    if (state.insecure) body.reviewer = state.token;
    return body;
  }

  async function approve(card, id) {
    await send(card, id, "approve", common(id));
  }

  async function reject(card, id) {
    const reason = part(card, "reason").value.trim();
    if (!reason) {
      outcome(card, "Not sent: a reason is required (the agent reads it).", "error");
      part(card, "reason").focus();
      return;
    }
    await send(card, id, "reject", { ...common(id), reason });
  }

  async function modify(card, id) {
    let args;
    try {
      args = JSON.parse(part(card, "args").value);
    } catch (error) {
      outcome(card, "Not sent: the arguments are not valid JSON (" + error.message + ").", "error");
      return;
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      outcome(card, 'Not sent: the arguments must be a JSON object, e.g. {"paths": ["a.log"]}.', "error");
      return;
    }
    await send(card, id, "modify", { ...common(id), args });
  }

  async function send(card, id, kind, body) {
    busy(card, true);
    outcome(card, "Sending…", "");
    const result = await api("/approvals/" + encodeURIComponent(id) + "/" + kind, {
      method: "POST",
      body,
    });
    busy(card, false);
    const data = result.data || {};
    if (result.status === 200) {
      const record = data.record;
      if (record) show(card, record); // the record as the run has it now
      if (!record) decided(card, data.message, "applied");
      else if (record.status === "pending") outcome(card, data.message, "applied");
    } else if (result.status === 202) {
      outcome(card, data.message, "");
    } else {
      outcome(card, "Refused (" + result.status + "): " + detailOf(result), "refused");
      if (result.status === 409 && data.record && data.record.status !== "pending") {
        decided(card, "Refused: " + detailOf(result), "refused");
      }
    }
  }

  function busy(card, on) {
    for (const button of card.querySelectorAll("button")) button.disabled = on;
  }

  function outcome(card, text, kind) {
    const element = part(card, "outcome");
    setText(element, text);
    element.className = "outcome " + kind;
  }

  function decided(card, text, kind) {
    card.classList.add("decided");
    card.classList.remove("live-new");
    outcome(card, text, kind);
  }

  // --- the expiry countdown -----------------------------------------------------------------

  function tick() {
    const now = Date.now();
    for (const card of state.cards.values()) tickCard(card, now);
  }

  function tickCard(card, now) {
    const expires = Date.parse(card.dataset.expiresAt);
    const element = part(card, "expires");
    if (Number.isNaN(expires)) return;
    const left = Math.round((expires - now) / 1000);
    const at = new Date(expires).toISOString().slice(11, 19) + " UTC";
    if (card.classList.contains("decided")) element.textContent = at;
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
