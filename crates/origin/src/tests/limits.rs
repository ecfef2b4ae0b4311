//! Byte caps, time-outs, origin statuses and redirect limits; and what a request carries.

use std::time::{Duration, Instant};

use super::server::{Reply, TestOrigin};
use super::{policy_allowing, rules};
use crate::{FetchError, Fetched, Fetcher, OriginPolicy, SourceRules, Validators};

/// A fetcher and rules for one loopback origin.
fn for_origin(origin: &TestOrigin, change: impl FnOnce(&mut OriginPolicy)) -> (Fetcher, SourceRules, String) {
    let at = format!("127.0.0.1:{}", origin.port());
    let mut policy = policy_allowing(std::slice::from_ref(&at));
    change(&mut policy);
    (Fetcher::new(policy).unwrap(), rules(std::slice::from_ref(&at), true), format!("http://{at}"))
}

#[tokio::test]
async fn an_announced_length_over_the_cap_is_refused_before_the_body() {
    // The body never comes: reading it would end in the total time-out, not TooLarge.
    let origin =
        TestOrigin::start(|_| Reply::HeadOnly("HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n".into())).await;
    let (fetcher, tenant, base) = for_origin(&origin, |_| {});
    let started = Instant::now();
    let result = fetcher.fetch(&format!("{base}/big.png"), &tenant, 1_000_000, None).await;
    assert_eq!(result, Err(FetchError::TooLarge { limit: 1_000_000 }));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let error = FetchError::TooLarge { limit: 1 };
    assert_eq!((error.status(), error.slug()), (413, "too-large"));
}

#[tokio::test]
async fn a_streamed_body_over_the_cap_is_refused_as_it_passes() {
    let origin = TestOrigin::start(|_| Reply::EndlessChunks).await;
    let (fetcher, tenant, base) = for_origin(&origin, |_| {});
    let started = Instant::now();
    let result = fetcher.fetch(&format!("{base}/endless.png"), &tenant, 100_000, None).await;
    assert_eq!(result, Err(FetchError::TooLarge { limit: 100_000 }));
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // Under the cap, the same kind of body is read to its end.
    let small = TestOrigin::start(|_| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec())
    })
    .await;
    let (fetcher, tenant, base) = for_origin(&small, |_| {});
    let fetched = fetcher.fetch(&format!("{base}/small.png"), &tenant, 5, None).await.unwrap();
    assert!(matches!(fetched, Fetched::Body { ref bytes, .. } if bytes.as_ref() == b"abcde"), "{fetched:?}");
}

#[tokio::test]
async fn an_origin_that_never_answers_is_too_slow_within_the_total_time_out() {
    let origin = TestOrigin::start(|_| Reply::Hang).await;
    let (fetcher, tenant, base) = for_origin(&origin, |p| p.total_timeout = Duration::from_millis(400));
    let started = Instant::now();
    let result = fetcher.fetch(&format!("{base}/slow.png"), &tenant, 1000, None).await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(FetchError::TooSlow));
    assert!(elapsed >= Duration::from_millis(390) && elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert_eq!((FetchError::TooSlow.status(), FetchError::TooSlow.slug()), (504, "origin-timeout"));
}

