// What both consoles share: calling the API of this origin and turning its problem+json into
// words, numbers for people, and the usage charts (inline SVG drawn here, no library).
// No framework and no build step: this file is served as it is written.
"use strict";

const Console = (() => {
  const SVG = "http://www.w3.org/2000/svg";

  /** An API answer that was not a success, told in words (`message`), with the problem's fields. */
  class ApiProblem extends Error {
    constructor(status, problem, fallback) {
      const title = (problem && problem.title) || fallback || `HTTP ${status}`;
      const detail = problem && problem.detail;
      super(detail ? `${title}: ${detail}` : title);
      this.status = status;
      this.title = title;
      this.detail = detail || "";
      this.requestId = (problem && problem.request_id) || "";
      this.type = (problem && problem.type) || "";
    }
  }

  /**
   * Calls `path` on this origin with `token` as the bearer credential. Answers the Response
   * (`raw`) or its JSON; throws ApiProblem for any status outside 2xx, and for a network error.
   */
  async function call(path, { token, method = "GET", body, headers = {}, raw = false } = {}) {
    const h = Object.assign({}, headers);
    if (token) h["Authorization"] = `Bearer ${token}`;
    if (body !== undefined && !(body instanceof Blob) && typeof body !== "string") {
      h["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, { method, headers: h, body, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiProblem(0, null, `The server could not be reached (${e.message})`);
    }
    if (!response.ok) {
      let problem = null;
      try {
        problem = await response.json();
      } catch (_) {
        problem = null; // not JSON (a proxy's page): the status says what happened
      }
      throw new ApiProblem(response.status, problem, response.statusText);
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  /** Puts `message` in the page's alert region (role="alert": read out when it changes). */
  function showError(region, error) {
    region.textContent = error instanceof ApiProblem || error instanceof Error ? error.message : String(error);
    if (error && error.requestId) {
      const id = document.createElement("span");
      id.className = "request-id";
      id.textContent = ` (request ${error.requestId})`;
      region.append(id);
    }
    region.hidden = false;
  }

  function clearError(region) {
    region.textContent = "";
    region.hidden = true;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    let v = Number(n);
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }

  function number(n, digits = 0) {
    if (n === null || n === undefined) return "—";
    return Number(n).toLocaleString("en", { maximumFractionDigits: digits });
  }

  const HOUR = 3600 * 1000;
  const DAY = 24 * HOUR;

  /** The usage query a view asks: the last 24 hours by hour, or the last 30 days by day. */
  function usageQuery(granularity, now = Date.now()) {
    const step = granularity === "day" ? DAY : HOUR;
    const to = Math.ceil((now + 1) / HOUR) * HOUR;
    const from = granularity === "day" ? Math.floor(now / DAY) * DAY - 29 * DAY : to - 24 * HOUR;
    const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
    return { query: `from=${iso(from)}&to=${iso(to)}&granularity=${granularity}`, from, to, step };
  }

  /** The charts a usage answer draws: what each reads from a bucket, and how it is written. */
  const METRICS = [
    { key: "requests", label: "Requests by status", read: (b) => b.requests, format: (v) => number(v) },
    { key: "input_bytes", label: "Bytes in", read: (b) => b.input_bytes, format: bytes },
    { key: "output_bytes", label: "Bytes out", read: (b) => b.output_bytes, format: bytes },
    { key: "input_megapixels", label: "Megapixels in", read: (b) => b.input_megapixels, format: (v) => number(v, 3) },
    { key: "output_megapixels", label: "Megapixels out", read: (b) => b.output_megapixels, format: (v) => number(v, 3) },
    { key: "cpu_ms", label: "CPU time (ms)", read: (b) => b.cpu_ms, format: (v) => number(v, 1) },
  ];

  function statusClass(status) {
    const s = Number(status);
    if (s >= 200 && s < 300) return "s2xx";
    if (s === 429) return "s429";
    if (s >= 400 && s < 500) return "s4xx";
    return "s5xx";
  }

  function slotLabel(ms, step) {
    const d = new Date(ms);
    return step >= DAY ? d.toISOString().slice(5, 10) : d.toISOString().slice(11, 13) + ":00";
  }

  /** One bar chart of `metric` over the slots of `range`; requests are stacked by status. */
  function chart(metric, slots, range) {
    const W = 560, H = 180, PAD_L = 56, PAD_B = 22, PAD_T = 8;
    const values = slots.map((s) => (s.bucket ? metric.read(s.bucket) : 0));
    const max = Math.max(...values, 0);
    const total = values.reduce((a, b) => a + b, 0);
    const figure = el("figure", { class: "chart", "data-metric": metric.key, "data-total": String(total) });
    const titleId = `chart-${metric.key}-title`;
    figure.append(el("figcaption", { id: titleId }, `${metric.label} — total ${metric.format(total)}`));
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": titleId,
      class: "bars",
    });
    const plotW = W - PAD_L - 4, plotH = H - PAD_T - PAD_B;
    root.append(svg("line", { x1: PAD_L, y1: PAD_T + plotH, x2: W - 4, y2: PAD_T + plotH, class: "axis" }));
    const top = svg("text", { x: PAD_L - 6, y: PAD_T + 10, class: "tick", "text-anchor": "end" });
    top.textContent = metric.format(max);
    root.append(top);
    const zero = svg("text", { x: PAD_L - 6, y: PAD_T + plotH, class: "tick", "text-anchor": "end" });
    zero.textContent = "0";
    root.append(zero);
    const slotW = plotW / Math.max(slots.length, 1);
    const barW = Math.max(slotW * 0.7, 1);
    slots.forEach((slot, i) => {
      const x = PAD_L + i * slotW + (slotW - barW) / 2;
      const value = values[i];
      const g = svg("g", { class: "slot", "data-start": new Date(slot.start).toISOString(), "data-value": String(value) });
      const tip = svg("title");
      tip.textContent = `${slotLabel(slot.start, range.step)}: ${metric.format(value)}`;
      g.append(tip);
      if (value > 0 && max > 0) {
        if (metric.key === "requests" && slot.bucket && slot.bucket.by_status) {
          let y = PAD_T + plotH;
          for (const [status, t] of Object.entries(slot.bucket.by_status).sort()) {
            const h = (t.requests / max) * plotH;
            y -= h;
            g.append(svg("rect", { x, y, width: barW, height: h, class: `bar ${statusClass(status)}`, "data-status": status, "data-value": String(t.requests) }));
          }
        } else {
          const h = (value / max) * plotH;
          g.append(svg("rect", { x, y: PAD_T + plotH - h, width: barW, height: h, class: "bar" }));
        }
      }
      root.append(g);
      const every = Math.ceil(slots.length / 8);
      if (i % every === 0) {
        const label = svg("text", { x: x + barW / 2, y: H - 6, class: "tick", "text-anchor": "middle" });
        label.textContent = slotLabel(slot.start, range.step);
        root.append(label);
      }
    });
    figure.append(root);
    return figure;
  }

  /** The slots of `range` (every hour or day in it) with the answer's bucket for each, if any. */
  function slotsOf(answer, range) {
    const byStart = new Map();
    for (const b of answer.buckets || []) {
      const start = Math.floor(Date.parse(b.start) / range.step) * range.step;
      byStart.set(start, b);
    }
    const slots = [];
    for (let t = Math.floor(range.from / range.step) * range.step; t < range.to; t += range.step) {
      slots.push({ start: t, bucket: byStart.get(t) || null });
    }
    // A bucket outside the drawn slots (it should not happen) is still drawn, not lost.
    for (const [start, b] of byStart) if (!slots.some((s) => s.start === start)) slots.push({ start, bucket: b });
    slots.sort((a, b) => a.start - b.start);
    return slots;
  }

  /** The status legend of the requests chart. */
  function legend(answer) {
    const seen = new Set();
    for (const b of answer.buckets || []) for (const s of Object.keys(b.by_status || {})) seen.add(s);
    const list = el("ul", { class: "legend" });
    for (const s of [...seen].sort()) {
      let n = 0;
      for (const b of answer.buckets || []) n += (b.by_status && b.by_status[s] ? b.by_status[s].requests : 0);
      list.append(el("li", { "data-status": s, "data-requests": String(n) }, el("span", { class: `swatch ${statusClass(s)}`, "aria-hidden": "true" }), `${s}: ${number(n)}`));
    }
    return list;
  }

  /** The totals, charts and a table of every bucket of a usage answer, into `target`. */
  function renderUsage(target, answer, range, query) {
    target.replaceChildren();
    target.setAttribute("data-query", query);
    target.setAttribute("data-buckets", String((answer.buckets || []).length));
    const t = answer.total || {};
    const b = answer.billable || {};
    const cards = el("dl", { class: "totals" });
    const card = (name, key, value) => cards.append(el("div", { class: "card", "data-total": key, "data-value": String(value ?? "") }, el("dt", { text: name }), el("dd", { text: key.endsWith("bytes") ? bytes(value) : number(value, 3) })));
    card("Requests", "requests", t.requests);
    card("Billable requests", "billable_requests", b.requests);
    card("Bytes in", "input_bytes", t.input_bytes);
    card("Bytes out", "output_bytes", t.output_bytes);
    card("Megapixels out", "output_megapixels", t.output_megapixels);
    card("CPU time (ms)", "cpu_ms", t.cpu_ms);
    target.append(el("p", { class: "range" }, `From ${answer.from} to ${answer.to}, by ${answer.granularity} (UTC).`));
    target.append(cards);
    const slots = slotsOf(answer, range);
    const grid = el("div", { class: "charts" });
    for (const metric of METRICS) {
      const figure = chart(metric, slots, range);
      if (metric.key === "requests") figure.append(legend(answer));
      grid.append(figure);
    }
    target.append(grid);
    // The same numbers as a table: for screen readers, and to read exact values.
    const table = el("table", { class: "buckets" });
    table.append(el("caption", { text: "Every " + answer.granularity + " with traffic" }));
    const head = el("tr");
    for (const h of ["Start (UTC)", "Requests", "By status", "Bytes in", "Bytes out", "MP in", "MP out", "CPU ms"]) head.append(el("th", { scope: "col", text: h }));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    for (const bucket of answer.buckets || []) {
      const statuses = Object.entries(bucket.by_status || {}).map(([s, v]) => `${s}×${v.requests}`).join(" ");
      body.append(el("tr", { "data-start": bucket.start },
        el("td", { text: bucket.start }), el("td", { text: number(bucket.requests) }), el("td", { text: statuses }),
        el("td", { text: bytes(bucket.input_bytes) }), el("td", { text: bytes(bucket.output_bytes) }),
        el("td", { text: number(bucket.input_megapixels, 3) }), el("td", { text: number(bucket.output_megapixels, 3) }),
        el("td", { text: number(bucket.cpu_ms, 1) })));
    }
    if (!(answer.buckets || []).length) body.append(el("tr", {}, el("td", { colspan: "8", text: "No requests in this range yet." })));
    table.append(body);
    target.append(el("div", { class: "table-wrap" }, table));
  }

  /** A quota report (usage answers' `quota`) as a table of limit, used and remaining. */
  function renderQuota(target, quota) {
    target.replaceChildren();
    if (!quota) {
      target.append(el("p", { text: "No volume quota: requests are limited only by rate and size limits." }));
      return;
    }
    const state = quota.exceeded ? "exceeded — requests are refused until the period ends" : quota.soft_reached ? `past its warning level (${quota.soft_percent} %)` : "within its limits";
    target.append(el("p", { "data-quota-state": quota.exceeded ? "exceeded" : quota.soft_reached ? "soft" : "ok" }, `Quota (${quota.period}${quota.period_seconds ? ` of ${quota.period_seconds} s` : ""}, ${quota.period_start} to ${quota.period_end}): ${state}.`));
    const table = el("table");
    const head = el("tr");
    for (const h of ["Dimension", "Limit", "Used", "Remaining"]) head.append(el("th", { scope: "col", text: h }));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    for (const [name, d] of Object.entries(quota.dimensions || {})) {
      body.append(el("tr", { "data-dimension": name }, el("th", { scope: "row", text: name.replaceAll("_", " ") }), el("td", { text: number(d.limit, 3) }), el("td", { text: number(d.used, 3) }), el("td", { text: number(d.remaining, 3) })));
    }
    table.append(body);
    target.append(table);
  }

  /** Audit records (an audit answer's `records`, oldest first) into `body`, the last 20 newest
   * first; says so when there are none. */
  function renderAudit(body, records) {
    body.replaceChildren();
    const last = (records || []).slice(-20).reverse();
    for (const r of last) {
      body.append(el("tr", { "data-request": r.request_id },
        el("td", { text: r.time }), el("td", { text: `${r.status}${r.error ? ` ${r.error}` : ""}` }),
        el("td", {}, el("code", { text: r.params || "" })),
        el("td", { text: `${r.input_format || "?"} ${bytes(r.input_bytes)}` }),
        el("td", { text: r.output_format ? `${r.output_format} ${r.output_width}×${r.output_height} ${bytes(r.output_bytes)}` : "—" }),
        el("td", {}, el("code", { text: r.request_id }))));
    }
    if (!last.length) body.append(el("tr", {}, el("td", { colspan: "6", text: "No requests in the past hour." })));
  }

  /** The sign-in form or the navigation, as `signedIn` says; signed out, every panel hidden.
   * Returns `signedIn`. */
  function showSignedIn(signedIn, panels) {
    document.getElementById("sign-in").hidden = signedIn;
    document.getElementById("nav").hidden = !signedIn;
    document.body.dataset.signedIn = String(signedIn);
    if (!signedIn) for (const p of Object.values(panels)) p.hidden = true;
    return signedIn;
  }

  /** Shows the panel named by the location's hash among `panels` (tab-like navigation). */
  function route(panels, fallback) {
    const name = (location.hash || "").slice(1) || fallback;
    for (const [key, panel] of Object.entries(panels)) panel.hidden = key !== name;
    for (const link of document.querySelectorAll("nav a[href^='#']")) {
      if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    return name in panels ? name : fallback;
  }

  return { ApiProblem, call, showError, clearError, el, bytes, number, usageQuery, renderUsage, renderQuota, renderAudit, showSignedIn, route };
})();
