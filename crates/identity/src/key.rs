//! The API key format: generating a key, parsing a presented one, hashing its secret, and the
//! public key id ([`KeyId`]) every key carries.
//!
//! ```text
//! rsz_<key id>_<secret>_<checksum>          56 characters in all
//!     key id:   12 base62 characters, random (about 71 bits): looked up, safe to log
//!     secret:   32 base62 characters from the OS CSPRNG (about 190 bits): only its SHA-256 is stored
//!     checksum:  6 base62 characters: CRC-32 (IEEE) of the 50 characters before it, including
//!                the `_` that precedes it, big-endian, left-padded with `0`
//! base62 alphabet: 0-9 A-Z a-z (in that order, so a digit's value is its index)
//! ```
//!
//! The `rsz_` prefix and the fixed shape let secret scanners (GitHub push protection, gitleaks)
//! recognise a leaked key with a regex, `rsz_[0-9A-Za-z]{12}_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}`, and
//! the checksum lets them — and us — tell a key from random text without a lookup. CRC-32 detects
//! every single-character substitution and every transposition of neighbours, so a mistyped key is
//! refused as malformed before it costs a hash-table probe. The checksum is not a secret and
//! proves nothing about authenticity; the secret does that.
//!
//! This module must not touch storage: it turns strings into ids and hashes and back.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "rsz_";
pub const KEY_ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// `rsz_` + id + `_` + secret + `_` + checksum.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + 1 + CHECKSUM_LEN;

const ID_START: usize = KEY_PREFIX.len();
const SECRET_START: usize = ID_START + KEY_ID_LEN + 1;
const CHECKSUM_START: usize = SECRET_START + SECRET_LEN + 1;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An API key's public id: the 12 base62 characters after `rsz_` in the key itself. Random, so
/// ids do not reveal how many keys exist. Safe to log and to show in admin listings; it grants
/// nothing without the secret.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// From bytes already checked to be base62 (the key parser and the generator).
    pub(crate) fn from_base62(bytes: [u8; KEY_ID_LEN]) -> Self {
        debug_assert!(bytes.iter().all(|&b| is_base62(b)));
        KeyId(bytes)
    }

    pub fn as_str(&self) -> &str {
        // Invariant: only base62 (ASCII) bytes ever get in, see `from_base62` and `from_str`.
        std::str::from_utf8(&self.0).expect("KeyId holds ASCII")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

/// The reason a string is not a key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key id is {KEY_ID_LEN} characters from [0-9A-Za-z]")]
pub struct InvalidKeyId;

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; KEY_ID_LEN] = s.as_bytes().try_into().map_err(|_| InvalidKeyId)?;
        if !bytes.iter().all(|&b| is_base62(b)) {
            return Err(InvalidKeyId);
        }
        Ok(KeyId(bytes))
    }
}

/// Why a presented string is not an API key. Deciding it needs no lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("an API key starts with `{KEY_PREFIX}`")]
    Prefix,
    #[error("an API key is {KEY_LEN} characters long, this one is {0}")]
    Length(usize),
    #[error("an API key is `{KEY_PREFIX}` and three `_`-separated parts")]
    Separator,
    #[error("an API key has only the characters 0-9, A-Z and a-z between its separators")]
    Alphabet,
    #[error("the API key's checksum does not match: it was mistyped or truncated")]
    Checksum,
}

/// A well-formed key: its id, and its secret (which only leaves this type as a hash).
#[derive(Clone)]
pub struct ParsedKey {
    key_id: KeyId,
    secret: [u8; SECRET_LEN],
}

impl ParsedKey {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// SHA-256 of the secret part: what the store keeps and the cache compares.
    pub fn secret_hash(&self) -> [u8; 32] {
        secret_hash(&self.secret)
    }
}

impl fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey").field("key_id", &self.key_id).field("secret", &"<redacted>").finish()
    }
}

