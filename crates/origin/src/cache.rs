//! The node's cache of sources: shared by every tenant whose rules allow a URL, kept fresh by
//! the origin's max-age (or the policy's `revalidate_after`), revalidated with conditional GETs,
//! one fetch per URL at a time, within a byte budget evicted least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use url::Url;

use crate::error::FetchError;
use crate::fetch::{Fetched, Fetcher, Traced, Validators};
use crate::policy::{parse_source, SourceRules};

/// How a [`Source`] was had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// From the cache, no transfer by this call (also when it waited for another call's fetch).
    Hit,
    /// The origin answered 304 to a conditional GET.
    Revalidated,
    /// The origin sent the body.
    Fetched,
}

/// A source image with what the api needs to answer conditionally and to meter the transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub bytes: Bytes,
    /// The origin's strong ETag, else `sha256:` and the hex digest of the bytes.
    pub validator: String,
    pub last_modified: Option<String>,
    /// Body bytes transferred from the origin by this call: 0 on Hit and Revalidated.
    pub fetched_bytes: u64,
    pub outcome: CacheOutcome,
}

/// Counters since the cache was made, and what it holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub revalidations: u64,
    pub fetches: u64,
    pub bytes_fetched: u64,
    pub entries: u64,
    pub bytes_held: u64,
    /// Gets refused by the rules, the address guard or a byte cap.
    pub refusals: u64,
}

/// The sources of every tenant of this node; share it behind an `Arc`.
pub struct SourceCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SourceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCache").field("budget", &self.inner.budget).field("stats", &self.stats()).finish()
    }
}

struct Inner {
    fetcher: Fetcher,
    budget: u64,
    state: Mutex<State>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    revalidations: AtomicU64,
    fetches: AtomicU64,
    bytes_fetched: AtomicU64,
    entries: AtomicU64,
    bytes_held: AtomicU64,
    refusals: AtomicU64,
}

/// A flight's result as every waiting get sees it.
type Outcome = Result<Arc<Done>, FetchError>;

struct Done {
    bytes: Bytes,
    validator: String,
    last_modified: Option<String>,
    hops: Vec<Url>,
    outcome: CacheOutcome,
    fetched_bytes: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Use order → key: the first is the least recently used.
    order: BTreeMap<u64, String>,
    tick: u64,
    held: u64,
    /// URL → the fetch in flight for it (its id, and where its result will appear).
    flights: HashMap<String, (u64, watch::Receiver<Option<Outcome>>)>,
    next_flight: u64,
}

#[derive(Clone)]
struct Entry {
    bytes: Bytes,
    validator: String,
    origin: Validators,
    /// The redirects that led to the bytes: each tenant's rules must allow them too.
    hops: Vec<Url>,
    fresh_until: Instant,
    used: u64,
}

impl SourceCache {
    /// A cache holding at most `budget_bytes` of sources, fetching with `fetcher`.
    pub fn new(fetcher: Fetcher, budget_bytes: u64) -> SourceCache {
        let inner = Inner { fetcher, budget: budget_bytes, state: Mutex::default(), counters: Counters::default() };
        SourceCache { inner: Arc::new(inner) }
    }

