// Keeps the server-rendered pages live by polling the JSON API. No dependencies.
"use strict";

(() => {
  const body = document.body;
  const ROOT = body.dataset.root || "";
  const POLL_MS = Number(body.dataset.pollMs) || 1500;
  const FINISHED = new Set(["completed", "failed", "stopped", "cancelled"]);
  const TOKEN_KEY = "trainhost.api_token";
  const CHARTS = { loss: ["train_loss", "val_loss"], accuracy: ["train_accuracy", "val_accuracy"] };

  // -- formatting (the same as the Jinja filters in status_api/dashboard.py) ----------------------
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const when = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "—");
  const metric = (v) => (v === null || v === undefined ? "—" : String(Number(Number(v).toPrecision(4))));
  const truncate = (text, length) => (text.length <= length ? text : `${text.slice(0, length - 1)}…`);

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const total = Math.max(0, Math.round(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const secs = total % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (hours) return `${hours} h ${pad(minutes)} min`;
    return minutes ? `${minutes} min ${pad(secs)} s` : `${secs} s`;
  }

  function elapsed(s) {
    if (!s.started_at) return null;
    const end = s.ended_at ? Date.parse(s.ended_at) : Date.now();
    return (end - Date.parse(s.started_at)) / 1000;
  }

  function deviceLabel(d) {
    if (!d) return "—";
    const kind = d.type || "?";
    const label = d.index !== null && d.index !== undefined && kind !== "cpu" ? `${kind}:${d.index}` : kind;
    return d.name ? `${label} (${d.name})` : label;
  }

  const market = (s) => [(s.symbols || []).join(", "), (s.timeframes || []).join(", ")].filter(Boolean).join(" ");
  const badge = (status) => `<span class="badge status-${esc(status)}" data-field="status">${esc(status)}</span>`;

  function progress(s) {
    const p = s.progress || {};
    const percent = s.status === "completed" ? 100 : Number(p.percent || 0);
    let label = p.total_epochs ? `epoch ${p.epoch || 0}/${p.total_epochs} · ${percent.toFixed(1)}%`
      : (p.message || s.phase || "");
    if (s.status === "running" && p.eta_seconds !== null && p.eta_seconds !== undefined) {
      label += ` · ETA ${duration(p.eta_seconds)}`;
    }
    const below = s.status === "failed" && s.error
      ? `<div class="sub error" title="${esc(s.error)}">${esc(truncate(s.error, 70))}</div>`
      : `<div class="sub" data-field="progress-label">${esc(label)}</div>`;
    return `<div class="progress" data-percent="${percent}" title="${percent.toFixed(1)} %">` +
      `<div class="fill status-${esc(s.status)}" style="width: ${percent.toFixed(2)}%"></div></div>${below}`;
  }

  // A child of an experiment says which trial and fold it is (its id's tail is cut off).
  const experimentPart = (link) => (link
    ? ` · trial ${esc(link.trial)}${link.fold === null || link.fold === undefined ? "" : ` fold ${esc(link.fold)}`}` : "");

  function sessionRow(s) {
    const href = `${ROOT}/sessions/${encodeURIComponent(s.session_id)}`;
    return `<tr data-session="${esc(s.session_id)}" data-status="${esc(s.status)}">` +
      `<td>${badge(s.status)}</td>` +
      `<td><a class="mono" href="${href}" title="${esc(s.session_id)}">${esc(truncate(s.session_id, 18))}</a>` +
      `<div class="sub">${esc(s.kind || "")}${experimentPart(s.experiment)}</div></td>` +
      `<td>${esc(s.strategy || "—")}</td><td>${esc(market(s) || "—")}</td>` +
      `<td class="progress-cell">${progress(s)}</td><td>${esc(deviceLabel(s.device))}</td>` +
      `<td class="num">${when(s.started_at)}</td><td class="num">${when(s.ended_at)}</td>` +
      `<td class="num">${duration(elapsed(s))}</td></tr>`;
  }

  const EXPERIMENT_LIVE = new Set(["queued", "running"]);
  const experimentHref = (id) => `${ROOT}/experiments/${encodeURIComponent(id)}/page`;

  function childrenProgress(e) {
    const c = e.children;
    const done = c.total ? (100 * c.done) / c.total : 0;
    const eta = EXPERIMENT_LIVE.has(e.status) && e.eta_seconds !== null && e.eta_seconds !== undefined
      ? ` · ETA ${duration(e.eta_seconds)}` : "";
    return `<div class="progress" data-percent="${done}" title="${c.done}/${c.total} sessions ended">` +
      `<div class="fill status-${esc(e.status)}" style="width: ${done.toFixed(2)}%"></div></div>` +
      `<div class="sub" data-field="children-label">${c.done}/${c.total} sessions${eta}</div>`;
  }

  const bestText = (e) => (e.best
    ? `${esc(metric(e.best.objective))} <span class="muted">(trial ${esc(e.best.trial)})</span>` : "—");

  function experimentRow(e) {
    return `<tr data-experiment="${esc(e.experiment_id)}" data-status="${esc(e.status)}">` +
      `<td>${badge(e.status)}</td>` +
      `<td><a href="${experimentHref(e.experiment_id)}">${esc(e.name)}</a>` +
      `<div class="sub mono" title="${esc(e.experiment_id)}">${esc(truncate(e.experiment_id, 18))}</div></td>` +
      `<td>${esc(e.search || "walk-forward")}</td><td class="progress-cell">${childrenProgress(e)}</td>` +
      `<td>${esc(e.objective.metric)}</td><td class="num" data-field="best">${bestText(e)}</td>` +
      `<td class="num">${when(e.created_at)}</td></tr>`;
  }

  // -- polling -------------------------------------------------------------------------------------
  async function getJSON(path) {
    const response = await fetch(ROOT + path, { cache: "no-store", headers: { Accept: "application/json" } });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || `HTTP ${response.status} for ${path}`);
    return data;
  }

  function showLive(ok) {
    const live = document.getElementById("live");
    live.hidden = false;
    live.classList.toggle("stale", !ok);
    live.textContent = ok ? "live" : "reconnecting";
  }

  function poll(refresh) {
    const tick = async () => {
      let again = true;
      try {
        again = (await refresh()) !== false;
        showLive(true);
      } catch (error) {
        showLive(false);
        showProblem(error.message);
      }
      if (again) setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function showProblem(text) {
    const problem = document.getElementById("problem");
    if (problem) {
      problem.hidden = !text;
      problem.textContent = text || "";
    }
  }

  // -- the sessions page ---------------------------------------------------------------------------
  function table(headers, rows) {
    const head = headers.map(([name, cls]) => `<th class="${cls || ""}">${name}</th>`).join("");
    return `<table class="compact"><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  function renderGpus(gpu) {
    if (!gpu.devices || !gpu.devices.length) return `<p class="muted">${esc(gpu.reason || "no GPU")}</p>`;
    return table([["GPU"], ["memory", "num"], ["util", "num"], ["temp", "num"]], gpu.devices.map((d) =>
      `<tr><td>${esc(d.index)} · ${esc(d.name)}</td>` +
      `<td class="num">${esc(d.memory_used_mb)} / ${esc(d.memory_total_mb)} MB</td>` +
      `<td class="num">${esc(d.utilization_percent)} %</td><td class="num">${esc(d.temperature_c)} °C</td></tr>`));
  }

  function renderWorkers(workers) {
    if (!workers.length) {
      return '<p class="muted">no worker registered: start one with <code>trainhost worker</code></p>';
    }
    return table([["worker"], ["state"], ["session"], ["heartbeat", "num"]], workers.map((w) =>
      `<tr><td class="mono">${esc(w.name)}</td>` +
      `<td><span class="badge worker-${esc(w.state)}">${esc(w.state)}</span></td>` +
      `<td class="mono">${esc(truncate(w.current_session || "—", 18))}</td>` +
      `<td class="num">${duration(w.heartbeat_age_seconds)} ago</td></tr>`));
  }

  function renderQueues(queues) {
    return table([["queue"], ["queued", "num"], ["running", "num"], ["failed", "num"]],
      Object.entries(queues).map(([name, q]) =>
        `<tr><td>${esc(name)}</td><td class="num">${q.queued}</td><td class="num">${q.started}</td>` +
        `<td class="num">${q.failed}</td></tr>`));
  }

  async function refreshDashboard() {
    const shown = document.getElementById("experiments").dataset.limit;
    const [listing, lab, health] = await Promise.all([getJSON("/training/sessions?limit=50"),
      getJSON(`/experiments?limit=${shown}`), getJSON("/health/detailed")]);
    document.querySelector("#sessions tbody").innerHTML = listing.sessions.map(sessionRow).join("");
    document.getElementById("no-sessions").hidden = listing.sessions.length > 0;
    document.querySelector("#experiments tbody").innerHTML = lab.experiments.map(experimentRow).join("");
    document.getElementById("no-experiments").hidden = lab.experiments.length > 0;
    document.getElementById("gpus").innerHTML = renderGpus(health.gpu);
    document.getElementById("workers").innerHTML = renderWorkers(health.workers);
    document.getElementById("queues").innerHTML = renderQueues(health.queues);
    showProblem("");
  }

  // -- a session's page ----------------------------------------------------------------------------
  function svgEl(name, attributes, text) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", name);
    Object.entries(attributes).forEach(([key, value]) => el.setAttribute(key, value));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function emptyChart(svg, text) {
    const box = svg.viewBox.baseVal;
    svg.append(svgEl("text", { class: "empty", x: (box.width || 560) / 2, y: (box.height || 220) / 2,
      "text-anchor": "middle" }, text));
  }

  // The plot area of `svg` for `values` (padded above and below): draws the y grid and its labels,
  // returns the area's size, margins and the y scale.
  function frame(svg, values) {
    const box = svg.viewBox.baseVal;
    const [W, H, L, R, T, B] = [box.width || 560, box.height || 220, 54, 14, 10, 28];
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 0.5;
    lo -= pad;
    hi += pad;
    const sy = (v) => T + ((hi - v) / (hi - lo)) * (H - T - B);
    // Enough significant digits that neighbouring labels differ (an equity of 99,700 to 101,000).
    const magnitude = Math.log10(Math.max(Math.abs(lo), Math.abs(hi)) / ((hi - lo) / 4));
    const digits = Math.min(12, Math.max(3, Math.ceil(magnitude) + 1));
    for (let i = 0; i <= 4; i += 1) {
      const v = lo + ((hi - lo) * i) / 4;
      svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
      svg.append(svgEl("text", { class: "axis-label", x: L - 6, y: sy(v) + 4, "text-anchor": "end" },
        String(Number(v.toPrecision(digits)))));
    }
    return { W, H, L, R, T, B, sy };
  }

  // A line chart of `series` (arrays of numbers, NaN/null skipped) over the positions `xs`, with
  // three x labels from `xLabel(x)`; `classes` names each series' CSS class; `marks` ({x, label})
  // are drawn as dashed vertical lines.
  function lineChart(svg, xs, series, xLabel, classes, empty, marks = []) {
    svg.replaceChildren();
    svg.dataset.points = String(xs.length);
    const lines = series.map((values) => xs.map((x, i) => [x, values[i]]).filter(([, v]) => Number.isFinite(v)));
    if (!lines.some((points) => points.length)) {
      emptyChart(svg, empty);
      return;
    }
    const { W, H, L, R, T, B, sy } = frame(svg, lines.flat().map(([, v]) => v));
    const x0 = xs[0];
    const x1 = Math.max(xs[xs.length - 1], x0 + 1);
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const anchors = { [x0]: "start", [x1]: "end" };
    [...new Set([x0, xs[Math.floor(xs.length / 2)], xs[xs.length - 1]])].forEach((x) => {
      svg.append(svgEl("text", { class: "axis-label", x: sx(x), y: H - 8, "text-anchor": anchors[x] || "middle" },
        xLabel(x)));
    });
    marks.forEach(({ x, label }) => {
      svg.append(svgEl("line", { class: "mark", x1: sx(x), x2: sx(x), y1: T, y2: H - B }));
      svg.append(svgEl("text", { class: "axis-label", x: sx(x) + 4, y: T + 12 }, label));
    });
    lines.forEach((points, i) => {
      svg.append(svgEl("polyline", { class: `line ${classes[i]}`, points: points.map(([x, v]) => `${sx(x)},${sy(v)}`).join(" ") }));
      if (points.length <= 60) {
        points.forEach(([x, v]) => svg.append(svgEl("circle", { class: classes[i], cx: sx(x), cy: sy(v), r: 2.5 })));
      }
    });
  }

  // A scatter of `points` ({x, y, title, best}); x labels at `ticks` ({x, label}).
  function scatterChart(svg, points, ticks, empty) {
    svg.replaceChildren();
    svg.dataset.points = String(points.length);
    if (!points.length) {
      emptyChart(svg, empty);
      return;
    }
    const { W, H, L, R, sy } = frame(svg, points.map((p) => p.y));
    const xs = points.map((p) => p.x).concat(ticks.map((t) => t.x));
    const margin = (Math.max(...xs) - Math.min(...xs)) * 0.06 || 0.5;
    const [x0, x1] = [Math.min(...xs) - margin, Math.max(...xs) + margin];
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    ticks.forEach(({ x, label }) => {
      svg.append(svgEl("text", { class: "axis-label", x: sx(x), y: H - 8, "text-anchor": "middle" }, label));
    });
    points.forEach((p) => {
      const dot = svgEl("circle", { class: p.best ? "point best" : "point", cx: sx(p.x), cy: sy(p.y), r: p.best ? 6 : 4.5 });
      dot.append(svgEl("title", {}, p.title));
      svg.append(dot);
    });
  }

  function drawChart(svg, records, keys) {
    lineChart(svg, records.map((r) => r.epoch), keys.map((key) => records.map((r) => r[key])),
      (epoch) => `epoch ${epoch}`, ["train", "val"], "waiting for the first epoch…");
  }

  // -- a session's backtest: equity against buy-and-hold, drawdown, trades page by page ------------
  const TRADES_PAGE = 50;
  const money = (v) => (v === null || v === undefined ? "—"
    : Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const percent = (v) => (v === null || v === undefined ? "—" : `${(Number(v) * 100).toFixed(2)} %`);

  // A backtest metric written for a reader (jobs/pipeline/metric_labels.py's format_metric).
  function formatMetric(v, unit) {
    if (v === null || v === undefined) return "—";
    if (unit === "time") return String(v).slice(0, 16).replace("T", " ");
    const n = Number(v);
    if (unit === "money") return money(n);
    if (unit === "fraction") return percent(n);
    if (unit === "count") return Math.trunc(n).toLocaleString("en-US");
    if (unit === "hours") return `${n.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })} h`;
    return n.toFixed(3);
  }

  async function drawBacktest(id) {
    const { points } = await getJSON(`/training/result/${encodeURIComponent(id)}/equity?points=560`);
    const xs = points.map((_, i) => i);
    const day = (i) => when(points[i].time).slice(0, 10);
    lineChart(document.getElementById("chart-equity"), xs,
      [points.map((p) => p.equity), points.map((p) => p.buy_and_hold)], day, ["train", "val"], "no equity curve");
    lineChart(document.getElementById("chart-drawdown"), xs, [points.map((p) => p.drawdown_pct * 100)], day,
      ["drawdown"], "no equity curve");
  }

  function tradeRow(t) {
    const cls = t.net_pnl > 0 ? "gain" : t.net_pnl < 0 ? "loss" : "";
    return `<tr><td>${esc(t.side)}${t.forced ? ' <span class="muted">(closed at end)</span>' : ""}</td>` +
      `<td class="num">${when(t.entry_time)}</td><td class="num">${when(t.exit_time)}</td>` +
      `<td class="num">${esc(t.entry_price)}</td><td class="num">${esc(t.exit_price)}</td>` +
      `<td class="num">${esc(t.quantity)}</td><td class="num ${cls}">${money(t.net_pnl)}</td>` +
      `<td class="num ${cls}">${percent(t.return_pct)}</td><td class="num">${esc(metric(t.holding_hours))}</td></tr>`;
  }

  async function showTrades(id, offset) {
    const page = await getJSON(`/training/result/${encodeURIComponent(id)}/trades?limit=${TRADES_PAGE}&offset=${offset}`);
    const table = document.getElementById("trades");
    table.querySelector("tbody").innerHTML = page.trades.map(tradeRow).join("");
    table.dataset.offset = String(offset);
    table.dataset.total = String(page.total);
    document.getElementById("trades-range").textContent = page.total
      ? `${offset + 1}–${offset + page.trades.length} of ${page.total}` : "none";
    document.getElementById("trades-prev").disabled = offset === 0;
    document.getElementById("trades-next").disabled = offset + TRADES_PAGE >= page.total;
  }

  function startBacktest(id) {
    const section = document.getElementById("backtest");
    if (!section || section.dataset.hasCurve !== "true") return;
    const report = (error) => notice(error.message);
    drawBacktest(id).catch(report);
    showTrades(id, 0).catch(report);
    const offset = () => Number(document.getElementById("trades").dataset.offset || 0);
    document.getElementById("trades-prev").addEventListener("click",
      () => showTrades(id, Math.max(0, offset() - TRADES_PAGE)).catch(report));
    document.getElementById("trades-next").addEventListener("click",
      () => showTrades(id, offset() + TRADES_PAGE).catch(report));
  }

  function setField(root, name, text) {
    root.querySelectorAll(`[data-field="${name}"]`).forEach((el) => { el.textContent = text; });
  }

  function renderSession(root, s) {
    const statusBadge = root.querySelector(".title-row .badge");
    statusBadge.className = `badge status-${s.status}`;
    statusBadge.textContent = s.status;
    root.dataset.status = s.status;
    setField(root, "phase", s.phase || "—");
    setField(root, "device", deviceLabel(s.device));
    setField(root, "worker", s.worker || "—");
    setField(root, "started", when(s.started_at));
    setField(root, "ended", when(s.ended_at));
    setField(root, "duration", duration(elapsed(s)));
    const throughput = s.throughput && s.throughput.samples_per_second;
    setField(root, "throughput", throughput ? Math.round(throughput).toLocaleString("en-US") : "—");
    root.querySelector(".progress-wide").innerHTML = progress(s);
    root.querySelectorAll("td[data-metric]").forEach((cell) => {
      const [row, key] = cell.dataset.metric.split(".");
      cell.textContent = metric(((s.metrics || {})[row] || {})[key]);
    });
    document.getElementById("stop").hidden = FINISHED.has(s.status);
  }

  async function refreshHistory(id) {
    const { history } = await getJSON(`/training/sessions/${encodeURIComponent(id)}/history`);
    Object.entries(CHARTS).forEach(([name, keys]) => drawChart(document.getElementById(`chart-${name}`), history, keys));
  }

  function notice(text) {
    const el = document.getElementById("notice");
    el.hidden = false;
    el.textContent = text;
  }

  function apiToken() {
    if (body.dataset.tokenRequired !== "true") return "";
    let token = localStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = (window.prompt("API token (sent as Authorization: Bearer …; kept in this browser only)") || "").trim();
      if (token) localStorage.setItem(TOKEN_KEY, token);
    }
    return token;
  }

  // Asks to confirm, then POSTs `payload` to `path` with the API token (asked once, kept in this
  // browser); `said(answer)` is the notice shown when it is accepted.
  async function askToStop(question, path, payload, button, said) {
    if (!window.confirm(question)) return;
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const token = apiToken();
    if (body.dataset.tokenRequired === "true" && !token) return;
    if (token) headers.Authorization = `Bearer ${token}`;
    button.disabled = true;
    const response = await fetch(ROOT + path, { method: "POST", headers, body: JSON.stringify(payload) });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 401) localStorage.removeItem(TOKEN_KEY);
    button.disabled = response.ok;
    notice(response.ok ? said(answer) : `not stopped: ${(answer.error && answer.error.message) || response.status}`);
  }

  function stopSession(id, button) {
    const question = `Stop session ${id}?\n\nA running training ends after its current batch and keeps a partial model.`;
    return askToStop(question, "/training/stop", { session_id: id }, button, (answer) => answer.message);
  }

  function startSession() {
    const root = document.getElementById("session");
    const id = root.dataset.session;
    const hasCharts = Boolean(document.getElementById("chart-loss"));
    const button = document.getElementById("stop");
    button.hidden = root.dataset.finished === "true";
    button.addEventListener("click", () => stopSession(id, button).catch((error) => notice(error.message)));
    if (root.dataset.finished === "true") {
      if (hasCharts) refreshHistory(id).catch((error) => notice(error.message));
      startBacktest(id);
      return;
    }
    poll(async () => {
      const s = await getJSON(`/training/status/${encodeURIComponent(id)}`);
      if (FINISHED.has(s.status)) {
        window.location.reload(); // the server renders the result, the error and the test metrics
        return false;
      }
      renderSession(root, s);
      if (hasCharts) await refreshHistory(id);
      return true;
    });
  }

  // -- an experiment's page: the comparison table (sortable), objective against each parameter, the
  // stitched out-of-sample equity per trial ------------------------------------------------------
  const paramValue = (v) => (typeof v === "number" ? metric(v) : String(v));
  const sortKey = (v) => (v === null || v === undefined ? "" : typeof v === "boolean" ? String(Number(v)) : String(v));

  function rowValue(row, key) {
    if (key.startsWith("param:")) return row.params[key.slice(6)];
    const [section, name] = key.split(".");
    return name ? (row[section] || {})[name] : row[key];
  }

  function cellText(value, unit) {
    if (unit === "value") return value === null || value === undefined ? "—" : paramValue(value);
    return unit === "metric" ? metric(value) : formatMetric(value, unit);
  }

  function trialRow(row, columns, bestTrial) {
    const error = row.errors.length
      ? `<div class="sub error" title="${esc(row.errors[0])}">${esc(truncate(row.errors[0], 70))}</div>` : "";
    const cells = columns.map(({ key, unit }) => {
      const value = rowValue(row, key);
      const content = unit === "status" ? badge(row.status) + error : esc(cellText(value, unit));
      return `<td data-key="${esc(key)}" data-sort="${esc(sortKey(value))}"${unit === "status" ? "" : ' class="num"'}>` +
        `${content}</td>`;
    });
    const sessions = row.sessions.map((sid, fold) =>
      `<a class="mono" href="${ROOT}/sessions/${encodeURIComponent(sid)}" title="${esc(sid)}">` +
      `${row.sessions.length > 1 ? `fold ${fold}` : "session"}</a>`).join(" ");
    return `<tr data-trial="${row.trial}" data-status="${esc(row.status)}"${row.trial === bestTrial ? ' class="best"' : ""}>` +
      `${cells.join("")}<td class="sessions">${sessions}</td></tr>`;
  }

  // Empty cells last either way; numbers as numbers, the rest as text; ties keep their order.
  function compareCells(a, b, order) {
    if (a === "" || b === "") return (a === "") - (b === "");
    const [x, y] = [Number(a), Number(b)];
    const sign = order === "desc" ? -1 : 1;
    return sign * (Number.isFinite(x) && Number.isFinite(y) ? x - y : a.localeCompare(b));
  }

  function sortTrials(table) {
    const { sortKey: key, sortOrder: order } = table.dataset;
    table.querySelectorAll("th[data-key]").forEach((th) => {
      if (th.dataset.key === key) th.setAttribute("aria-sort", order === "desc" ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
    const value = (tr) => tr.querySelector(`td[data-key="${CSS.escape(key)}"]`).dataset.sort;
    const tbody = table.tBodies[0];
    tbody.append(...[...tbody.rows].sort((a, b) => compareCells(value(a), value(b), order)));
  }

  function renderTrials(table, e) {
    const columns = [...table.querySelectorAll("th[data-key]")].map((th) => th.dataset);
    const bestTrial = e.best ? e.best.trial : null;
    table.dataset.best = bestTrial === null ? "" : String(bestTrial);
    table.tBodies[0].innerHTML = e.rows.map((row) => trialRow(row, columns, bestTrial)).join("");
    sortTrials(table);
  }

  // Numbers on a linear axis, or a logarithmic one where they span a decade or more; anything else
  // (text, booleans, a mix) as categories in the order first seen.
  function paramAxis(values) {
    const numeric = values.every((v) => typeof v === "number");
    if (!numeric) {
      const categories = [...new Set(values.map(paramValue))];
      return { at: (v) => categories.indexOf(paramValue(v)), ticks: categories.map((label, x) => ({ x, label })) };
    }
    const [lo, hi] = [Math.min(...values), Math.max(...values)];
    const log = lo > 0 && hi / lo >= 10;
    const at = (v) => (log ? Math.log10(v) : v);
    const distinct = [...new Set(values)].sort((a, b) => a - b);
    const shown = distinct.length <= 6 ? distinct : [lo, log ? Math.sqrt(lo * hi) : (lo + hi) / 2, hi];
    return { at, ticks: shown.map((v) => ({ x: at(v), label: metric(v) })) };
  }

  function drawParamCharts(e) {
    const scored = e.rows.filter((row) => Number.isFinite(row.objective));
    document.querySelectorAll("svg.param-chart").forEach((svg) => {
      const path = svg.dataset.param;
      const axis = paramAxis(e.rows.map((row) => row.params[path]));
      const points = scored.map((row) => ({ x: axis.at(row.params[path]), y: row.objective,
        best: e.best && e.best.trial === row.trial,
        title: `trial ${row.trial}: ${path} = ${paramValue(row.params[path])}, ${e.objective.metric} = ${metric(row.objective)}` }));
      scatterChart(svg, points, axis.ticks, "no trial scored yet");
    });
  }

  const TRIAL_COLOURS = 8;

  async function drawOutOfSample(e) {
    const svg = document.getElementById("chart-oos");
    if (!svg) return;
    const id = encodeURIComponent(e.experiment_id);
    const curves = (await Promise.all(e.rows.map((row) =>
      getJSON(`/experiments/${id}/equity?trial=${row.trial}&points=560`).catch(() => null)))).filter(Boolean);
    const longest = curves.reduce((a, c) => (!a || c.points.length > a.points.length ? c : a), null);
    const points = longest ? longest.points : [];
    const times = points.map((p) => Date.parse(p.time));
    const marks = e.folds.slice(1).map((fold) => ({
      x: times.findIndex((t) => t >= Date.parse(fold.test_start)), label: `fold ${fold.fold}` }))
      .filter((mark) => mark.x > 0);
    const bestTrial = e.best ? e.best.trial : null;
    const classes = curves.map((c) => `trial t${c.trial % TRIAL_COLOURS}${c.trial === bestTrial ? " best" : ""}`);
    lineChart(svg, points.map((_, i) => i), curves.map((c) => c.points.map((p) => p.equity)),
      (i) => when(points[i].time).slice(0, 10), classes, "no stitched curve", marks);
    document.getElementById("oos-legend").innerHTML = curves.map((c, i) =>
      `<i class="${classes[i]}"></i> trial ${esc(c.trial)}${c.trial === bestTrial ? " (best)" : ""}`).join(" ");
  }

  function renderExperiment(root, e) {
    const statusBadge = root.querySelector(".title-row .badge");
    statusBadge.className = `badge status-${e.status}`;
    statusBadge.textContent = e.status;
    root.dataset.status = e.status;
    setField(root, "by-status", Object.entries(e.children.by_status).sort()
      .map(([status, count]) => `${status} ${count}`).join(" · "));
    setField(root, "eta", duration(e.eta_seconds));
    root.querySelector('[data-field="best"]').innerHTML = bestText(e);
    root.querySelector(".progress-wide").innerHTML = childrenProgress(e);
    document.getElementById("stop").hidden = !EXPERIMENT_LIVE.has(e.status);
    renderTrials(document.getElementById("trials"), e);
    drawParamCharts(e);
  }

  function startExperiment() {
    const root = document.getElementById("experiment");
    const id = root.dataset.experiment;
    const path = `/experiments/${encodeURIComponent(id)}`;
    const table = document.getElementById("trials");
    table.tHead.addEventListener("click", (event) => {
      const th = event.target.closest("th[data-key]");
      if (!th) return;
      const again = table.dataset.sortKey === th.dataset.key;
      table.dataset.sortOrder = again && table.dataset.sortOrder === "asc" ? "desc" : "asc";
      table.dataset.sortKey = th.dataset.key;
      sortTrials(table);
    });
    const button = document.getElementById("stop");
    const question = `Stop experiment ${id}?\n\nQueued sessions are cancelled; running ones end after their current batch.`;
    button.addEventListener("click", () => askToStop(question, `${path}/stop`, {}, button,
      (answer) => `stopping: ${answer.sessions_stopped} running or queued sessions asked to stop`)
      .catch((error) => notice(error.message)));
    if (root.dataset.finished === "true") {
      getJSON(path).then((e) => {
        drawParamCharts(e);
        return drawOutOfSample(e);
      }).catch((error) => notice(error.message));
      return;
    }
    poll(async () => {
      const e = await getJSON(path);
      if (e.status === "completed" || e.status === "stopped") {
        window.location.reload(); // the server renders the final rows and the summary
        return false;
      }
      renderExperiment(root, e);
      return true;
    });
  }

  if (body.dataset.page === "dashboard") poll(refreshDashboard);
  if (body.dataset.page === "experiment") startExperiment();
  if (body.dataset.page === "session") startSession();
})();
