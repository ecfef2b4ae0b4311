//! The lab's private certificate authority: a CA made at `lab up` (`DIR/tls/ca.pem`, its key
//! `ca.key`) and one certificate per node signed by it (`DIR/tls/<name>.pem` and `<name>.key`),
//! valid for `localhost`, `127.0.0.1` and the node's name, for both server and client use (NATS
//! routes present theirs in both directions). Keys are ECDSA P-256 and written mode 0600.
//!
//! A fresh CA each `lab up`: every process of the lab starts again with it, and nothing outside
//! DIR trusts it. Its key stays in DIR only so that an operator can issue more by hand.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::error::{LabError, Result};

/// Write `bytes` to a new file created with `mode` (a key is never readable by others, not even
/// for a moment), replacing any file there.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| LabError::io("create", path, e))?;
    file.write_all(bytes).map_err(|e| LabError::io("write", path, e))
}

/// A certificate and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that can issue node certificates, with its certificate in [`LabCa::ca_file`].
pub struct LabCa {
    dir: PathBuf,
    ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LabCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LabCa {{ ca_file: {:?} }}", self.ca_file)
    }
}

fn rcgen_error(what: &str) -> impl FnOnce(rcgen::Error) -> LabError + '_ {
    move |e| LabError::Certificate { what: what.to_string(), message: e.to_string() }
}

impl LabCa {
    /// Make a new CA named `name` in `dir` (created): `dir/ca.pem` and `dir/ca.key`, replacing
    /// any there.
    pub fn create(dir: &Path, name: &str) -> Result<LabCa> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
        let key = KeyPair::generate().map_err(rcgen_error("the CA's key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(rcgen_error("the CA's certificate"))?;
        let ca_file = dir.join("ca.pem");
        write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca_file, cert.pem().as_bytes(), 0o644)?;
        Ok(LabCa { dir: dir.to_path_buf(), ca_file, issuer: Issuer::new(params, key) })
    }

    /// The CA certificate (PEM): what every client of the lab trusts.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A certificate for node `name`, valid for `localhost`, `127.0.0.1` and `name`, in
    /// `dir/<name>.pem` and `dir/<name>.key` (the key mode 0600), replacing any there.
    pub fn issue(&self, name: &str) -> Result<CertFiles> {
        self.issue_for(name, Ipv4Addr::LOCALHOST)
    }

    /// [`issue`](Self::issue) for a node that listens on `addr` (its own on the lab's network):
    /// valid for that address as well.
    pub fn issue_for(&self, name: &str, addr: Ipv4Addr) -> Result<CertFiles> {
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(LabError::Invalid(format!("certificate name {name:?}: use letters, digits, - _ .")));
        }
        let what = format!("the certificate of {name}");
        let key = KeyPair::generate().map_err(rcgen_error(&what))?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), name.to_string()]).map_err(rcgen_error(&what))?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        if addr != Ipv4Addr::LOCALHOST {
            params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(addr)));
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error(&what))?;
        let files = CertFiles { cert: self.dir.join(format!("{name}.pem")), key: self.dir.join(format!("{name}.key")) };
        write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_are_private_and_certificates_name_the_node() {
        let dir = std::env::temp_dir().join(format!("lab-pki-{}", std::process::id()));
        let ca = LabCa::create(&dir, "test CA").expect("CA");
        let node = ca.issue("api-0").expect("certificate");
        for key in [dir.join("ca.key"), node.key.clone()] {
            let mode = std::fs::metadata(&key).expect("key file").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let pem = std::fs::read_to_string(&node.cert).expect("cert");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert!(ca.issue("../x").is_err(), "a name is not a path");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
