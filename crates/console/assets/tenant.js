// The tenant console: sign in with an API key (kept in sessionStorage, this tab only), usage
// charts from GET /v1/usage with the recent requests of GET /v1/audit, the limits, rate limit
// and quota (GET /v1/limits, /v1/usage), and "try it" (POST /v1/resize). Every call is the public API's; its problem+json is shown in words.
"use strict";

(() => {
  const { call, showError, clearError, el, bytes, number } = Console;
  const STORAGE = "resizer.console.apiKey";
  const $ = (id) => document.getElementById(id);
  const error = $("error");
  const panels = { usage: $("usage"), limits: $("limits"), try: $("try") };
  let lastOriginalUrl = null;
  let lastResultUrl = null;

  const key = () => sessionStorage.getItem(STORAGE);

  /** What a refused sign-in tells the person: the API's own words, with what to do. */
  function signInMessage(problem) {
    if (problem.status === 401) {
      const why = problem.detail ? `${problem.title}: ${problem.detail}` : problem.title;
      return new Error(`That API key was not accepted (${why}). Check that you pasted the whole key (rsz_…).`);
    }
    if (problem.status === 403) {
      const why = problem.detail ? `${problem.title}: ${problem.detail}` : problem.title;
      return new Error(`This key may not be used (${why}).`);
    }
    return problem;
  }

  function show() {
    if (!Console.showSignedIn(Boolean(key()), panels)) return;
    const name = Console.route(panels, "usage");
    if (name === "usage" || name === "limits") loadUsage();
    if (name === "usage") loadAudit();
    if (name === "limits") loadLimits();
  }

  /** A refused read: a key that stopped working signs the tab out, anything else is shown. */
  function refused(e) {
    if (e.status === 401 || e.status === 403) {
      sessionStorage.removeItem(STORAGE);
      show();
      showError(error, signInMessage(e));
    } else {
      showError(error, e);
    }
  }

  async function loadAudit() {
    const body = $("audit-table").querySelector("tbody");
    const from = new Date(Date.now() - 3600 * 1000).toISOString();
    document.body.dataset.audit = "loading";
    try {
      const answer = await call(`/v1/audit?from=${encodeURIComponent(from)}&limit=1000`, { token: key() });
      Console.renderAudit(body, answer.records);
      document.body.dataset.audit = "ready";
    } catch (e) {
      document.body.dataset.audit = "failed";
      refused(e);
    }
  }

  async function loadLimits() {
    document.body.dataset.limits = "loading";
    try {
      const answer = await call("/v1/limits", { token: key() });
      const l = answer.limits;
      const rows = [
        ["rate_per_sec", "Requests per second", number(l.rate_per_sec, 2)],
        ["burst", "Burst (requests at once)", number(l.burst)],
        ["max_input_bytes", "Largest input", bytes(l.max_input_bytes)],
        ["max_input_pixels", "Largest input (megapixels)", number(l.max_input_pixels / 1e6, 1)],
        ["cache_max_age_secs", "Cache lifetime of signed URLs' answers", `${number(l.cache_max_age_secs)} s`],
        ["sources", "Signed URLs' sources", l.sources.length ? l.sources.join(" ") : "none"],
      ];
      const body = el("tbody");
      for (const [name, label, value] of rows) {
        body.append(el("tr", { "data-limit": name }, el("th", { scope: "row", text: label }), el("td", { text: value })));
      }
      $("limits-view").replaceChildren(el("table", {}, el("caption", { text: "Your limits" }), body));
      const r = answer.rate_limit;
      $("rate-now").dataset.available = String(r.node_available);
      $("rate-now").textContent = `Each of the ${number(r.api_nodes)} api node(s) holds an equal share: ` +
        `${number(r.node_rate_per_sec, 2)} requests per second, bursts of ${number(r.node_burst)}. ` +
        `The node that answered could take ${number(r.node_available)} request(s) at once now.`;
      document.body.dataset.limits = "ready";
    } catch (e) {
      document.body.dataset.limits = "failed";
      refused(e);
    }
  }

  async function loadUsage() {
    const granularity = document.querySelector("input[name=granularity]:checked").value;
    const range = Console.usageQuery(granularity);
    const view = $("usage-view");
    view.setAttribute("aria-busy", "true");
    document.body.dataset.usage = "loading";
    try {
      const answer = await call(`/v1/usage?${range.query}`, { token: key() });
      clearError(error);
      Console.renderUsage(view, answer, range, range.query);
      Console.renderQuota($("quota-view"), answer.quota);
      let refused = 0;
      for (const b of answer.buckets || []) refused += b.by_status && b.by_status["429"] ? b.by_status["429"].requests : 0;
      $("rate-refusals").textContent = granularity === "hour" ? number(refused) : `${number(refused)} (last 30 days)`;
      document.body.dataset.usage = "ready";
    } catch (e) {
      document.body.dataset.usage = "failed";
      refused(e);
    } finally {
      view.removeAttribute("aria-busy");
    }
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const typed = $("key").value.trim();
    if (!typed) return;
    document.body.dataset.signIn = "checking";
    try {
      // The key is checked by the API itself, with the smallest usage read there is.
      await call(`/v1/usage?${Console.usageQuery("hour").query}`, { token: typed });
      sessionStorage.setItem(STORAGE, typed);
      $("key").value = "";
      clearError(error);
      document.body.dataset.signIn = "ok";
      if (!location.hash) location.hash = "#usage";
      show();
    } catch (e) {
      document.body.dataset.signIn = "refused";
      showError(error, signInMessage(e));
      $("key").focus();
    }
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(STORAGE);
    clearError(error);
    history.replaceState(null, "", location.pathname);
    show();
    $("key").focus();
  });

  for (const radio of document.querySelectorAll("input[name=granularity]")) radio.addEventListener("change", loadUsage);
  $("refresh").addEventListener("click", loadUsage);
  window.addEventListener("hashchange", show);

  $("try-file").addEventListener("change", () => {
    const file = $("try-file").files[0];
    if (!file) return;
    if (lastOriginalUrl) URL.revokeObjectURL(lastOriginalUrl);
    lastOriginalUrl = URL.createObjectURL(file);
    const img = $("try-original-img");
    img.onload = () => {
      $("try-original-facts").textContent = `Original: ${file.type || "unknown type"}, ${bytes(file.size)}, ${img.naturalWidth} × ${img.naturalHeight} px`;
    };
    img.src = lastOriginalUrl;
    $("try-original").hidden = false;
  });

  $("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("try-file").files[0];
    if (!file) return;
    const width = $("try-width").value;
    const format = $("try-format").value;
    const submit = $("try-submit");
    submit.disabled = true;
    document.body.dataset.try = "sending";
    const started = performance.now();
    try {
      const query = new URLSearchParams({ width, format });
      const response = await call(`/v1/resize?${query}`, { token: key(), method: "POST", body: file, raw: true });
      const blob = await response.blob();
      const roundTrip = performance.now() - started;
      if (lastResultUrl) URL.revokeObjectURL(lastResultUrl);
      lastResultUrl = URL.createObjectURL(blob);
      const img = $("try-result-img");
      const facts = $("try-result-facts");
      const h = (name) => response.headers.get(name);
      const loaded = new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error("The browser could not decode the answer as an image."));
      });
      img.src = lastResultUrl;
      await loaded;
      img.dataset.naturalWidth = String(img.naturalWidth);
      img.dataset.naturalHeight = String(img.naturalHeight);
      facts.replaceChildren();
      const fact = (name, value, key) => facts.append(el("dt", { text: name }), el("dd", { text: value, "data-fact": key }));
      fact("Format", h("content-type") || blob.type, "content-type");
      fact("Size", `${bytes(blob.size)} (${Math.round((100 * blob.size) / Math.max(file.size, 1))} % of the original)`, "bytes");
      fact("Dimensions", `${h("x-image-width")} × ${h("x-image-height")} px`, "dimensions");
      fact("Server timing", (h("server-timing") || "—").replaceAll(";dur=", " ").replaceAll(",", " ms,") + " ms", "server-timing");
      fact("Round trip", `${number(roundTrip, 1)} ms`, "round-trip");
      fact("Request id", h("x-request-id") || "—", "request-id");
      $("try-result").hidden = false;
      clearError(error);
      document.body.dataset.try = "done";
    } catch (e) {
      document.body.dataset.try = "failed";
      showError(error, e.status === 401 || e.status === 403 ? signInMessage(e) : e);
    } finally {
      submit.disabled = false;
    }
  });

  show();
})();
