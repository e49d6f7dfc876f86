/* Footfall dashboard page: fetches /api/v1/* and draws the charts with ECharts.
 * Everything it loads comes from this app (see Content-Security-Policy); nothing from the network.
 * Each chart element carries data-state (loading|ready|empty|error), data-points and data-total,
 * and <body> carries data-state and data-refreshes, so tests can see what was drawn.
 * Every chart is fetched and drawn on its own: one failing request shows its error in that
 * chart's panel and leaves the others alone. */
(function () {
  "use strict";

  const REFRESH_MS = 5000;
  const PRESETS = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
  const el = (id) => document.getElementById(id);
  const charts = {};
  let inFlight = false;
  let timer = null;
  let refreshes = 0;
  let lastSummary = null;

  function utc(ms) {
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function toLocalInput(ms) {
    return new Date(ms).toISOString().slice(0, 16);
  }
  function fromLocalInput(value) {
    return value ? Date.parse(value + ":00Z") : NaN;
  }

  /* The API counts whole minutes [from, to) and refuses anything else, so presets snap:
   * "last hour" is the 60 minutes ending with the current one (which is still filling). */
  function presetRange(span, nowMs) {
    const to = Math.floor(nowMs / 60000) * 60000 + 60000;
    return [to - span, to];
  }

  function query() {
    const params = new URLSearchParams();
    const range = el("range").value;
    if (range in PRESETS) {
      const [from, to] = presetRange(PRESETS[range], Date.now());
      params.set("from", String(from));
      params.set("to", String(to));
    } else if (range === "custom") {
      const from = fromLocalInput(el("from").value);
      const to = fromLocalInput(el("to").value);
      if (!Number.isNaN(from)) params.set("from", String(from));
      if (!Number.isNaN(to)) params.set("to", String(to));
    }
    params.set("counting", el("counting").value);
    return params;
  }

  async function getJSON(path, params) {
    const url = params ? `${path}?${params}` : path;
    const resp = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `${resp.status} ${resp.statusText}`);
    return body;
  }

  function withParams(base, extra) {
    const p = new URLSearchParams(base);
    for (const [k, v] of Object.entries(extra)) p.set(k, typeof v === "function" ? v() : v);
    return p;
  }

  function mark(id, state, points, total) {
    const node = el(id);
    node.dataset.state = state;
    node.dataset.points = String(points || 0);
    node.dataset.total = String(total || 0);
  }

  function panelError(id, message) {
    const node = el(id).parentElement.querySelector(".chart-error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function draw(id, option, points, total) {
    const chart = charts[id];
    panelError(id, "");
    if (!points) {
      chart.clear();
      mark(id, "empty", 0, 0);
      return;
    }
    // No animation: the page redraws every few seconds and should show the numbers, not tweens.
    chart.setOption({ animation: false, ...option }, true);
    mark(id, "ready", points, total);
  }

  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
  const valueAxis = (extra) => ({ type: "value", axisLabel: { formatter: (v) => compact.format(v) }, ...extra });
  const baseGrid = { left: 56, right: 16, top: 28, bottom: 32, containLabel: false };

  function drawTimeseries(res) {
    const pts = res.data;
    el("bucket").textContent = res.bucket ? `(per ${res.bucket})` : "";
    const type = res.type;
    const series = [];
    if (type !== "activity") {
      series.push({ name: "visit", type: "bar", stack: "r", data: pts.map((p) => [p.t, p.visit]), barMaxWidth: 24 });
    }
    if (type !== "visit") {
      series.push({ name: "activity", type: "bar", stack: "r", data: pts.map((p) => [p.t, p.activity]), barMaxWidth: 24 });
    }
    const total = sum(pts.map((p) => p.visit + p.activity));
    draw("chart-timeseries", {
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: baseGrid,
      xAxis: { type: "time" },
      yAxis: valueAxis(),
      dataZoom: [{ type: "inside" }],
      series,
    }, total ? pts.length : 0, total);
  }

  function pie(id, rows, name) {
    const data = rows.map((r) => ({ name: name(r.type), value: r.count }));
    draw(id, {
      tooltip: { trigger: "item", formatter: "{b}: {c} ({d}%)" },
      legend: { type: "scroll", orient: "vertical", right: 0, top: "middle" },
      series: [{
        type: "pie", radius: ["30%", "72%"], center: ["34%", "52%"], data,
        label: { position: "inside", fontSize: 10, color: "#fff", formatter: (p) => (p.percent >= 6 ? `${Math.round(p.percent)}%` : "") },
        labelLine: { show: false },
      }],
    }, data.length, sum(data.map((d) => d.value)));
  }

  function durationLabel(b) {
    const f = (m) => (m >= 60 && m % 60 === 0 ? `${m / 60}h` : `${m}m`);
    return b.toMinutes === null ? `≥${f(b.fromMinutes)}` : `${f(b.fromMinutes)}–${f(b.toMinutes)}`;
  }

  function drawDurations(res) {
    const rows = res.data;
    const total = sum(rows.map((r) => r.count));
    draw("chart-visit-durations", {
      tooltip: { trigger: "axis" },
      grid: baseGrid,
      xAxis: { type: "category", data: rows.map(durationLabel), axisLabel: { interval: 0, rotate: 40, fontSize: 10 } },
      yAxis: valueAxis(),
      series: [{ type: "bar", name: "visits", data: rows.map((r) => r.count), itemStyle: { color: "#2f6fdf" } }],
    }, total ? rows.length : 0, total);
  }

  function drawUsers(res) {
    const rows = res.data;
    el("users-days").textContent = res.from === null ? "(whole UTC days)" : `(whole UTC days, ${utc(res.from).slice(0, 10)} – ${utc(res.to - 1).slice(0, 10)})`;
    draw("chart-unique-users", {
      tooltip: { trigger: "axis" },
      grid: baseGrid,
      xAxis: { type: "category", data: rows.map((r) => r.day) },
      yAxis: valueAxis({ minInterval: 1 }),
      series: [{ type: "bar", name: "unique users", data: rows.map((r) => r.users), itemStyle: { color: "#1b9e77" } }],
    }, rows.length, sum(rows.map((r) => r.users)));
  }

  function drawPois(id, res, key, color) {
    const rows = res.data.slice().reverse();
    draw(id, {
      tooltip: {
        trigger: "axis",
        axisPointer: { type: "shadow" },
        formatter: (ps) => {
          const r = rows[ps[0].dataIndex];
          return `POI ${r.poiId}<br>visits: ${r.visits}<br>unique users: ${r.users}`;
        },
      },
      grid: { left: 92, right: 24, top: 8, bottom: 24 },
      xAxis: valueAxis({ minInterval: 1 }),
      yAxis: { type: "category", data: rows.map((r) => "…" + r.poiId.slice(-8)), axisLabel: { fontSize: 10 } },
      series: [{ type: "bar", data: rows.map((r) => r[key]), itemStyle: { color } }],
    }, rows.length, sum(rows.map((r) => r[key])));
  }

  function drawGeo(res) {
    const half = res.cell / 2;
    const rows = res.data || [];
    // Colour by log10(count): visits cluster in cities, a linear scale would hide the rest.
    const maxLog = Math.log10(rows.reduce((m, r) => Math.max(m, r[2]), 1) + 1);
    draw("chart-geo", {
      tooltip: {
        trigger: "item",
        formatter: (p) => `${p.value[2]} visits<br>lat ${p.value[1] - half}…${p.value[1] + half}°, lon ${p.value[0] - half}…${p.value[0] + half}°`,
      },
      geo: {
        map: "world", roam: true, aspectScale: 1, zoom: 1.15, silent: true,
        itemStyle: { areaColor: "#e6ebf0", borderColor: "#98a6b5", borderWidth: 0.6 },
      },
      visualMap: {
        type: "continuous", min: 0, max: Math.max(maxLog, 1), dimension: 3, calculable: true, left: 8, bottom: 8,
        inRange: { color: ["#9ecae1", "#4292c6", "#08519c", "#08306b"] }, text: ["more", "fewer"],
        formatter: (v) => compact.format(Math.round(Math.pow(10, v) - 1)),
      },
      series: [{
        type: "scatter", coordinateSystem: "geo", symbol: "rect", symbolSize: 7,
        data: rows.map((r) => [r[0] + half, r[1] + half, r[2], Math.log10(r[2] + 1)]),
      }],
    }, rows.length, sum(rows.map((r) => r[2])));
  }

  /* chart id -> [API path, its own parameters, draw function] */
  const CHART_VIEWS = [
    ["chart-timeseries", "/api/v1/timeseries", { type: () => el("type-timeseries").value }, (res) => {
      drawTimeseries(res);
      el("counted-range").textContent = res.from === null ? "" : `Range ${utc(res.from)} – ${utc(res.to)} (to exclusive)`;
    }],
    ["chart-activity-types", "/api/v1/activity-types", {}, (res) => pie("chart-activity-types", res.data, (t) => `activity type ${t}`)],
    ["chart-algorithm-types", "/api/v1/algorithm-types", {}, (res) => pie("chart-algorithm-types", res.data, (t) => `algorithm ${t}`)],
    ["chart-visit-durations", "/api/v1/visit-durations", {}, drawDurations],
    ["chart-unique-users", "/api/v1/unique-users", { type: () => el("type-unique-users").value }, drawUsers],
    ["chart-poi-visits", "/api/v1/top-pois", { by: "visits", limit: "10" }, (res) => drawPois("chart-poi-visits", res, "visits", "#d95f02")],
    ["chart-poi-users", "/api/v1/top-pois", { by: "users", limit: "10" }, (res) => drawPois("chart-poi-users", res, "users", "#7570b3")],
    ["chart-geo", "/api/v1/geo", { cell: "2" }, drawGeo],
  ];

  async function loadChart(id, path, params, render) {
    try {
      render(await getJSON(path, params));
    } catch (err) {
      charts[id].clear();
      mark(id, "error", 0, 0);
      panelError(id, `Could not load this chart: ${err.message || err}`);
    }
  }

  function showError(message) {
    const node = el("error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  async function refresh() {
    if (inFlight) return;
    inFlight = true;
    try {
      const summary = await getJSON("/api/v1/summary");
      lastSummary = summary.data;
      el("as-of").textContent = summary.asOf ? utc(summary.asOf) : "—";
      el("as-of").dateTime = summary.asOf ? new Date(summary.asOf).toISOString() : "";
      const totals = summary.data.reports;
      const distinct = summary.data.distinctReports;
      el("totals").textContent = el("counting").value === "distinct"
        ? `Distinct reports: ${distinct.visit.toLocaleString("en")} visits · ${distinct.activity.toLocaleString("en")} activities`
        : `Landed lines: ${totals.visit.toLocaleString("en")} visits · ${totals.activity.toLocaleString("en")} activities`;
      const empty = totals.visit + totals.activity === 0;
      el("empty").hidden = !empty;
      if (empty) {
        document.body.dataset.state = "empty";
        showError("");
        return;
      }
      const q = query();
      showError("");
      // loadChart never rejects: each chart settles on its own (drawn, empty or its error).
      await Promise.all(CHART_VIEWS.map(([id, path, extra, render]) => loadChart(id, path, withParams(q, extra), render)));
      document.body.dataset.state = "ready";
    } catch (err) {
      showError(String(err.message || err));
    } finally {
      inFlight = false;
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
    }
  }

  function schedule() {
    if (timer !== null) clearInterval(timer);
    timer = el("auto-refresh").checked ? setInterval(refresh, REFRESH_MS) : null;
  }

  /* world-atlas stitches polygons across the antimeridian (their rings jump from +180 to -180);
   * ECharts draws rings as given, so cut them there again, closing polar rings via the pole. */
  function cutRing(ring) {
    const pts = ring.slice(0, ring.length - 1);
    const m = pts.length;
    const jump = (j) => Math.abs(pts[(j + 1) % m][0] - pts[j][0]) > 180;
    let j0 = -1;
    for (let j = 0; j < m; j++) if (jump(j)) { j0 = j; break; }
    if (j0 < 0) return [ring];
    const pieces = [];
    let cur = null;
    let first = null;
    for (let k = 0; k < m; k++) {
      const a = pts[(j0 + k) % m];
      const b = pts[(j0 + k + 1) % m];
      if (Math.abs(b[0] - a[0]) > 180) {
        const side = a[0] > 0 ? 180 : -180;
        const bl = b[0] + (side > 0 ? 360 : -360);
        const lat = a[1] + ((side - a[0]) / (bl - a[0])) * (b[1] - a[1]);
        if (cur) { cur.push([side, lat]); pieces.push(cur); } else { first = [side, lat]; }
        cur = [[-side, lat]];
      }
      cur.push(b);
    }
    cur.push(first);
    pieces.push(cur);
    return pieces.map((piece) => {
      const s1 = piece[0][0];
      const s2 = piece[piece.length - 1][0];
      if (s1 !== s2) {
        const pole = piece.reduce((t, p) => t + p[1], 0) < 0 ? -90 : 90;
        piece.push([s2, pole], [s1, pole]);
      }
      piece.push(piece[0]);
      return piece;
    });
  }

  function cutAntimeridian(geojson) {
    for (const f of geojson.features || [geojson]) {
      const g = f.geometry;
      if (!g) continue;
      const polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
      const out = [];
      for (const poly of polys) {
        const [outer, ...holes] = poly;
        const parts = cutRing(outer);
        if (parts.length === 1) out.push([parts[0], ...holes]);
        else for (const part of parts) out.push([part]);
      }
      f.geometry = { type: "MultiPolygon", coordinates: out };
    }
    return geojson;
  }

  async function loadWorld() {
    const topo = await getJSON("/static/vendor/world-atlas/land-110m.json");
    const land = topojson.feature(topo, topo.objects.land);
    const geojson = land.type === "FeatureCollection" ? land : { type: "FeatureCollection", features: [land] };
    echarts.registerMap("world", cutAntimeridian(geojson));
  }

  async function start() {
    for (const node of document.querySelectorAll(".chart")) {
      charts[node.id] = echarts.init(node, null, { renderer: "canvas" });
      mark(node.id, "loading", 0, 0);
    }
    window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
    el("range").addEventListener("change", () => {
      const custom = el("range").value === "custom";
      el("custom-range").hidden = !custom;
      if (custom && lastSummary && lastSummary.firstMs !== null && !el("from").value) {
        el("from").value = toLocalInput(lastSummary.firstMs);
        el("to").value = toLocalInput(lastSummary.lastMs);
      }
      if (!custom) refresh();
    });
    for (const select of document.querySelectorAll(".chart-filter select")) select.addEventListener("change", refresh);
    el("counting").addEventListener("change", refresh);
    el("filters").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
    el("auto-refresh").addEventListener("change", schedule);
    try {
      await loadWorld();
    } catch (err) {
      showError(`world outline: ${err.message || err}`);
    }
    await refresh();
    schedule();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
