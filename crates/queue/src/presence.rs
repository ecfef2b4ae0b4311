//! How many api nodes take requests: each announces itself on [`API_PRESENCE_SUBJECT`] every
//! [`ANNOUNCE_EVERY`] while it is ready (in the load balancer's rotation) and counts the others
//! it heard from lately ([`ApiPeers`]). A tenant's rate limit is for the whole cluster, but each
//! node keeps its token buckets in memory (a limit checked over the network would cost every
//! request a round trip); a node therefore grants each tenant its limit divided by the nodes up.
//! The shares add up to the limit when the load balancer spreads a tenant's requests evenly;
//! where it does not (one node busier, `balance leastconn`), the tenant gets less than its limit
//! from the node it is sent to more often.
//!
//! The same count shares other cluster-wide bounds: `queue.max_large_jobs`.
//!
//! A node that hears nobody (NATS unreachable) counts only itself and grants the whole limit:
//! it fails open, as a single node would, rather than refusing the tenant's traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Core NATS, no stream: a presence is only worth anything while it is fresh.
pub const API_PRESENCE_SUBJECT: &str = "presence.api";
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long is no longer counted: three announcements missed. It is
/// dropped at the first count after that, so a killed node's share reaches the others 2–4 s
/// after the kill; a node that stops taking requests on purpose says so and is dropped at once.
pub const FORGET_AFTER: Duration = Duration::from_secs(3);
/// The header of the announcement a node sends when it leaves the rotation (shutting down, not
/// ready any more).
const LEAVING_HEADER: &str = "Resizer-Leaving";

/// The number of api nodes up, as this node last counted them (itself included).
#[derive(Debug)]
pub struct ApiPeers {
    count: AtomicUsize,
    rotation_changed: Notify,
}

impl Default for ApiPeers {
    fn default() -> Self {
        ApiPeers { count: AtomicUsize::new(1), rotation_changed: Notify::new() }
    }
}

impl ApiPeers {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed).max(1)
    }

    /// This node's share of a cluster-wide count: see [`node_share`].
    pub fn share_of(&self, total: usize) -> usize {
        node_share(total, self.count())
    }

    /// This node just left the rotation (shutdown began): tell the others now, not at the next
    /// announcement, which a process done draining may not live to send.
    pub fn rotation_changed(&self) {
        self.rotation_changed.notify_one();
    }

    fn set(&self, count: usize) {
        if self.count.swap(count, Ordering::Relaxed) != count {
            tracing::info!(api_nodes = count, "api nodes sharing the tenants' rate limits and the cluster's bounds");
        }
    }
}

/// A node's share of a count that `nodes` api nodes divide among them: rounded up, and at least
/// one, so that a small total never refuses everything (the shares may add up to a little more
/// than the total, by at most `nodes − 1`).
pub fn node_share(total: usize, nodes: usize) -> usize {
    total.div_ceil(nodes.max(1)).max(1)
}

/// The nodes heard from, and when.
#[derive(Debug, Default)]
struct Roster {
    seen: HashMap<String, Instant>,
}

/// Names kept at most: far more api nodes than a cluster has, and a bound on what a flood of
/// made-up names on the subject can cost.
const MAX_NODES: usize = 1024;
/// A name is this node's id and a random suffix; anything longer is not one this version wrote.
const MAX_NAME_BYTES: usize = 256;

impl Roster {
    fn heard(&mut self, name: &str, now: Instant) {
        let room = self.seen.len() < MAX_NODES || self.seen.contains_key(name);
        if !name.is_empty() && name.len() <= MAX_NAME_BYTES && room {
            self.seen.insert(name.to_owned(), now);
        }
    }

    fn left(&mut self, name: &str) {
        self.seen.remove(name);
    }

    /// The nodes heard from within [`FORGET_AFTER`] of `now`, this one (which always counts,
    /// announced or not) included.
    fn count(&mut self, me: &str, now: Instant) -> usize {
        self.seen.retain(|name, at| name != me && now.duration_since(*at) < FORGET_AFTER);
        self.seen.len() + 1
    }
}

