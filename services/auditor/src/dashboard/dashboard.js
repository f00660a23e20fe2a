// Choreo's dashboard: reads the auditor's JSON API with the bearer token and redraws every few
// seconds. Data is only ever put into the page as text (never as HTML), so a file key cannot inject
// a script that would read the token.
"use strict";

const REFRESH_MS = 5000;
const PAGE_SIZE = 25;
const TOKEN_KEY = "choreo.token";

// What the user is looking at: the file search (with the cursor of the page shown) and the file
// whose timeline is open. Redraws keep them.
const view = { filters: {}, after: null, next: null, file: null };

const $ = (id) => document.getElementById(id);

// The token arrives once in the URL fragment (never sent to the server), moves to this tab's
// sessionStorage, and leaves the address bar.
function takeTokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class Unauthorized extends Error {}

// `payload`, when given, is sent as the JSON body.
async function api(path, method = "GET", payload = undefined) {
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "") };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch("/api" + path, {
    method,
    headers,
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  if (res.status === 401) throw new Unauthorized();
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.status + " " + res.statusText);
  return body;
}

// A table cell with `text`; numbers are right-aligned and zeros dimmed.
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (typeof text === "number") td.className = text === 0 ? "n zero" : "n";
  if (cls) td.classList.add(cls);
  return td;
}

// Replaces the rows of `tbody`, unless they show the same as before: a refresh then leaves the
// page alone, keeping the user's selection and the element under the pointer.
function fillRows(tbody, rows) {
  const sig = JSON.stringify(rows.map((cells) => cells.map((c) => (c instanceof Node ? c.textContent : c))));
  if (tbody.dataset.sig === sig) return;
  tbody.dataset.sig = sig;
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells.map((c) => (c instanceof Node ? wrap(c) : cell(c))));
      return tr;
    }),
  );
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.append(node);
  return td;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");

async function drawOverview() {
  const d = await api("/datasets");
  const head = document.createElement("tr");
  for (const h of ["dataset", ...d.states, "total", "done/min", "done/hour"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  $("datasets").tHead.replaceChildren(head);
  fillRows(
    $("datasets").tBodies[0],
    d.datasets.map((ds) => [
      ds.name,
      ...d.states.map((s) => ds.counts[s]),
      ds.total,
      ds.throughput.last_minute,
      ds.throughput.last_hour,
    ]),
  );
  $("throughput-note").textContent =
    "done = files that reached INGESTED, QUARANTINED or FAILED" +
    (d.throughput_partial ? " (the hour's figure is a lower bound)" : "");
  fillOptions($("f-dataset"), d.datasets.map((ds) => ds.name));
  fillOptions($("f-state"), d.states);
}

// Adds the options a select lacks, keeping the user's choice.
function fillOptions(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of values) {
    if (!have.has(v)) select.append(new Option(v, v));
  }
}

async function drawQueues() {
  const qs = await api("/queues");
  fillRows(
    $("queues").tBodies[0],
    qs.map((q) => {
      const dead = cell(q.dlq.depth);
      if (q.dlq.depth > 0) dead.classList.add("alert");
      return [q.stage, q.queue, q.visible, q.in_flight, q.delayed, dead];
    }),
  );
}

async function drawFiles() {
  const p = new URLSearchParams({ ...view.filters, limit: PAGE_SIZE });
  if (view.after) p.set("after", view.after);
  const page = await api("/files?" + p);
  view.next = page.next;
  $("next-page").disabled = !page.next;
  $("first-page").disabled = !view.after;
  fillRows(
    $("files").tBodies[0],
    page.items.map((f) => {
      const a = document.createElement("a");
      a.href = "#";
      a.className = "file-link";
      a.dataset.id = f.id;
      a.textContent = f.id;
      a.addEventListener("click", (e) => {
        e.preventDefault();
        view.file = f.id;
        drawTimeline().catch(showError);
      });
      return [a, f.dataset, f.key, f.state, f.size, time(f.updated_at)];
    }),
  );
}

async function drawTimeline() {
  if (!view.file) return;
  const r = await api("/files/" + encodeURIComponent(view.file));
  $("timeline").hidden = false;
  $("timeline-id").textContent = r.id;
  $("timeline-key").textContent = r.bucket + "/" + r.key;
  $("timeline-dataset").textContent = r.dataset;
  $("timeline-state").textContent = r.state;
  // The trace id, linked to the trace viewer when one is configured (operations.trace_url).
  const trace = $("timeline-trace");
  trace.textContent = "";
  if (r.trace_id && r.trace_url) {
    const a = document.createElement("a");
    a.href = r.trace_url;
    a.target = "_blank";
    a.rel = "noopener";
    a.textContent = r.trace_id;
    trace.appendChild(a);
  } else {
    trace.textContent = r.trace_id || "(none)";
  }
  $("timeline-reason").textContent = r.reason || "";
  fillRows(
    $("timeline-steps").tBodies[0],
    r.history.map((h) => [
      time(h.at),
      h.stage,
      (h.from || "∅") + " → " + h.to,
      h.reason || "",
    ]),
  );
}

async function drawDeadLetters() {
  const dlqs = await api("/dlq");
  fillRows(
    $("dlq").tBodies[0],
    dlqs.map((q) => {
      const actions = document.createElement("span");
      actions.append(
        button("Peek", () => dlqAction("/dlq/" + q.stage + "?n=10", "GET")),
        button("Redrive", () => {
          if (confirm("Move every dead letter of " + q.stage + " back to " + q.queue + "?")) {
            dlqAction("/dlq/" + q.stage + "/redrive", "POST", { all: true });
          }
        }),
      );
      return [q.stage, q.dlq, q.depth, actions];
    }),
  );
}

async function dlqAction(path, method, payload) {
  const out = $("dlq-output");
  try {
    out.textContent = JSON.stringify(await api(path, method, payload), null, 2);
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken("token refused");
    out.textContent = e.message;
  }
}

async function drawFailures() {
  const fs = await api("/failures?n=10");
  fillRows(
    $("failures").tBodies[0],
    fs.map((f) => [time(f.at), f.event_type, f.dataset, f.files.join(" "), f.reason]),
  );
}

function showError(e) {
  if (e instanceof Unauthorized) return askForToken("token refused");
  $("status").textContent = "error: " + e.message;
  $("status").className = "error";
}

async function refresh() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return askForToken("");
  try {
    await Promise.all([drawOverview(), drawQueues(), drawFiles(), drawDeadLetters(), drawFailures()]);
    await drawTimeline();
    $("main").hidden = false;
    $("login").hidden = true;
    $("status").textContent = "updated " + new Date().toLocaleTimeString() + ", every " + REFRESH_MS / 1000 + " s";
    $("status").className = "muted";
  } catch (e) {
    showError(e);
  }
}

function askForToken(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("status").textContent = "";
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    refresh();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken("");
  });
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    view.filters = {};
    for (const [k, id] of [["dataset", "f-dataset"], ["state", "f-state"], ["key", "f-key"]]) {
      if ($(id).value) view.filters[k] = $(id).value;
    }
    view.after = null;
    drawFiles().catch(showError);
  });
  $("next-page").addEventListener("click", () => {
    view.after = view.next;
    drawFiles().catch(showError);
  });
  $("first-page").addEventListener("click", () => {
    view.after = null;
    drawFiles().catch(showError);
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
