//! Who shipped a usage message: every api node shares one NATS login, so the login cannot tell
//! a genuine batch from one invented by anyone holding it. Each api node signs what it ships with
//! a key of its own, derived from a master secret only the aggregators hold, and the aggregators
//! check the signature and that every record names the node that signed it.
//!
//! - Node key: `HMAC-SHA-256(master, "resizer usage batch v1\0" || node id)`.
//! - Signature: `HMAC-SHA-256(node key, "resizer usage message v1\0" || u32 BE len || node id ||
//!   u32 BE len || message id || u64 BE len || payload)`: every field carries its length, so
//!   bytes cannot move from one field to the next without changing the signature.
//! - Headers: [`NODE_HEADER`] (the node id) and [`SIGNATURE_HEADER`] (`v1=<64 hex>`); the
//!   JetStream message id is `<message id>.<the signature's first 16 hex>`. Someone without the
//!   node's key cannot name a message as a genuine one will be named, so the stream's duplicate
//!   window cannot be used to drop a genuine batch; the same batch shipped again after a crash
//!   gets the same signature and so the same JetStream id, and is still stored once.
//!
//! What it does not protect against: an api node holding its own key may still invent records
//! in its own name (docs/security.md).

use std::fmt;

use async_nats::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The api node that signed a message.
pub const NODE_HEADER: &str = "Resizer-Usage-Node";
/// `v1=<hex HMAC>`; the version names the framing above.
pub const SIGNATURE_HEADER: &str = "Resizer-Usage-Signature";

const NODE_KEY_CONTEXT: &[u8] = b"resizer usage batch v1\0";
const MESSAGE_CONTEXT: &[u8] = b"resizer usage message v1\0";
const SIGNATURE_VERSION: &str = "v1=";
/// Hex characters of the signature in the JetStream message id: 64 bits, beyond guessing within
/// a duplicate window.
const ID_SIGNATURE_HEX: usize = 16;
/// The shortest master secret accepted, as for the admin tokens.
pub const MIN_SECRET_LEN: usize = 32;
/// A node id travels in a header and names keys: short, and only characters no header or log
/// line mangles.
const MAX_NODE_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageAuthError {
    #[error("usage.batch_signing_secret is shorter than {MIN_SECRET_LEN} characters")]
    ShortSecret,
    #[error("usage.batch_key is not 64 hexadecimal characters (print it with `resizer usage batch-key --node <id>`)")]
    BadKey,
    #[error("`{0}` cannot sign usage batches: a node id is 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadNodeId(String),
}

/// The master secret (`usage.batch_signing_secret`): only the aggregators hold it. Never printed.
#[derive(Clone)]
pub struct BatchSigningSecret(Vec<u8>);

impl BatchSigningSecret {
    pub fn new(secret: &str) -> Result<BatchSigningSecret, UsageAuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(UsageAuthError::ShortSecret);
        }
        Ok(BatchSigningSecret(secret.as_bytes().to_vec()))
    }

    /// The key of api node `node`.
    pub fn node_key(&self, node: &str) -> Result<NodeKey, UsageAuthError> {
        check_node_id(node)?;
        let mut mac = hmac(&self.0);
        mac.update(NODE_KEY_CONTEXT);
        mac.update(node.as_bytes());
        Ok(NodeKey(mac.finalize().into_bytes().into()))
    }
}

impl fmt::Debug for BatchSigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BatchSigningSecret(..)")
    }
}

/// One api node's signing key (`usage.batch_key`, hex). Never printed but by `to_hex`.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKey([u8; 32]);