    /// The source at `url` for a tenant with `rules`, at most `max_bytes` long.
    pub async fn get(&self, url: &str, rules: &SourceRules, max_bytes: u64) -> Result<Source, FetchError> {
        let result = self.get_inner(url, rules, max_bytes).await;
        if result.as_ref().is_err_and(FetchError::is_refusal) {
            self.inner.counters.refusals.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn get_inner(&self, url: &str, rules: &SourceRules, max_bytes: u64) -> Result<Source, FetchError> {
        // The rules first, always: an entry another tenant had fetched is no licence.
        let url = parse_source(url)?;
        rules.check(&url)?;
        let key = url.as_str().to_owned();
        loop {
            let (mut receiver, leader) = {
                let mut state = self.inner.lock();
                if let Some(entry) = state.entries.get(&key).filter(|e| e.fresh_until > Instant::now()) {
                    let source = Source {
                        bytes: entry.bytes.clone(),
                        validator: entry.validator.clone(),
                        last_modified: entry.origin.last_modified.clone(),
                        fetched_bytes: 0,
                        outcome: CacheOutcome::Hit,
                    };
                    check_hops(&entry.hops, rules)?;
                    check_size(&source.bytes, max_bytes)?;
                    state.touch(&key);
                    self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(source);
                }
                match state.flights.get(&key) {
                    Some((_, receiver)) => (receiver.clone(), false),
                    None => (self.start_flight(&mut state, &key, &url, rules, max_bytes), true),
                }
            };
            // A flight that ended without a result (its task died) is gone from the map: go again.
            let Ok(outcome) = receiver.wait_for(Option::is_some).await.map(|v| v.clone()) else { continue };
            let Some(outcome) = outcome else { continue };
            let done = match outcome {
                Ok(done) => done,
                // Refused under the leader's rules or cap, which may not be this caller's: its own fetch.
                Err(FetchError::NotAllowed(_)) if !leader => continue,
                Err(FetchError::TooLarge { limit }) if !leader && limit < max_bytes => continue,
                Err(error) => return Err(error),
            };
            check_hops(&done.hops, rules)?;
            check_size(&done.bytes, max_bytes)?;
            let (outcome, fetched_bytes) = if leader {
                (done.outcome, done.fetched_bytes)
            } else {
                self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                (CacheOutcome::Hit, 0)
            };
            return Ok(Source {
                bytes: done.bytes.clone(),
                validator: done.validator.clone(),
                last_modified: done.last_modified.clone(),
                fetched_bytes,
                outcome,
            });
        }
    }

    /// A fetch of `url` in a task of its own (a caller that goes away does not abandon the
    /// others waiting for it), revalidating the stale entry if there is one.
    fn start_flight(
        &self,
        state: &mut State,
        key: &str,
        url: &Url,
        rules: &SourceRules,
        max_bytes: u64,
    ) -> watch::Receiver<Option<Outcome>> {
        let (sender, receiver) = watch::channel(None);
        state.next_flight += 1;
        let id = state.next_flight;
        state.flights.insert(key.to_owned(), (id, receiver.clone()));
        let stale = state.entries.get(key).cloned();
        let flight = Flight { inner: self.inner.clone(), key: key.to_owned(), id, sender: Some(sender) };
        let (url, rules) = (url.clone(), rules.clone());
        tokio::spawn(async move {
            let conditional =
                stale.as_ref().map(|e| e.origin.clone()).filter(|v| v.etag.is_some() || v.last_modified.is_some());
            let result = flight.inner.fetcher.fetch_checked(&url, &rules, max_bytes, conditional.as_ref()).await;
            let (store, outcome) = flight.inner.settle(result, stale);
            flight.finish(store, outcome);
        });
        receiver
    }

    /// The validator of a fresh entry for `url`, if `rules` allow it: what lets the api answer
    /// a client's `If-None-Match` with 304 without a fetch.
    pub fn current_validator(&self, url: &str, rules: &SourceRules) -> Option<String> {
        let url = parse_source(url).ok()?;
        rules.check(&url).ok()?;
        let state = self.inner.lock();
        let entry = state.entries.get(url.as_str()).filter(|e| e.fresh_until > Instant::now())?;
        check_hops(&entry.hops, rules).ok()?;
        Some(entry.validator.clone())
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&c.hits),
            revalidations: read(&c.revalidations),
            fetches: read(&c.fetches),
            bytes_fetched: read(&c.bytes_fetched),
            entries: read(&c.entries),
            bytes_held: read(&c.bytes_held),
            refusals: read(&c.refusals),
        }
    }
}