#[tokio::test]
async fn origin_statuses_become_404_or_502() {
    let origin = TestOrigin::start(|head| match head.target.as_str() {
        "/gone" => Reply::with("410 Gone", &[], b""),
        "/missing" => Reply::with("404 Not Found", &[], b"no"),
        _ => Reply::with("500 Internal Server Error", &[], b"oops"),
    })
    .await;
    let (fetcher, tenant, base) = for_origin(&origin, |_| {});
    for (path, status, code, slug) in [
        ("/missing", 404, 404, "source-not-found"),
        ("/gone", 410, 404, "source-not-found"),
        ("/broken", 500, 502, "origin-error"),
    ] {
        let error = fetcher.fetch(&format!("{base}{path}"), &tenant, 1000, None).await.unwrap_err();
        assert_eq!(error, FetchError::OriginStatus(status));
        assert_eq!((error.status(), error.slug()), (code, slug));
    }
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    // /r<n> redirects to /r<n-1>; /r0 is the image.
    let origin = TestOrigin::start(|head| match head.target.strip_prefix("/r").and_then(|n| n.parse::<u32>().ok()) {
        Some(0) => Reply::ok(b"found"),
        Some(n) => Reply::redirect("307 Temporary Redirect", &format!("r{}", n - 1)),
        None => Reply::with("404 Not Found", &[], b""),
    })
    .await;
    let (fetcher, tenant, base) = for_origin(&origin, |p| p.max_redirects = 3);
    let fetched = fetcher.fetch(&format!("{base}/r3"), &tenant, 1000, None).await.unwrap();
    assert!(matches!(fetched, Fetched::Body { ref bytes, .. } if bytes.as_ref() == b"found"));
    assert_eq!(origin.requests(), 4);
    let result = fetcher.fetch(&format!("{base}/r4"), &tenant, 1000, None).await;
    assert_eq!(result, Err(FetchError::TooManyRedirects));
    assert_eq!(origin.requests(), 8, "the fourth redirect is not followed");
}

#[tokio::test]
async fn requests_carry_their_headers_and_answers_give_theirs() {
    let origin = TestOrigin::start(|head| {
        if head.header("if-none-match") == Some("\"v1\"") {
            Reply::with("304 Not Modified", &["Cache-Control: max-age=30"], b"")
        } else {
            let headers =
                ["ETag: \"v1\"", "Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT", "Cache-Control: public, max-age=120"];
            Reply::with("200 OK", &[&headers[..], &["Content-Type: image/jpeg"]].concat(), b"jpeg")
        }
    })
    .await;
    let (fetcher, tenant, base) = for_origin(&origin, |_| {});
    let fetched = fetcher.fetch(&format!("{base}/a.jpg?w=1#frag"), &tenant, 1000, None).await.unwrap();
    let expected = Fetched::Body {
        bytes: bytes::Bytes::from_static(b"jpeg"),
        etag: Some("\"v1\"".into()),
        last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
        max_age: Some(Duration::from_secs(120)),
        no_store: false,
        content_type: Some("image/jpeg".into()),
    };
    assert_eq!(fetched, expected);
    let head = &origin.heads()[0];
    assert_eq!(head.target, "/a.jpg?w=1");
    assert_eq!(head.header("host"), Some(format!("127.0.0.1:{}", origin.port()).as_str()));
    assert_eq!(head.header("accept"), Some("image/*"));
    assert_eq!(head.header("user-agent"), Some(format!("resizer/{}", env!("CARGO_PKG_VERSION")).as_str()));
    assert_eq!(head.header("if-none-match"), None);

    let validators =
        Validators { etag: Some("\"v1\"".into()), last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()) };
    let fetched = fetcher.fetch(&format!("{base}/a.jpg"), &tenant, 1000, Some(&validators)).await.unwrap();
    assert_eq!(fetched, Fetched::NotModified { max_age: Some(Duration::from_secs(30)) });
    assert_eq!(origin.heads()[1].header("if-modified-since"), Some("Tue, 01 Dec 2026 10:00:00 GMT"));
}

#[tokio::test]
async fn weak_etags_count_as_none() {
    let origin =
        TestOrigin::start(|_| Reply::with("200 OK", &["ETag: W/\"v1\"", "Cache-Control: no-store"], b"x")).await;
    let (fetcher, tenant, base) = for_origin(&origin, |_| {});
    let Fetched::Body { etag, no_store, max_age, .. } =
        fetcher.fetch(&format!("{base}/a"), &tenant, 10, None).await.unwrap()
    else {
        panic!("a body expected")
    };
    assert_eq!((etag, no_store, max_age), (None, true, None));
}

#[tokio::test]
async fn a_refused_connection_is_unreachable() {
    let origin = TestOrigin::start(|_| Reply::ok(b"x")).await;
    let (fetcher, tenant, base) = for_origin(&origin, |_| {});
    drop(origin);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = fetcher.fetch(&format!("{base}/a"), &tenant, 10, None).await.unwrap_err();
    assert!(matches!(error, FetchError::Unreachable(_)), "{error:?}");
    assert_eq!((error.status(), error.slug()), (502, "origin-unreachable"));
}