impl NodeKey {
    pub fn from_hex(hex: &str) -> Result<NodeKey, UsageAuthError> {
        let bytes = decode_hex(hex.trim()).ok_or(UsageAuthError::BadKey)?;
        Ok(NodeKey(bytes.try_into().map_err(|_| UsageAuthError::BadKey)?))
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    fn sign(&self, node: &str, message_id: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = hmac(&self.0);
        mac.update(MESSAGE_CONTEXT);
        mac.update(&(node.len() as u32).to_be_bytes());
        mac.update(node.as_bytes());
        mac.update(&(message_id.len() as u32).to_be_bytes());
        mac.update(message_id.as_bytes());
        mac.update(&(payload.len() as u64).to_be_bytes());
        mac.update(payload);
        mac
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

/// An api node's identity for shipping: its id and its key.
#[derive(Debug, Clone)]
pub struct UsageSigner {
    node: String,
    key: NodeKey,
}

impl UsageSigner {
    pub fn new(node: &str, key: NodeKey) -> Result<UsageSigner, UsageAuthError> {
        check_node_id(node)?;
        Ok(UsageSigner { node: node.to_owned(), key })
    }

    /// The headers of message `message_id` carrying `payload`, its JetStream message id among them.
    pub fn headers(&self, message_id: &str, payload: &[u8]) -> HeaderMap {
        let signature = encode_hex(&self.key.sign(&self.node, message_id, payload).finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, signed_message_id(message_id, &signature).as_str());
        headers.insert(NODE_HEADER, self.node.as_str());
        headers.insert(SIGNATURE_HEADER, format!("{SIGNATURE_VERSION}{signature}").as_str());
        headers
    }
}

fn signed_message_id(message_id: &str, signature_hex: &str) -> String {
    format!("{message_id}.{}", &signature_hex[..ID_SIGNATURE_HEX])
}

/// Why a usage message is not applied. `reason()` is the metric label and the quarantine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not signed")]
    Unsigned,
    #[error("signed in a framing this aggregator does not know, or headers missing or malformed")]
    UnknownFraming,
    #[error("the signature does not match the node, the message id and the payload")]
    BadSignature,
    #[error("the payload is not a JSON array of usage records")]
    Unreadable,
    #[error("a record names a node other than the one that signed the message")]
    ForeignNode,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::Unsigned,
        Rejection::UnknownFraming,
        Rejection::BadSignature,
        Rejection::Unreadable,
        Rejection::ForeignNode,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::UnknownFraming => "unknown-framing",
            Rejection::BadSignature => "bad-signature",
            Rejection::Unreadable => "unreadable",
            Rejection::ForeignNode => "foreign-node",
        }
    }
}

/// A message that may be applied: its records under the message id the rollups record it by.
#[derive(Debug)]
pub struct OpenedBatch<T> {
    /// The id the api node gave the message (the JetStream id without the signature's part).
    pub message_id: String,
    /// The node that signed it; None when the aggregator checks no signatures.
    pub node: Option<String>,
    pub records: Vec<T>,
}

impl<T> OpenedBatch<T> {
    /// The id the aggregators record the batch as applied under (and name its archive object
    /// by): for a signed batch its node's id as well, length first (`<len>-<node>-<id>`, within
    /// the archive's alphabet, and no two nodes' keys alike), so that a node signing a message
    /// under another node's batch id cannot make that genuine batch a replay. Unsigned: the id.
    pub fn applied_key(&self) -> String {
        match &self.node {
            Some(node) => format!("{}-{node}-{}", node.len(), self.message_id),
            None => self.message_id.clone(),
        }
    }
}

/// A message that may not be applied, with what it claimed, for the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedBatch {
    pub rejection: Rejection,
    /// The JetStream message id as it came (empty without one).
    pub message_id: String,
    /// The node header as it came (empty without one).
    pub claimed_node: String,
}

