//! Who may use the admin API, and what for: named operator tokens with an access level, and the
//! throttle on wrong tokens. A token is kept only as its SHA-256; presented tokens are compared
//! against every entry in constant time. Tokens come from the configuration (`api.admin_token`,
//! `api.read_token`) and from an operators file that is read again when it changes, so an
//! operator's token is revoked by deleting its entry, without a restart.
//!
//! Knows no route: the admin handlers ask for an [`Access`] and get the [`Operator`] who holds it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Reads: tenants, keys (never secrets), usage, audit. What an api node's admin port needs.
    Read,
    /// Everything, writes included.
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Admin => "admin",
        }
    }
}

/// The operator a request's token belongs to: named in the admin audit trail and the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub access: Access,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    access: Access,
    sha256: [u8; 32],
}

/// Why a token or an operators file was refused at start or reload.
#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("{what}: {why}")]
    WeakToken { what: String, why: &'static str },
    #[error("the operators file {path}: {why}")]
    File { path: PathBuf, why: String },
}

/// The operators file: `[[operator]]` tables of `name`, `access` and `token_sha256` (hex).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorsFile {
    #[serde(default)]
    operator: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    access: Access,
    token_sha256: String,
}

/// Placeholders from examples and templates that must never guard a real admin API.
const PLACEHOLDERS: &[&str] = &["change-me", "changeme", "replace-me", "replaceme", "placeholder", "example", "secret"];

/// The shortest token accepted: 32 characters of a random alphabet are beyond guessing.
pub const MIN_TOKEN_LEN: usize = 32;

/// Refuses a token a person typed rather than generated: under [`MIN_TOKEN_LEN`] characters, a
/// known placeholder, or one character repeated.
pub fn check_strength(what: &str, token: &str) -> Result<(), OperatorsError> {
    let weak = |why| Err(OperatorsError::WeakToken { what: what.to_owned(), why });
    let lower = token.to_ascii_lowercase();
    if token.len() < MIN_TOKEN_LEN {
        return weak("shorter than 32 characters; generate one with `resizer admin new-token`");
    }
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return weak("a placeholder from an example, not a secret; generate one with `resizer admin new-token`");
    }
    if token.chars().all(|c| token.starts_with(c)) {
        return weak("one character repeated; generate one with `resizer admin new-token`");
    }
    Ok(())
}

/// Every token the admin API accepts, with the file they were read from.
#[derive(Debug)]
pub struct Operators {
    configured: Vec<Entry>,
    file: Option<PathBuf>,
    from_file: Mutex<FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    entries: Vec<Entry>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

/// How often the operators file's modification time is looked at, at most.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Operators {
    /// No token at all: every admin request is refused.
    pub fn none() -> Operators {
        Operators { configured: Vec::new(), file: None, from_file: Mutex::new(FileState::default()) }
    }

    /// The configured tokens (each checked with [`check_strength`]; empty ones are absent) and the
    /// operators file, if any, read now: a bad file stops the start.
    pub fn new(admin_token: &str, read_token: &str, file: Option<&Path>) -> Result<Operators, OperatorsError> {
        let mut configured = Vec::new();
        for (name, setting, access, token) in [
            ("admin", "api.admin_token", Access::Admin, admin_token),
            ("read-only", "api.read_token", Access::Read, read_token),
        ] {
            if token.is_empty() {
                continue;
            }
            check_strength(setting, token)?;
            configured.push(Entry { name: name.to_owned(), access, sha256: Sha256::digest(token).into() });
        }
        let operators =
            Operators { configured, file: file.map(Path::to_path_buf), from_file: Mutex::new(FileState::default()) };
        if let Some(path) = &operators.file {
            let (entries, modified) = read_file(path)?;
            let mut state = operators.lock_file();
            state.entries = entries;
            state.modified = modified;
            state.checked = Some(Instant::now());
        }
        Ok(operators)
    }

    /// Whether any token could ever be accepted.
    pub fn is_empty(&self) -> bool {
        self.configured.is_empty() && self.file.is_none()
    }

