// The operator console: sign in with an operator token (kept in sessionStorage, this tab only),
// tenants with their limits and status, keys (create, with the secret shown once; revoke),
// suspend and activate, any tenant's usage and recent requests, and the health of the api nodes
// and of this one. Every
// action is a call of the admin API on this origin; its problem+json is shown in words.
"use strict";

(() => {
  const { call, showError, clearError, el, bytes, number } = Console;
  const STORAGE = "resizer.console.adminToken";
  const $ = (id) => document.getElementById(id);
  const error = $("error");
  const notice = $("notice");
  const panels = { tenants: $("tenants"), tenant: $("tenant"), health: $("health") };
  let current = null; // the tenant open in the tenant panel
  let revoking = null; // the key id waiting for confirmation

  const token = () => sessionStorage.getItem(STORAGE);

  function tell(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function tokenRefused(e) {
    const why = e.detail ? `${e.title}: ${e.detail}` : e.title;
    return new Error(`That operator token was not accepted (${why}). Check the token (api.admin_token, api.read_token or the operators file).`);
  }

  /** A refused call in words; a wrong token also signs the person out. */
  function refused(e) {
    if (e.status === 401) {
      sessionStorage.removeItem(STORAGE);
      showError(error, tokenRefused(e));
      show();
      return;
    }
    if (e.status === 403) {
      showError(error, new Error(`Your token may not do this (${e.title}: ${e.detail}).`));
      return;
    }
    if (e.status === 429) {
      showError(error, new Error(`${e.title}: ${e.detail} Wait a little and try again.`));
      return;
    }
    showError(error, e);
  }

  /** The panel from the hash: #tenants, #health, or #tenant/<id>. */
  function show() {
    if (!Console.showSignedIn(Boolean(token()), panels)) return;
    const hash = (location.hash || "").slice(1);
    const [name, id] = hash.split("/");
    if (name === "tenant" && id) {
      for (const [k, p] of Object.entries(panels)) p.hidden = k !== "tenant";
      loadTenant(id);
    } else {
      const shown = Console.route({ tenants: panels.tenants, health: panels.health }, "tenants");
      panels.tenant.hidden = true;
      if (shown === "health") loadHealth();
      else loadTenants();
    }
  }

  function quotaWord(t) {
    const q = t.quota_status;
    if (!q) return t.effective_limits.quota ? "set" : "none";
    return q.exceeded ? "exceeded" : q.soft_reached ? `past ${q.soft_percent} %` : "within";
  }

  async function loadTenants() {
    document.body.dataset.tenants = "loading";
    try {
      const answer = await call("/v1/tenants", { token: token() });
      const body = $("tenant-table").querySelector("tbody");
      body.replaceChildren();
      for (const t of answer.tenants) {
        const l = t.effective_limits;
        body.append(el("tr", { "data-tenant": String(t.id), "data-status": t.status },
          el("td", { text: String(t.id) }), el("td", { text: t.name }),
          el("td", {}, el("span", { class: `badge ${t.status}`, text: t.status })),
          el("td", { text: number(l.rate_per_sec, 2) }), el("td", { text: number(l.burst) }),
          el("td", { text: bytes(l.max_input_bytes) }), el("td", { text: number(l.max_input_pixels) }),
          el("td", { text: quotaWord(t) }),
          el("td", {}, el("a", { href: `#tenant/${t.id}`, "aria-label": `Open tenant ${t.name}`, text: "Open" }))));
      }
      if (!answer.tenants.length) body.append(el("tr", {}, el("td", { colspan: "9", text: "No tenants yet." })));
      document.body.dataset.tenants = "ready";
    } catch (e) {
      document.body.dataset.tenants = "failed";
      refused(e);
    }
  }

  async function loadTenant(id) {
    document.body.dataset.tenant = "loading";
    try {
      const [tenant, keys] = await Promise.all([
        call(`/v1/tenants/${encodeURIComponent(id)}`, { token: token() }),
        call(`/v1/tenants/${encodeURIComponent(id)}/keys`, { token: token() }),
      ]);
      current = tenant;
      $("tenant-title").textContent = `Tenant ${tenant.name} (id ${tenant.id})`;
      $("tenant-status").textContent = `Status: ${tenant.status}${tenant.status === "suspended" ? " — every key of this tenant is refused (403)" : ""}. Created ${tenant.created_at}.`;
      $("tenant-status").dataset.status = tenant.status;
      $("toggle-status").textContent = tenant.status === "active" ? "Suspend tenant" : "Activate tenant";
      $("toggle-status").className = tenant.status === "active" ? "danger" : "";
      const limits = $("tenant-limits");
      limits.replaceChildren();
      const l = tenant.effective_limits;
      const fact = (name, value) => limits.append(el("dt", { text: name }), el("dd", { text: value }));
      fact("Rate", `${number(l.rate_per_sec, 2)} requests/s, burst ${number(l.burst)}`);
      fact("Largest input", bytes(l.max_input_bytes));
      fact("Most input pixels", number(l.max_input_pixels));
      fact("Cache max-age (signed URLs)", l.cache_max_age_secs === null || l.cache_max_age_secs === undefined ? "—" : `${l.cache_max_age_secs} s`);
      fact("Sources (signed URLs)", (tenant.limits.sources || []).join(", ") || "none");
      renderKeys(keys.keys);
      document.body.dataset.tenant = "ready";
      loadTenantUsage();
      loadAudit();
    } catch (e) {
      document.body.dataset.tenant = "failed";
      refused(e);
    }
  }

  function renderKeys(keys) {
    const body = $("key-table").querySelector("tbody");
    body.replaceChildren();
    for (const k of keys) {
      const state = k.revoked_at ? `revoked ${k.revoked_at}` : "active";
      const actions = el("td");
      if (!k.revoked_at) {
        actions.append(el("button", { type: "button", class: "danger small", "data-revoke": k.id, "aria-label": `Revoke key ${k.id}`, text: "Revoke", onclick: () => askRevoke(k.id) }));
      }
      body.append(el("tr", { "data-key": k.id, "data-state": k.revoked_at ? "revoked" : "active" },
        el("td", {}, el("code", { text: k.id })), el("td", { text: k.label }), el("td", { text: k.purpose }),
        el("td", { text: k.created_at }), el("td", { text: k.expires_at || "never" }), el("td", { text: state }), actions));
    }
    if (!keys.length) body.append(el("tr", {}, el("td", { colspan: "7", text: "No keys." })));
  }

  function askRevoke(id) {
    revoking = id;
    $("revoke-question").textContent = `Revoke key ${id}? Every api node refuses it within about a second; this cannot be undone.`;
    $("revoke-confirm").hidden = false;
    $("revoke-yes").focus();
  }

  $("revoke-no").addEventListener("click", () => {
    revoking = null;
    $("revoke-confirm").hidden = true;
  });

  $("revoke-yes").addEventListener("click", async () => {
    if (!revoking) return;
    const id = revoking;
    try {
      await call(`/v1/keys/${encodeURIComponent(id)}/revoke`, { token: token(), method: "POST" });
      revoking = null;
      $("revoke-confirm").hidden = true;
      clearError(error);
      tell(`Key ${id} is revoked.`);
      document.body.dataset.revoked = id;
      const keys = await call(`/v1/tenants/${current.id}/keys`, { token: token() });
      renderKeys(keys.keys);
    } catch (e) {
      refused(e);
    }
  });

  $("new-key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    try {
      const key = await call(`/v1/tenants/${current.id}/keys`, { token: token(), method: "POST", body: { label: $("new-key-label").value || "console" } });
      $("new-key-value").value = key.key;
      $("new-key-value").dataset.keyId = key.id;
      $("new-key").hidden = false;
      $("new-key-value").focus();
      $("new-key-value").select();
      clearError(error);
      tell(`Key ${key.id} created.`);
      const keys = await call(`/v1/tenants/${current.id}/keys`, { token: token() });
      renderKeys(keys.keys);
    } catch (e) {
      refused(e);
    }
  });

  $("toggle-status").addEventListener("click", async () => {
    if (!current) return;
    const status = current.status === "active" ? "suspended" : "active";
    try {
      await call(`/v1/tenants/${current.id}`, { token: token(), method: "PATCH", body: { status } });
      clearError(error);
      tell(`Tenant ${current.name} is ${status === "active" ? "active again" : "suspended"}.`);
      loadTenant(current.id);
    } catch (e) {
      refused(e);
    }
  });

  $("new-tenant-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const tenant = await call("/v1/tenants", { token: token(), method: "POST", body: { name: $("new-tenant-name").value } });
      $("new-tenant-name").value = "";
      clearError(error);
      tell(`Tenant ${tenant.name} created (id ${tenant.id}).`);
      location.hash = `#tenant/${tenant.id}`;
    } catch (e) {
      refused(e);
    }
  });

  async function loadTenantUsage() {
    if (!current) return;
    const granularity = document.querySelector("input[name=granularity]:checked").value;
    const range = Console.usageQuery(granularity);
    try {
      const answer = await call(`/v1/tenants/${current.id}/usage?${range.query}`, { token: token() });
      Console.renderUsage($("usage-view"), answer, range, range.query);
      Console.renderQuota($("quota-view"), answer.quota);
    } catch (e) {
      $("usage-view").replaceChildren(el("p", { text: `Usage is not available here: ${e.message}` }));
    }
  }

  async function loadAudit() {
    if (!current) return;
    const body = $("audit-table").querySelector("tbody");
    const from = new Date(Date.now() - 3600 * 1000).toISOString();
    try {
      const answer = await call(`/v1/tenants/${current.id}/audit?from=${encodeURIComponent(from)}&limit=1000`, { token: token() });
      Console.renderAudit(body, answer.records);
    } catch (e) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "6", text: `The audit is not available here: ${e.message}` })));
    }
  }

  for (const radio of document.querySelectorAll("input[name=granularity]")) radio.addEventListener("change", loadTenantUsage);

  /** Gauges worth an operator's eye, by name prefix. */
  const GAUGES = ["resizer_ready", "resizer_credential_cache", "resizer_identity_", "resizer_queue_connected", "resizer_job_stream_leader", "resizer_api_nodes", "resizer_workers", "resizer_usage_spool_writable", "resizer_usage_batches_unconfirmed"];

  /** A node's credential replication in words: state, version and lag. */
  const replication = (r) => (r ? `${r.replication}, version ${r.version}, lag ${r.lag_ms} ms` : "");

  /** Whether the job stream has a leader, as a node last saw it, in words. */
  const leader = (seen) => (seen === true ? "elected" : seen === false ? "none (jobs cannot be queued)" : "not known yet");

  /** One row of the nodes table, from an entry of `GET /v1/admin/nodes`. */
  function nodeRow(n) {
    const status = n.status || {};
    const readiness = status.status ? (status.reason ? `${status.status}: ${status.reason}` : status.status) : "unknown (an older version)";
    const heard = `${(n.since_heard_ms / 1000).toFixed(1)} s ago${n.silent ? " (silent: killed, frozen or cut off?)" : ""}`;
    const row = el("tr", { "data-node": n.node, "data-rotation": n.silent ? "silent" : n.in_rotation ? "in" : "out" },
      el("td", {}, el("code", { text: n.node })),
      el("td", { text: n.silent ? "unknown" : n.in_rotation ? "in rotation" : "out of rotation" }),
      el("td", { text: readiness }),
      el("td", { text: replication(status.identity) }),
      el("td", { text: status.jobs ? leader(status.jobs.stream_leader) : "" }),
      el("td", { text: heard }));
    return row;
  }

  async function loadHealth() {
    document.body.dataset.health = "loading";
    const dl = $("readyz");
    dl.replaceChildren();
    const fact = (name, value, key) => dl.append(el("dt", { text: name }), el("dd", { text: value, "data-fact": key }));
    const nodes = $("nodes").querySelector("tbody");
    try {
      const answer = await call("/v1/admin/nodes", { token: token() });
      nodes.replaceChildren(...answer.api_nodes.map(nodeRow));
      if (!answer.cluster) nodes.append(el("tr", {}, el("td", { colspan: "6", text: "Not a cluster: this process is the only node." })));
      else if (!answer.api_nodes.length) nodes.append(el("tr", {}, el("td", { colspan: "6", text: "No api node has announced itself (is NATS reachable?)." })));
      const ready = answer.this_node;
      fact("Readiness", ready.reason ? `${ready.status}: ${ready.reason}` : ready.status, "ready");
      fact("Version", ready.version, "version");
      if (ready.jpeg_simd !== undefined) fact("JPEG SIMD kernels", ready.jpeg_simd ? "yes" : "no (built without nasm: JPEG is slower)", "jpeg-simd");
      if (ready.identity) fact("Credential replication", replication(ready.identity), "replication");
      if (ready.jobs) fact("Job stream leader", leader(ready.jobs.stream_leader), "stream-leader");
    } catch (e) {
      if (e.status === 401) return refused(e);
      fact("Readiness", `unknown: ${e.detail || e.message}`, "ready");
    }
    try {
      const response = await call("/metrics", { raw: true });
      const text = await response.text();
      const body = $("gauges").querySelector("tbody");
      body.replaceChildren();
      for (const line of text.split("\n")) {
        if (line.startsWith("#") || !GAUGES.some((g) => line.startsWith(g))) continue;
        const cut = line.lastIndexOf(" ");
        body.append(el("tr", {}, el("td", {}, el("code", { text: line.slice(0, cut) })), el("td", { text: line.slice(cut + 1) })));
      }
      document.body.dataset.health = "ready";
    } catch (e) {
      document.body.dataset.health = "failed";
      showError(error, e);
    }
  }

  $("health-refresh").addEventListener("click", loadHealth);

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const typed = $("token").value.trim();
    if (!typed) return;
    document.body.dataset.signIn = "checking";
    try {
      // A read every admin port answers (an api node's has no tenants: they live at the
      // identity service).
      await call("/v1/admin/nodes", { token: typed });
      sessionStorage.setItem(STORAGE, typed);
      $("token").value = "";
      clearError(error);
      document.body.dataset.signIn = "ok";
      if (!location.hash) location.hash = "#tenants";
      show();
    } catch (e) {
      document.body.dataset.signIn = "refused";
      if (e.status === 401) showError(error, tokenRefused(e));
      else refused(e);
      $("token").focus();
    }
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(STORAGE);
    clearError(error);
    tell("");
    history.replaceState(null, "", location.pathname);
    show();
    $("token").focus();
  });

  window.addEventListener("hashchange", () => {
    tell("");
    $("new-key").hidden = true;
    $("revoke-confirm").hidden = true;
    show();
  });
  show();
})();
