//! A [`Change`] as the bucket stores it: JSON, the full state of one tenant or one key.
//!
//! Fields added since the first version are optional on decode, so that a value an older
//! identity service wrote still loads: a key without `expires_at_ms` never expires. (An older
//! api node ignores the field, so during a rolling upgrade expiry holds only on upgraded nodes.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use identity::{Change, ChangeKind, Credential, KeyId, KeyPurpose, TenantId, TenantLimits, TenantState, TenantStatus};
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
    let at_ms = ms_since_epoch(change.at);
    let tenant = |t: &TenantState| {
        json!({
            "id": t.id.get(),
            "status": t.status.as_str(),
            "rate_per_sec": t.limits.rate_per_sec,
            "burst": t.limits.burst,
            "max_input_bytes": t.limits.max_input_bytes,
            "max_input_pixels": t.limits.max_input_pixels,
            // Optional: a value without it (written before quotas) reads as "the default".
            "quota": t.limits.quota.map(|q| q.to_string()),
            // Optional, like the quota: absent reads as none set.
            "sources": t.limits.sources.as_ref().map(|s| s.to_string()),
            "cache_max_age_secs": t.limits.cache_max_age_secs,
        })
    };
    let value = match &change.kind {
        ChangeKind::Tenant(t) => json!({ "version": change.version, "at_ms": at_ms, "tenant": tenant(t) }),
        ChangeKind::Credential(c) => json!({
            "version": change.version,
            "at_ms": at_ms,
            "tenant": tenant(&c.tenant),
            "key": {
                "id": c.key.as_str(),
                "secret_sha256": hex(&c.secret_hash),
                "revoked": c.revoked,
                "expires_at_ms": c.expires_at.map(ms_since_epoch),
                "purpose": c.purpose.as_str(),
            },
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
            quota: match t["quota"].as_str() {
                Some(text) => Some(text.parse().map_err(|e: identity::InvalidQuota| bad(&e.to_string()))?),
                None => None,
            },
            sources: match t["sources"].as_str() {
                Some(text) => Some(text.parse().map_err(|e: identity::InvalidSources| bad(&e.to_string()))?),
                None => None,
            },
            cache_max_age_secs: t["cache_max_age_secs"].as_u64().and_then(|n| u32::try_from(n).ok()),
        },
    };
    let kind = match v.get("key") {
        None | Some(Value::Null) => ChangeKind::Tenant(tenant),
        Some(k) => ChangeKind::Credential(Credential {
            key: k["id"].as_str().and_then(|s| s.parse::<KeyId>().ok()).ok_or_else(|| bad("bad key id"))?,
            secret_hash: k["secret_sha256"].as_str().and_then(unhex).ok_or_else(|| bad("bad secret hash"))?,
            revoked: k["revoked"].as_bool().ok_or_else(|| bad("no revoked flag"))?,
            // Absent (an older writer) or null: no expiry. Anything else must be a time: a key
            // must not outlive its expiry because the value was misread.
            expires_at: match k.get("expires_at_ms") {
                None | Some(Value::Null) => None,
                Some(ms) => Some(UNIX_EPOCH + Duration::from_millis(ms.as_u64().ok_or_else(|| bad("bad expiry"))?)),
            },
            // Absent (an older writer): an API key, the only kind there was. Anything else must
            // be a purpose this build knows: a signing key must never read as an API key.
            purpose: match k.get("purpose") {
                None | Some(Value::Null) => KeyPurpose::Api,
                Some(p) => p.as_str().and_then(|p| p.parse().ok()).ok_or_else(|| bad("bad key purpose"))?,
            },
            tenant,
        }),
    };
    Ok(Change { version, at, kind })
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
                quota: Some("rolling=60;requests=5;soft=80".parse().expect("a quota")),
                sources: Some("images.example.com https://cdn.example.com/a/".parse().expect("sources")),
                cache_max_age_secs: Some(3600),
            },
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let key: KeyId = "AbCdEf012345".parse().expect("a key id");
        let expires_at = Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_456));
        for kind in [
            ChangeKind::Tenant(tenant.clone()),
            ChangeKind::Credential(Credential {
                key,
                secret_hash: [0xab; 32],
                revoked: true,
                expires_at: None,
                purpose: KeyPurpose::Signing,
                tenant: tenant.clone(),
            }),
            ChangeKind::Credential(Credential {
                key,
                secret_hash: [0xab; 32],
                revoked: false,
                expires_at,
                purpose: KeyPurpose::Api,
                tenant,
            }),
        ] {
            let change = Change { version: 42, at, kind };
            assert_eq!(decode(&encode(&change)).expect("decodes"), change);
        }
        assert!(decode(b"{\"version\":1}").is_err());
    }

    #[test]
    fn a_key_written_before_expiry_existed_still_loads_and_a_garbled_expiry_does_not() {
        let old = br#"{"version":3,"at_ms":1700000000000,"tenant":{"id":7,"status":"active","rate_per_sec":null,
            "burst":null,"max_input_bytes":null,"max_input_pixels":null},
            "key":{"id":"AbCdEf012345","secret_sha256":"abababababababababababababababababababababababababababababababab","revoked":false}}"#;
        match decode(old).expect("an old value decodes").kind {
            ChangeKind::Credential(c) => {
                assert_eq!((c.revoked, c.expires_at, c.purpose), (false, None, KeyPurpose::Api))
            }
            other => panic!("expected a key change, got {other:?}"),
        }
        let text = std::str::from_utf8(old).expect("utf-8");
        let garbled = text.replace(r#""revoked":false"#, r#""revoked":false,"expires_at_ms":"soon""#);
        assert!(decode(garbled.as_bytes()).is_err());
        let unknown_purpose = text.replace(r#""revoked":false"#, r#""revoked":false,"purpose":"admin""#);
        assert!(decode(unknown_purpose.as_bytes()).is_err());
        assert!(decode(b"not json").is_err());
    }
}
