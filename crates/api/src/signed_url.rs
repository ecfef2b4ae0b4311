//! The signed GET URL's format, as plain functions: its path, the signing secret each signing
//! key has, the signature over the path and its check, the options and the source it carries.
//! Used by the GET route (`by_url.rs`), and by `resizer url` and the tests to make URLs.
//!
//! `GET /v1/img/<key id>/<signature>/<options>/<source>`:
//! - the key id is a signing key's (it names the tenant);
//! - options are the POST query's parameters with `,` for `&` (`width=300,fit=cover`), plus
//!   `exp=<Unix seconds>` for a URL that stops working then;
//! - the source is the source URL in base64url without padding;
//! - the signature is base64url (no padding) of HMAC-SHA256 under the key's signing secret over
//!   `<key id>/<options>/<source>`: the path after `/v1/img/` with the signature segment left out.
//!
//! A key's signing secret is derived, not stored: HMAC-SHA256 under the deployment's URL signing
//! secret (`api.url_signing_secret_file`) of the key id. The identity store and the bucket that
//! replicates keys hold nothing that signs a URL; the nodes that verify (and the identity
//! service that shows a new key's secret once) hold the deployment secret.
//!
//! It must not read requests or the credential cache: the handler decides which key's standing
//! counts, this file only what the bytes of a URL say.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use identity::KeyId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Where the route lives.
pub const URL_PREFIX: &str = "/v1/img/";

/// What the deployment secret is stretched with to make a key's secret: a new meaning would
/// take a new context, never a reuse of this one.
const KEY_SECRET_CONTEXT: &[u8] = b"resizer url signing key v1\0";

/// The deployment's URL signing secret: 32 random bytes, written as 64 hex digits in its file.
#[derive(Clone)]
pub struct UrlSigning {
    master: [u8; 32],
}

impl fmt::Debug for UrlSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UrlSigning(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the URL signing secret must be 64 hex digits (32 random bytes, e.g. `openssl rand -hex 32`)")]
pub struct BadSigningSecret;

impl UrlSigning {
    /// The secret from its file's text (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<UrlSigning, BadSigningSecret> {
        let master = decode_hex32(text.trim()).ok_or(BadSigningSecret)?;
        if master.iter().all(|&b| b == 0) {
            return Err(BadSigningSecret);
        }
        Ok(UrlSigning { master })
    }

    /// The signing secret of `key`: what its holder signs URLs with.
    pub fn key_secret(&self, key: KeyId) -> KeySecret {
        let mut mac = hmac(&self.master);
        mac.update(KEY_SECRET_CONTEXT);
        mac.update(key.as_str().as_bytes());
        KeySecret(mac.finalize().into_bytes().into())
    }
}

/// One signing key's secret: 32 bytes, shown to its holder as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret([u8; 32]);

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

impl KeySecret {
    pub fn from_hex(text: &str) -> Option<KeySecret> {
        decode_hex32(text.trim()).map(KeySecret)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self, key: &str, options: &str, source: &str) -> HmacSha256 {
        let mut mac = hmac(&self.0);
        mac.update(key.as_bytes());
        mac.update(b"/");
        mac.update(options.as_bytes());
        mac.update(b"/");
        mac.update(source.as_bytes());
        mac
    }
}

/// A signed URL's path taken apart, its segments as sent (not percent-decoded: the signature is
/// over the bytes of the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPath<'a> {
    pub key: KeyId,
    pub signature: &'a str,
    pub options: &'a str,
    pub source: &'a str,
}

/// Why a URL is refused before any key or source is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not the route's shape: 400.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not match (or is missing): 403, checked before any fetch.
    #[error("the URL's signature does not match its key, options and source")]
    BadSignature,
    /// `exp` has passed: 403.
    #[error("the URL expired at {0} (Unix seconds)")]
    Expired(u64),
}