/// Checks a presented key's shape and checksum, cheapest tests first. Never allocates.
pub fn parse_key(presented: &str) -> Result<ParsedKey, KeyFormatError> {
    let bytes = presented.as_bytes();
    if !bytes.starts_with(KEY_PREFIX.as_bytes()) {
        return Err(KeyFormatError::Prefix);
    }
    if bytes.len() != KEY_LEN {
        return Err(KeyFormatError::Length(bytes.len()));
    }
    if bytes[SECRET_START - 1] != b'_' || bytes[CHECKSUM_START - 1] != b'_' {
        return Err(KeyFormatError::Separator);
    }
    let id = &bytes[ID_START..SECRET_START - 1];
    let secret = &bytes[SECRET_START..CHECKSUM_START - 1];
    let checksum = &bytes[CHECKSUM_START..];
    if ![id, secret, checksum].iter().all(|part| part.iter().all(|&b| is_base62(b))) {
        return Err(KeyFormatError::Alphabet);
    }
    if checksum != checksum_of(&bytes[..CHECKSUM_START]) {
        return Err(KeyFormatError::Checksum);
    }
    Ok(ParsedKey {
        key_id: KeyId::from_base62(id.try_into().expect("slice of KEY_ID_LEN")),
        secret: secret.try_into().expect("slice of SECRET_LEN"),
    })
}

/// A freshly generated key: the string to hand to the customer once, and what to store.
pub(crate) struct NewKey {
    pub id: KeyId,
    pub token: String,
    pub secret_hash: [u8; 32],
}

/// A new key from the OS CSPRNG. Fails only if the OS has no entropy source to offer.
pub(crate) fn generate() -> Result<NewKey, getrandom::Error> {
    let id: [u8; KEY_ID_LEN] = random_base62()?;
    let secret: [u8; SECRET_LEN] = random_base62()?;
    let id = KeyId::from_base62(id);
    Ok(NewKey { id, token: format_key(id, &secret), secret_hash: secret_hash(&secret) })
}

/// Assembles a key string with its checksum. `secret` must be base62.
pub(crate) fn format_key(id: KeyId, secret: &[u8; SECRET_LEN]) -> String {
    let mut key = Vec::with_capacity(KEY_LEN);
    key.extend_from_slice(KEY_PREFIX.as_bytes());
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(b'_');
    key.extend_from_slice(secret);
    key.push(b'_');
    let checksum = checksum_of(&key);
    key.extend_from_slice(&checksum);
    String::from_utf8(key).expect("base62 and ASCII separators")
}

