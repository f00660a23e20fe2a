// Choreo's dashboard: reads the auditor's JSON API with the bearer token and redraws the view
// shown every few seconds. Data is only ever put into the page as text (never as HTML), so a file
// key cannot inject a script that would read the token.
//
// The address says what is shown (`#view=files&state=FAILED&pages=...`), so a refresh, a bookmark
// or a link to a colleague opens the same view, filters and page. Each view is one entry of
// VIEWS below, with its section in index.html: adding a view is adding both.
"use strict";

const REFRESH_MS = 5000;
// Files a page, unless the address says otherwise (`size=`).
const PAGE_SIZE = 25;
const TOKEN_KEY = "choreo.token";
const TERMINAL = ["INGESTED", "QUARANTINED", "FAILED"];
// States a file reaches when something went wrong: their step is drawn red.
const FAILED_STATES = ["INVALID", "QUARANTINED", "FAILED"];

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// The address: the view and its parameters, in the URL fragment.

function route() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (!p.get("view")) p.set("view", "flow");
  return p;
}

// The fragment for `params` (an object or URLSearchParams), empty values left out.
function fragment(params) {
  const p = new URLSearchParams();
  for (const [k, v] of params instanceof URLSearchParams ? params : Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") p.set(k, v);
  }
  return "#" + p;
}

// Goes to the current route with `changes` applied; the dataset choice carries across views.
function go(changes) {
  const p = route();
  for (const [k, v] of Object.entries(changes)) p.set(k, v === null || v === undefined ? "" : v);
  location.hash = fragment(p);
}

// A link to another view, keeping the dataset chosen.
function link(text, params, cls) {
  const a = document.createElement("a");
  const dataset = route().get("dataset");
  a.href = fragment({ ...params, dataset });
  a.textContent = text;
  if (cls) a.className = cls;
  return a;
}

const fileLink = (id) => {
  const a = link(id, { view: "file", id }, "file-link");
  a.dataset.id = id;
  return a;
};
const batchLink = (id) => link(id, { view: "batch", id }, "batch-link");

// The token arrives once in the URL fragment (never sent to the server), moves to this tab's
// sessionStorage, and leaves the address bar; the rest of the fragment stays.
function takeTokenFromFragment() {
  const p = new URLSearchParams(location.hash.slice(1));
  const token = p.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    p.delete("token");
    history.replaceState(null, "", location.pathname + location.search + fragment(p));
  }
}

// ---------------------------------------------------------------------------------------------
// The API and the page's small tools.

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

// `?dataset=` for the dataset chosen, or nothing.
function datasetQuery(prefix = "?") {
  const d = route().get("dataset");
  return d ? prefix + "dataset=" + encodeURIComponent(d) : "";
}

// An element with attributes and text.
function el(tag, attrs = {}, text = undefined) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text = undefined) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
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

// Replaces the children of `parent` with `nodes`, unless `sig` (what they show) is unchanged.
function replaceIfChanged(parent, sig, build) {
  const s = JSON.stringify(sig);
  if (parent.dataset.sig === s) return;
  parent.dataset.sig = s;
  parent.replaceChildren(...build());
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

// Adds the options a select lacks, keeping the user's choice.
function fillOptions(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of values) {
    if (!have.has(v)) select.append(new Option(v, v));
  }
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const clock = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

// A duration in the unit that reads best.
function duration(ms) {
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s";
  if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
  return (ms / 3600000).toFixed(1) + " h";
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < units.length - 1);
  return n.toFixed(1) + " " + units[i];
}