    /// The operator whose token this is, if any. Every entry is compared, in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Operator> {
        self.reload_if_changed();
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let state = self.lock_file();
        let mut found = None;
        for entry in self.configured.iter().chain(state.entries.iter()) {
            if ct_eq(&digest, &entry.sha256) && found.is_none() {
                found = Some(Operator { name: entry.name.clone(), access: entry.access });
            }
        }
        found
    }

    /// Reads the file again when its modification time moved (looked at once a second at most).
    /// A file that became unreadable or invalid keeps the entries last read, loudly: locking every
    /// operator out because of a typo would be worse.
    fn reload_if_changed(&self) {
        let Some(path) = &self.file else { return };
        let mut state = self.lock_file();
        if state.checked.is_some_and(|at| at.elapsed() < FILE_CHECK_INTERVAL) {
            return;
        }
        state.checked = Some(Instant::now());
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == state.modified {
            return;
        }
        match read_file(path) {
            Ok((entries, modified)) => {
                tracing::info!(path = %path.display(), operators = entries.len(), "operators file read again");
                state.entries = entries;
                state.modified = modified;
            }
            Err(e) => {
                tracing::error!(error = %e, "the operators file changed and cannot be used; the entries read before stay")
            }
        }
    }

    fn lock_file(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.from_file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn read_file(path: &Path) -> Result<(Vec<Entry>, Option<SystemTime>), OperatorsError> {
    let bad = |why: String| OperatorsError::File { path: path.to_path_buf(), why };
    let metadata = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: OperatorsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut entries = Vec::with_capacity(file.operator.len());
    for entry in file.operator {
        let valid_name = !entry.name.is_empty()
            && entry.name.len() <= 64
            && entry.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
        if !valid_name {
            return Err(bad(format!("operator name `{}`: 1–64 characters from [A-Za-z0-9._-@]", entry.name)));
        }
        if entries.iter().any(|e: &Entry| e.name == entry.name) {
            return Err(bad(format!("operator `{}` appears twice", entry.name)));
        }
        let sha256 = parse_hex32(&entry.token_sha256)
            .ok_or_else(|| bad(format!("operator `{}`: token_sha256 must be 64 hex digits", entry.name)))?;
        entries.push(Entry { name: entry.name, access: entry.access, sha256 });
    }
    Ok((entries, metadata.modified().ok()))
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a token in hex, as the operators file holds it.
pub fn token_sha256_hex(token: &str) -> String {
    Sha256::digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[test]
fn constant_time_compare() {
    let (a, mut b) = ([7u8; 32], [7u8; 32]);
    assert!(ct_eq(&a, &b));
    b[31] = 8;
    assert!(!ct_eq(&a, &b));
}

/// Wrong admin tokens per client address: a bucket of `per_minute` failures (by default
/// [`THROTTLE_PER_MINUTE`]) refilled over a minute. An empty bucket answers 429 without looking
/// at the token, so a guesser learns nothing more until it refills. Keyed by the connection's
/// peer address: behind HAProxy that is the proxy, which is why the admin frontend belongs on the
/// management network.
#[derive(Debug)]
pub struct AdminThrottle {
    failures: Mutex<HashMap<IpAddr, Bucket>>,
    burst: f64,
    refill: Duration,
}

impl Default for AdminThrottle {
    fn default() -> Self {
        AdminThrottle::new(THROTTLE_PER_MINUTE)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// Wrong tokens a client may present at once, and again per minute (`api.admin_wrong_tokens_per_minute`).
pub const THROTTLE_PER_MINUTE: u32 = 10;
/// Clients remembered at most; past it the fullest buckets (the most forgiven) are dropped first.
const THROTTLE_MAX_CLIENTS: usize = 4096;

impl AdminThrottle {
    /// `per_minute` wrong tokens at once, one more each `1/per_minute` of a minute (at least 1).
    pub fn new(per_minute: u32) -> AdminThrottle {
        let per_minute = per_minute.max(1);
        AdminThrottle {
            failures: Mutex::default(),
            burst: f64::from(per_minute),
            refill: Duration::from_secs(60) / per_minute,
        }
    }

    /// `Some(retry after)` when this client has no wrong guess left.
    pub fn refused(&self, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.lock();
        let bucket = failures.get(&client)?;
        let level = self.refilled(*bucket, now);
        (level < 1.0).then(|| self.refill.mul_f64(1.0 - level))
    }

    /// Counts a wrong token from this client.
    pub fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        let mut failures = self.lock();
        if failures.len() >= THROTTLE_MAX_CLIENTS && !failures.contains_key(&client) {
            failures.retain(|_, b| self.refilled(*b, now) < self.burst);
            if failures.len() >= THROTTLE_MAX_CLIENTS {
                // Still full of clients guessing right now: forget the oldest half.
                let mut ages: Vec<Instant> = failures.values().map(|b| b.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                failures.retain(|_, b| b.at > cut);
            }
        }
        let full = Bucket { level: self.burst, at: now };
        let bucket = failures.entry(client).or_insert(full);
        bucket.level = (self.refilled(*bucket, now) - 1.0).max(0.0);
        bucket.at = now;
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.level + elapsed / self.refill.as_secs_f64()).min(self.burst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "rsza_0123456789ABCDEFGHIJKLMNOPQRSTUV";

    #[test]
    fn weak_tokens_are_refused() {
        for weak in [
            "short",
            "change-me-to-a-long-random-string",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "this-is-my-example-token-of-forty-chars",
        ] {
            assert!(check_strength("api.admin_token", weak).is_err(), "{weak} passed");
        }
        assert!(check_strength("api.admin_token", STRONG).is_ok());
        assert!(Operators::new("change-me-to-a-long-random-string", "", None).is_err());
    }

    #[test]
    fn configured_tokens_carry_their_access() {
        let read = "rszr_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210";
        let operators = Operators::new(STRONG, read, None).expect("strong tokens");
        assert_eq!(operators.authenticate(STRONG).map(|o| o.access), Some(Access::Admin));
        assert_eq!(operators.authenticate(read).map(|o| o.access), Some(Access::Read));
        assert_eq!(operators.authenticate("rsza_not-it"), None);
        assert!(Operators::none().authenticate("").is_none());
    }

    #[test]
    fn the_operators_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("operators-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("operators.toml");
        let alice = "rsza_alice_0123456789abcdefghijklmnopq";
        let write = |body: &str| std::fs::write(&path, body).expect("write the file");
        write(&format!(
            "[[operator]]\nname = \"alice\"\naccess = \"admin\"\ntoken_sha256 = \"{}\"\n",
            token_sha256_hex(alice)
        ));
        let operators = Operators::new("", "", Some(&path)).expect("a valid file");
        assert_eq!(operators.authenticate(alice), Some(Operator { name: "alice".into(), access: Access::Admin }));
        // Revoked by deleting the entry; the mtime must move, and the check runs once a second.
        std::thread::sleep(Duration::from_millis(1100));
        write("operator = []\n");
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(later)).expect("mtime");
        assert_eq!(operators.authenticate(alice), None);
        std::fs::remove_dir_all(&dir).ok();
        assert!(read_file(&path).is_err());
    }

    #[test]
    fn wrong_tokens_run_a_client_dry_and_only_that_client() {
        let throttle = AdminThrottle::default();
        let guesser: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..THROTTLE_PER_MINUTE {
            assert!(throttle.refused(guesser).is_none());
            throttle.failed(guesser);
        }
        let wait = throttle.refused(guesser).expect("throttled after the burst");
        assert!(wait <= Duration::from_secs(6) && wait > Duration::ZERO);
        assert!(throttle.refused(other).is_none());
        // A deployment that raises it (the contract test does) allows that many.
        let relaxed = AdminThrottle::new(1000);
        for _ in 0..999 {
            relaxed.failed(guesser);
        }
        assert!(relaxed.refused(guesser).is_none());
    }
}
