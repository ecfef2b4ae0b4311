//! Sources in S3-compatible buckets the deployment registered (`s3://<name>/<key>`): the
//! bucket behind a name, its endpoint and its credentials are the operator's, so a tenant's URL
//! names only the registered name and a key, and no credential ever travels in a URL.
//!
//! The endpoint is the operator's choice, not a tenant's: the address guard of `address.rs`
//! does not apply to it (a deployment's own MinIO on a private network is the usual case).

use std::collections::HashMap;
use std::sync::Arc;

use url::Url;

use crate::error::{FetchError, OriginError};
use crate::policy::{BucketSpec, OriginPolicy};

/// What a bucket answered: the fetcher makes it an origin's answer.
// Without the `s3` feature no bucket can be registered, so none ever answers.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) enum Read {
    Object { bytes: bytes::Bytes, etag: Option<String>, last_modified: String },
    NotModified,
}

/// The registered buckets, opened.
#[derive(Clone, Default)]
pub(crate) struct Buckets {
    #[cfg(feature = "s3")]
    stores: HashMap<String, Arc<dyn object_store::ObjectStore>>,
    #[cfg(not(feature = "s3"))]
    stores: HashMap<String, Arc<()>>,
}

impl Buckets {
    pub(crate) fn open(policy: &OriginPolicy) -> Result<Buckets, OriginError> {
        let mut stores = HashMap::new();
        for spec in &policy.buckets {
            if !valid_name(&spec.name) {
                return Err(OriginError::Bucket {
                    name: spec.name.clone(),
                    reason: "a name is lowercase letters, digits and `-`".into(),
                });
            }
            if stores.insert(spec.name.clone(), open_store(spec, policy)?).is_some() {
                return Err(OriginError::Bucket { name: spec.name.clone(), reason: "registered twice".into() });
            }
        }
        Ok(Buckets { stores })
    }

    /// GET the object `url` (`s3://<name>/<key>`, its form already checked) names, at most
    /// `max_bytes`; with the ETag `if_none_match`, [`Read::NotModified`] when it is unchanged.
    pub(crate) async fn get(&self, url: &Url, max_bytes: u64, if_none_match: Option<&str>) -> Result<Read, FetchError> {
        let name = url.host_str().unwrap_or_default();
        let store = self
            .stores
            .get(name)
            .ok_or_else(|| FetchError::NotAllowed(format!("s3://{name} is no bucket this deployment registered")))?;
        let key = object_key(url)?;
        get_object(store, &key, max_bytes, if_none_match).await
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The object key of `s3://<name>/<key>`: percent-decoded, refused when empty or when a segment
/// is `.` or `..` or the encoding hides a `/` (the tenant's prefix was checked on the URL's
/// path, so the key must not name anything else).
pub(crate) fn object_key(url: &Url) -> Result<String, FetchError> {
    let path = url.path();
    let lowered = path.to_ascii_lowercase();
    if lowered.contains("%2f") || lowered.contains("%5c") || url.query().is_some() {
        return Err(FetchError::BadUrl("an encoded `/` or `\\`, or a query, in an s3:// source".into()));
    }
    let key = percent_encoding::percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8()
        .map_err(|_| FetchError::BadUrl("an s3:// key is UTF-8".into()))?
        .into_owned();
    if key.is_empty() || key.ends_with('/') {
        return Err(FetchError::BadUrl("an s3:// source names an object: s3://<bucket>/<key>".into()));
    }
    if key.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(FetchError::BadUrl("an empty, `.` or `..` segment in an s3:// key".into()));
    }
    Ok(key)
}

#[cfg(feature = "s3")]
fn open_store(spec: &BucketSpec, policy: &OriginPolicy) -> Result<Arc<dyn object_store::ObjectStore>, OriginError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::path::Path;
    use object_store::prefix::PrefixStore;
    use object_store::{ClientOptions, RetryConfig};

    let invalid = |reason: String| OriginError::Bucket { name: spec.name.clone(), reason };
    let url = Url::parse(&spec.url).map_err(|e| invalid(format!("{}: {e}", spec.url)))?;
    let bucket = url
        .host_str()
        .filter(|b| url.scheme() == "s3" && !b.is_empty())
        .ok_or_else(|| invalid(format!("{} is not s3://bucket[/prefix]", spec.url)))?;
    let client = ClientOptions::new()
        .with_connect_timeout(policy.connect_timeout)
        .with_timeout(policy.total_timeout)
        .with_user_agent(policy.user_agent.parse().map_err(|_| invalid("the user agent is no header value".into()))?);
    let retry = RetryConfig { max_retries: 1, retry_timeout: policy.total_timeout, ..RetryConfig::default() };
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_client_options(client).with_retry(retry);
    for (key, value) in &spec.options {
        let config: AmazonS3ConfigKey = key
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| invalid(format!("{key} is no S3 option (endpoint, region, access_key_id, ...)")))?;
        builder = builder.with_config(config, value);
    }
    let store = builder.build().map_err(|e| invalid(e.to_string()))?;
    let prefix = Path::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
    Ok(if prefix.is_root() { Arc::new(store) } else { Arc::new(PrefixStore::new(store, prefix)) })
}

#[cfg(not(feature = "s3"))]
fn open_store(spec: &BucketSpec, _policy: &OriginPolicy) -> Result<Arc<()>, OriginError> {
    Err(OriginError::Bucket { name: spec.name.clone(), reason: "this build has no S3 support (feature `s3`)".into() })
}