/// Opens a message of the usage stream. With `secret` (an aggregator holding the master secret)
/// it must be signed by a node whose key derives from it, and each record (`node_of`) must name
/// that node; without, it is taken as it comes, as before batches were signed.
pub fn open_usage_message<T: serde::de::DeserializeOwned>(
    secret: Option<&BatchSigningSecret>,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    node_of: impl Fn(&T) -> &str,
) -> Result<OpenedBatch<T>, RejectedBatch> {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    let jetstream_id = header(async_nats::header::NATS_MESSAGE_ID.as_ref());
    let claimed_node = header(NODE_HEADER);
    let signature = header(SIGNATURE_HEADER);
    let reject = |rejection| RejectedBatch {
        rejection,
        message_id: jetstream_id.clone().unwrap_or_default(),
        claimed_node: claimed_node.clone().unwrap_or_default(),
    };
    let Some(jetstream_id) = jetstream_id.as_deref().filter(|id| !id.is_empty()) else {
        return Err(reject(if signature.is_none() { Rejection::Unsigned } else { Rejection::UnknownFraming }));
    };
    let records = |node: Option<String>, message_id: &str| -> Result<OpenedBatch<T>, RejectedBatch> {
        let records: Vec<T> = serde_json::from_slice(payload).map_err(|_| reject(Rejection::Unreadable))?;
        if let Some(node) = &node {
            if records.iter().any(|r| node_of(r) != node) {
                return Err(reject(Rejection::ForeignNode));
            }
        }
        Ok(OpenedBatch { message_id: message_id.to_owned(), node, records })
    };
    let Some(secret) = secret else {
        // Unchecked: a signed message is still recorded under its own id, not the JetStream one.
        let id = match (&signature, jetstream_id.rsplit_once('.')) {
            (Some(_), Some((id, _))) => id,
            _ => jetstream_id,
        };
        return records(None, id);
    };
    let Some(signature) = signature else {
        return Err(reject(Rejection::Unsigned));
    };
    let framing = || -> Option<(String, String, Vec<u8>)> {
        let node = claimed_node.clone().filter(|n| check_node_id(n).is_ok())?;
        let hex = signature.strip_prefix(SIGNATURE_VERSION).filter(|h| h.len() == 64)?;
        let bytes = decode_hex(hex)?;
        let (id, in_id) = jetstream_id.rsplit_once('.')?;
        (!id.is_empty() && in_id.len() == ID_SIGNATURE_HEX).then_some(())?;
        Some((node, id.to_owned(), bytes))
    };
    let Some((node, message_id, signature)) = framing() else {
        return Err(reject(Rejection::UnknownFraming));
    };
    let key = secret.node_key(&node).map_err(|_| reject(Rejection::UnknownFraming))?;
    // Constant time: a forger learns nothing from how long a wrong guess took to refuse.
    if key.sign(&node, &message_id, payload).verify_slice(&signature).is_err()
        || signed_message_id(&message_id, &encode_hex(&signature)) != jetstream_id
    {
        return Err(reject(Rejection::BadSignature));
    }
    records(Some(node), &message_id)
}

fn check_node_id(node: &str) -> Result<(), UsageAuthError> {
    let ok = !node.is_empty()
        && node.len() <= MAX_NODE_ID_LEN
        && node.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(UsageAuthError::BadNodeId(node.chars().take(MAX_NODE_ID_LEN).collect()))
    }
}