pub(crate) fn secret_hash(secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Equality whose running time does not depend on where the inputs differ, so that the time a
/// refusal takes tells an attacker nothing about how much of a hash they got right.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the optimiser from turning the fold back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

pub(crate) fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn checksum_of(prefix: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(prefix);
    let mut out = [b'0'; CHECKSUM_LEN];
    // 62^6 ≈ 5.7e10 > 2^32, so six digits always hold a CRC-32.
    for digit in out.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Uniform base62 characters: bytes ≥ 248 (= 4 × 62) are drawn again, so `b % 62` has no bias.
fn random_base62<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < N {
        getrandom::fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| b < 248) {
            if filled == N {
                break;
            }
            out[filled] = BASE62[usize::from(b % 62)];
            filled += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        generate().expect("entropy").token
    }

    #[test]
    fn generated_keys_round_trip() {
        for _ in 0..100 {
            let new = generate().unwrap();
            assert_eq!(new.token.len(), KEY_LEN);
            assert!(new.token.starts_with("rsz_"));
            let parsed = parse_key(&new.token).unwrap();
            assert_eq!(parsed.key_id(), new.id);
            assert_eq!(parsed.secret_hash(), new.secret_hash);
            assert_eq!(&new.token[4..16], new.id.as_str());
        }
    }

    #[test]
    fn known_key_has_a_stable_checksum() {
        // Pins the format: a change here breaks every key already issued.
        let id: KeyId = "AbCdEf012345".parse().unwrap();
        let key = format_key(id, b"0123456789abcdefghijABCDEFGHIJxy");
        let expected_crc = crc32fast::hash(b"rsz_AbCdEf012345_0123456789abcdefghijABCDEFGHIJxy_");
        let mut value = 0u64;
        for &c in &key.as_bytes()[50..] {
            value = value * 62 + BASE62.iter().position(|&d| d == c).unwrap() as u64;
        }
        assert_eq!(value, u64::from(expected_crc));
        assert!(key.starts_with("rsz_AbCdEf012345_0123456789abcdefghijABCDEFGHIJxy_"));
        assert!(parse_key(&key).is_ok());
    }

    #[test]
    fn keys_are_distinct_and_use_the_whole_alphabet() {
        let keys: Vec<String> = (0..200).map(|_| sample()).collect();
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        let mut seen = [false; 256];
        for key in &keys {
            for &b in &key.as_bytes()[SECRET_START..CHECKSUM_START - 1] {
                seen[usize::from(b)] = true;
            }
        }
        // 200 × 32 draws from 62 symbols: every symbol shows up unless the generator is broken.
        assert!(BASE62.iter().all(|&b| seen[usize::from(b)]));
    }

    #[test]
    fn wrong_prefix_is_refused() {
        let key = sample();
        for bad in
            [key.replacen("rsz_", "rsx_", 1), key.replacen("rsz_", "RSZ_", 1), key[4..].to_string(), String::new()]
        {
            assert_eq!(parse_key(&bad).unwrap_err(), KeyFormatError::Prefix, "{bad}");
        }
        assert_eq!(parse_key(&format!("Bearer {key}")).unwrap_err(), KeyFormatError::Prefix);
    }

    #[test]
    fn wrong_length_is_refused() {
        let key = sample();
        assert_eq!(parse_key(&key[..KEY_LEN - 1]).unwrap_err(), KeyFormatError::Length(55));
        assert_eq!(parse_key(&format!("{key}0")).unwrap_err(), KeyFormatError::Length(57));
        assert_eq!(parse_key(&format!("{key} ")).unwrap_err(), KeyFormatError::Length(57));
        assert_eq!(parse_key("rsz_").unwrap_err(), KeyFormatError::Length(4));
    }

    #[test]
    fn misplaced_separators_are_refused() {
        let key = sample();
        let mut shifted = key.clone().into_bytes();
        shifted.swap(SECRET_START - 1, SECRET_START);
        assert_eq!(parse_key(std::str::from_utf8(&shifted).unwrap()).unwrap_err(), KeyFormatError::Separator);
        let mut dashed = key.into_bytes();
        dashed[CHECKSUM_START - 1] = b'-';
        assert_eq!(parse_key(std::str::from_utf8(&dashed).unwrap()).unwrap_err(), KeyFormatError::Separator);
    }

    #[test]
    fn characters_outside_base62_are_refused() {
        let key = sample();
        for (pos, c) in [(ID_START, "-"), (SECRET_START + 3, "+"), (SECRET_START + 31, "/"), (KEY_LEN - 1, "=")] {
            let mut bad = key.clone();
            bad.replace_range(pos..pos + 1, c);
            assert_eq!(parse_key(&bad).unwrap_err(), KeyFormatError::Alphabet, "{bad}");
        }
        // A multi-byte character keeps the byte length only if it replaces as many bytes.
        let mut bad = key.clone();
        bad.replace_range(SECRET_START..SECRET_START + 2, "é");
        assert_eq!(parse_key(&bad).unwrap_err(), KeyFormatError::Alphabet);
    }

    #[test]
    fn every_single_character_typo_is_caught_without_a_lookup() {
        let key = sample();
        let original = key.as_bytes();
        for pos in 0..KEY_LEN {
            for &c in BASE62.iter().chain(b"_-") {
                if c == original[pos] {
                    continue;
                }
                let mut typo = original.to_vec();
                typo[pos] = c;
                let typo = String::from_utf8(typo).unwrap();
                let err = parse_key(&typo).unwrap_err();
                let expected = match pos {
                    p if p < ID_START => KeyFormatError::Prefix,
                    p if p == SECRET_START - 1 || p == CHECKSUM_START - 1 => KeyFormatError::Separator,
                    _ if !is_base62(c) => KeyFormatError::Alphabet,
                    _ => KeyFormatError::Checksum,
                };
                assert_eq!(err, expected, "typo at {pos}: {typo}");
            }
        }
    }

    #[test]
    fn swapped_neighbours_are_caught_by_the_checksum() {
        let key = sample();
        for pos in ID_START..KEY_LEN - 1 {
            let mut swapped = key.clone().into_bytes();
            swapped.swap(pos, pos + 1);
            if swapped == key.as_bytes() {
                continue;
            }
            assert!(parse_key(std::str::from_utf8(&swapped).unwrap()).is_err(), "swap at {pos}");
        }
    }

    #[test]
    fn key_id_parsing() {
        assert!("AbCdEf012345".parse::<KeyId>().is_ok());
        assert!("AbCdEf01234".parse::<KeyId>().is_err());
        assert!("AbCdEf0123456".parse::<KeyId>().is_err());
        assert!("AbCdEf01234_".parse::<KeyId>().is_err());
    }

    #[test]
    fn ct_eq_compares_every_byte() {
        let a = [7u8; 32];
        assert!(ct_eq(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!ct_eq(&a, &b));
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let new = generate().unwrap();
        let parsed = parse_key(&new.token).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains(&new.token[SECRET_START..CHECKSUM_START - 1]));
        assert!(shown.contains(new.id.as_str()));
    }
}