/// Announces this node while `in_rotation()` says it takes requests, and counts the others,
/// until the NATS client is closed (then this node counts itself alone). `node` names this node;
/// a random suffix keeps two nodes configured with the same id apart.
pub async fn announce_and_count(
    client: async_nats::Client,
    node: &str,
    peers: Arc<ApiPeers>,
    in_rotation: impl Fn() -> bool,
) {
    // Without the OS's randomness the process id still tells two processes on a host apart.
    let suffix = crate::staging::random_hex(8).unwrap_or_else(|| std::process::id().to_string());
    let me = format!("{node}/{suffix}");
    // async-nats refuses a subscription only once the client is closed, for good.
    let mut subscription = match client.subscribe(API_PRESENCE_SUBJECT).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hear the other api nodes; rate limits count this node alone");
            peers.set(1);
            return;
        }
    };
    let mut roster = Roster::default();
    let mut announced = false;
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let heard = tokio::select! {
            _ = tick.tick() => None,
            _ = peers.rotation_changed.notified() => None,
            message = subscription.next() => Some(message),
        };
        match heard {
            None => {
                let taking_requests = in_rotation();
                if taking_requests || announced {
                    let mut headers = async_nats::HeaderMap::new();
                    if !taking_requests {
                        headers.insert(LEAVING_HEADER, "1");
                    }
                    // While NATS is away the client buffers the announcement, and once its
                    // buffer is full a publish waits: bounded, so that counting goes on (down to
                    // this node alone) whatever the connection does.
                    let announce = client.publish_with_headers(API_PRESENCE_SUBJECT, headers, me.clone().into());
                    let _ = tokio::time::timeout(ANNOUNCE_EVERY / 4, announce).await;
                    if !taking_requests {
                        let _ = tokio::time::timeout(ANNOUNCE_EVERY / 4, client.flush()).await;
                    }
                    announced = taking_requests;
                }
                peers.set(roster.count(&me, Instant::now()));
            }
            Some(None) => break,
            Some(Some(message)) => {
                let Ok(name) = std::str::from_utf8(&message.payload) else { continue };
                if message.headers.as_ref().is_some_and(|h| h.get(LEAVING_HEADER).is_some()) {
                    // Its share is free now: counted at once, not at the next tick.
                    roster.left(name);
                    peers.set(roster.count(&me, Instant::now()));
                } else {
                    roster.heard(name, Instant::now());
                }
            }
        }
    }
    tracing::warn!("the NATS client closed; rate limits count this node alone");
    peers.set(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_up_and_never_refuse_everything() {
        assert_eq!((node_share(256, 3), node_share(256, 1), node_share(256, 0)), (86, 256, 256));
        assert_eq!((node_share(1, 2), node_share(0, 1)), (1, 1));
    }

    #[test]
    fn nodes_count_until_forgotten_or_gone() {
        let t0 = Instant::now();
        let mut roster = Roster::default();
        assert_eq!(roster.count("me", t0), 1, "alone");
        roster.heard("me", t0);
        roster.heard("a", t0);
        roster.heard("b", t0 + Duration::from_secs(2));
        assert_eq!(roster.count("me", t0 + Duration::from_secs(1)), 3, "my own announcement counts once");
        assert_eq!(roster.count("me", t0 + FORGET_AFTER), 2, "a was last heard 3 s ago");
        roster.left("b");
        assert_eq!(roster.count("me", t0 + FORGET_AFTER), 1, "b said it left");
        roster.heard("a", t0 + FORGET_AFTER);
        assert_eq!(roster.count("me", t0 + FORGET_AFTER), 2, "a is back");
    }

    #[test]
    fn names_are_bounded_in_size_and_number() {
        let t0 = Instant::now();
        let mut roster = Roster::default();
        roster.heard("", t0);
        roster.heard(&"x".repeat(MAX_NAME_BYTES + 1), t0);
        assert_eq!(roster.count("me", t0), 1);
        for n in 0..MAX_NODES + 10 {
            roster.heard(&format!("node-{n}"), t0);
        }
        assert_eq!(roster.count("me", t0), MAX_NODES + 1);
        roster.heard("node-0", t0 + Duration::from_secs(2));
        assert_eq!(roster.count("me", t0 + FORGET_AFTER), 2, "only the one heard again is left");
    }
}
