//! https:// origins: the certificate checked against the system roots and `extra_ca`, by the
//! URL's host name, over a connection to the checked address.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::server::{Reply, TestOrigin};
use super::{policy_allowing, rules};
use crate::{FetchError, Fetched, Fetcher, OriginPolicy};

/// A throwaway CA (its certificate written to a file for `extra_ca`) and a server config for
/// `localhost` signed by it.
struct Pki {
    ca_file: PathBuf,
    acceptor: TlsAcceptor,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

fn pki(tag: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let ca_file = std::env::temp_dir().join(format!("origin-test-ca-{}-{tag}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Pki { ca_file, acceptor: TlsAcceptor::from(Arc::new(config)) }
}

#[tokio::test]
async fn an_https_origin_with_a_certificate_from_the_extra_ca_is_fetched_by_name() {
    let pki = pki("ok");
    let origin = TestOrigin::bind("127.0.0.1:0", Some(pki.acceptor.clone()), |_| Reply::ok(b"over tls")).await.unwrap();
    let at = format!("localhost:{}", origin.port());
    let tenant = rules(std::slice::from_ref(&at), false);
    let url = format!("https://{at}/a.png");

    let policy = OriginPolicy { extra_ca: Some(pki.ca_file.clone()), ..policy_allowing(std::slice::from_ref(&at)) };
    let fetched = Fetcher::new(policy).unwrap().fetch(&url, &tenant, 1000, None).await.unwrap();
    assert!(matches!(fetched, Fetched::Body { ref bytes, .. } if bytes.as_ref() == b"over tls"), "{fetched:?}");
    assert_eq!(origin.heads()[0].header("host"), Some(at.as_str()));

    // Without the CA, the system roots alone do not vouch for it.
    let untrusting = Fetcher::new(policy_allowing(std::slice::from_ref(&at))).unwrap();
    let error = untrusting.fetch(&url, &tenant, 1000, None).await.unwrap_err();
    assert!(matches!(error, FetchError::Unreachable(ref why) if why.contains("TLS")), "{error:?}");
    // By address, the certificate (for localhost only) does not match.
    let by_ip = format!("127.0.0.1:{}", origin.port());
    let policy = OriginPolicy { extra_ca: Some(pki.ca_file.clone()), ..policy_allowing(std::slice::from_ref(&by_ip)) };
    let error = Fetcher::new(policy)
        .unwrap()
        .fetch(&format!("https://{by_ip}/a.png"), &rules(std::slice::from_ref(&by_ip), false), 1000, None)
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Unreachable(ref why) if why.contains("TLS")), "{error:?}");
}

#[tokio::test]
async fn an_https_source_redirecting_to_http_is_refused_unless_http_is_allowed() {
    let pki = pki("downgrade");
    let plain = TestOrigin::start(|_| Reply::ok(b"plain")).await;
    let location = format!("http://localhost:{}/x.png", plain.port());
    let secure =
        TestOrigin::bind("127.0.0.1:0", Some(pki.acceptor.clone()), move |_| Reply::redirect("302 Found", &location))
            .await
            .unwrap();
    let hosts = [format!("localhost:{}", secure.port()), format!("localhost:{}", plain.port())];
    let policy = OriginPolicy { extra_ca: Some(pki.ca_file.clone()), ..policy_allowing(&hosts) };
    let fetcher = Fetcher::new(policy).unwrap();
    let url = format!("https://localhost:{}/a.png", secure.port());

    let error = fetcher.fetch(&url, &rules(&hosts, false), 1000, None).await.unwrap_err();
    assert!(matches!(error, FetchError::NotAllowed(ref why) if why.contains("https:// to http://")), "{error:?}");
    assert_eq!((secure.connections(), plain.connections()), (1, 0));

    let fetched = fetcher.fetch(&url, &rules(&hosts, true), 1000, None).await.unwrap();
    assert!(matches!(fetched, Fetched::Body { ref bytes, .. } if bytes.as_ref() == b"plain"));
    assert_eq!(plain.connections(), 1);
}
