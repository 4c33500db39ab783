// llm-gateway UI: plain JS, no build step. The key (when the gateway requires one) is
// kept in sessionStorage only and sent as a Bearer token to /v1 and /api calls.
"use strict";
const $ = (s) => document.querySelector(s);
const keyStore = { get: () => sessionStorage.getItem("gwkey") || "", set: (k) => sessionStorage.setItem("gwkey", k) };

async function api(path, opts = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, opts.headers || {});
  const key = keyStore.get();
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) { $("#keyform").hidden = false; throw new Error("this gateway needs a key"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function fill(sel, rows, render) {
  const tb = $(sel + " tbody");
  tb.replaceChildren();
  for (const r of rows) { const tr = document.createElement("tr"); render(tr, r); tb.appendChild(tr); }
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
}

async function loadModels() {
  const m = await api("/v1/models");
  const sel = $("#model");
  const keep = sel.value;
  sel.replaceChildren(new Option("auto", "auto"));
  for (const x of m.data) sel.appendChild(new Option(x.id + " (" + x.owned_by + ")", x.id));
  sel.value = keep || "auto";
}

async function loadUsage() {
  const today = new Date().toISOString().slice(0, 10);
  const u = await api("/v1/gateway/usage?from=" + today + "&group_by=model");
  fill("#usage", u.groups || [], (tr, r) => {
    cell(tr, r.model); cell(tr, r.requests); cell(tr, r.tokens && r.tokens.total); cell(tr, r.spend_usd);
  });
}

async function loadRequests() {
  const r = await api("/v1/gateway/requests?limit=25");
  fill("#requests", r.data || [], (tr, x) => {
    cell(tr, x.time); cell(tr, x.request_id); cell(tr, x.tenant); cell(tr, x.provider);
    cell(tr, x.model); cell(tr, x.status); cell(tr, x.latency_ms); cell(tr, x.attempts); cell(tr, x.cache);
    cell(tr, x.tokens && x.tokens.total); cell(tr, x.cost_usd);
  });
}

async function refresh() {
  for (const f of [loadStatus, loadModels, loadUsage, loadRequests]) {
    try { await f(); } catch (e) { console.warn(f.name, e.message); }
  }
}

$("#keyform").addEventListener("submit", (e) => {
  e.preventDefault(); keyStore.set($("#key").value.trim()); $("#key").value = ""; $("#keyform").hidden = true; refresh();
});
$("#refresh").addEventListener("click", refresh);
$("#ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("#answer");
  out.textContent = "…";
  const body = { query: $("#query").value, model: $("#model").value };
  if ($("#task").value) body.task_type = $("#task").value;
  try {
    const r = await api("/api/query", { method: "POST", body: JSON.stringify(body) });
    out.textContent = r.response + "\n\n— " + r.provider + "/" + r.model + ", " + r.response_time_ms + " ms, " +
      r.num_tokens + " tokens" + (r.cached ? ", cached" : "") + (r.token_usage.estimated ? " (estimated)" : "");
  } catch (err) { out.textContent = "Error: " + err.message; }
  refresh();
});
refresh();
setInterval(refresh, 10000);
