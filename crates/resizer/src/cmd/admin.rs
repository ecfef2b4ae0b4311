//! `resizer admin ...`: tenants, keys and limits through the admin API (never the database
//! directly, so it works the same against dev and a cluster). It finds the API from `--url` and
//! `--token`, then `RESIZER_ADMIN_URL` / `RESIZER_ADMIN_TOKEN`, then `<data-dir>/dev.json`
//! (`--data-dir`, else `RESIZER_DATA_DIR`, else `resizer-data`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::dev_file::DevFile;

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Admin API base URL, e.g. http://127.0.0.1:8081.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Admin bearer token.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Where `resizer dev` wrote dev.json (used when no URL or token is given); default
    /// `RESIZER_DATA_DIR`, the variable `resizer dev` reads too, else `resizer-data`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The CA certificate (PEM) an `https://` admin URL's certificate is checked against; default
    /// `RESIZER_ADMIN_CA_FILE`, else the lab's CA with `--lab` (no system roots: a private CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A `resizer lab` cluster: its admin URL, token and CA from DIR/cluster.json.
    #[arg(long, value_name = "DIR", conflicts_with = "data_dir")]
    lab: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Tenants: list, get, create, update limits, suspend, activate.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// API keys: list, create (the key is printed once), rotate, revoke.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Who made which admin write, newest first (the admin log; not the usage `audit`).
    OperatorAudit {
        /// Most records to show (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start before this cursor: the `next` a previous page printed.
        #[arg(long)]
        before: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A tenant's usage rollups.
    Usage {
        tenant: String,
        #[command(flatten)]
        range: RangeArgs,
        /// hour or day.
        #[arg(long, default_value = "hour")]
        granularity: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A tenant's audit records (raw usage records).
    Audit {
        tenant: String,
        #[command(flatten)]
        range: RangeArgs,
        /// Most records to show (1-10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Start after this cursor: the `next` a previous page printed.
        #[arg(long)]
        after: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints a fresh operator token and the entry that grants it in an operators file
    /// (`api.operators_file`); speaks to no API.
    NewToken {
        /// The operator's name, as the admin audit trail will show it.
        #[arg(long, default_value = "admin")]
        name: String,
        /// admin or read.
        #[arg(long, default_value = "admin")]
        access: String,
    },
}

#[derive(clap::Args, Debug)]
struct RangeArgs {
    /// Start: RFC 3339 time or YYYY-MM-DD (default: 24 hours before --to).
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive): RFC 3339 time or YYYY-MM-DD (default: now).
    #[arg(long)]
    to: Option<String>,
}

impl RangeArgs {
    fn query(&self) -> String {
        form_urlencoded_pairs(&[("from", self.from.as_deref()), ("to", self.to.as_deref())])
    }
}

fn form_urlencoded_pairs(pairs: &[(&str, Option<&str>)]) -> String {
    pairs.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", form_path_segment(v)))).collect::<Vec<_>>().join("&")
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    Get {
        /// Tenant id or name.
        tenant: String,
    },
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Set limits; `default` as a value goes back to the deployment's default.
    Update {
        tenant: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    Suspend {
        tenant: String,
    },
    Activate {
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    List {
        tenant: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    Create {
        tenant: String,
        #[arg(long, default_value = "default")]
        label: String,
        /// The key stops working this long from now: 30d, 12h, 90m, 45s, 2w (default: never).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// A URL signing key (its secret, printed once, signs GET URLs; it authenticates no
        /// request) instead of an API key.
        #[arg(long)]
        signing: bool,
    },
    /// A new key for the same tenant and label (printed once); the old one keeps working for
    /// the grace, then stops.
    Rotate {
        /// The old key's id: the 12 characters after `rsz_`.
        key_id: String,
        /// How long the old key keeps working: 1d, 12h, 0 (stops now).
        #[arg(long, value_name = "DURATION")]
        grace: String,
        /// The new key stops working this long from now (default: never).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    Revoke {
        /// The key id: the 12 characters after `rsz_`.
        key_id: String,
    },
}

#[derive(clap::Args, Debug)]
struct LimitArgs {
    /// Sustained requests per second.
    #[arg(long, value_name = "N|default")]
    rate: Option<String>,
    /// Requests allowed at once above the rate.
    #[arg(long, value_name = "N|default")]
    burst: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, value_name = "N|default")]
    max_input_bytes: Option<String>,
    /// Largest input width × height.
    #[arg(long, value_name = "N|default")]
    max_input_pixels: Option<String>,
    /// Volume quota: `month` or `rolling=SECONDS`, then `;requests=N`, `;input_bytes=N`,
    /// `;output_pixels=N`, `;cpu_us=N`, `;soft=PERCENT` (each optional), e.g.
    /// `month;requests=100000;soft=80`; `none` for no quota (overriding a default quota),
    /// `default` for the deployment's.
    #[arg(long, value_name = "SPEC|none|default")]
    quota: Option<String>,
    /// Where signed URLs may fetch sources from, comma-separated: hosts (`img.example.com`,
    /// https only), subdomains (`*.example.com`), URL prefixes (`https://cdn.example.com/a/`,
    /// `http://…` for plain HTTP); `none` for nowhere.
    #[arg(long, value_name = "LIST|none")]
    sources: Option<String>,
    /// `Cache-Control: max-age` of signed-URL answers, in seconds.
    #[arg(long, value_name = "SECONDS|default")]
    cache_max_age: Option<String>,
}

impl LimitArgs {
    fn to_json(&self) -> anyhow::Result<Option<Value>> {
        let mut map = Map::new();
        for (field, value) in [
            ("rate_per_sec", &self.rate),
            ("burst", &self.burst),
            ("max_input_bytes", &self.max_input_bytes),
            ("max_input_pixels", &self.max_input_pixels),
            ("cache_max_age_secs", &self.cache_max_age),
        ] {
            let Some(raw) = value else { continue };
            let parsed = if raw == "default" {
                Value::Null
            } else {
                serde_json::from_str::<Value>(raw)
                    .ok()
                    .filter(Value::is_number)
                    .with_context(|| format!("{field}: `{raw}` is not a number (or `default`)"))?
            };
            map.insert(field.into(), parsed);
        }
        if let Some(raw) = &self.quota {
            map.insert("quota".into(), quota_json(raw)?);
        }
        if let Some(raw) = &self.sources {
            let entries: Vec<&str> = match raw.as_str() {
                "none" => Vec::new(),
                list => list.split(',').map(str::trim).filter(|e| !e.is_empty()).collect(),
            };
            map.insert("sources".into(), json!(entries));
        }
        Ok((!map.is_empty()).then_some(Value::Object(map)))
    }
}

/// `--quota` as the admin API's `limits.quota`.
fn quota_json(raw: &str) -> anyhow::Result<Value> {
    let quota: identity::Quota = match raw {
        "default" => return Ok(Value::Null),
        "none" => identity::Quota::unlimited(identity::QuotaPeriod::Month),
        spec => spec.parse().with_context(|| format!("--quota `{spec}`"))?,
    };
    Ok(api::quota_json(&quota))
}

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    if let AdminCommand::NewToken { name, access } = &args.command {
        if !matches!(access.as_str(), "admin" | "read") {
            bail!("--access is `admin` or `read`");
        }
        let token = crate::node::generate_admin_token()?;
        println!("token: {token}");
        println!("# for api.operators_file (the token itself is not kept anywhere):");
        println!(
            "[[operator]]\nname = \"{name}\"\naccess = \"{access}\"\ntoken_sha256 = \"{}\"",
            api::token_sha256_hex(&token)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dev = || -> anyhow::Result<DevFile> {
        let data_dir = args.data_dir.clone().or_else(|| std::env::var_os("RESIZER_DATA_DIR").map(PathBuf::from));
        let path = data_dir.unwrap_or_else(|| PathBuf::from("resizer-data")).join("dev.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!("no --url/--token given and cannot read {} (is `resizer dev` running here?)", path.display())
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    };
    let lab = match &args.lab {
        Some(dir) => Some(lab::ClusterFile::read(dir)?),
        None => None,
    };
    let lab_field = |name: &str| -> Option<String> {
        lab.as_ref().and_then(|f| f.fields.get(name)).and_then(Value::as_str).map(str::to_owned)
    };
    let url =
        match args.url.clone().or_else(|| std::env::var("RESIZER_ADMIN_URL").ok()).or_else(|| lab_field("admin_url")) {
            Some(url) => url,
            None => dev()?.admin_url,
        };
    let token = match args
        .token
        .clone()
        .or_else(|| std::env::var("RESIZER_ADMIN_TOKEN").ok())
        .or_else(|| lab_field("admin_token"))
    {
        Some(token) => token,
        None => dev()?.admin_token,
    };
    let ca_file = args
        .ca_file
        .clone()
        .or_else(|| std::env::var_os("RESIZER_ADMIN_CA_FILE").map(PathBuf::from))
        .or_else(|| lab_field("tls_ca").map(PathBuf::from));
    let client = Client { base: url.trim_end_matches('/').to_owned(), token, agent: agent(ca_file.as_deref())? };

    let seg = |s: &str| form_path_segment(s);
    let (status, body) = match &args.command {
        AdminCommand::Tenants(TenantCommand::List { json }) => {
            let (status, body) = client.call("GET", "/v1/tenants", None)?;
            if (200..300).contains(&status) && !json {
                print_tenants_table(&body);
                return Ok(ExitCode::SUCCESS);
            }
            (status, body)
        }
        AdminCommand::Tenants(TenantCommand::Get { tenant }) => {
            client.call("GET", &format!("/v1/tenants/{}", seg(tenant)), None)?
        }
        AdminCommand::Tenants(TenantCommand::Create { name, limits }) => {
            let mut body = json!({ "name": name });
            if let Some(limits) = limits.to_json()? {
                body["limits"] = limits;
            }
            client.call("POST", "/v1/tenants", Some(body))?
        }
        AdminCommand::Tenants(TenantCommand::Update { tenant, limits }) => {
            let Some(limits) = limits.to_json()? else {
                bail!(
                    "give at least one of --rate, --burst, --max-input-bytes, --max-input-pixels, --quota, --sources, \
                     --cache-max-age"
                )
            };
            client.call("PATCH", &format!("/v1/tenants/{}", seg(tenant)), Some(json!({ "limits": limits })))?
        }
        AdminCommand::Tenants(TenantCommand::Suspend { tenant }) => {
            client.call("PATCH", &format!("/v1/tenants/{}", seg(tenant)), Some(json!({ "status": "suspended" })))?
        }
        AdminCommand::Tenants(TenantCommand::Activate { tenant }) => {
            client.call("PATCH", &format!("/v1/tenants/{}", seg(tenant)), Some(json!({ "status": "active" })))?
        }
        AdminCommand::Keys(KeyCommand::List { tenant, json }) => {
            let (status, body) = client.call("GET", &format!("/v1/tenants/{}/keys", seg(tenant)), None)?;
            if (200..300).contains(&status) && !json {
                print_keys_table(&body);
                return Ok(ExitCode::SUCCESS);
            }
            (status, body)
        }
        AdminCommand::Keys(KeyCommand::Create { tenant, label, expires_in, signing }) => {
            let mut body = json!({ "label": label });
            if *signing {
                body["purpose"] = json!("signing");
            }
            if let Some(lifetime) = expires_in {
                body["expires_in_s"] = json!(seconds(lifetime, "--expires-in")?);
            }
            client.call("POST", &format!("/v1/tenants/{}/keys", seg(tenant)), Some(body))?
        }
        AdminCommand::Keys(KeyCommand::Rotate { key_id, grace, expires_in }) => {
            let mut body = json!({ "old_key_valid_for_s": seconds(grace, "--grace")? });
            if let Some(lifetime) = expires_in {
                body["expires_in_s"] = json!(seconds(lifetime, "--expires-in")?);
            }
            client.call("POST", &format!("/v1/keys/{}/rotate", seg(key_id)), Some(body))?
        }
        AdminCommand::OperatorAudit { limit, before, json } => {
            let mut query = format!("limit={limit}");
            if let Some(before) = before {
                query.push_str(&format!("&before={}", seg(before)));
            }
            let (status, body) = client.call("GET", &format!("/v1/admin/audit?{query}"), None)?;
            if (200..300).contains(&status) && !json {
                print_operator_audit_table(&body);
                return Ok(ExitCode::SUCCESS);
            }
            (status, body)
        }
        AdminCommand::Keys(KeyCommand::Revoke { key_id }) => {
            client.call("POST", &format!("/v1/keys/{}/revoke", seg(key_id)), None)?
        }
        AdminCommand::Usage { tenant, range, granularity, json } => {
            let mut query = range.query();
            query.push_str(&format!("{}granularity={}", if query.is_empty() { "" } else { "&" }, seg(granularity)));
            let (status, body) = client.call("GET", &format!("/v1/tenants/{}/usage?{query}", seg(tenant)), None)?;
            if (200..300).contains(&status) && !json {
                print_usage_table(&body);
                return Ok(ExitCode::SUCCESS);
            }
            (status, body)
        }
        AdminCommand::NewToken { .. } => unreachable!("answered above, before any API is looked for"),
        AdminCommand::Audit { tenant, range, limit, after, json } => {
            let mut query = range.query();
            query.push_str(&format!("{}limit={limit}", if query.is_empty() { "" } else { "&" }));
            if let Some(after) = after {
                query.push_str(&format!("&after={}", seg(after)));
            }
            let (status, body) = client.call("GET", &format!("/v1/tenants/{}/audit?{query}", seg(tenant)), None)?;
            if (200..300).contains(&status) && !json {
                print_audit_table(&body);
                return Ok(ExitCode::SUCCESS);
            }
            (status, body)
        }
    };
    if (200..300).contains(&status) {
        println!("{}", serde_json::to_string_pretty(&body)?);
        Ok(ExitCode::SUCCESS)
    } else {
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("(no detail)");
        eprintln!("error: {status}: {detail}");
        Ok(ExitCode::from(1))
    }
}

/// A limit as a table cell: the tenant's own, or the deployment default it falls back to (`*`).
fn limit_cell(tenant: &Value, field: &str) -> String {
    match &tenant["limits"][field] {
        Value::Null => format!("{}*", tenant["effective_limits"][field]),
        own => own.to_string(),
    }
}

/// Where a tenant stands against its quota, in a word.
fn quota_cell(status: &Value) -> &'static str {
    if status.is_null() {
        "-"
    } else if status["exceeded"].as_bool() == Some(true) {
        "over"
    } else if status["soft_reached"].as_bool() == Some(true) {
        "soft"
    } else {
        "ok"
    }
}

fn print_tenants_table(body: &Value) {
    println!(
        "{:>6} {:<24} {:<10} {:>10} {:>8} {:>14} {:>14} {:<6}  created",
        "id", "name", "status", "rate/s", "burst", "max bytes", "max pixels", "quota"
    );
    for t in body["tenants"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:>6} {:<24} {:<10} {:>10} {:>8} {:>14} {:>14} {:<6}  {}",
            t["id"].as_u64().unwrap_or(0),
            t["name"].as_str().unwrap_or(""),
            t["status"].as_str().unwrap_or(""),
            limit_cell(&t, "rate_per_sec"),
            limit_cell(&t, "burst"),
            limit_cell(&t, "max_input_bytes"),
            limit_cell(&t, "max_input_pixels"),
            quota_cell(&t["quota_status"]),
            t["created_at"].as_str().unwrap_or(""),
        );
    }
    println!("(* the deployment's default: the tenant sets no limit of its own)");
    println!("(quota: - none, ok, soft: at its soft threshold, over: refused until the period ends)");
}

fn print_keys_table(body: &Value) {
    println!(
        "{:<14} {:>6} {:<8} {:<24} {:<26} {:<26} revoked",
        "key id", "tenant", "purpose", "label", "created", "expires"
    );
    for k in body["keys"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<14} {:>6} {:<8} {:<24} {:<26} {:<26} {}",
            k["id"].as_str().unwrap_or(""),
            k["tenant_id"].as_u64().unwrap_or(0),
            k["purpose"].as_str().unwrap_or("api"),
            k["label"].as_str().unwrap_or(""),
            k["created_at"].as_str().unwrap_or(""),
            k["expires_at"].as_str().unwrap_or("never"),
            k["revoked_at"].as_str().unwrap_or("-"),
        );
    }
}

