// sessionlet's dashboard: everything from the API, everything as text.
// Elements are built with textContent only (never parsed as HTML), so a name,
// message or log line containing markup shows as that markup, inert.
"use strict";

const sessions = new Map();
const pools = new Map();
let selected = null;
let logTimer = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function age(since) {
  if (!since) return "";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(since)) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + units[i];
}

function tokens(agent) {
  if (!agent) return "";
  const t = (agent.inputTokens || 0) + (agent.outputTokens || 0);
  return t ? String(t) : "";
}

function cost(agent) {
  if (!agent || agent.costUsd === undefined || agent.costUsd === null) return "";
  return "$" + Number(agent.costUsd).toFixed(4);
}

function nameOf(doc) {
  return (doc.metadata && doc.metadata.name) || "(" + ((doc.metadata && doc.metadata.manifest) || "?") + ")";
}

function sessionRow(doc) {
  const st = doc.status || {};
  const name = nameOf(doc);
  const tr = el("tr");
  tr.dataset.name = name;
  const link = el("a", name);
  link.href = "#session=" + encodeURIComponent(name);
  const first = el("td");
  first.appendChild(link);
  tr.appendChild(first);
  const phase = el("td", st.phase, "phase phase-" + (st.phase || ""));
  phase.dataset.field = "phase";
  tr.appendChild(phase);
  tr.appendChild(el("td", st.restarts === undefined ? "" : st.restarts, "num"));
  tr.appendChild(el("td", age(st.startedAt || st.runStartedAt), "num"));
  tr.appendChild(el("td", st.pid || "", "num"));
  tr.appendChild(el("td", st.reason || ""));
  tr.appendChild(el("td", st.usage ? bytes(st.usage.memoryBytes) : "", "num"));
  tr.appendChild(el("td", st.usage ? Number(st.usage.cpuSeconds || 0).toFixed(1) + "s" : "", "num"));
  tr.appendChild(el("td", tokens(st.agent), "num"));
  tr.appendChild(el("td", cost(st.agent), "num"));
  return tr;
}

function poolRow(doc) {
  const st = doc.status || {};
  const tr = el("tr");
  tr.dataset.name = nameOf(doc);
  tr.appendChild(el("td", nameOf(doc)));
  tr.appendChild(el("td", (st.readyReplicas || 0) + "/" + (st.replicas || 0), "num"));
  tr.appendChild(el("td", st.running || 0, "num"));
  tr.appendChild(el("td", st.queued || 0, "num"));
  tr.appendChild(el("td", st.capacity === undefined || st.capacity === null ? "unlimited" : st.capacity, "num"));
  tr.appendChild(el("td", tokens(st.agent), "num"));
  tr.appendChild(el("td", cost(st.agent), "num"));
  return tr;
}

function renderTable(id, map, row) {
  const body = document.querySelector("#" + id + " tbody");
  const rows = [...map.keys()].sort().map((k) => row(map.get(k)));
  body.replaceChildren(...rows);
}

function pairs(dl, entries) {
  const items = [];
  for (const [k, v] of entries) {
    if (v === undefined || v === null || v === "") continue;
    items.push(el("dt", k), el("dd", typeof v === "object" ? JSON.stringify(v) : v));
  }
  dl.replaceChildren(...items);
}