/// What a flight does to the cache when it lands.
enum Store {
    Keep(Entry),
    /// The entry is outdated and the new answer is not to be kept.
    Forget,
    Leave,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that hold the lock: a panic elsewhere
        // leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The flight's answer → what to store and what its waiters get.
    fn settle(&self, result: Result<Traced, FetchError>, stale: Option<Entry>) -> (Store, Outcome) {
        let revalidate_after = self.fetcher.policy().revalidate_after;
        let Traced { fetched, hops } = match result {
            Ok(traced) => traced,
            Err(error) => return (Store::Leave, Err(error)),
        };
        match fetched {
            Fetched::NotModified { max_age } => {
                // Only a conditional GET gets here, and only one with a stale entry is sent.
                let Some(mut entry) = stale else { return (Store::Leave, Err(FetchError::OriginStatus(304))) };
                self.counters.revalidations.fetch_add(1, Ordering::Relaxed);
                entry.fresh_until = Instant::now() + max_age.unwrap_or(revalidate_after);
                entry.hops = hops;
                let done = Done {
                    bytes: entry.bytes.clone(),
                    validator: entry.validator.clone(),
                    last_modified: entry.origin.last_modified.clone(),
                    hops: entry.hops.clone(),
                    outcome: CacheOutcome::Revalidated,
                    fetched_bytes: 0,
                };
                (Store::Keep(entry), Ok(Arc::new(done)))
            }
            Fetched::Body { bytes, etag, last_modified, max_age, no_store, .. } => {
                let length = bytes.len() as u64;
                self.counters.fetches.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes_fetched.fetch_add(length, Ordering::Relaxed);
                let validator = etag.clone().unwrap_or_else(|| content_validator(&bytes));
                let keep = !no_store && length <= self.budget / 4;
                let store = if keep {
                    Store::Keep(Entry {
                        bytes: bytes.clone(),
                        validator: validator.clone(),
                        origin: Validators { etag, last_modified: last_modified.clone() },
                        hops: hops.clone(),
                        fresh_until: Instant::now() + max_age.unwrap_or(revalidate_after),
                        used: 0,
                    })
                } else {
                    Store::Forget
                };
                let done = Done {
                    bytes,
                    validator,
                    last_modified,
                    hops,
                    outcome: CacheOutcome::Fetched,
                    fetched_bytes: length,
                };
                (store, Ok(Arc::new(done)))
            }
        }
    }
}

impl State {
    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.entries.get_mut(key) {
            self.order.remove(&entry.used);
            entry.used = tick;
            self.order.insert(tick, key.to_owned());
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.order.remove(&old.used);
            self.held -= old.bytes.len() as u64;
        }
    }

    /// Keep `entry` under `key`, evicting the least recently used until within `budget`.
    fn insert(&mut self, key: &str, mut entry: Entry, budget: u64) {
        self.remove(key);
        self.tick += 1;
        entry.used = self.tick;
        self.held += entry.bytes.len() as u64;
        self.order.insert(entry.used, key.to_owned());
        self.entries.insert(key.to_owned(), entry);
        while self.held > budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(old) = self.entries.remove(&oldest) {
                self.held -= old.bytes.len() as u64;
            }
        }
    }
}

/// The fetch in flight for one URL; dropped without [`finish`](Flight::finish) (its task
/// panicked or the runtime is going down), it still leaves the map, so waiters try again.
struct Flight {
    inner: Arc<Inner>,
    key: String,
    id: u64,
    sender: Option<watch::Sender<Option<Outcome>>>,
}

impl Flight {
    fn finish(mut self, store: Store, outcome: Outcome) {
        {
            // Stored and out of the map at once: a get from now on finds the entry.
            let mut state = self.inner.lock();
            match store {
                Store::Keep(entry) => state.insert(&self.key, entry, self.inner.budget),
                Store::Forget => state.remove(&self.key),
                Store::Leave => {}
            }
            self.end(&mut state);
        }
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(outcome));
        }
    }

    fn end(&self, state: &mut State) {
        if state.flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            state.flights.remove(&self.key);
        }
        self.inner.counters.entries.store(state.entries.len() as u64, Ordering::Relaxed);
        self.inner.counters.bytes_held.store(state.held, Ordering::Relaxed);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let mut state = inner.lock();
        self.end(&mut state);
    }
}

fn check_hops(hops: &[Url], rules: &SourceRules) -> Result<(), FetchError> {
    hops.iter().try_for_each(|hop| rules.check(hop))
}

fn check_size(bytes: &Bytes, max_bytes: u64) -> Result<(), FetchError> {
    if bytes.len() as u64 > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    Ok(())
}

/// `sha256:` and the hex digest: the validator of a body its origin gave no strong ETag.
fn content_validator(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in Sha256::digest(bytes).iter() {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_validator_is_the_hex_sha256() {
        assert_eq!(
            content_validator(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