fn hmac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes a key of any length"),
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes().chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_batch_is_recorded_under_its_node_and_id_so_no_node_can_replay_anothers() {
        let opened = |node: Option<&str>, id: &str| OpenedBatch::<()> {
            message_id: id.into(),
            node: node.map(str::to_owned),
            records: Vec::new(),
        };
        let genuine = opened(Some("api-1"), "1796521444504-000000-57ee_p001");
        let forged = opened(Some("api-0"), "1796521444504-000000-57ee_p001");
        assert_eq!(genuine.applied_key(), "5-api-1-1796521444504-000000-57ee_p001");
        assert_ne!(genuine.applied_key(), forged.applied_key());
        // No node's key can be written as another's: the length comes first.
        assert_ne!(opened(Some("a"), "1-b-x").applied_key(), opened(Some("a-1-b"), "x").applied_key());
        assert_eq!(opened(None, "b-1").applied_key(), "b-1");
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Row {
        node: String,
        n: u32,
    }

    const MASTER: &str = "a master secret of more than thirty-two characters";

    fn master() -> BatchSigningSecret {
        BatchSigningSecret::new(MASTER).expect("long enough")
    }

    fn rows(node: &str) -> Vec<u8> {
        serde_json::to_vec(&[Row { node: node.into(), n: 1 }, Row { node: node.into(), n: 2 }]).expect("JSON")
    }

    fn signer(node: &str) -> UsageSigner {
        UsageSigner::new(node, master().node_key(node).expect("key")).expect("signer")
    }

    fn open(secret: Option<&BatchSigningSecret>, headers: &HeaderMap, payload: &[u8]) -> Result<Vec<Row>, Rejection> {
        let opened = open_usage_message(secret, Some(headers), payload, |r: &Row| &r.node).map_err(|r| r.rejection)?;
        assert_eq!(opened.message_id, "b-1", "the rollups' key is the genuine id");
        Ok(opened.records)
    }

    fn set(headers: &HeaderMap, name: &str, value: &str) -> HeaderMap {
        let mut changed = headers.clone();
        changed.insert(name, value);
        changed
    }

    #[test]
    fn node_keys_are_the_hmac_of_the_master_over_the_context_and_node() {
        // HMAC-SHA-256("a master ...", "resizer usage batch v1\0api-1"), by an independent
        // implementation (Python's hmac module).
        assert_eq!(
            master().node_key("api-1").expect("key").to_hex(),
            "950861a8cf4a092c261555bf5b0cca97c96af1a3e6b03fea71b60b496f7fd5fa"
        );
        assert_ne!(master().node_key("api-0").expect("key"), master().node_key("api-1").expect("key"));
        let other = BatchSigningSecret::new("another master secret, also thirty-two long").expect("long");
        assert_ne!(other.node_key("api-1").expect("key"), master().node_key("api-1").expect("key"));
        let key = master().node_key("api-1").expect("key");
        assert_eq!(NodeKey::from_hex(&key.to_hex()), Ok(key.clone()));
        assert_eq!(NodeKey::from_hex(&key.to_hex().to_uppercase()), Ok(key.clone()));
        for bad in ["", "abc", &key.to_hex()[..62], &format!("{}zz", &key.to_hex()[..62])] {
            assert_eq!(NodeKey::from_hex(bad), Err(UsageAuthError::BadKey), "{bad}");
        }
        assert_eq!(BatchSigningSecret::new("short").map(drop), Err(UsageAuthError::ShortSecret));
        for bad in ["", "api 1", "api\n1", &"a".repeat(65)] {
            assert!(master().node_key(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{:?} {:?}", master(), key).contains(&key.to_hex()[..8]), "secrets are not printed");
    }

    #[test]
    fn a_signed_message_opens_and_its_jetstream_id_is_deterministic() {
        let payload = rows("api-1");
        let headers = signer("api-1").headers("b-1", &payload);
        let id = headers.get(async_nats::header::NATS_MESSAGE_ID).expect("id").as_str().to_owned();
        assert!(id.starts_with("b-1.") && id.len() == "b-1.".len() + 16, "{id}");
        assert_eq!(signer("api-1").headers("b-1", &payload), headers, "a batch shipped again: the same id");
        assert_eq!(open(Some(&master()), &headers, &payload).expect("opens").len(), 2);
        let opened = open_usage_message(Some(&master()), Some(&headers), &payload, |r: &Row| &r.node).expect("ok");
        assert_eq!(opened.node.as_deref(), Some("api-1"));
        // An aggregator without the master secret applies it under its own id too.
        assert_eq!(open(None, &headers, &payload).expect("unchecked").len(), 2);
    }

    #[test]
    fn the_framing_gives_each_field_its_length() {
        let key = master().node_key("api-1").expect("key");
        let sign = |node: &str, id: &str, payload: &[u8]| key.sign(node, id, payload).finalize().into_bytes();
        // The framing in the module docs, by an independent implementation (Python's hmac and struct).
        assert_eq!(
            encode_hex(&sign("api-1", "b-1", b"[]")),
            "9f83b3749f15c36af847ab2597866e82eb5c19d3c77ffb58c0882f97cc19cfe6"
        );
        // The same bytes end to end, cut in different places, sign differently.
        assert_ne!(sign("api-1", "b-1", b"[]"), sign("api-1b", "-1", b"[]"));
        assert_ne!(sign("api-1", "b-1", b"[]"), sign("api-1", "b-1[", b"]"));
        assert_ne!(sign("api-1", "", b"b-1[]"), sign("api-1", "b-1", b"[]"));
    }

    #[test]
    fn tampered_unsigned_and_unknown_messages_are_rejected() {
        let secret = master();
        let payload = rows("api-1");
        let headers = signer("api-1").headers("b-1", &payload);
        let id = headers.get(async_nats::header::NATS_MESSAGE_ID).expect("id").as_str().to_owned();
        let signature = headers.get(SIGNATURE_HEADER).expect("signature").as_str().to_owned();
        let check = |headers: &HeaderMap, payload: &[u8], expected: Rejection| {
            assert_eq!(open(Some(&secret), headers, payload).map(drop), Err(expected), "{headers:?}");
        };
        // The payload, the node or the id changed after signing.
        let mut tampered = payload.clone();
        tampered[payload.len() - 3] ^= 1;
        check(&headers, &tampered, Rejection::BadSignature);
        check(&set(&headers, NODE_HEADER, "api-0"), &payload, Rejection::BadSignature);
        check(&set(&headers, "Nats-Msg-Id", &id.replacen("b-1", "b-2", 1)), &payload, Rejection::BadSignature);
        // The id's signature part no longer the signature's (the duplicate window's key).
        let other_suffix = format!("b-1.{}", "0".repeat(16));
        check(&set(&headers, "Nats-Msg-Id", &other_suffix), &payload, Rejection::BadSignature);
        let mut flipped = signature.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ASCII");
        check(&set(&headers, SIGNATURE_HEADER, &flipped), &payload, Rejection::BadSignature);
        // Signed with a key that is not derived from this master.
        let stranger = UsageSigner::new("api-1", NodeKey([7; 32])).expect("signer").headers("b-1", &payload);
        check(&stranger, &payload, Rejection::BadSignature);
        // Unsigned: the plain id, as a forger who wants a genuine batch dropped would send it.
        let mut plain = HeaderMap::new();
        plain.insert(async_nats::header::NATS_MESSAGE_ID, "b-1");
        check(&plain, &payload, Rejection::Unsigned);
        assert_eq!(
            open_usage_message(Some(&secret), None, &payload, |r: &Row| &r.node).map(drop).map_err(|r| r.rejection),
            Err(Rejection::Unsigned)
        );
        // Framings this code does not know.
        check(
            &set(&headers, SIGNATURE_HEADER, &signature.replacen("v1=", "v2=", 1)),
            &payload,
            Rejection::UnknownFraming,
        );
        check(&set(&headers, SIGNATURE_HEADER, &signature[..40]), &payload, Rejection::UnknownFraming);
        check(&set(&headers, NODE_HEADER, "api 1"), &payload, Rejection::UnknownFraming);
        check(&set(&headers, "Nats-Msg-Id", "b-1"), &payload, Rejection::UnknownFraming);
        let mut no_node = HeaderMap::new();
        no_node.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        no_node.insert(SIGNATURE_HEADER, signature.as_str());
        check(&no_node, &payload, Rejection::UnknownFraming);
    }

    #[test]
    fn records_in_another_nodes_name_are_rejected_and_kept_with_what_they_claimed() {
        let payload = serde_json::to_vec(&[Row { node: "api-0".into(), n: 1 }, Row { node: "api-1".into(), n: 2 }])
            .expect("JSON");
        let headers = signer("api-0").headers("b-1", &payload);
        let rejected = open_usage_message(Some(&master()), Some(&headers), &payload, |r: &Row| &r.node)
            .expect_err("api-1's record signed by api-0");
        assert_eq!(rejected.rejection, Rejection::ForeignNode);
        assert_eq!(rejected.claimed_node, "api-0");
        assert!(rejected.message_id.starts_with("b-1."), "{}", rejected.message_id);
        let garbage = b"not JSON";
        let headers = signer("api-0").headers("b-1", garbage);
        assert_eq!(open(Some(&master()), &headers, garbage).map(drop), Err(Rejection::Unreadable));
    }
}
