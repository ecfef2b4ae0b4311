//! How long one authentication decision takes: 10,000 keys in the cache, 1,000,000 decisions per
//! case, on one thread and then on every core at once. Prints ns per decision; asserts nothing
//! about time (the target, < 10 µs, is checked by reading the figure, not by a flaky test).
//!
//!     cargo run --release -p identity --example auth_bench

use std::hint::black_box;
use std::time::Instant;

use identity::{feed, CredentialCache, IdentityStore, TenantLimits};

const KEYS: usize = 10_000;
const CALLS: usize = 1_000_000;

fn main() {
    let store = IdentityStore::open_in_memory().expect("in-memory store");
    let tenant = store.create_tenant("bench", TenantLimits::default()).expect("tenant").id;
    let tokens: Vec<String> = (0..KEYS).map(|i| store.create_key(tenant, &format!("k{i}")).expect("key").1).collect();
    let cache = CredentialCache::new();
    feed(&store, &cache).expect("feed");
    assert_eq!(cache.len(), KEYS);

    // Same shape as a real key and a valid checksum, but an id the cache does not hold.
    let elsewhere = IdentityStore::open_in_memory().expect("second store");
    let other = elsewhere.create_tenant("other", TenantLimits::default()).expect("tenant").id;
    let unknown: Vec<String> = (0..100).map(|_| elsewhere.create_key(other, "x").expect("key").1).collect();
    // One character of the secret changed: refused by the checksum, the dearest malformed case.
    let mistyped: Vec<String> = tokens[..100]
        .iter()
        .map(|t| {
            let swap = if t.as_bytes()[30] == b'x' { "y" } else { "x" };
            let mut typo = t.clone();
            typo.replace_range(30..31, swap);
            typo
        })
        .collect();

    println!("{KEYS} keys cached, {CALLS} decisions per case");
    let cases = [
        ("valid key, all 10k", &tokens[..]),
        ("valid key, 100 hot", &tokens[..100]),
        ("unknown key", &unknown[..]),
        ("malformed key", &mistyped[..]),
    ];
    for (case, presented) in cases {
        let ns = run(&cache, presented, CALLS);
        println!("  {case:<20} {ns:>7.0} ns/decision (1 thread)");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| run(&cache, &tokens, CALLS));
        }
    });
    let per_decision = start.elapsed().as_nanos() as f64 / (threads * CALLS) as f64;
    println!("  valid key, all 10k   {per_decision:>7.0} ns/decision of wall time ({threads} threads together)");
}

/// Mean time of one `authenticate`, cycling through `presented`.
fn run(cache: &CredentialCache, presented: &[String], calls: usize) -> f64 {
    let start = Instant::now();
    for i in 0..calls {
        let _ = black_box(cache.authenticate(black_box(&presented[i % presented.len()])));
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}
