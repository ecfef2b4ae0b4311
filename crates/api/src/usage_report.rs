//! A tenant's usage as JSON, read from the rollups, its audit records from the archive, and the
//! query the usage and audit routes take (`from`, `to`, `granularity`, `limit`, `after`).
//! Shared by the public `GET /v1/usage` and `GET /v1/audit` (the caller's own tenant) and the
//! admin usage and audit routes.
//!
//! It must not authenticate or rate-limit (the handlers do, each its own way), or import a
//! handler.

use axum::http::StatusCode;
use axum::response::Response;

use crate::body::json_response;
use crate::problem::ApiError;
use crate::App;

/// How long a usage read waits for the rollups.
const USAGE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One page of a tenant's raw records from the archive, oldest first (at most `limit`, then the
/// next page from `after=<next>`), as JSON: the admin audit route's and the tenant's own
/// `GET /v1/audit`. Records reach the archive within about a second of their request.
pub async fn audit_page(app: &App, tenant: identity::TenantId, query: &str) -> Result<Response, ApiError> {
    let metering = app.metering.as_ref().ok_or(ApiError::NotReady(
        "usage and audit are not read on this node: metering is off, or (identity service) usage.rollups_database is not set",
    ))?;
    let range = UsageQuery::parse(query, false)?;
    let page = metering
        .archive
        .read_page(tenant.get(), range.from_ms, range.to_ms, range.after.as_ref(), range.limit)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let list: Vec<serde_json::Value> = page.records.iter().map(record_json).collect();
    let mut body = serde_json::json!({ "tenant": tenant.get(), "records": list, "truncated": page.next.is_some() });
    if let Some(next) = &page.next {
        body["next"] = serde_json::Value::String(next.encode());
    }
    Ok(json_response(StatusCode::OK, &body))
}

fn record_json(r: &usage::UsageRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    v["time"] = serde_json::Value::String(crate::time::rfc3339_ms(r.time_ms));
    v
}

/// A tenant's rollups as JSON (shared by the public and the admin usage routes), with `quota`:
/// the tenant's quota now (limit, used, remaining per dimension: `quota::report`), or null.
pub async fn usage_report(app: &App, tenant: u64, quota: serde_json::Value, query: &str) -> Result<Response, ApiError> {
    let metering = app.metering.as_ref().ok_or(ApiError::NotReady(
        "usage is not read on this node: metering is off, or (identity service) usage.rollups_database is not set",
    ))?;
    let range = UsageQuery::parse(query, true)?;
    let rollups = metering.rollups.clone();
    let (from, to, granularity) = (range.from_ms, range.to_ms, range.granularity);
    // The permit goes with the blocking call, not with this request: it is returned when the
    // thread is, which after the timeout below may be much later.
    let permit = metering.rollup_reads.clone().try_acquire_owned().map_err(|_| {
        ApiError::MeteringUnavailable(format!(
            "{} usage reads are already waiting for the rollups database",
            crate::ROLLUP_READS_AT_ONCE
        ))
    })?;
    let query = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        rollups.query(tenant, from, to, granularity)
    });
    // A database that stopped answering gets the client a 503, not a request that never ends.
    let buckets = tokio::time::timeout(USAGE_READ_TIMEOUT, query)
        .await
        .map_err(|_| {
            ApiError::MeteringUnavailable(format!("the usage rollups did not answer within {USAGE_READ_TIMEOUT:?}"))
        })?
        .map_err(|e| ApiError::Internal(format!("usage query task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (mut total, mut billable) = (usage::Totals::default(), usage::Totals::default());
    let list: Vec<serde_json::Value> = buckets
        .iter()
        .map(|b| {
            let t = b.total();
            total.add(&t);
            billable.add(&b.billable());
            let mut bucket = totals_json(&t);
            bucket["start"] = crate::time::rfc3339_ms(b.start_ms).into();
            bucket["billable"] = totals_json(&b.billable());
            bucket["by_status"] = b
                .by_status
                .iter()
                .map(|(status, t)| (status.to_string(), totals_json(t)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            bucket
        })
        .collect();
    // Rollups are whole hours: say which range the answer covers (an hour that starts before
    // `to` is counted whole), so that adjacent windows show their overlap instead of hiding it.
    const HOUR_MS: i64 = 3_600_000;
    let covered_from = range.from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let covered_to = range
        .to_ms
        .div_euclid(HOUR_MS)
        .saturating_add(i64::from(range.to_ms.rem_euclid(HOUR_MS) != 0))
        .saturating_mul(HOUR_MS);
    let body = serde_json::json!({
        "tenant": tenant,
        "from": crate::time::rfc3339_ms(covered_from),
        "to": crate::time::rfc3339_ms(covered_to),
        "granularity": if granularity == usage::Granularity::Hour { "hour" } else { "day" },
        "total": totals_json(&total),
        "billable": totals_json(&billable),
        "buckets": list,
        "quota": quota,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn totals_json(t: &usage::Totals) -> serde_json::Value {
    serde_json::json!({
        "requests": t.requests,
        "input_bytes": t.input_bytes,
        "output_bytes": t.output_bytes,
        "input_megapixels": t.input_pixels as f64 / 1e6,
        "output_megapixels": t.output_pixels as f64 / 1e6,
        "cpu_ms": t.cpu_us as f64 / 1e3,
        "source_bytes": t.source_bytes,
    })
}

/// `from`, `to` (RFC 3339 or YYYY-MM-DD; default: the last 24 hours) and, for rollups,
/// `granularity` (hour, default, or day); `limit` and `after` (a previous page's `next`) for
/// audit reads.
pub struct UsageQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub granularity: usage::Granularity,
    pub limit: usize,
    pub after: Option<usage::AuditCursor>,
}

impl UsageQuery {
    pub fn parse(query: &str, rollups: bool) -> Result<UsageQuery, ApiError> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut q = UsageQuery {
            from_ms: now - 86_400_000,
            to_ms: now,
            granularity: usage::Granularity::Hour,
            limit: 1000,
            after: None,
        };
        let mut from = None;
        let mut seen = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if seen.contains(&k) {
                return Err(ApiError::BadRequest(format!("parameter '{k}' is given more than once")));
            }
            seen.push(k.clone());
            let time = || {
                crate::time::parse_ms(&v).ok_or_else(|| {
                    ApiError::BadRequest(format!("{k} must be an RFC 3339 time or YYYY-MM-DD, got '{v}'"))
                })
            };
            match k.as_ref() {
                "from" => from = Some(time()?),
                "to" => q.to_ms = time()?,
                "granularity" if rollups => {
                    q.granularity = match v.as_ref() {
                        "hour" => usage::Granularity::Hour,
                        "day" => usage::Granularity::Day,
                        _ => return Err(ApiError::BadRequest(format!("granularity must be hour or day, got '{v}'"))),
                    }
                }
                "limit" if !rollups => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to 10000, got '{v}'")))?
                }
                "after" if !rollups => {
                    q.after = Some(usage::AuditCursor::parse(&v).ok_or_else(|| {
                        ApiError::BadRequest("after must be the `next` of a previous page, unchanged".into())
                    })?)
                }
                other => return Err(ApiError::BadRequest(format!("unknown parameter '{other}'"))),
            }
        }
        q.from_ms = from.unwrap_or(q.to_ms - 86_400_000);
        if q.from_ms >= q.to_ms {
            return Err(ApiError::BadRequest("from must be before to".into()));
        }
        if q.to_ms - q.from_ms > 400 * 86_400_000 {
            return Err(ApiError::BadRequest("a range is at most 400 days".into()));
        }
        Ok(q)
    }
}