impl<'a> SignedPath<'a> {
    /// The four segments after [`URL_PREFIX`]; a path of another shape is `Malformed`.
    pub fn parse(path: &'a str) -> Result<SignedPath<'a>, UrlError> {
        let rest = path.strip_prefix(URL_PREFIX).ok_or_else(|| UrlError::Malformed("not a signed URL".into()))?;
        let segments: Vec<&str> = rest.split('/').collect();
        let [key, signature, options, source] = segments[..] else {
            return Err(UrlError::Malformed(
                "a signed URL is /v1/img/<key id>/<signature>/<options>/<source in base64url>".into(),
            ));
        };
        let key = key.parse::<KeyId>().map_err(|_| UrlError::Malformed(format!("{key:?} is not a key id")))?;
        if signature.is_empty() || options.is_empty() || source.is_empty() {
            return Err(UrlError::Malformed("a signed URL's segments are not empty".into()));
        }
        Ok(SignedPath { key, signature, options, source })
    }

    /// The signature checked in constant time against `secret`.
    pub fn verify(&self, secret: &KeySecret) -> Result<(), UrlError> {
        let given = URL_SAFE_NO_PAD.decode(self.signature).map_err(|_| UrlError::BadSignature)?;
        secret
            .mac(self.key.as_str(), self.options, self.source)
            .verify_slice(&given)
            .map_err(|_| UrlError::BadSignature)
    }

    /// The options as the POST route's query (`width=300&fit=cover`) and the expiry, if any;
    /// an expired URL is refused here, at `now_secs`.
    pub fn options(&self, now_secs: u64) -> Result<UrlOptions, UrlError> {
        let mut query = Vec::new();
        let mut expires = None;
        for pair in self.options.split(',') {
            match pair.strip_prefix("exp=") {
                Some(value) => {
                    let at = value
                        .parse::<u64>()
                        .map_err(|_| UrlError::Malformed(format!("exp={value:?} is not Unix seconds")))?;
                    if expires.replace(at).is_some() {
                        return Err(UrlError::Malformed("exp is given more than once".into()));
                    }
                }
                None => query.push(pair),
            }
        }
        if let Some(at) = expires.filter(|&at| at <= now_secs) {
            return Err(UrlError::Expired(at));
        }
        Ok(UrlOptions { query: query.join("&"), expires })
    }

    /// The source URL the last segment carries.
    pub fn source_url(&self) -> Result<String, UrlError> {
        let bad = || UrlError::Malformed("the source segment is not a URL in base64url without padding".into());
        // A CDN may want an extension: `<source>.jpg` is allowed and ignored.
        let encoded = self.source.split('.').next().unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| bad())?;
        String::from_utf8(bytes).map_err(|_| bad())
    }
}

/// What a URL's options segment asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlOptions {
    /// In the POST route's form, for `ResizeSpec::from_query` (and a worker, which parses it again).
    pub query: String,
    pub expires: Option<u64>,
}

