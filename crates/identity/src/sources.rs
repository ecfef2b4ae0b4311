//! Where a tenant's signed URLs may fetch their sources from, and what a signing key is: plain
//! data with one text form (entries separated by spaces), which both stores keep in a column and
//! the identity bucket carries. The matching itself is the `origin` crate's; here entries are only
//! checked for shape.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A tenant's allow-list of sources. An entry is a host (`images.example.com`, https only), a
/// host's subdomains (`*.example.com`), a URL prefix (`https://cdn.example.com/shop/`, or
/// `http://…` to allow plain HTTP for it), or a prefix in a bucket the deployment registered
/// (`s3://photos/shop/`). Cheap to clone: the entries are shared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceList(Arc<[String]>);

/// At most this many entries per tenant.
pub const MAX_SOURCE_ENTRIES: usize = 64;
const MAX_ENTRY_LEN: usize = 255;

/// Why an allow-list was refused; the message is fit for an admin client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSources(pub String);

impl SourceList {
    pub fn entries(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The list from separate entries, each checked; duplicates are kept once.
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<SourceList, InvalidSources> {
        if entries.len() > MAX_SOURCE_ENTRIES {
            return Err(InvalidSources(format!("at most {MAX_SOURCE_ENTRIES} sources")));
        }
        let mut kept: Vec<String> = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = normalise(entry.as_ref())?;
            if !kept.contains(&entry) {
                kept.push(entry);
            }
        }
        Ok(SourceList(kept.into()))
    }
}

impl FromStr for SourceList {
    type Err = InvalidSources;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = text.split_ascii_whitespace().collect();
        SourceList::from_entries(&entries)
    }
}

impl fmt::Display for SourceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// One entry, lower-cased where case does not matter (scheme and host), or why it is unusable.
fn normalise(entry: &str) -> Result<String, InvalidSources> {
    let bad = |why: &str| InvalidSources(format!("source {entry:?}: {why}"));
    if entry.is_empty() || entry.len() > MAX_ENTRY_LEN {
        return Err(bad("an entry is 1 to 255 characters"));
    }
    if entry.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii()) {
        return Err(bad("no spaces, control or non-ASCII characters (write a host in its punycode form)"));
    }
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "https" && scheme != "http" && scheme != "s3" {
                return Err(bad("a prefix starts with https://, http:// or s3://"));
            }
            (Some(scheme), rest)
        }
        None => (None, entry),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    if scheme.is_none() && !path.is_empty() {
        return Err(bad("a path needs the scheme: https://host/path/"));
    }
    if scheme.as_deref() == Some("s3") {
        // A registered bucket's name (lowercase letters, digits, `-`) and a key prefix.
        let name_ok = !authority.is_empty()
            && authority.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok || path.is_empty() {
            return Err(bad("a bucket prefix is s3://<bucket name>/ or s3://<bucket name>/<key prefix>"));
        }
        return Ok(format!("s3://{authority}{path}"));
    }
    if authority.contains('@') {
        return Err(bad("no user name or password"));
    }
    let host = authority.to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let name_only = match name.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && !name.contains(':') => {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad("a port is 1 to 65535"));
            }
            name
        }
        _ => name,
    };
    let host_ok = !name_only.is_empty()
        && (name_only.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            || (name_only.starts_with('[') && name_only.ends_with(']')));
    if !host_ok || name_only.starts_with('.') || name_only.ends_with('.') {
        return Err(bad("not a host name"));
    }
    Ok(match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => host,
    })
}

/// What a key is for. An API key authenticates requests (`Authorization: Bearer`); a signing
/// key signs GET URLs and can do nothing else, so a signing secret that leaks through a page's
/// markup lets no one call the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyPurpose {
    #[default]
    Api,
    Signing,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Api => "api",
            KeyPurpose::Signing => "signing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key's purpose is \"api\" or \"signing\"")]
pub struct InvalidPurpose;

impl FromStr for KeyPurpose {
    type Err = InvalidPurpose;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "api" => Ok(KeyPurpose::Api),
            "signing" => Ok(KeyPurpose::Signing),
            _ => Err(InvalidPurpose),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalised_and_round_trip_through_text() {
        let list: SourceList =
            "Images.Example.com *.cdn.example.com HTTPS://Shop.example.com/Photos/ http://intranet:8080/x/ S3://photos/Shop/"
                .parse()
                .unwrap();
        assert_eq!(
            list.entries(),
            [
                "images.example.com",
                "*.cdn.example.com",
                "https://shop.example.com/Photos/",
                "http://intranet:8080/x/",
                "s3://photos/Shop/"
            ]
        );
        assert_eq!(list.to_string().parse::<SourceList>().unwrap(), list);
        assert!("".parse::<SourceList>().unwrap().is_empty());
    }

    #[test]
    fn unusable_entries_are_refused_with_a_reason() {
        for bad in [
            "ftp://example.com/",
            "example.com/path",
            "https://user:pw@example.com/",
            "exa mple.com",
            "example.com:0",
            "example.com:99999",
            ".example.com",
            "*.",
            "bücher.example",
            "s3://photos",
            "s3://Photos/",
            "s3://photos:9000/",
            "s3://key:secret@photos/",
        ] {
            let e = SourceList::from_entries(&[bad]).unwrap_err();
            assert!(e.0.contains("source"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..=MAX_SOURCE_ENTRIES).map(|i| format!("h{i}.example.com")).collect();
        assert!(SourceList::from_entries(&many).is_err());
    }

    #[test]
    fn purposes_have_one_text_form() {
        for p in [KeyPurpose::Api, KeyPurpose::Signing] {
            assert_eq!(p.as_str().parse::<KeyPurpose>(), Ok(p));
        }
        assert!("admin".parse::<KeyPurpose>().is_err());
    }
}
