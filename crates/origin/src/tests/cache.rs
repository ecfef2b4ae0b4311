//! The source cache: hits, revalidation, single flight, the byte budget, and tenants' rules on
//! shared entries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::server::{Reply, TestOrigin};
use super::{policy_allowing, rules};
use crate::{CacheOutcome, FetchError, Fetcher, OriginPolicy, SourceCache, SourceRules};

fn cache_for(
    origin: &TestOrigin,
    budget: u64,
    change: impl FnOnce(&mut OriginPolicy),
) -> (Arc<SourceCache>, SourceRules, String) {
    let at = format!("127.0.0.1:{}", origin.port());
    let mut policy = policy_allowing(std::slice::from_ref(&at));
    change(&mut policy);
    let cache = SourceCache::new(Fetcher::new(policy).unwrap(), budget);
    (Arc::new(cache), rules(std::slice::from_ref(&at), true), format!("http://{at}"))
}

#[tokio::test]
async fn a_second_get_is_a_hit_without_a_request() {
    let origin = TestOrigin::start(|_| Reply::ok(b"image-bytes")).await;
    let (cache, tenant, base) = cache_for(&origin, 1 << 20, |_| {});
    let url = format!("{base}/a.png");
    let first = cache.get(&url, &tenant, 1000).await.unwrap();
    assert_eq!((first.outcome, first.fetched_bytes), (CacheOutcome::Fetched, 11));
    // No ETag from the origin: the validator is the content's digest.
    assert!(first.validator.starts_with("sha256:") && first.validator.len() == 7 + 64, "{}", first.validator);
    let second = cache.get(&url, &tenant, 1000).await.unwrap();
    assert_eq!((second.outcome, second.fetched_bytes), (CacheOutcome::Hit, 0));
    assert_eq!((second.bytes, second.validator), (first.bytes, first.validator.clone()));
    assert_eq!(origin.requests(), 1);
    assert_eq!(cache.current_validator(&url, &tenant), Some(first.validator));
    assert_eq!(cache.current_validator(&format!("{base}/unknown.png"), &tenant), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.fetches, stats.bytes_fetched, stats.entries, stats.bytes_held), (1, 1, 11, 1, 11));
    // A hit bigger than this caller's cap is refused too.
    assert_eq!(cache.get(&url, &tenant, 10).await, Err(FetchError::TooLarge { limit: 10 }));
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_then_replaced_when_its_etag_changes() {
    let version = Arc::new(AtomicUsize::new(1));
    let current = version.clone();
    let origin = TestOrigin::start(move |head| {
        let etag = format!("\"v{}\"", current.load(Ordering::SeqCst));
        if head.header("if-none-match") == Some(etag.as_str()) {
            Reply::with("304 Not Modified", &[], b"")
        } else {
            Reply::with("200 OK", &[&format!("ETag: {etag}")], etag.as_bytes())
        }
    })
    .await;
    let (cache, tenant, base) = cache_for(&origin, 1 << 20, |p| p.revalidate_after = Duration::from_millis(150));
    let url = format!("{base}/a.png");
    let first = cache.get(&url, &tenant, 1000).await.unwrap();
    assert_eq!((first.outcome, first.validator.as_str()), (CacheOutcome::Fetched, "\"v1\""));
    assert_eq!(cache.current_validator(&url, &tenant).as_deref(), Some("\"v1\""));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cache.current_validator(&url, &tenant), None, "a stale entry vouches for nothing");
    let revalidated = cache.get(&url, &tenant, 1000).await.unwrap();
    assert_eq!(origin.heads()[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!((revalidated.outcome, revalidated.fetched_bytes), (CacheOutcome::Revalidated, 0));
    assert_eq!(revalidated.bytes.as_ref(), b"\"v1\"");
    assert_eq!(cache.current_validator(&url, &tenant).as_deref(), Some("\"v1\""), "fresh again");
    assert_eq!(cache.get(&url, &tenant, 1000).await.unwrap().outcome, CacheOutcome::Hit);

    version.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replaced = cache.get(&url, &tenant, 1000).await.unwrap();
    assert_eq!((replaced.outcome, replaced.validator.as_str()), (CacheOutcome::Fetched, "\"v2\""));
    assert_eq!((replaced.bytes.as_ref(), replaced.fetched_bytes), (&b"\"v2\""[..], 4));
    assert_eq!(origin.requests(), 3);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.revalidations, stats.fetches, stats.entries), (1, 1, 2, 1));
}

