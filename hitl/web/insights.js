// The Insights page: the figures of GET /insights as charts (Chart.js, vendored under
// /vendor/, its licence beside it) and tables. No inline script or style (the API's CSP
// forbids them), no markup from data: every text goes in through textContent, after the
// inbox's `visible` (common.js, the terminal's rules) has shown control, bidirectional and
// invisible characters as escapes (what the model or a reviewer wrote can't reorder or hide
// what is shown). The token is the inbox's: kept in this tab's sessionStorage, sent in a
// header, never in a URL.
"use strict";

(() => {
  const { visible, detailOf, TOKEN_KEY } = window.hitlWeb;
  const MAX_TEXT = 300;
  const COLORS = {
    approved: "#1d7a3a",
    modified: "#1f5fbf",
    rejected: "#b3261e",
    expired: "#9a6700",
    auto: "#8a94a3",
    pending: "#c8ced6",
  };
  const OUTCOMES = ["approved", "modified", "rejected", "expired", "auto", "pending"];
  const state = { token: null, insecure: false, charts: new Map(), generation: 0 };
  const $ = (id) => document.getElementById(id);

  // Untrusted text made visible, then cut to a size a chart label or a cell can hold.
  function shown(value) {
    const text = visible(value);
    return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT - 1) + "…" : text;
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : Math.round(100 * value) + "%";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // --- talking to the API -------------------------------------------------------------------

  const { api } = window.hitlWeb.client(state, signOut);

  // --- signing in ---------------------------------------------------------------------------

  async function start() {
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token").value.trim());
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("since").addEventListener("change", () => load());
    const health = await api("/healthz");
    state.insecure = Boolean(health.data && health.data.auth === "none");
    if (state.insecure) {
      $("token-label").textContent = "Your name";
      $("token").type = "text";
    }
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved || state.insecure) signIn(saved || "anonymous");
    else $("signin").hidden = false;
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
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    $("token").value = "";
    $("signin").hidden = true;
    $("signout").hidden = state.insecure;
    $("who").textContent = state.insecure ? "" : "signed in as " + shown(name);
    load();
  }

  function signOut(message) {
    state.generation += 1;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    for (const chart of state.charts.values()) chart.destroy();
    state.charts.clear();
    $("figures").hidden = true;
    $("problems").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    $("status").textContent = "";
    $("signin").hidden = false;
    $("signin-error").textContent = message;
  }

  // --- the figures --------------------------------------------------------------------------

  async function load() {
    const generation = ++state.generation;
    const since = $("since").value;
    $("status").textContent = "Reading approvals of the last " + since + "…";
    const result = await api("/insights?since=" + encodeURIComponent(since));
    if (generation !== state.generation) return;
    if (result.status !== 200 || !result.data) {
      if (result.status !== 401) $("status").textContent = "Could not load: " + shown(detailOf(result));
      return;
    }
    render(result.data);
    $("status").textContent = "";
    document.body.dataset.loaded = since;
  }

  function draw(id, config) {
    const old = state.charts.get(id);
    if (old) old.destroy();
    config.options = Object.assign(
      { animation: false, responsive: true, maintainAspectRatio: false },
      config.options || {},
    );
    state.charts.set(id, new window.Chart($(id), config));
  }

  function render(data) {
    $("figures").hidden = false;
    const overall = data.overall;
    const parts = [
      data.approvals + " approvals",
      overall.pending + " pending",
      "approved " + percent(overall.approve_rate),
      "modified " + percent(overall.modify_rate),
      "rejected " + percent(overall.reject_rate),
      "expired " + percent(overall.expiry_rate),
      "automatic " + percent(overall.auto_rate),
      "time to decide p50 " + duration(overall.decide_p50_seconds) +
        ", p90 " + duration(overall.decide_p90_seconds),
    ];
    if (data.withheld) parts.push(data.withheld + " of tools you may not read left out");
    $("overview").textContent = parts.join(" · ");

    const problems = $("problem-list");
    problems.replaceChildren();
    for (const problem of data.problems || []) {
      const item = document.createElement("li");
      item.textContent = shown(problem);
      problems.append(item);
    }
    $("problems").hidden = data.complete;

    const tools = data.tools || [];
    draw("outcomes-chart", {
      type: "bar",
      data: {
        labels: tools.map((t) => shown(t.name)),
        datasets: OUTCOMES.map((outcome) => ({
          label: outcome,
          data: tools.map((t) => t[outcome]),
          backgroundColor: COLORS[outcome],
          stack: "outcomes",
        })),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });

    const timed = tools.filter((t) => t.decide_p50_seconds !== null);
    const top = Math.max(0, ...timed.map((t) => t.decide_p90_seconds || 0));
    const [unit, size] = top >= 7200 ? ["hours", 3600] : top >= 120 ? ["minutes", 60] : ["seconds", 1];
    draw("wait-chart", {
      type: "bar",
      data: {
        labels: timed.map((t) => shown(t.name)),
        datasets: [
          { label: "p50", data: timed.map((t) => t.decide_p50_seconds / size), backgroundColor: "#1f5fbf" },
          { label: "p90", data: timed.map((t) => t.decide_p90_seconds / size), backgroundColor: "#9ab8e6" },
        ],
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: unit } } } },
    });

    const hourly = data.bucket === "hour";
    $("load-title").textContent = "Requests per " + data.bucket;
    draw("load-chart", {
      type: "bar",
      data: {
        labels: data.load.map((b) => (hourly ? b.start.slice(5, 13) + ":00" : b.start.slice(0, 10))),
        datasets: [{ label: "requests", data: data.load.map((b) => b.requests), backgroundColor: "#5b6572" }],
      },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });

    fill("reviewers", data.reviewers, (r) => [
      [r.name],
      [r.requests, "num"],
      [percent(r.approve_rate), "num"],
      [percent(r.modify_rate), "num"],
      [percent(r.reject_rate), "num"],
      [duration(r.decide_p50_seconds), "num"],
      [duration(r.decide_p90_seconds), "num"],
    ]);
    $("candidates-rule").textContent =
      "Approved unchanged at least " + percent(data.min_rate) + " of at least " +
      data.min_decisions + " times decided by people" +
      (data.candidates_not_shown ? "; " + data.candidates_not_shown + " more not shown" : "") + ".";
    fill("candidates", data.candidates, (c) => [
      [c.kind],
      [c.tool, "code"],
      [c.scope_key || c.example || "(every call)", "code what"],
      [c.approved + " of " + c.settled, "num"],
      [percent(c.rate), "num"],
      [c.max_risk, "num"],
      [c.suggestion],
    ]);
    const shadow = data.shadow;
    $("shadow-summary").textContent = shadow.compared || shadow.asked
      ? "Agreed with people " + shadow.agreed + " of " + shadow.compared + " times (" +
        percent(shadow.rate) + "); " + shadow.asked + " passed to a person; would have approved " +
        "what people did not: " + shadow.approved_not_approved + "; denied what people approved: " +
        shadow.denied_approved + "."
      : "No shadow verdicts in this range.";
    fill("disagreements", shadow.disagreements, (d) => [
      [d.approval_id, "code"],
      [d.tool, "code"],
      [d.rule],
      [d.verdict],
      [d.outcome],
      [d.reviewer || ""],
      [d.reason || ""],
    ], (d) => (d.risky ? "risky" : ""));
  }

  function fill(id, items, cells, rowClass) {
    const table = $(id);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const item of items || []) {
      const row = document.createElement("tr");
      if (rowClass && rowClass(item)) row.className = rowClass(item);
      for (const [value, kind] of cells(item)) {
        const cell = document.createElement("td");
        if (kind) cell.className = kind;
        cell.textContent = shown(value);
        row.append(cell);
      }
      body.append(row);
    }
    table.hidden = !body.rows.length;
    const empty = table.parentElement.querySelector(".empty");
    if (empty) empty.hidden = Boolean(body.rows.length);
  }

  start();
})();
