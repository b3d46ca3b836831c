// tvck serve's page. It reads only the JSON API (/api/runs, /api/runs/NAME/metrics,
// /api/alerts, /api/runs/NAME, /api/runs/NAME/checkpoints/FILE) and follows
// /api/events (server-sent events): new epochs are appended to the curves as they land,
// the page never reloads whole files. Every text that comes from a run folder is set
// with textContent, never parsed as HTML.
"use strict";
(function () {
  const DEFAULT_CHARTS = ["coverage", "hierarchy_B", "Q", "loss.total"];
  const DEFAULT_OVERLAY = 6;
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const state = {
    runs: new Map(),      // name → summary
    metrics: new Map(),   // name → {epochs, series, events} of the overlaid runs
    selected: new Set(),
    alerts: new Map(),    // run → alert rows
    charts: new Map(),    // series name → {box, plot, key}
    chartNames: DEFAULT_CHARTS.slice(),
    seq: 0,
    events: 0,            // server-sent events received (tests read it)
    detail: null,
  };
  window.tvck = state;
  const enc = encodeURIComponent;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "onclick" || k === "onchange") e.addEventListener(k.slice(2), v);
      else e[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
    return v.toPrecision(4).replace(/\.?0+$/, "");
  }

  // A series of a run by name, or one that matches ignoring case (hierarchy_B / hierarchy_b).
  function column(m, name) {
    if (name in m.series) return m.series[name];
    const lower = name.toLowerCase();
    for (const k of Object.keys(m.series)) if (k.toLowerCase() === lower) return m.series[k];
    return null;
  }

  function lastValue(summary, name) {
    const v = summary.last ? summary.last[name] : undefined;
    return v === undefined ? null : v;
  }

  let timer = null;
  function schedule() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; render(); }, 60);
  }

  function render() {
    renderRuns();
    renderAlerts();
    renderCharts();
    renderPicker();
  }

  function renderRuns() {
    const body = document.querySelector("#runs tbody");
    const rows = [];
    for (const s of state.runs.values()) {
      const box = el("input", { type: "checkbox", checked: state.selected.has(s.name),
        title: "overlay this run's curves" });
      box.addEventListener("change", () => toggle(s.name, box.checked));
      const badges = [el("span", { class: "badge state-" + s.state }, s.state)];
      if (s.alerting) badges.push(el("span", { class: "badge alerting" }, "alerting"));
      const st = s.standing || {};
      const alerts = s.alerts ? `${s.alerts}` + (st.critical ? ` (${st.critical} critical)` : "") : "";
      const epoch = s.epoch === null ? "–" : (s.epochs ? `${s.epoch}/${s.epochs}` : `${s.epoch}`);
      rows.push(el("tr", { "data-run": s.name, "data-state": s.state },
        el("td", {}, box),
        el("td", {}, el("button", { class: "name", type: "button", onclick: () => showDetail(s.name) }, s.name)),
        el("td", {}, ...badges),
        el("td", { class: "num" }, epoch),
        el("td", { class: "num" }, fmt(lastValue(s, "coverage"))),
        el("td", { class: "num" }, fmt(lastValue(s, "hierarchy_B"))),
        el("td", { class: "num" }, fmt(lastValue(s, "Q"))),
        el("td", { class: "num" }, fmt(lastValue(s, "loss.total"))),
        el("td", { class: "num" }, alerts)));
    }
    body.replaceChildren(...rows);
    document.getElementById("run-count").textContent = `(${state.runs.size})`;
  }

  function allAlerts() {
    const out = [];
    for (const rows of state.alerts.values()) out.push(...rows);
    out.sort((a, b) => (b.time || 0) - (a.time || 0) || (b.epoch - a.epoch));
    return out;
  }

  function renderAlerts() {
    const rows = allAlerts().slice(0, 300).map(a =>
      el("tr", { class: a.standing ? "standing" : "cleared", "data-rule": a.rule, "data-run": a.run || "" },
        el("td", {}, el("span", { class: "badge sev-" + a.severity }, a.severity)),
        el("td", {}, a.run || ""),
        el("td", { class: "num" }, a.epoch),
        el("td", {}, a.rule),
        el("td", {}, a.message),
        el("td", {}, a.cause),
        el("td", {}, a.fix),
        el("td", {}, a.standing ? "yes" : "no")));
    document.querySelector("#alerts tbody").replaceChildren(...rows);
    const n = allAlerts().length;
    const box = document.getElementById("alert-count");
    box.textContent = `(${n})`;
    box.setAttribute("data-count", String(n));
  }

  // The overlaid runs' values of one series, on one epoch axis.
  function aligned(name) {
    const runs = [...state.selected].filter(r => state.metrics.has(r)).sort();
    const xs = new Set();
    const cols = [];
    for (const r of runs) {
      const m = state.metrics.get(r);
      const c = column(m, name);
      if (!c) continue;
      cols.push([r, m.epochs, c]);
      m.epochs.forEach((e, i) => { if (c[i] !== null) xs.add(e); });
    }
    const x = [...xs].sort((a, b) => a - b);
    const at = new Map(x.map((e, i) => [e, i]));
    let points = 0;
    const ys = cols.map(([, epochs, c]) => {
      const y = new Array(x.length).fill(null);
      epochs.forEach((e, i) => { if (c[i] !== null && at.has(e)) { y[at.get(e)] = c[i]; points++; } });
      return y;
    });
    return { runs: cols.map(c => c[0]), data: [x, ...ys], points };
  }

  function color(run) {
    const names = [...state.runs.keys()];
    const i = Math.max(0, names.indexOf(run));
    return COLORS[i % COLORS.length];
  }

  function renderCharts() {
    const box = document.getElementById("charts");
    for (const [name, c] of state.charts) {
      if (!state.chartNames.includes(name)) { if (c.plot) c.plot.destroy(); c.box.remove(); state.charts.delete(name); }
    }
    // Every box first, then one read of the width (each read after a change of the page
    // would lay the whole page out again).
    for (const name of state.chartNames) {
      let c = state.charts.get(name);
      if (!c) {
        const close = el("button", { class: "close", type: "button", title: "remove", onclick: () => {
          state.chartNames = state.chartNames.filter(n => n !== name); render(); } }, "×");
        c = { box: el("div", { class: "chart", "data-metric": name }, close, el("h3", {}, name)), plot: null, key: "" };
        c.area = el("div", {});
        c.box.append(c.area);
        box.append(c.box);
        state.charts.set(name, c);
      }
    }
    const first = state.charts.get(state.chartNames[0]);
    const width = Math.max(300, (first ? first.box.clientWidth : 400) - 10);
    for (const name of state.chartNames) {
      const c = state.charts.get(name);
      const a = aligned(name);
      c.box.setAttribute("data-points", String(a.points));
      c.box.setAttribute("data-runs", String(a.runs.length));
      const key = a.runs.join("\u0000");
      if (a.points === 0) {
        if (c.plot) { c.plot.destroy(); c.plot = null; }
        c.key = "";
        c.area.replaceChildren(el("div", { class: "empty" }, "no values yet"));
        continue;
      }
      if (c.plot && c.key === key) {
        c.plot.setData(a.data);
        if (Math.abs(c.plot.width - width) > 4) c.plot.setSize({ width, height: 200 });
        continue;
      }
      if (c.plot) c.plot.destroy();
      c.area.replaceChildren();
      c.key = key;
      c.plot = new uPlot({
        width, height: 200,
        scales: { x: { time: false } },
        // Epochs are whole numbers: no 2.5 on the axis.
        axes: [{ incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] }, {}],
        legend: { live: false },
        series: [{ label: "epoch" }, ...a.runs.map(r => ({
          label: r, stroke: color(r), width: 1.5, spanGaps: true,
          points: { show: a.data[0].length < 40 },
        }))],
      }, a.data, c.area);
    }
  }

  function renderPicker() {
    const names = new Set();
    for (const m of state.metrics.values()) for (const k of Object.keys(m.series)) names.add(k);
    const sel = document.getElementById("metric-picker");
    const want = [...names].filter(n => !state.chartNames.includes(n)).sort();
    const have = [...sel.options].map(o => o.value);
    if (have.join("\n") === want.join("\n")) return;
    sel.replaceChildren(...want.map(n => el("option", { value: n }, n)));
  }

  async function loadMetrics(name) {
    const m = await getJSON("/api/runs/" + enc(name) + "/metrics");
    if (state.selected.has(name)) state.metrics.set(name, m.metrics);
  }

  async function toggle(name, on) {
    if (on) {
      state.selected.add(name);
      await loadMetrics(name);
    } else {
      state.selected.delete(name);
      state.metrics.delete(name);
    }
    schedule();
  }

  function setAlerts(rows) {
    state.alerts.clear();
    for (const a of rows) {
      if (!state.alerts.has(a.run)) state.alerts.set(a.run, []);
      state.alerts.get(a.run).push(a);
    }
  }

  async function loadAll() {
    const [runs, alerts] = await Promise.all([getJSON("/api/runs"), getJSON("/api/alerts")]);
    state.seq = Math.min(runs.seq, alerts.seq);
    document.getElementById("root").textContent = runs.root;
    state.runs = new Map(runs.runs.map(r => [r.name, r]));
    setAlerts(alerts.alerts);
    for (const r of [...state.selected]) if (!state.runs.has(r)) state.selected.delete(r);
    if (state.selected.size === 0) {
      const recent = runs.runs.slice().sort((a, b) => (b.updated || 0) - (a.updated || 0));
      for (const r of recent.slice(0, DEFAULT_OVERLAY)) state.selected.add(r.name);
    }
    state.metrics.clear();
    await Promise.all([...state.selected].map(loadMetrics));
    render();
    document.body.setAttribute("data-ready", "1");
    // Milliseconds from the navigation's start to the first full render (the benchmark reads it).
    if (!document.body.hasAttribute("data-ready-ms")) document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
    connect();
  }

  function onEpoch(d) {
    const m = state.metrics.get(d.run);
    if (!m) return;
    const n = m.epochs.length;
    if (n && d.epoch <= m.epochs[n - 1]) return; // already loaded with the metrics
    m.epochs.push(d.epoch);
    for (const k of Object.keys(m.series)) m.series[k].push(k in d.values ? d.values[k] : null);
    for (const [k, v] of Object.entries(d.values)) {
      if (!(k in m.series)) { m.series[k] = new Array(n).fill(null); m.series[k].push(v); }
    }
  }

  let source = null;
  function setConn(s, text) {
    const c = document.getElementById("conn");
    c.setAttribute("data-state", s);
    c.textContent = text || s;
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/api/events?since=" + state.seq);
    source.onopen = () => setConn("live");
    source.onerror = () => setConn("reconnecting", "reconnecting…");
    const on = (name, f) => source.addEventListener(name, ev => {
      state.events++;
      if (ev.lastEventId) state.seq = Number(ev.lastEventId);
      f(JSON.parse(ev.data));
      schedule();
    });
    on("epoch", onEpoch);
    on("run", s => state.runs.set(s.name, s));
    on("alerts", d => state.alerts.set(d.run, d.alerts));
    on("restart", d => { if (state.metrics.has(d.run)) state.metrics.set(d.run, { epochs: [], series: {}, events: [] }); });
    on("reset", () => { source.close(); source = null; loadAll(); });
  }

  function kv(rows) {
    return el("table", { class: "kv" }, ...rows.filter(r => r[1] !== null && r[1] !== undefined)
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
  }

  async function showDetail(name) {
    const panel = document.getElementById("detail-panel");
    const box = document.getElementById("detail");
    document.getElementById("detail-name").textContent = name;
    panel.hidden = false;
    box.replaceChildren(el("p", {}, "reading the run folder…"));
    let d;
    try { d = await getJSON("/api/runs/" + enc(name)); } catch (e) { box.replaceChildren(el("p", {}, String(e))); return; }
    state.detail = d;
    const parts = [];
    const i = d.info || {};
    parts.push(el("h3", {}, "State"), kv([
      ["state", d.run.state], ["epoch", d.run.epoch], ["epochs planned", d.run.epochs],
      ["seconds per epoch", d.run.epoch_seconds === null ? null : fmt(d.run.epoch_seconds)],
      ["time left (s)", d.run.time_left_seconds], ["pid", i.pid], ["host", i.host],
      ["started", i.started ? new Date(i.started * 1000).toISOString() : null], ["config", i.config],
      ["freeze", Object.entries(d.run.freeze || {}).map(([k, v]) => `${k}: ${v ? "frozen" : "trained"}`).join(", ") || null],
    ]));
    parts.push(el("h3", {}, "Config"));
    if (!d.configs.length) parts.push(el("p", {}, "no config file in the run folder"));
    for (const c of d.configs) {
      parts.push(el("details", { open: d.configs.length === 1 }, el("summary", {}, c.name + (c.truncated ? " (cut)" : "")), el("pre", {}, c.text)));
    }
    parts.push(el("h3", {}, "Checkpoints"));
    const pre = el("pre", { hidden: true, id: "inspect" });
    const rows = d.checkpoints.map(c => el("tr", { "data-file": c.file },
      el("td", {}, c.file), el("td", { class: "num" }, c.size), el("td", {}, c.format || ""),
      el("td", {}, c.version || ""), el("td", { class: "num" }, c.epoch === undefined ? "" : c.epoch),
      el("td", { class: "num" }, c.parameters), el("td", { class: "num" }, fmt(c.metrics.coverage)),
      el("td", { class: "num" }, fmt(c.metrics.Q)),
      el("td", {}, c.error ? c.error : c.findings.map(f => f.kind + ": " + f.message).join("; ")),
      el("td", {}, el("button", { type: "button", onclick: async () => {
        pre.hidden = false; pre.textContent = "reading…";
        try {
          const r = await getJSON("/api/runs/" + enc(name) + "/checkpoints/" + enc(c.file));
          const shown = Object.assign({}, r, { tensors: r.tensors.slice(0, 200) });
          pre.textContent = JSON.stringify(shown, null, 2);
        } catch (e) { pre.textContent = String(e); }
      } }, "inspect"))));
    parts.push(d.checkpoints.length ? el("table", {}, el("thead", {}, el("tr", {}, ...["file", "bytes", "format", "version", "epoch", "parameters", "coverage", "Q", "findings", ""].map(h => el("th", {}, h)))), el("tbody", {}, ...rows)) : el("p", {}, "no checkpoint in the run folder"), pre);
    const m = state.metrics.get(name);
    if (m && m.events.length) {
      parts.push(el("h3", {}, "Events"), el("table", {}, el("tbody", {}, ...m.events.map(e =>
        el("tr", {}, el("td", { class: "num" }, e.epoch), el("td", {}, e.kind), el("td", {}, e.component), el("td", {}, e.message))))));
    }
    box.replaceChildren(...parts);
    panel.scrollIntoView({ block: "start" });
  }

  document.getElementById("add-chart").addEventListener("click", () => {
    const v = document.getElementById("metric-picker").value;
    if (v && !state.chartNames.includes(v)) { state.chartNames.push(v); render(); }
  });
  window.addEventListener("resize", schedule);
  loadAll().catch(e => setConn("error", String(e)));
})();
