// What the web inbox and the Insights page share, in one place, loaded by both before their
// own script (no modules, no build step; the API's CSP allows only scripts from 'self'):
// the escaping that makes untrusted text visible, and the one way of talking to the API.
//
// Everything an approval carries was written by the model, the workspace or a decision, so
// it is untrusted: a page puts it in only through textContent, after `visible` has made
// every character that could hide or reorder text show as an escape, with the same rules
// as hitl.text.visible on a terminal. The token stays in this tab's sessionStorage (under
// TOKEN_KEY) and goes in the Authorization header, never in a URL.
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

  // --- talking to the API -------------------------------------------------------------------

  const TOKEN_KEY = "hitl.token";
  const REFUSED = "The server refused the token; sign in again.";

  // A page's way to the API: `session` holds its token and whether the server runs without
  // authentication (read on every call), `signOut(message)` is called when the server
  // refuses the token. `api` answers {status, data}, status 0 when the server did not answer.
  function client(session, signOut) {
    function headers(json) {
      const result = { Accept: "application/json" };
      if (session.token && !session.insecure) result.Authorization = "Bearer " + session.token;
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
      if (response.status === 401) signOut(REFUSED);
      return { status: response.status, data };
    }

    return { api, headers };
  }

  function detailOf(result) {
    const detail = result.data && result.data.detail;
    return typeof detail === "string" ? detail : "HTTP " + result.status;
  }

  window.hitlWeb = Object.freeze({ visible, visibleJson, client, detailOf, TOKEN_KEY, REFUSED });
})();
