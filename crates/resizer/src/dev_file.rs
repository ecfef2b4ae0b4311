//! `<data-dir>/dev.json`: how to reach a `resizer dev` instance (its URLs, admin token and demo
//! key). `resizer dev` writes it; `resizer admin` reads it when given no URL or token. It holds a
//! secret, so it is only ever written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// `<data-dir>/dev.json`: how to reach this dev instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevFile {
    pub api_url: String,
    pub admin_url: String,
    pub admin_token: String,
    pub demo_api_key: String,
}

/// The file as the last run wrote it; `None` if it is missing or unreadable.
pub fn read(path: &Path) -> Option<DevFile> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Written to a temporary file with mode 0600 and renamed over the old one, so the secret is
/// never readable by others and a reader never sees half a file.
pub fn write(path: &Path, file: &DevFile) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    out.write_all(&serde_json::to_vec_pretty(file)?)?;
    out.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
