//! A tenant's rules: which URLs it may fetch, before anything is resolved.

use super::server::{Reply, TestOrigin};
use super::{policy_allowing, rules};
use crate::policy::parse_source;
use crate::{FetchError, Fetcher, SourceRules};

fn allows(tenant: &SourceRules, url: &str) -> bool {
    match parse_source(url) {
        Ok(url) => tenant.check(&url).is_ok(),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn host_entries_match_the_host_and_its_port_only() {
    let tenant = rules(&["Images.Example.com".into(), "cdn.example.net:8443".into()], false);
    assert!(allows(&tenant, "https://images.example.com/a.png"));
    assert!(allows(&tenant, "https://IMAGES.example.com:443/a.png"));
    assert!(!allows(&tenant, "https://images.example.com:8443/a.png"));
    assert!(!allows(&tenant, "https://x.images.example.com/a.png"));
    assert!(!allows(&tenant, "https://images.example.com.evil.net/a.png"));
    assert!(allows(&tenant, "https://cdn.example.net:8443/a.png"));
    assert!(!allows(&tenant, "https://cdn.example.net/a.png"));
    let v6 = rules(&["[2606:4700::1]".into(), "2606:4700::2".into()], false);
    assert!(allows(&v6, "https://[2606:4700::1]/a.png"));
    assert!(allows(&v6, "https://[2606:4700:0::2]/a.png"));
}

#[test]
fn wildcards_match_subdomains_not_the_domain_itself() {
    let tenant = rules(&["*.example.com".into()], false);
    assert!(allows(&tenant, "https://a.example.com/x.jpg"));
    assert!(allows(&tenant, "https://a.b.example.com/x.jpg"));
    assert!(!allows(&tenant, "https://example.com/x.jpg"));
    assert!(!allows(&tenant, "https://badexample.com/x.jpg"));
    assert!(!allows(&tenant, "https://a.example.com:8443/x.jpg"));
}

#[test]
fn prefixes_match_scheme_host_port_and_path_start() {
    let tenant = rules(&["https://cdn.example.com/customer-a/".into()], true);
    assert!(allows(&tenant, "https://cdn.example.com/customer-a/x.png?w=1"));
    assert!(!allows(&tenant, "https://cdn.example.com/customer-b/x.png"));
    assert!(!allows(&tenant, "https://cdn.example.com/customer-a"));
    // Dot segments are resolved before the comparison.
    assert!(!allows(&tenant, "https://cdn.example.com/customer-a/../customer-b/x.png"));
    assert!(!allows(&tenant, "https://cdn.example.com/customer-a/%2e%2e/customer-b/x.png"));
    assert!(!allows(&tenant, "http://cdn.example.com/customer-a/x.png"));
    assert!(!allows(&tenant, "https://cdn.example.com:444/customer-a/x.png"));
    assert!(!allows(&tenant, "https://other.example.com/customer-a/x.png"));
}

#[test]
fn http_needs_allow_http_and_nothing_is_allowed_by_default() {
    let strict = rules(&["images.example.com".into()], false);
    assert!(!allows(&strict, "http://images.example.com/a.png"));
    assert!(allows(&rules(&["images.example.com".into()], true), "http://images.example.com/a.png"));
    assert!(!allows(&SourceRules::default(), "https://images.example.com/a.png"));
}

#[tokio::test]
async fn bad_urls_are_refused_as_such() {
    let fetcher = Fetcher::new(policy_allowing(&[])).unwrap();
    let tenant = rules(&["images.example.com".into()], true);
    for url in [
        "https://user:s3cret@images.example.com/a.png",
        "https://user@images.example.com/a.png",
        "ftp://images.example.com/a.png",
        "file:///etc/passwd",
        "images.example.com/a.png",
    ] {
        let result = fetcher.fetch(url, &tenant, 1000, None).await;
        let Err(error @ FetchError::BadUrl(_)) = result else { panic!("{url}: {result:?}") };
        assert_eq!((error.status(), error.slug()), (400, "bad-source-url"));
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
    let refused = fetcher
        .fetch("http://images.example.com/a.png?sig=secret", &rules(&["images.example.com".into()], false), 1000, None)
        .await;
    let Err(error @ FetchError::NotAllowed(_)) = refused else { panic!("{refused:?}") };
    assert_eq!((error.status(), error.slug()), (403, "source-not-allowed"));
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[tokio::test]
async fn a_redirect_outside_the_rules_is_refused() {
    let elsewhere = TestOrigin::start(|_| Reply::ok(b"x")).await;
    let location = format!("http://127.0.0.1:{}/x", elsewhere.port());
    let first = TestOrigin::start(move |_| Reply::redirect("301 Moved Permanently", &location)).await;
    let private = [format!("127.0.0.1:{}", first.port()), format!("127.0.0.1:{}", elsewhere.port())];
    let fetcher = Fetcher::new(policy_allowing(&private)).unwrap();
    let url = format!("http://127.0.0.1:{}/a.png", first.port());
    let result = fetcher.fetch(&url, &rules(&[format!("127.0.0.1:{}", first.port())], true), 1000, None).await;
    assert!(matches!(result, Err(FetchError::NotAllowed(_))), "{result:?}");
    assert_eq!(elsewhere.connections(), 0);
}