// Bars along one time axis, one row each: `rows` are {label, sub, start, end, failed, note, open}
// with times in ms; `open` marks a row still going (drawn to now).
function drawBars(container, rows) {
  const t0 = Math.min(...rows.map((r) => r.start));
  const t1 = Math.max(...rows.map((r) => r.end));
  const span = Math.max(t1 - t0, 1);
  replaceIfChanged(container, rows, () =>
    rows.map((r) => {
      const row = el("div", { class: "bar-row" + (r.failed ? " failed" : "") });
      row.dataset.label = r.label;
      const label = el("span", { class: "bar-label" }, r.label);
      if (r.sub) label.append(" ", el("small", {}, r.sub));
      const track = el("span", { class: "bar-track" });
      const bar = el("span", { class: "bar" + (r.open ? " open" : "") });
      // Positions through the CSSOM: the page's CSP allows no inline style attributes.
      bar.style.left = ((r.start - t0) / span) * 100 + "%";
      bar.style.width = ((r.end - r.start) / span) * 100 + "%";
      track.append(bar);
      const took = r.end > r.start || r.open ? duration(r.end - r.start) + (r.open ? " so far" : "") : "end";
      row.append(label, track, el("span", { class: "bar-dur" }, took));
      if (r.note) row.append(el("span", { class: "bar-note" }, r.note));
      return row;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// The flow: the choreography as a graph.

// Where each node is drawn (centre, and width when not NODE_W), in the graph's own units.
const FLOW_LAYOUT = {
  input: [55, 200, 100],
  ingestor: [255, 200],
  validator: [475, 200],
  crawler: [715, 95],
  transformer: [955, 95],
  quarantine: [715, 305],
  auditor: [255, 330],
  INGESTED: [1175, 45, 130],
  FAILED: [1175, 200, 130],
  QUARANTINED: [1175, 330, 130],
};
const NODE_W = 150;
const NODE_H = 74;

// The points an edge passes through, where it may not go straight.
function edgePoints(from, to) {
  const [fx, fy, fw = NODE_W] = FLOW_LAYOUT[from];
  const [tx, ty, tw = NODE_W] = FLOW_LAYOUT[to];
  if (from === "crawler" && to === "FAILED") {
    return [[fx, fy + NODE_H / 2], [fx, 200], [tx - tw / 2, 200]];
  }
  return [[fx + fw / 2, fy], [tx - tw / 2, ty]];
}

function drawFlowGraph(flow) {
  const box = svg("svg", { viewBox: "0 0 1250 380", role: "img", "aria-label": "the pipeline as a graph" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.append(marker);
  box.append(defs);
  for (const e of flow.edges) {
    const pts = edgePoints(e.from, e.to);
    const g = svg("g", { class: "edge" + (e.backlog > 0 ? " busy" : ""), "data-edge": e.from + ">" + e.to });
    g.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), "marker-end": "url(#arrow)" }));
    // The label on the edge's last stretch: what waits above the line, the rate below it.
    const [a, b] = [pts[pts.length - 2], pts[pts.length - 1]];
    const [mx, my] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    if (e.backlog !== null && e.backlog !== undefined) {
      g.append(svg("text", { x: mx, y: my - 7, class: "edge-label backlog", "text-anchor": "middle" }, e.backlog + " waiting"));
    }
    g.append(svg("text", { x: mx, y: my + 17, class: "edge-label rate", "text-anchor": "middle" }, e.per_minute.toFixed(1) + "/min"));
    box.append(g);
  }
  for (const n of flow.nodes) {
    const [x, y, w = NODE_W] = FLOW_LAYOUT[n.id] || [0, 0];
    const terminal = TERMINAL.includes(n.id);
    const cls = ["node", terminal ? "terminal " + n.id.toLowerCase() : "stage", n.dlq > 0 ? "dead" : ""].join(" ");
    const g = svg("g", { class: cls, "data-node": n.id });
    g.append(svg("rect", { x: x - w / 2, y: y - NODE_H / 2, width: w, height: NODE_H, rx: 8 }));
    const title = n.id === "input" ? "input bucket" : n.id;
    g.append(svg("text", { x, y: y - 14, class: "node-title", "text-anchor": "middle" }, title));
    if (terminal) {
      g.append(svg("text", { x, y: y + 18, class: "count", "text-anchor": "middle" }, n.files));
    } else if (n.stage) {
      const work = n.id === "auditor" ? "every event" : n.files_waiting + " waiting";
      g.append(svg("text", { x, y: y + 6, class: "node-line", "text-anchor": "middle" }, n.in_flight + " in flight · " + work));
      const dead = svg("text", { x, y: y + 25, class: "node-line dlq" + (n.dlq > 0 ? " alert" : ""), "text-anchor": "middle" }, "DLQ " + n.dlq);
      g.append(dead);
    }
    box.append(g);
  }
  return box;
}

// ---------------------------------------------------------------------------------------------
// Charts, in plain SVG.

const SERIES_CLASS = { INGESTED: "ingested", QUARANTINED: "quarantined", FAILED: "failed" };

function drawTerminalChart(s) {
  const [W, H, left, top, bottom] = [720, 220, 44, 10, 190];
  const n = s.minutes.length;
  const totals = s.minutes.map((_, i) => TERMINAL.reduce((sum, k) => sum + s.series[k][i], 0));
  const max = Math.max(1, ...totals);
  const step = (W - left - 6) / n;
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "files done per minute" });
  box.append(svg("line", { x1: left, y1: bottom, x2: W - 6, y2: bottom, class: "axis" }));
  box.append(svg("text", { x: left - 6, y: top + 10, class: "tick", "text-anchor": "end" }, max));
  box.append(svg("text", { x: left - 6, y: bottom, class: "tick", "text-anchor": "end" }, 0));
  box.append(svg("text", { x: left, y: H - 8, class: "tick" }, clock(new Date(s.minutes[0]))));
  box.append(svg("text", { x: W - 6, y: H - 8, class: "tick", "text-anchor": "end" }, "now"));
  for (let i = 0; i < n; i++) {
    let y = bottom;
    for (const k of TERMINAL) {
      const v = s.series[k][i];
      if (!v) continue;
      const h = ((bottom - top) * v) / max;
      y -= h;
      const r = svg("rect", { x: left + i * step + 0.5, y, width: Math.max(step - 1, 1), height: h, class: "bar " + SERIES_CLASS[k] });
      r.append(svg("title", {}, clock(new Date(s.minutes[i])) + " " + k + ": " + v));
      box.append(r);
    }
  }
  return box;
}

