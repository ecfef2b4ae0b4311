//! A [`Change`] as the bucket stores it: JSON, the full state of one tenant or one key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use identity::{Change, ChangeKind, Credential, KeyId, TenantId, TenantLimits, TenantState, TenantStatus};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
#[error("an identity change in the bucket is unreadable: {0}")]
pub struct DecodeError(String);

/// The bucket key of the thing a change is about.
pub fn key_of(change: &Change) -> String {
    match &change.kind {
        ChangeKind::Tenant(t) => format!("t.{}", t.id.get()),
        ChangeKind::Credential(c) => format!("k.{}", c.key.as_str()),
    }
}

pub fn encode(change: &Change) -> Bytes {
    let at_ms = change.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let tenant = |t: &TenantState| {
        json!({
            "id": t.id.get(),
            "status": t.status.as_str(),
            "rate_per_sec": t.limits.rate_per_sec,
            "burst": t.limits.burst,
            "max_input_bytes": t.limits.max_input_bytes,
            "max_input_pixels": t.limits.max_input_pixels,
        })
    };
    let value = match &change.kind {
        ChangeKind::Tenant(t) => json!({ "version": change.version, "at_ms": at_ms, "tenant": tenant(t) }),
        ChangeKind::Credential(c) => json!({
            "version": change.version,
            "at_ms": at_ms,
            "tenant": tenant(&c.tenant),
            "key": { "id": c.key.as_str(), "secret_sha256": hex(&c.secret_hash), "revoked": c.revoked },
        }),
    };
    Bytes::from(value.to_string())
}

pub fn decode(bytes: &[u8]) -> Result<Change, DecodeError> {
    let bad = |what: &str| DecodeError(what.to_owned());
    let v: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
    let version = v["version"].as_u64().ok_or_else(|| bad("no version"))?;
    let at = UNIX_EPOCH + Duration::from_millis(v["at_ms"].as_u64().ok_or_else(|| bad("no time"))?);
    let t = &v["tenant"];
    let tenant = TenantState {
        id: TenantId::new(t["id"].as_u64().ok_or_else(|| bad("no tenant id"))?),
        status: t["status"].as_str().and_then(|s| s.parse::<TenantStatus>().ok()).ok_or_else(|| bad("bad status"))?,
        limits: TenantLimits {
            rate_per_sec: t["rate_per_sec"].as_f64(),
            burst: t["burst"].as_u64().and_then(|n| u32::try_from(n).ok()),
            max_input_bytes: t["max_input_bytes"].as_u64(),
            max_input_pixels: t["max_input_pixels"].as_u64(),
        },
    };
    let kind = match v.get("key") {
        None | Some(Value::Null) => ChangeKind::Tenant(tenant),
        Some(k) => ChangeKind::Credential(Credential {
            key: k["id"].as_str().and_then(|s| s.parse::<KeyId>().ok()).ok_or_else(|| bad("bad key id"))?,
            secret_hash: k["secret_sha256"].as_str().and_then(unhex).ok_or_else(|| bad("bad secret hash"))?,
            revoked: k["revoked"].as_bool().ok_or_else(|| bad("no revoked flag"))?,
            tenant,
        }),
    };
    Ok(Change { version, at, kind })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Milliseconds since `at` (0 if `at` is in the future: another machine's clock).
pub(crate) fn age_ms(at: SystemTime) -> u64 {
    SystemTime::now().duration_since(at).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        let tenant = TenantState {
            id: TenantId::new(7),
            status: TenantStatus::Suspended,
            limits: TenantLimits {
                rate_per_sec: Some(2.5),
                burst: Some(9),
                max_input_bytes: None,
                max_input_pixels: Some(99),
            },
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let key: KeyId = "AbCdEf012345".parse().expect("a key id");
        for kind in [
            ChangeKind::Tenant(tenant),
            ChangeKind::Credential(Credential { key, secret_hash: [0xab; 32], revoked: true, tenant }),
        ] {
            let change = Change { version: 42, at, kind };
            assert_eq!(decode(&encode(&change)).expect("decodes"), change);
        }
        assert!(decode(b"{\"version\":1}").is_err());
        assert!(decode(b"not json").is_err());
    }
}