function renderDetail() {
  const section = document.getElementById("detail");
  if (!selected) { section.hidden = true; return; }
  const doc = sessions.get(selected);
  section.hidden = false;
  document.getElementById("detail-title").textContent = "Session " + selected;
  if (!doc) { pairs(document.getElementById("detail-summary"), [["Status", "not known (yet)"]]); return; }
  const st = doc.status || {};
  pairs(document.getElementById("detail-summary"), [
    ["Phase", st.phase], ["Reason", st.reason], ["Message", st.message],
    ["Attempt", st.attempt], ["Restarts", st.restarts], ["PID", st.pid],
    ["Started", st.startedAt], ["Finished", st.finishedAt], ["Next restart", st.nextRestartAt],
    ["Memory", st.usage ? bytes(st.usage.memoryBytes) : null],
    ["Tokens", tokens(st.agent)], ["Cost", cost(st.agent)],
  ]);
  const conds = (st.conditions || []).map((c) => {
    const tr = el("tr");
    for (const v of [c.type, c.status, c.reason, c.message, c.lastTransitionTime]) tr.appendChild(el("td", v || ""));
    return tr;
  });
  document.querySelector("#detail-conditions tbody").replaceChildren(...conds);
  const le = st.lastExit || {};
  const an = le.analysis || {};
  pairs(document.getElementById("detail-exit"), [
    ["Attempt", le.attempt], ["Exit code", le.exitCode], ["Signal", le.signal],
    ["Reason", le.reason], ["Message", le.message], ["Finished", le.finishedAt],
    ["Crash dump", le.crashDump], ["Root cause", an.rootCause], ["Recommendation", an.recommendation],
  ]);
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

async function loadLogsAndEvents() {
  if (!selected) return;
  const name = selected;
  try {
    const logs = await getJSON("/api/v1/sessions/" + encodeURIComponent(name) + "/logs?tail=50");
    if (name !== selected) return;
    document.getElementById("log-stdout").textContent = (logs.stdout.lines || []).join("\n");
    document.getElementById("log-stderr").textContent = (logs.stderr.lines || []).join("\n");
  } catch (e) {
    document.getElementById("log-stdout").textContent = String(e);
  }
  try {
    const ev = await getJSON("/api/v1/events?object=" + encodeURIComponent(name));
    if (name !== selected) return;
    const rows = (ev.items || []).slice(-20).reverse().map((e) => {
      const tr = el("tr");
      for (const v of [e.lastTimestamp, e.type, e.reason, e.count, e.message]) tr.appendChild(el("td", v));
      return tr;
    });
    document.querySelector("#detail-events tbody").replaceChildren(...rows);
  } catch (e) {
    /* events are optional */
  }
}

function route() {
  const m = /^#session=(.*)$/.exec(location.hash);
  selected = m ? decodeURIComponent(m[1]) : null;
  renderDetail();
  document.querySelector("#detail-events tbody").replaceChildren();
  document.getElementById("log-stdout").textContent = "";
  document.getElementById("log-stderr").textContent = "";
  loadLogsAndEvents();
}

function connect() {
  const live = document.getElementById("live");
  const src = new EventSource("/api/v1/watch");
  src.addEventListener("open", () => { live.textContent = "live"; live.className = "badge on"; });
  src.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "badge off"; });
  src.addEventListener("session", (m) => {
    const doc = JSON.parse(m.data);
    sessions.set(nameOf(doc), doc);
    renderTable("sessions", sessions, sessionRow);
    if (selected === nameOf(doc)) {
      renderDetail();
      // Output follows status changes, at most twice a second.
      if (!logTimer) logTimer = setTimeout(() => { logTimer = null; loadLogsAndEvents(); }, 500);
    }
  });
  src.addEventListener("pool", (m) => {
    const doc = JSON.parse(m.data);
    pools.set(nameOf(doc), doc);
    renderTable("pools", pools, poolRow);
  });
  src.addEventListener("deleted", (m) => {
    const d = JSON.parse(m.data);
    (d.kind === "Pool" ? pools : sessions).delete(d.name);
    renderTable("sessions", sessions, sessionRow);
    renderTable("pools", pools, poolRow);
  });
  src.addEventListener("controller", (m) => {
    const c = JSON.parse(m.data);
    document.getElementById("controller").textContent =
      "controller pid " + (c.pid || "?") + " · " + (c.totalSessions || 0) + " sessions · " + (c.manifestDir || "");
  });
  src.addEventListener("event", (m) => {
    const e = JSON.parse(m.data);
    if (selected && e.object && e.object.name === selected) loadLogsAndEvents();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("detail-close").addEventListener("click", (ev) => { ev.preventDefault(); location.hash = ""; });
  window.addEventListener("hashchange", route);
  route();
  connect();
  setInterval(() => renderTable("sessions", sessions, sessionRow), 5000);
});