#[tokio::test]
async fn the_origin_s_max_age_sets_freshness() {
    let origin = TestOrigin::start(|_| Reply::with("200 OK", &["Cache-Control: max-age=0"], b"x")).await;
    let (cache, tenant, base) = cache_for(&origin, 1 << 20, |_| {});
    let url = format!("{base}/a.png");
    cache.get(&url, &tenant, 10).await.unwrap();
    // max-age=0 though revalidate_after is a minute: stale at once (and no validator to send).
    assert_eq!(cache.current_validator(&url, &tenant), None);
    assert_eq!(cache.get(&url, &tenant, 10).await.unwrap().outcome, CacheOutcome::Fetched);
    assert!(origin.heads()[1].header("if-none-match").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_of_a_cold_url_make_one_request() {
    let origin =
        TestOrigin::start(|_| Reply::Later(Duration::from_millis(300), Box::new(Reply::ok(b"slow image")))).await;
    let (cache, tenant, base) = cache_for(&origin, 1 << 20, |_| {});
    let url = format!("{base}/cold.png");
    let gets: Vec<_> = (0..8)
        .map(|_| {
            let (cache, tenant, url) = (cache.clone(), tenant.clone(), url.clone());
            tokio::spawn(async move { cache.get(&url, &tenant, 1000).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for get in gets {
        let source = get.await.unwrap().unwrap();
        assert_eq!(source.bytes.as_ref(), b"slow image");
        outcomes.push((source.outcome, source.fetched_bytes));
    }
    assert_eq!(origin.requests(), 1);
    assert_eq!(origin.connections(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == (CacheOutcome::Fetched, 10)).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == (CacheOutcome::Hit, 0)).count(), 7, "{outcomes:?}");
}

#[tokio::test]
async fn the_budget_evicts_the_least_recently_used() {
    let origin = TestOrigin::start(|head| match head.target.as_str() {
        "/huge" => Reply::ok(&[7u8; 1001]),
        "/private" => Reply::with("200 OK", &["Cache-Control: no-store"], b"private"),
        _ => Reply::ok(&[1u8; 1000]),
    })
    .await;
    let (cache, tenant, base) = cache_for(&origin, 4000, |_| {});
    let get = |path: &str| {
        let (cache, tenant, url) = (cache.clone(), tenant.clone(), format!("{base}{path}"));
        async move { cache.get(&url, &tenant, 10_000).await.unwrap().outcome }
    };
    for path in ["/a", "/b", "/c", "/d"] {
        assert_eq!(get(path).await, CacheOutcome::Fetched);
    }
    assert_eq!(get("/a").await, CacheOutcome::Hit); // now /b is the least recently used
    assert_eq!(get("/e").await, CacheOutcome::Fetched);
    assert_eq!((cache.stats().entries, cache.stats().bytes_held), (4, 4000));
    assert_eq!(get("/a").await, CacheOutcome::Hit);
    assert_eq!(get("/c").await, CacheOutcome::Hit);
    assert_eq!(get("/b").await, CacheOutcome::Fetched, "evicted");
    assert_eq!(cache.current_validator(&format!("{base}/d"), &tenant), None, "evicted by /b");

    // Over a quarter of the budget, or no-store: served, not kept.
    for path in ["/huge", "/private"] {
        assert_eq!(get(path).await, CacheOutcome::Fetched);
        assert_eq!(get(path).await, CacheOutcome::Fetched);
    }
    assert_eq!((cache.stats().entries, cache.stats().bytes_held), (4, 4000));
}

#[tokio::test]
async fn a_url_cached_for_one_tenant_is_still_refused_to_another() {
    let origin = TestOrigin::start(|_| Reply::ok(b"tenant a's image")).await;
    let (cache, tenant_a, base) = cache_for(&origin, 1 << 20, |_| {});
    let url = format!("{base}/a.png");
    cache.get(&url, &tenant_a, 1000).await.unwrap();
    let tenant_b = rules(&["images.example.com".into()], true);
    assert!(matches!(cache.get(&url, &tenant_b, 1000).await, Err(FetchError::NotAllowed(_))));
    assert_eq!(cache.current_validator(&url, &tenant_b), None);
    // Nor over http when tenant B has the host but not http.
    let tenant_b_https = rules(&tenant_a.allowed, false);
    assert!(matches!(cache.get(&url, &tenant_b_https, 1000).await, Err(FetchError::NotAllowed(_))));
    assert_eq!(origin.requests(), 1);
    assert_eq!(cache.stats().refusals, 2);
}

#[tokio::test]
async fn an_entry_reached_by_redirect_is_shared_only_with_tenants_allowing_the_redirect() {
    let origin = TestOrigin::start(|head| match head.target.as_str() {
        "/old" => Reply::redirect("308 Permanent Redirect", "/new/a.png"),
        _ => Reply::ok(b"moved image"),
    })
    .await;
    let (cache, whole_host, base) = cache_for(&origin, 1 << 20, |_| {});
    let url = format!("{base}/old");
    assert_eq!(cache.get(&url, &whole_host, 1000).await.unwrap().outcome, CacheOutcome::Fetched);
    // This tenant may fetch /old but not where it leads.
    let only_old = rules(&[format!("{base}/old")], true);
    assert!(matches!(cache.get(&url, &only_old, 1000).await, Err(FetchError::NotAllowed(_))));
    assert_eq!(cache.get(&url, &whole_host, 1000).await.unwrap().outcome, CacheOutcome::Hit);
}