/// The path of a signed URL for `source_url` with `options` (`width=300,fit=cover`, with
/// `exp=…` inside if wanted), signed by `key` with its `secret`.
pub fn signed_path(key: KeyId, secret: &KeySecret, options: &str, source_url: &str) -> String {
    let source = URL_SAFE_NO_PAD.encode(source_url.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(secret.mac(key.as_str(), options, &source).finalize().into_bytes());
    format!("{URL_PREFIX}{key}/{signature}/{options}/{source}")
}

fn hmac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes a key of any length"),
    }
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn key(s: &str) -> KeyId {
        s.parse().expect("a key id")
    }

    fn setup() -> (KeyId, KeySecret) {
        let signing = UrlSigning::from_hex(MASTER).expect("a secret");
        let id = key("AbCdEf012345");
        let secret = signing.key_secret(id);
        (id, secret)
    }

    #[test]
    fn a_signed_path_verifies_and_carries_its_options_and_source() {
        let (id, secret) = setup();
        let path = signed_path(id, &secret, "width=300,fit=cover,exp=2000000000", "https://img.example.com/a.jpg?v=1");
        let parsed = SignedPath::parse(&path).expect("parses");
        assert_eq!(parsed.key, id);
        parsed.verify(&secret).expect("verifies");
        let options = parsed.options(1_900_000_000).expect("not expired");
        assert_eq!(options, UrlOptions { query: "width=300&fit=cover".into(), expires: Some(2_000_000_000) });
        assert_eq!(parsed.source_url().expect("a url"), "https://img.example.com/a.jpg?v=1");
        assert_eq!(parsed.options(2_000_000_000), Err(UrlError::Expired(2_000_000_000)));
    }

    #[test]
    fn changing_any_part_breaks_the_signature() {
        let (id, secret) = setup();
        let path = signed_path(id, &secret, "width=300,exp=2000000000", "https://img.example.com/a.jpg");
        let other_source = URL_SAFE_NO_PAD.encode("https://img.example.com/b.jpg");
        let original_source = URL_SAFE_NO_PAD.encode("https://img.example.com/a.jpg");
        let changed = [
            path.replace("width=300", "width=301"),
            path.replace("exp=2000000000", "exp=2000000001"),
            path.replace(&original_source, &other_source),
            path.replace("AbCdEf012345", "AbCdEf012346"),
        ];
        for tampered in changed {
            let parsed = SignedPath::parse(&tampered).expect("still the shape");
            // A changed key id means another key's secret: verified with the secret its id gives.
            let secret = UrlSigning::from_hex(MASTER).expect("secret").key_secret(parsed.key);
            assert_eq!(parsed.verify(&secret), Err(UrlError::BadSignature), "{tampered}");
        }
        let other_key_secret = UrlSigning::from_hex(MASTER).expect("secret").key_secret(key("ZZZZZZZZZZZZ"));
        assert_eq!(SignedPath::parse(&path).expect("parses").verify(&other_key_secret), Err(UrlError::BadSignature));
    }

    #[test]
    fn secrets_differ_per_key_and_per_deployment() {
        let (id, secret) = setup();
        let other = UrlSigning::from_hex(&MASTER.replace("00", "01")).expect("secret");
        assert_ne!(other.key_secret(id), secret);
        assert_ne!(UrlSigning::from_hex(MASTER).expect("secret").key_secret(key("AbCdEf012346")), secret);
        assert_eq!(KeySecret::from_hex(&secret.to_hex()), Some(secret.clone()));
        assert_eq!(format!("{secret:?}"), "KeySecret(<redacted>)");
        assert!(UrlSigning::from_hex("abc").is_err());
        assert!(UrlSigning::from_hex(&"0".repeat(64)).is_err(), "an all-zero secret is a mistake");
    }

    #[test]
    fn malformed_paths_are_told_apart_from_bad_signatures() {
        for bad in [
            "/v1/img/",
            "/v1/img/AbCdEf012345/sig/width=1",
            "/v1/img/not-a-key/sig/width=1/aGk",
            "/v1/img/AbCdEf012345//width=1/aGk",
            "/v1/img/AbCdEf012345/sig/width=1/aGk/extra",
        ] {
            assert!(matches!(SignedPath::parse(bad), Err(UrlError::Malformed(_))), "{bad}");
        }
        let (_, secret) = setup();
        let unsigned = SignedPath::parse("/v1/img/AbCdEf012345/!!!/width=1/aGk").expect("the shape");
        assert_eq!(unsigned.verify(&secret), Err(UrlError::BadSignature));
        let bad_source = SignedPath::parse("/v1/img/AbCdEf012345/sig/width=1/@@@").expect("the shape");
        assert!(matches!(bad_source.source_url(), Err(UrlError::Malformed(_))));
        let twice = SignedPath::parse("/v1/img/AbCdEf012345/sig/exp=1,exp=2/aGk").expect("the shape");
        assert!(matches!(twice.options(0), Err(UrlError::Malformed(_))));
    }
}