#[cfg(feature = "s3")]
async fn get_object(
    store: &Arc<dyn object_store::ObjectStore>,
    key: &str,
    max_bytes: u64,
    if_none_match: Option<&str>,
) -> Result<Read, FetchError> {
    use futures_util::StreamExt;
    use object_store::{path::Path, Error, GetOptions};

    let path = Path::parse(key).map_err(|e| FetchError::BadUrl(format!("an s3:// key: {e}")))?;
    let options = GetOptions { if_none_match: if_none_match.map(str::to_owned), ..GetOptions::default() };
    let result = match store.get_opts(&path, options).await {
        Ok(result) => result,
        Err(Error::NotModified { .. }) => return Ok(Read::NotModified),
        Err(Error::NotFound { .. }) => return Err(FetchError::OriginStatus(404)),
        // What the store said may name the endpoint and bucket: the operator's, not the tenant's.
        Err(error) => {
            tracing::warn!(%error, "an S3 source could not be read");
            return Err(FetchError::Unreachable("the bucket did not answer the GET".into()));
        }
    };
    if result.meta.size > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    let etag = result.meta.e_tag.clone().map(|e| if e.starts_with('"') { e } else { format!("\"{e}\"") });
    let last_modified = result.meta.last_modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    // The object's size was read from its metadata; the body is counted as it comes all the same.
    let mut body = Vec::with_capacity(usize::try_from(result.meta.size).unwrap_or(0));
    let mut stream = result.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| FetchError::Unreachable("the bucket's answer broke off".into()))?;
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Read::Object { bytes: body.into(), etag: etag.filter(|e| !e.starts_with("W/")), last_modified })
}

#[cfg(not(feature = "s3"))]
async fn get_object(
    _store: &Arc<()>,
    _key: &str,
    _max_bytes: u64,
    _if_none_match: Option<&str>,
) -> Result<Read, FetchError> {
    Err(FetchError::NotAllowed("this build has no S3 support".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Result<String, FetchError> {
        object_key(&Url::parse(text).expect("URL"))
    }

    #[test]
    fn keys_are_decoded_and_nothing_escapes_the_path() {
        assert_eq!(key("s3://photos/a/b%20c.jpg"), Ok("a/b c.jpg".into()));
        assert_eq!(key("s3://photos/caf%C3%A9.jpg"), Ok("café.jpg".into()));
        // The URL parser resolves dot segments, encoded or not, before any prefix is checked.
        assert_eq!(key("s3://photos/a/%2E%2E/b.jpg"), Ok("b.jpg".into()));
        for bad in [
            "s3://photos/",
            "s3://photos/a/",
            "s3://photos/a%2F..%2Fb.jpg",
            "s3://photos/a%2fb.jpg",
            "s3://photos/a//b.jpg",
            "s3://photos/a.jpg?versionId=1",
            "s3://photos/%FF.jpg",
        ] {
            assert!(matches!(key(bad), Err(FetchError::BadUrl(_))), "{bad}: {:?}", key(bad));
        }
    }

    #[test]
    fn a_bucket_is_allowed_by_an_s3_prefix_only() {
        use crate::SourceRules;
        let rules = |allowed: &[&str]| SourceRules {
            allowed: allowed.iter().map(|a| a.to_string()).collect(),
            allow_http: true,
        };
        let check =
            |rules: &SourceRules, url: &str| crate::policy::parse_source(url).and_then(|url| rules.check(&url)).is_ok();
        let customer_a = rules(&["s3://photos/customer-a/"]);
        assert!(check(&customer_a, "s3://photos/customer-a/cat.jpg"));
        assert!(!check(&customer_a, "s3://photos/customer-b/cat.jpg"));
        assert!(!check(&customer_a, "s3://photos/customer-a/../customer-b/cat.jpg"));
        assert!(!check(&customer_a, "s3://other/customer-a/cat.jpg"));
        assert!(check(&rules(&["s3://photos/"]), "s3://photos/any/cat.jpg"));
        // A host entry names web origins, never a bucket of the same name.
        assert!(!check(&rules(&["photos", "*.photos"]), "s3://photos/cat.jpg"));
        assert!(crate::policy::parse_source("s3://photos:9000/cat.jpg").is_err());
        assert!(crate::policy::parse_source("s3://key:secret@photos/cat.jpg").is_err());
    }

    #[test]
    fn names_are_checked_and_registered_once() {
        let spec = |name: &str| BucketSpec { name: name.into(), url: "s3://b".into(), options: vec![] };
        let policy = |specs: Vec<BucketSpec>| OriginPolicy { buckets: specs, ..OriginPolicy::default() };
        assert!(Buckets::open(&policy(vec![spec("Photos")])).is_err());
        assert!(Buckets::open(&policy(vec![spec("")])).is_err());
        #[cfg(feature = "s3")]
        {
            let options = vec![("region".to_owned(), "eu-west-1".to_owned())];
            let one = BucketSpec { options, ..spec("photos") };
            assert!(Buckets::open(&policy(vec![one.clone()])).is_ok());
            assert!(Buckets::open(&policy(vec![one.clone(), one])).is_err());
            let wrong = BucketSpec { url: "https://b".into(), ..spec("photos") };
            assert!(Buckets::open(&policy(vec![wrong])).is_err());
        }
    }
}