function drawLatencyChart(stages) {
  const rowH = 34;
  const [W, left] = [720, 110];
  const H = Math.max(stages.length, 1) * rowH + 10;
  const max = Math.max(1, ...stages.map((s) => s.p95_ms));
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "time per stage" });
  stages.forEach((s, i) => {
    const y = 6 + i * rowH;
    const scale = (ms) => ((W - left - 230) * ms) / max;
    box.append(svg("text", { x: left - 8, y: y + 16, class: "tick", "text-anchor": "end" }, s.stage));
    box.append(svg("rect", { x: left, y, width: Math.max(scale(s.p95_ms), 1), height: 22, class: "bar p95" }));
    box.append(svg("rect", { x: left, y: y + 5, width: Math.max(scale(s.p50_ms), 1), height: 12, class: "bar p50" }));
    const label = "p50 " + duration(s.p50_ms) + " · p95 " + duration(s.p95_ms) + " · " + s.files + " files";
    box.append(svg("text", { x: left + scale(s.p95_ms) + 8, y: y + 16, class: "tick" }, label));
  });
  return box;
}

// ---------------------------------------------------------------------------------------------
// The views. Each draws its section from the API; `draw` is called on every refresh.

const VIEWS = {
  flow: {
    title: "Flow",
    async draw() {
      // One request: the graph, the datasets' overview and the queues come from the same reads.
      const flow = await api("/flow" + datasetQuery());
      const g = $("flow-graph");
      replaceIfChanged(g, flow.nodes.concat(flow.edges), () => [drawFlowGraph(flow)]);
      $("flow-note").textContent =
        (flow.shared_queues ? "Queue depths are every dataset's; files and rates are " + flow.dataset + "'s. " : "") +
        (flow.rates_partial ? "Rates are a lower bound: more events happened than were read." : "");
      drawDatasets(flow.overview);
      fillDatasets(flow.overview);
      drawQueues(flow.queues);
    },
  },

  charts: {
    title: "Charts",
    // Time per stage reads up to 1,500 file histories: every 30 s is enough for a chart of hours.
    every: 30000,
    async draw(r) {
      const minutes = r.get("minutes") || "60";
      $("chart-minutes").value = minutes;
      const q = "?minutes=" + minutes + datasetQuery("&");
      const [series, latency] = await Promise.all([api("/charts/terminal" + q), api("/charts/latency" + q)]);
      replaceIfChanged($("chart-terminal"), series, () => [drawTerminalChart(series), legend()]);
      $("chart-terminal-note").textContent = series.partial
        ? "The older minutes may be short: more events happened than were read."
        : "";
      replaceIfChanged($("chart-latency"), latency, () =>
        latency.stages.length ? [drawLatencyChart(latency.stages)] : [el("p", { class: "muted" }, "No step taken in the window.")],
      );
      $("chart-latency-note").textContent =
        "From the histories of " + latency.files_read + " files in terminal states: the time from the step before a stage to its last step, queue wait included.";
    },
  },

  files: {
    title: "Files",
    async draw(r) {
      for (const [k, id] of [["state", "f-state"], ["within", "f-within"], ["key", "f-key"]]) {
        if (document.activeElement !== $(id)) $(id).value = r.get(k) || "";
      }
      const pages = (r.get("pages") || "").split(",").filter(Boolean);
      const size = Math.min(Math.max(Number(r.get("size")) || PAGE_SIZE, 1), 500);
      const p = new URLSearchParams({ order: "recent", limit: size });
      for (const k of ["dataset", "state", "key"]) if (r.get(k)) p.set(k, r.get(k));
      if (r.get("within")) p.set("since", new Date(Date.now() - r.get("within") * 60000).toISOString());
      if (pages.length) p.set("before", pages[pages.length - 1]);
      const page = await api("/files?" + p);
      $("files").dataset.next = page.next || "";
      $("next-page").disabled = !page.next;
      $("prev-page").disabled = !pages.length;
      $("first-page").disabled = !pages.length;
      $("page-number").textContent = "page " + (pages.length + 1);
      $("files-note").textContent = page.read_all
        ? ""
        : "More files match than one request reads: the newest among those read are shown.";
      fillRows(
        $("files").tBodies[0],
        page.items.map((f) => [fileLink(f.id), f.dataset, f.key, f.state, bytes(f.size), time(f.updated_at), f.reason || ""]),
      );
    },
  },

  file: {
    title: "File",
    hidden: true,
    async draw(r) {
      const id = r.get("id");
      if (!id) return;
      const f = await api("/files/" + encodeURIComponent(id));
      $("timeline-id").textContent = f.id;
      $("timeline-key").textContent = f.bucket + "/" + f.key;
      $("timeline-dataset").textContent = f.dataset;
      $("timeline-state").textContent = f.state;
      $("timeline-batch").replaceChildren(f.batch_id ? batchLink(f.batch_id) : "(none)");
      // The trace id, linked to the trace viewer when one is configured (operations.trace_url).
      const trace = $("timeline-trace");
      trace.textContent = "";
      if (f.trace_id && f.trace_url) {
        const a = el("a", { href: f.trace_url, target: "_blank", rel: "noopener" }, f.trace_id);
        trace.append(a);
      } else {
        trace.textContent = f.trace_id || "(none)";
      }
      $("timeline-reason").textContent = f.reason || "";
      const now = Date.now();
      drawBars(
        $("timeline-bars"),
        f.history.map((h, i) => {
          const start = Date.parse(h.at);
          const next = f.history[i + 1];
          const last = !next;
          const terminal = TERMINAL.includes(h.to);
          return {
            label: h.to,
            sub: h.stage,
            start,
            end: next ? Date.parse(next.at) : terminal ? start : now,
            open: last && !terminal,
            failed: FAILED_STATES.includes(h.to),
            note: h.reason || "",
          };
        }),
      );
      fillRows(
        $("timeline-steps").tBodies[0],
        f.history.map((h) => [time(h.at), h.stage, (h.from || "∅") + " → " + h.to, h.reason || ""]),
      );
      await drawReport(f);
    },
  },

  batch: {
    title: "Batch",
    hidden: true,
    async draw(r) {
      const id = r.get("id");
      if (!id) return;
      const b = await api("/batches/" + encodeURIComponent(id));
      $("batch-id").textContent = b.id;
      $("batch-dataset").textContent = b.dataset;
      $("batch-state").textContent = b.state;
      $("batch-crawler").textContent = b.crawler || "(catalogued from its schema)";
      $("batch-job").textContent = (b.job || "") + (b.job_run_id ? " run " + b.job_run_id : "");
      const trace = $("batch-trace");
      trace.textContent = "";
      if (b.trace_id && b.trace_url) {
        trace.append(el("a", { href: b.trace_url, target: "_blank", rel: "noopener" }, b.trace_id));
      } else {
        trace.textContent = b.trace_id || "(none)";
      }
      $("batch-reason").textContent = b.reason || "";
      const at = (iso) => (iso ? Date.parse(iso) : null);
      const now = Date.now();
      // A batch catalogued from its schema has no crawl: it waits from its creation for its job.
      const phases = b.crawler
        ? [
            ["waiting for its crawl", at(b.created_at), at(b.crawl_started_at), null],
            ["crawl", at(b.crawl_started_at), at(b.crawl_ended_at), "crawler"],
            ["waiting for its job", at(b.crawl_ended_at), at(b.job_started_at), null],
          ]
        : [["waiting for its job", at(b.created_at), at(b.job_started_at), null]];
      phases.push(["job run", at(b.job_started_at), at(b.job_ended_at), "transformer"]);
      const rows = phases
        .filter(([, start]) => start !== null)
        .map(([label, start, end, stage]) => ({
          label,
          start,
          end: end ?? (b.state === "FAILED" || b.state === "INGESTED" ? start : now),
          open: end === null && b.state !== "FAILED" && b.state !== "INGESTED",
          failed: b.state === "FAILED" && stage !== null && b.failed_stage === stage,
          note: b.state === "FAILED" && stage !== null && b.failed_stage === stage ? b.reason || "" : "",
        }));
      if (rows.length) drawBars($("batch-bars"), rows);
      fillRows(
        $("batch-files").tBodies[0],
        b.file_summaries.map((f) => [fileLink(f.id), f.key, f.state, bytes(f.size), time(f.updated_at)]),
      );
    },
  },

  failures: {
    title: "Failures",
    async draw() {
      const q = datasetQuery("&");
      const [groups, recent] = await Promise.all([api("/failures/reasons?" + q.slice(1)), api("/failures?n=20" + q)]);
      fillRows(
        $("reasons").tBodies[0],
        groups.map((g) => {
          const files = el("span");
          g.sample_files.forEach((id, i) => files.append(i ? " " : "", fileLink(id)));
          return [g.reason, g.stage || "", g.files, g.failures, g.datasets.join(", "), time(g.latest_at), g.example, files];
        }),
      );
      fillRows(
        $("failures").tBodies[0],
        recent.map((f) => {
          const files = el("span");
          if (f.batch_id) files.append(batchLink(f.batch_id), ": ");
          f.files.slice(0, 5).forEach((id, i) => files.append(i ? " " : "", fileLink(id)));
          if (f.files.length > 5) files.append(" and " + (f.files.length - 5) + " more");
          return [time(f.at), f.event_type, f.dataset, files, f.reason];
        }),
      );
    },
  },

  dlq: {
    title: "Dead letters",
    async draw() {
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
          const depth = cell(q.depth);
          if (q.depth > 0) depth.classList.add("alert");
          return [q.stage, q.dlq, depth, actions];
        }),
      );
    },
  },
};