fn print_operator_audit_table(body: &Value) {
    println!(
        "{:<25} {:<16} {:<18} {:<14} {:>6} {:<14} {:<12} detail",
        "time", "operator", "request id", "action", "tenant", "key", "outcome"
    );
    let cell = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for r in body["records"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<25} {:<16} {:<18} {:<14} {:>6} {:<14} {:<12} {}",
            cell(&r["time"]),
            cell(&r["operator"]),
            cell(&r["request_id"]),
            cell(&r["action"]),
            cell(&r["tenant_id"]),
            cell(&r["key_id"]),
            cell(&r["outcome"]),
            cell(&r["detail"]),
        );
    }
    if let Some(next) = body["next"].as_str() {
        println!("(older records: the next page is --before {next})");
    }
}

/// A duration as the flags take it (`30d`, `12h`, `90m`, `45s`, `2w`, or bare seconds) in
/// seconds.
fn seconds(text: &str, flag: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("{flag}: `{text}` is not a duration; use e.g. 30d, 12h, 90m, 45s"),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .with_context(|| format!("{flag}: `{text}` is not a duration; use e.g. 30d, 12h, 90m, 45s"))
}

fn print_usage_table(body: &Value) {
    println!(
        "{:<25} {:>9} {:>28} {:>13} {:>13} {:>10} {:>10} {:>10}",
        "start", "requests", "by status", "in bytes", "out bytes", "in MP", "out MP", "cpu ms"
    );
    let rows = body["buckets"].as_array().cloned().unwrap_or_default();
    let mut billable = body["billable"].clone();
    billable["start"] = "billable (200)".into();
    for b in rows.iter().chain([&body["total"], &billable]) {
        let statuses: Vec<String> = b["by_status"]
            .as_object()
            .map(|m| m.iter().map(|(s, t)| format!("{s}:{}", t["requests"])).collect())
            .unwrap_or_default();
        println!(
            "{:<25} {:>9} {:>28} {:>13} {:>13} {:>10.3} {:>10.3} {:>10.1}",
            b["start"].as_str().unwrap_or("total"),
            b["requests"].as_u64().unwrap_or(0),
            statuses.join(" "),
            b["input_bytes"].as_u64().unwrap_or(0),
            b["output_bytes"].as_u64().unwrap_or(0),
            b["input_megapixels"].as_f64().unwrap_or(0.0),
            b["output_megapixels"].as_f64().unwrap_or(0.0),
            b["cpu_ms"].as_f64().unwrap_or(0.0),
        );
    }
}

