// The scr dashboard: one tenant's numbers, read with the read key typed into the page.
// The key lives in this closure only: never in a URL, storage, a cookie or the log; it is
// sent as `Authorization: Bearer`, and the API scopes every answer to the key's tenant.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const LIVE_POINTS = 120; // seconds of events/s kept on the live chart
  const RECONNECT_MS = 1000;
  let key = null;
  let live = null; // the AbortController of the open live stream
  let charts = [];
  let ratePoints = [[], []];

  class Refused extends Error {}

  async function api(path, as = "json") {
    const answer = await fetch(path, {
      headers: {authorization: `Bearer ${key}`}, cache: "no-store", referrerPolicy: "no-referrer",
    });
    if (answer.status === 401 || answer.status === 403) {
      const body = await answer.json().catch(() => ({}));
      throw new Refused(`${answer.status}: ${body.error ? body.error.message : "refused"}`);
    }
    if (!answer.ok) {
      const failure = new Error(`${path.split("?")[0]} answered ${answer.status}`);
      failure.status = answer.status;
      throw failure;
    }
    return as === "text" ? answer.text() : answer.json();
  }

  function clearBoard() {
    if (live) live.abort();
    live = null;
    charts.forEach((chart) => chart.destroy());
    charts = [];
    ratePoints = [[], []];
    for (const id of ["destinations", "budgets", "anomalies", "checkpoint", "checkpoint-check",
                      "usage-totals", "tenant"]) $(id).textContent = "";
    for (const b of document.querySelectorAll(".numbers b")) b.textContent = "–";
    $("board").hidden = true;
    $("signout").hidden = true;
    delete document.body.dataset.charts;
  }

  function fail(error) {
    if (error instanceof Refused) {
      key = null;
      clearBoard();
      $("error").textContent = `This key was refused (${error.message}). Type a valid read key of your tenant.`;
      $("error").hidden = false;
      $("signin").hidden = false;
      return;
    }
    $("error").textContent = String(error.message || error);
    $("error").hidden = false;
  }

  // ----- usage by model, anomalies marked on the charts ----------------------------------

  function range(window) {
    const step = window === "hour" ? 3600e3 : 86400e3;
    const to = Math.floor(Date.now() / step) * step + step;
    const from = to - (window === "hour" ? 48 : 30) * step;
    const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
    return {from: iso(from), to: iso(to)};
  }

  async function anomalies(span) {
    return (await api(`/v1/anomalies?from=${span.from}&to=${span.to}`)).anomalies;
  }

  function marks(found) {
    // a uPlot plugin: one red line at each anomaly's window_start
    return {hooks: {draw: (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#cf222e";
      ctx.lineWidth = 2 * devicePixelRatio;
      for (const a of found) {
        const x = u.valToPos(Date.parse(a.window_start) / 1000, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
      }
      ctx.restore();
    }}};
  }

  const COLORS = ["#0969da", "#bf8700", "#1a7f37", "#8250df", "#cf222e", "#57606a", "#0a3069", "#953800"];

  function byModel(rows, field) {
    const times = [...new Set(rows.map((r) => Date.parse(r.window_start) / 1000))].sort((a, b) => a - b);
    const models = [...new Set(rows.map((r) => r.model === null ? "(none)" : r.model))].sort();
    const at = new Map(times.map((t, i) => [t, i]));
    const series = models.map(() => times.map(() => null));
    for (const r of rows) {
      const model = r.model === null ? "(none)" : r.model;
      series[models.indexOf(model)][at.get(Date.parse(r.window_start) / 1000)] = Number(r[field]);
    }
    return {models, data: [times, ...series]};
  }

  function drawChart(target, {models, data}, found, label) {
    const opts = {
      width: Math.max(320, $(target).clientWidth || 900), height: 220, plugins: [marks(found)],
      series: [{}, ...models.map((m, i) => ({label: m, stroke: COLORS[i % COLORS.length], width: 2,
                                            points: {show: data[0].length < 60}}))],
      axes: [{}, {label, size: 70}],
    };
    charts.push(new uPlot(opts, data, $(target)));
  }

  async function showUsage() {
    const window = $("window").value;
    const span = range(window);
    const [usage, found] = await Promise.all([
      api(`/v1/usage?from=${span.from}&to=${span.to}&window=${window}&group_by=model`),
      anomalies(span),
    ]);
    charts.filter((c) => c.root.parentNode.id !== "chart-rate").forEach((c) => c.destroy());
    charts = charts.filter((c) => c.root.parentNode && c.root.parentNode.id === "chart-rate");
    for (const id of ["chart-cost", "chart-tokens"]) $(id).textContent = "";
    const on = (metrics) => found.filter((a) => metrics.includes(a.metric));
    drawChart("chart-cost", byModel(usage.rows, "cost_usd"), on(["cost_usd", "error_rate"]), "USD");
    drawChart("chart-tokens", byModel(usage.rows, "total_tokens"), on(["total_tokens"]), "tokens");
    const t = usage.totals;
    $("usage-totals").textContent = `Totals: ${t.events} events, ${t.sessions} sessions, ` +
      `${t.total_tokens} tokens, ${t.cost_usd} USD (${t.errors} errors).`;
    $("anomalies").textContent = "";
    for (const a of found) {
      const li = document.createElement("li");
      li.textContent = `${a.window_start} ${a.metric}: ${a.value} (expected ${a.expected})`;
      $("anomalies").append(li);
    }
    if (!found.length) $("anomalies").append(Object.assign(document.createElement("li"),
      {textContent: "none in this range", className: "note"}));
    performance.mark("usage-drawn");
  }

  // ----- budgets, checkpoint -------------------------------------------------------------

  function cell(text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    return td;
  }

  async function showBudgets() {
    const {budgets} = await api("/v1/budgets");
    $("budgets").textContent = "";
    for (const b of budgets) {
      const used = Number(b.limit_usd) > 0 ? (100 * Number(b.spent_usd) / Number(b.limit_usd)).toFixed(1) + " %" : "–";
      const tr = document.createElement("tr");
      tr.append(cell(`${b.period} from ${b.period_start.slice(0, 10)}`), cell(b.spent_usd, true),
                cell(b.limit_usd, true), cell(used, true));
      $("budgets").append(tr);
    }
    if (!budgets.length) $("budgets").append(Object.assign(document.createElement("tr"),
      {innerHTML: "<td colspan=4 class=note>no budget configured</td>"}));
  }

  const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

  // C2SP signed note: text up to the last blank line; lines "— <name> <base64(key id ‖ sig)>".
  // Verified here with WebCrypto's Ed25519 (Chromium 137+), against GET /v1/ledger/public-key.
  async function verifyCheckpoint(note, verifierKey) {
    const [name, keyIdHex, ...rest] = verifierKey.trim().split("+"); // base64 may hold '+'
    const keyB64 = rest.join("+");
    const raw = fromBase64(keyB64);
    if (raw[0] !== 1 || raw.length !== 33) return "the public key is not an Ed25519 key";
    const split = note.lastIndexOf("\n\n");
    const text = new TextEncoder().encode(note.slice(0, split + 1));
    const line = note.slice(split + 2).split("\n").find((l) => l.startsWith(`— ${name} `));
    if (!line) return `no signature by ${name}`;
    const blob = fromBase64(line.split(" ")[2]);
    const keyId = [...blob.slice(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (keyId !== keyIdHex) return "the signature's key id is not the server's key";
    let publicKey;
    try {
      publicKey = await crypto.subtle.importKey("raw", raw.slice(1), {name: "Ed25519"}, false, ["verify"]);
    } catch (error) {
      return `this browser has no Ed25519 in WebCrypto (${error.message})`;
    }
    return await crypto.subtle.verify("Ed25519", publicKey, blob.slice(4), text) ? null : "the signature does not verify";
  }

  async function showCheckpoint() {
    const [note, verifierKey] = await Promise.all([
      api("/v1/ledger/checkpoint", "text"), api("/v1/ledger/public-key", "text"),
    ]);
    $("checkpoint").textContent = note;
    let problem;
    try {
      problem = await verifyCheckpoint(note, verifierKey);
    } catch (error) {
      problem = `the checkpoint or the key cannot be read (${error.message})`;
    }
    const lines = note.split("\n");
    $("checkpoint-check").className = problem ? "bad" : "ok";
    $("checkpoint-check").textContent = problem
      ? `Not verified: ${problem}.`
      : `Verified in this browser (WebCrypto Ed25519) with ${verifierKey.split("+")[0]}: tree size ${lines[1]}.`;
  }

  // ----- live numbers: Server-Sent Events read with fetch (EventSource cannot send a header)

  function showNumbers(n) {
    $("tenant").textContent = n.tenant;
    $("events-per-s").textContent = n.events_per_s.toFixed(1);
    $("accepted").textContent = n.accepted;
    $("rejected").textContent = n.rejected;
    $("duplicate").textContent = n.duplicate;
    const rate = n.acceptance_rate;
    $("acceptance").textContent = rate === null ? "–" : (100 * rate).toFixed(1) + " %";
    $("rejection").textContent = rate === null ? "–" : (100 * (1 - rate)).toFixed(1) + " %";
    $("destinations").textContent = "";
    for (const d of n.destinations) {
      const tr = document.createElement("tr");
      tr.append(cell(d.name), cell(d.lag, true), cell(d.dead, true));
      $("destinations").append(tr);
    }
    ratePoints[0].push(n.ts);
    ratePoints[1].push(n.events_per_s);
    if (ratePoints[0].length > LIVE_POINTS) ratePoints.forEach((p) => p.shift());
    const rateChart = charts.find((c) => c.root.parentNode && c.root.parentNode.id === "chart-rate");
    if (rateChart) rateChart.setData(ratePoints);
  }

  // The last LIVE_POINTS seconds, ending at the newest reading (now, before the first one).
  // From the data, not uPlot's max: uPlot widens a one-point time scale by a thousand days.
  function liveRange() {
    const times = ratePoints[0];
    const end = times.length ? times[times.length - 1] : Date.now() / 1000;
    return [end - LIVE_POINTS, end];
  }

  async function follow() {
    const controller = new AbortController();
    live = controller;
    while (key && live === controller) {
      try {
        const answer = await fetch("/v1/dashboard/live", {
          headers: {authorization: `Bearer ${key}`}, cache: "no-store", signal: controller.signal,
        });
        if (answer.status === 401 || answer.status === 403) {
          const body = await answer.json().catch(() => ({}));
          throw new Refused(`${answer.status}: ${body.error ? body.error.message : "refused"}`);
        }
        if (!answer.ok) throw new Error(`the live stream answered ${answer.status}`);
        $("live-state").textContent = "live";
        const reader = answer.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        for (;;) {
          const {done, value} = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, {stream: true});
          let end;
          while ((end = buffered.indexOf("\n\n")) >= 0) {
            const message = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
            if (data) showNumbers(JSON.parse(data));
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof Refused) return fail(error);
        $("live-state").textContent = `live stream interrupted (${error.message}); reconnecting`;
      }
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  // ----- sign in and out -----------------------------------------------------------------

  async function show() {
    $("error").hidden = true;
    try {
      await showBudgets(); // the first call checks the key: nothing shows before it passes
      $("board").hidden = false;
      $("signout").hidden = false;
      $("signin").hidden = true;
      charts.push(new uPlot({width: Math.max(320, $("chart-rate").clientWidth || 900), height: 180,
        scales: {x: {time: true, range: liveRange}},
        series: [{}, {label: "events/s", stroke: "#0969da", width: 2}], axes: [{}, {size: 60}]},
        ratePoints, $("chart-rate")));
      follow();
      await Promise.all([showUsage(), showCheckpoint()]);
      document.body.dataset.charts = "drawn";
      performance.mark("charts-drawn");
    } catch (error) {
      fail(error);
    }
  }

  $("signin").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    key = $("key").value.trim();
    $("key").value = "";
    clearBoard();
    show();
  });
  $("signout").addEventListener("click", () => {
    key = null;
    clearBoard();
    $("signin").hidden = false;
  });
  $("window").addEventListener("change", () => showUsage().catch(fail));
})();