function drawDatasets(d) {
  const head = document.createElement("tr");
  for (const h of ["dataset", ...d.states, "total", "done/min", "done/hour"]) {
    head.append(el("th", {}, h));
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
}

function drawQueues(qs) {
  fillRows(
    $("queues").tBodies[0],
    qs.map((q) => {
      const dead = cell(q.dlq.depth);
      if (q.dlq.depth > 0) dead.classList.add("alert");
      return [q.stage, q.queue, q.visible, q.in_flight, q.delayed, dead];
    }),
  );
}

function legend() {
  const l = el("p", { class: "legend" });
  for (const k of TERMINAL) l.append(el("span", { class: "swatch " + SERIES_CLASS[k] }), k.toLowerCase() + " ");
  return l;
}

// An invalid file's validation report, its errors inline.
async function drawReport(f) {
  const box = $("timeline-report");
  if (!["INVALID", "QUARANTINED"].includes(f.state)) {
    box.hidden = true;
    return;
  }
  let report;
  try {
    report = await api("/files/" + encodeURIComponent(f.id) + "/report");
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    box.hidden = false;
    $("report-summary").textContent = "No report: " + e.message;
    fillRows($("report-errors").tBodies[0], []);
    return;
  }
  box.hidden = false;
  const counts = Object.entries(report.error_counts || {}).map(([k, n]) => k + " × " + n);
  $("report-summary").textContent =
    (report.fatal ? "Could not be read: " + report.fatal + ". " : "") +
    (report.rows !== undefined ? report.rows + " rows read. " : "") +
    (counts.length ? "Errors: " + counts.join(", ") + "." : "");
  fillRows(
    $("report-errors").tBodies[0],
    (report.errors || []).map((e) => [e.row ?? "-", e.field ?? "-", e.kind ?? "", e.message ?? ""]),
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

// ---------------------------------------------------------------------------------------------
// Showing a view, refreshing it, and the controls around it.

function showError(e) {
  if (e instanceof Unauthorized) return askForToken("token refused");
  $("status").textContent = "error: " + e.message;
  $("status").className = "error";
}

// The view last drawn, and when: a view may ask to be redrawn less often than REFRESH_MS.
const drawn = { view: null, fragment: null, at: 0 };

// Draws the view the address names; the dataset list is kept fresh for the picker. The timer's
// calls redraw a view no more often than its `every`; a change of address always redraws.
async function refresh() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return askForToken("");
  const r = route();
  const name = VIEWS[r.get("view")] ? r.get("view") : "flow";
  const every = VIEWS[name].every || REFRESH_MS;
  const same = drawn.view === name && drawn.fragment === location.hash;
  if (same && Date.now() - drawn.at < every - 500) return;
  for (const [key, v] of Object.entries(VIEWS)) {
    $("view-" + key).hidden = key !== name;
    const tab = document.querySelector('#nav a[data-view="' + key + '"]');
    if (tab) tab.classList.toggle("current", key === name);
  }
  $("dataset").value = r.get("dataset") || "";
  try {
    await VIEWS[name].draw(r);
    // The picker's datasets, for views that do not read them anyway: at most once a minute, since
    // on AWS counting files reads the whole state table.
    if (name !== "flow" && Date.now() - datasetsRead > 60000) {
      fillDatasets(await api("/datasets"));
      datasetsRead = Date.now();
    }
    Object.assign(drawn, { view: name, fragment: location.hash, at: Date.now() });
    $("main").hidden = false;
    $("login").hidden = true;
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    $("status").className = "muted";
  } catch (e) {
    showError(e);
  }
}

// When the dataset picker was last filled from `/api/datasets`.
let datasetsRead = 0;

function fillDatasets(d) {
  fillOptions($("dataset"), d.datasets.map((ds) => ds.name));
  fillOptions($("f-state"), d.states);
  $("dataset").value = route().get("dataset") || "";
}

function askForToken(message) {
  drawn.at = 0; // once a token is given, draw at once
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("status").textContent = "";
}

function buildNav() {
  for (const [key, v] of Object.entries(VIEWS)) {
    if (v.hidden) continue;
    const a = el("a", { href: "#view=" + key }, v.title);
    a.dataset.view = key;
    a.addEventListener("click", (e) => {
      e.preventDefault();
      go({ view: key, id: null, pages: null });
    });
    $("nav").append(a);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  buildNav();
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
  $("dataset").addEventListener("change", () => go({ dataset: $("dataset").value, pages: null }));
  $("chart-minutes").addEventListener("change", () => go({ minutes: $("chart-minutes").value }));
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    go({ view: "files", state: $("f-state").value, within: $("f-within").value, key: $("f-key").value, pages: null });
  });
  // Pages are a stack of cursors in the address: older pushes the next cursor, newer pops one.
  const pages = () => (route().get("pages") || "").split(",").filter(Boolean);
  $("next-page").addEventListener("click", () => go({ pages: [...pages(), $("files").dataset.next].join(",") }));
  $("prev-page").addEventListener("click", () => go({ pages: pages().slice(0, -1).join(",") }));
  $("first-page").addEventListener("click", () => go({ pages: null }));
  window.addEventListener("hashchange", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
