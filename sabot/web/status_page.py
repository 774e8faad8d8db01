"""The HTML of ``GET /``: a live status page that polls ``status.json`` every second.

One self-contained page (no external script, style or font), so it works on
a machine with no internet access. It fetches ``status.json`` relative to
its own URL (so it also works mounted under a prefix, ``sabot.contrib.asgi``)
and rewrites its tables with ``textContent`` (names from the app are never
parsed as HTML); the pipeline drawing is the SVG the server built.
"""
from __future__ import annotations

__all__ = ["STATUS_PAGE"]

STATUS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sabot status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.4em; margin-bottom: 0.2em; }
 h2 { font-size: 1.1em; margin-top: 1.5em; }
 table { border-collapse: collapse; min-width: 30em; }
 th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .bad { color: #b00020; font-weight: bold; }
 .ok { color: #1b5e20; }
 #meta { color: #666; }
 .empty { color: #888; font-style: italic; }
</style>
</head>
<body>
<h1>Sabot: <span id="app">…</span> <span id="health"></span></h1>
<div id="meta">broker <span id="broker"></span> · updated <span id="updated">never</span></div>
<div id="holds">worker <span id="worker">…</span> · holds <span id="held">…</span></div>

<h2>Agents</h2>
<table id="agents"><thead><tr><th>agent</th><th>input</th><th>in/s</th><th>out/s</th>
<th>in</th><th>out</th><th>errors</th><th>backlog</th><th>state</th></tr></thead><tbody></tbody></table>

<h2>Pipelines</h2>
<div id="pipeline"></div>

<h2>Consumer lag</h2>
<table id="lag"><thead><tr><th>topic</th><th>partition</th><th>lag</th></tr></thead><tbody></tbody></table>

<h2>Tables</h2>
<table id="tables"><thead><tr><th>table</th><th>kind</th><th>partitions</th><th>recovery</th>
</tr></thead><tbody></tbody></table>

<h2>Dead letters</h2>
<table id="dead"><thead><tr><th>channel</th><th>dead letters</th><th>truncated</th></tr></thead>
<tbody></tbody></table>

<script>
"use strict";
function cell(tr, text, cls) {
  var td = document.createElement("td");
  td.textContent = text;
  if (cls) { td.className = cls; }
  tr.appendChild(td);
  return td;
}
function fill(id, rows, columns, empty) {
  var body = document.querySelector("#" + id + " tbody");
  body.textContent = "";
  if (!rows.length) {
    var tr = document.createElement("tr");
    var td = cell(tr, empty, "empty");
    td.colSpan = columns;
    body.appendChild(tr);
    return body;
  }
  return body;
}
function num(n) { return Number(n).toLocaleString("en-US", {maximumFractionDigits: 1}); }
function render(s) {
  document.getElementById("app").textContent = s.app;
  document.getElementById("broker").textContent = s.broker;
  var health = document.getElementById("health");
  health.textContent = s.healthy ? "healthy" : "unhealthy";
  health.className = s.healthy ? "ok" : "bad";
  document.getElementById("updated").textContent = new Date(s.time * 1000).toISOString();
  var w = s.worker || {partitions: {}, consumers: []};
  document.getElementById("worker").textContent = (w.worker_id || "-") + " (pid " + w.pid + ")"
    + (w.url ? " at " + w.url : "");
  var held = Object.keys(w.partitions).map(function (t) {
    return t + " [" + w.partitions[t].join(", ") + "]";
  }).concat(w.consumers.map(function (c) { return c.transport + " consumer " + c.consumer; }));
  document.getElementById("held").textContent = held.join("; ") || "nothing";
  var body = fill("agents", s.agents, 9, "no agents");
  s.agents.forEach(function (a) {
    var tr = document.createElement("tr");
    tr.dataset.agent = a.name;
    cell(tr, a.name);
    cell(tr, a.channel || "");
    cell(tr, num(a.rate_in), "num rate-in");
    cell(tr, num(a.rate_out), "num rate-out");
    cell(tr, num(a.events_in), "num events-in");
    cell(tr, num(a.events_out), "num events-out");
    cell(tr, num(a.errors), a.errors ? "num errors bad" : "num errors");
    cell(tr, num(a.backlog), "num backlog");
    cell(tr, a.running ? "running" : "stopped", a.running ? "ok" : "bad");
    body.appendChild(tr);
  });
  body = fill("lag", s.lag, 3, "no lag reported");
  s.lag.forEach(function (l) {
    var tr = document.createElement("tr");
    cell(tr, l.topic);
    cell(tr, l.partition === null ? "all" : String(l.partition), "num");
    cell(tr, num(l.lag), "num");
    body.appendChild(tr);
  });
  body = fill("tables", s.tables, 4, "no tables");
  s.tables.forEach(function (t) {
    var tr = document.createElement("tr");
    cell(tr, t.name);
    cell(tr, t.kind);
    cell(tr, t.partitions.join(", ") || "-");
    var parts = Object.keys(t.recovery).map(function (p) {
      var r = t.recovery[p];
      return p + ": " + r.changes + " changes in " + r.seconds + "s" + (r.wiped ? " (wiped)" : "");
    });
    if (t.recovering.length) { parts.push("recovering " + t.recovering.join(", ")); }
    cell(tr, parts.join("; ") || "-");
    body.appendChild(tr);
  });
  body = fill("dead", s.dead_letters, 3, "none");
  s.dead_letters.forEach(function (d) {
    var tr = document.createElement("tr");
    cell(tr, d.channel);
    cell(tr, num(d.count), "num bad");
    cell(tr, num(d.truncated), "num");
    body.appendChild(tr);
  });
  var drawing = document.getElementById("pipeline");
  if (drawing.dataset.svg !== s.svg) {  // redrawn only when the graph changed
    drawing.dataset.svg = s.svg;
    drawing.innerHTML = s.svg;  // built and escaped by the server
  }
}
function poll() {
  fetch("status.json", {cache: "no-store"})
    .then(function (r) { return r.json(); })
    .then(render)
    .catch(function (e) { document.getElementById("updated").textContent = "error: " + e; })
    .finally(function () { setTimeout(poll, 1000); });
}
poll();
</script>
</body>
</html>
"""