fn print_audit_table(body: &Value) {
    println!(
        "{:<25} {:<18} {:>6} {:<22} {:>20} {:>20} {:>9}",
        "time", "request id", "status", "error", "input", "output", "cpu ms"
    );
    for r in body["records"].as_array().cloned().unwrap_or_default() {
        let image = |f: &str, w: &str, h: &str, b: &str| {
            if r[f].as_str().unwrap_or("").is_empty() {
                "-".to_owned()
            } else {
                format!("{} {}x{} {}B", r[f].as_str().unwrap_or(""), r[w], r[h], r[b])
            }
        };
        println!(
            "{:<25} {:<18} {:>6} {:<22} {:>20} {:>20} {:>9.1}",
            r["time"].as_str().unwrap_or(""),
            r["request_id"].as_str().unwrap_or(""),
            r["status"].as_u64().unwrap_or(0),
            r["error"].as_str().unwrap_or(""),
            image("input_format", "input_width", "input_height", "input_bytes"),
            image("output_format", "output_width", "output_height", "output_bytes"),
            r["cpu_us"].as_f64().unwrap_or(0.0) / 1e3,
        );
    }
    if let Some(next) = body["next"].as_str() {
        println!("(more records in the range: the next page is --after {next})");
    }
}

struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            ("POST", body) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
            ("PATCH", body) => self
                .agent
                .patch(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
            _ => bail!("unsupported method {method}"),
        };
        let mut response = result.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

/// With `ca`, https URLs are trusted only if that CA signed their certificate.
fn agent(ca: Option<&std::path::Path>) -> anyhow::Result<ureq::Agent> {
    let mut config =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30)));
    if let Some(ca) = ca {
        config = config.tls_config(lab::ureq_tls(ca)?);
    }
    Ok(config.build().into())
}

/// Percent-encodes a path segment (tenant names and key ids are plain, but be safe).
fn form_path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(seconds("30d", "--x").ok(), Some(30 * 86_400));
        assert_eq!(seconds("1d", "--x").ok(), Some(86_400));
        assert_eq!(seconds("90m", "--x").ok(), Some(5400));
        assert_eq!(seconds("0", "--x").ok(), Some(0));
        assert_eq!(seconds("2w", "--x").ok(), Some(14 * 86_400));
        for bad in ["", "d", "-1d", "1.5h", "3y", "1d2h", "99999999999999999999w"] {
            assert!(seconds(bad, "--x").is_err(), "{bad:?} was accepted");
        }
    }
}
