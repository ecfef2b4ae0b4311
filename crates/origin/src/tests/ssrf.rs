//! The address guard: sources resolving to non-public addresses are refused before any
//! connection, whatever the tenant's rules allow, and so are redirects to them.

use std::time::{Duration, Instant};

use super::server::{Reply, TestOrigin};
use super::{policy, policy_allowing, rules};
use crate::{FetchError, Fetched, Fetcher};

const MAX: u64 = 1 << 20;

fn forbidden(result: Result<Fetched, FetchError>) -> String {
    match result {
        Err(FetchError::ForbiddenAddress(why)) => why,
        other => panic!("expected ForbiddenAddress, got {other:?}"),
    }
}

#[tokio::test]
async fn loopback_by_ip_is_refused_without_a_connection_unless_the_policy_allows_it() {
    let origin = TestOrigin::start(|_| Reply::ok(b"image")).await;
    let url = format!("http://127.0.0.1:{}/a.png", origin.port());
    let tenant = rules(&[format!("127.0.0.1:{}", origin.port())], true);
    let fetcher = Fetcher::new(policy()).unwrap();
    let why = forbidden(fetcher.fetch(&url, &tenant, MAX, None).await);
    assert!(why.contains("127.0.0.1") && why.contains("loopback"), "{why}");
    assert_eq!(origin.connections(), 0);
    // The same by an IPv4-mapped IPv6 literal.
    let mapped = format!("http://[::ffff:127.0.0.1]:{}/a.png", origin.port());
    let tenant_mapped = rules(&[format!("[::ffff:7f00:1]:{}", origin.port())], true);
    forbidden(fetcher.fetch(&mapped, &tenant_mapped, MAX, None).await);
    assert_eq!(origin.connections(), 0);

    // The control: with the policy's leave, the listener is reached (so the count can move).
    let allowed = Fetcher::new(policy_allowing(&[format!("127.0.0.1:{}", origin.port())])).unwrap();
    let fetched = allowed.fetch(&url, &tenant, MAX, None).await.unwrap();
    assert!(matches!(fetched, Fetched::Body { ref bytes, .. } if bytes.as_ref() == b"image"));
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn ipv6_loopback_is_refused() {
    // Without an IPv6 loopback there is no listener to count, but the refusal still holds.
    let origin = TestOrigin::bind("[::1]:0", None, |_| Reply::ok(b"image")).await.ok();
    let port = origin.as_ref().map_or(8080, |o| o.port());
    let url = format!("http://[::1]:{port}/a.png");
    let fetcher = Fetcher::new(policy()).unwrap();
    let why = forbidden(fetcher.fetch(&url, &rules(&[format!("[::1]:{port}")], true), MAX, None).await);
    assert!(why.contains("[::1]"), "{why}");
    if let Some(origin) = origin {
        assert_eq!(origin.connections(), 0);
    }
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused() {
    let origin = TestOrigin::start(|_| Reply::ok(b"image")).await;
    let url = format!("http://localhost:{}/a.png", origin.port());
    let fetcher = Fetcher::new(policy()).unwrap();
    let why = forbidden(fetcher.fetch(&url, &rules(&[format!("localhost:{}", origin.port())], true), MAX, None).await);
    assert!(why.contains("localhost resolves to a non-public address"), "{why}");
    assert!(!why.contains("127.0.0.1"), "the resolved address is not told: {why}");
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_at_once() {
    let fetcher = Fetcher::new(policy()).unwrap();
    let started = Instant::now();
    forbidden(fetcher.fetch("http://10.1.2.3/a.png", &rules(&["10.1.2.3".into()], true), MAX, None).await);
    let why = forbidden(
        fetcher
            .fetch("http://169.254.169.254/latest/meta-data/", &rules(&["169.254.169.254".into()], true), MAX, None)
            .await,
    );
    assert!(why.contains("link-local"), "{why}");
    // No connection was attempted: an attempt would wait for the connect time-out (1 s).
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_before_connecting() {
    let target = TestOrigin::start(|_| Reply::ok(b"secret")).await;
    let location = format!("http://127.0.0.1:{}/x", target.port());
    let first = TestOrigin::start(move |_| Reply::redirect("302 Found", &location)).await;
    let tenant = rules(&[format!("127.0.0.1:{}", first.port()), format!("127.0.0.1:{}", target.port())], true);
    let fetcher = Fetcher::new(policy_allowing(&[format!("127.0.0.1:{}", first.port())])).unwrap();
    let url = format!("http://127.0.0.1:{}/a.png", first.port());
    forbidden(fetcher.fetch(&url, &tenant, MAX, None).await);
    assert_eq!(first.connections(), 1);
    assert_eq!(target.connections(), 0);
}
