// llm-gateway UI: plain JS, no build step. The key (when the gateway requires one) is
// kept in sessionStorage only and sent as a Bearer token to /v1 and /api calls.
"use strict";
const $ = (s) => document.querySelector(s);
const keyStore = {
  get: () => sessionStorage.getItem("gwkey") || "",
  set: (k) => sessionStorage.setItem("gwkey", k),
  forget: () => sessionStorage.removeItem("gwkey"),
};

class KeyRefused extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, opts.headers || {});
  const key = keyStore.get();
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  const body = await r.json().catch(() => ({}));
  const message = (body.error && body.error.message) || r.statusText || "HTTP " + r.status;
  if (r.status === 401) {
    // a refused key is dropped at once: it is not sent again every 10 s
    if (key) keyStore.forget();
    showKeyForm(key ? "The gateway refused that key: " + message : "This gateway needs a key.");
    throw new KeyRefused(message);
  }
  if (!r.ok) throw new Error(message);
  return body;
}

function showKeyForm(message) {
  $("#keyform").hidden = false;
  $("#keymsg").textContent = message;
  $("#forget").hidden = true;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

// USD amounts as decimals (never 5.25e-7), up to the ledger's 10 places
function usd(v) {
  if (v === null || v === undefined) return null;
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return n.toFixed(10).replace(/0+$/, "").replace(/\.$/, "");
}

// times from the API are UTC ISO strings: shown to the second, marked UTC
function utc(t) { return t ? String(t).replace("T", " ").replace(/\.\d+Z$|Z$/, "") + " UTC" : null; }

function fill(sel, rows, render) {
  const tb = $(sel + " tbody");
  tb.replaceChildren();
  for (const r of rows) { const tr = document.createElement("tr"); render(tr, r); tb.appendChild(tr); }
}

// each panel says when it could not be loaded, and shows no stale rows meanwhile
function panelError(sel, message) {
  const p = $(sel + "-msg");
  if (p) { p.textContent = message || ""; p.hidden = !message; }
  if (message) { const tb = $(sel + " tbody"); if (tb) tb.replaceChildren(); }
}

async function loadStatus() {
  const st = await api("/api/status");
  const provs = st.providers || {};
  const names = Object.keys(provs);
  const sim = st.mock_only;
  $("#mode").textContent = sim ? "simulated: mock provider only" : "live";
  $("#mode").className = "badge" + (sim ? " sim" : "");
  fill("#providers", names.map((n) => Object.assign({ name: n }, provs[n])), (tr, p) => {
    cell(tr, p.name);
    cell(tr, p.configured ? "yes" : "no", p.configured ? "yes" : "no");
    cell(tr, p.available ? "yes" : "no", p.available ? "yes" : "no");
    cell(tr, p.circuit); cell(tr, p.requests); cell(tr, p.errors); cell(tr, p.rate_limited);
    cell(tr, p.latency_ms_p50); cell(tr, p.last_error, "err");
  });
  const l = st.ledger || {};
  const el = $("#ledger");
  if (!l.backend) { el.textContent = "spend ledger: off (no spend or request history is kept)"; el.className = "note"; }
  else if (l.failing) {
    el.textContent = "spend ledger (" + l.backend + ") is failing: " + (l.last_error || "unknown error") +
      ". Requests are still served; " + (l.queued || 0) + " rows wait to be written.";
    el.className = "note bad";
  } else { el.textContent = "spend ledger: " + l.backend; el.className = "note"; }
}

async function loadModels() {
  const m = await api("/v1/models");
  const sel = $("#model");
  const keep = sel.value;
  sel.replaceChildren(new Option("auto", "auto"));
  for (const x of m.data) sel.appendChild(new Option(x.id + " (" + x.owned_by + ")", x.id));
  sel.value = keep || "auto";
}

function spendCell(tr, g) {
  // a group with unpriced requests has a spend that is only a lower bound
  const s = usd(g.spend_usd);
  cell(tr, g.unpriced_requests ? "≥ " + s + " (" + g.unpriced_requests + " unpriced)" : s);
}

async function loadUsage() {
  const today = new Date().toISOString().slice(0, 10);  // the ledger's days are UTC days
  for (const [sel, key] of [["#usage", "model"], ["#tenants", "tenant"]]) {
    try {
      const u = await api("/v1/gateway/usage?from=" + today + "&group_by=" + key);
      const rows = (u.groups || []).concat(u.totals ? [Object.assign({ [key]: "total" }, u.totals)] : []);
      fill(sel, rows, (tr, r) => {
        cell(tr, r[key]); cell(tr, r.requests); cell(tr, r.errors); cell(tr, r.tokens && r.tokens.total);
        spendCell(tr, r);
      });
      panelError(sel, "");
    } catch (e) { if (!(e instanceof KeyRefused)) panelError(sel, "Could not load: " + e.message); }
  }
}

async function loadRequests() {
  const r = await api("/v1/gateway/requests?limit=25");
  fill("#requests", r.data || [], (tr, x) => {
    cell(tr, utc(x.time)); cell(tr, x.request_id); cell(tr, x.tenant); cell(tr, x.provider);
    cell(tr, x.model); cell(tr, x.status); cell(tr, x.latency_ms); cell(tr, x.attempts); cell(tr, x.cache);
    cell(tr, x.tokens && x.tokens.total); cell(tr, usd(x.cost_usd));
  });
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;  // a slow gateway: never pile refreshes up
  refreshing = true;
  try {
    for (const [sel, f] of [["#providers", loadStatus], ["#model", loadModels], ["#usage", loadUsage],
                            ["#requests", loadRequests]]) {
      try { await f(); if (sel !== "#usage") panelError(sel, ""); }
      catch (e) {
        if (e instanceof KeyRefused) return;
        panelError(sel, "Could not load: " + e.message);
        if (sel === "#providers") $("#ledger").textContent = "";
      }
    }
    $("#forget").hidden = !keyStore.get();
  } finally { refreshing = false; }
}

$("#keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  keyStore.set($("#key").value.trim()); $("#key").value = ""; $("#keyform").hidden = true; $("#keymsg").textContent = "";
  refresh();
});
$("#forget").addEventListener("click", () => { keyStore.forget(); showKeyForm("Key forgotten. Enter another key."); });
$("#refresh").addEventListener("click", refresh);
$("#ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("#answer");
  const send = $("#send");
  send.disabled = true;
  out.textContent = "…";
  const body = { query: $("#query").value, model: $("#model").value };
  if ($("#task").value) body.task_type = $("#task").value;
  try {
    const r = await api("/api/query", { method: "POST", body: JSON.stringify(body) });
    out.textContent = r.response + "\n\n— " + r.provider + "/" + r.model + ", " + r.response_time_ms +
      " ms in all, " + r.num_tokens + " tokens" + (r.cached ? " (the original answer's; served from the cache)" : "") +
      (r.token_usage.estimated ? " (estimated)" : "");
  } catch (err) { out.textContent = "Error: " + err.message; }
  finally { send.disabled = false; }
  refresh();
});
refresh();
setInterval(refresh, 10000);
