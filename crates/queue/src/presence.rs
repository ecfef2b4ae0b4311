//! How many api nodes are up: each announces itself on [`API_PRESENCE_SUBJECT`] every
//! [`ANNOUNCE_EVERY`] and counts the others it heard from lately ([`ApiPeers`]). A tenant's rate
//! limit is for the whole cluster, but each node keeps its token buckets in memory (a limit
//! checked over the network would cost every request a round trip); a node therefore grants
//! each tenant its limit divided by the nodes up. The load balancer spreads requests over the
//! nodes round-robin, so the shares add up to the limit.
//!
//! A node that hears nobody (NATS unreachable) counts only itself and grants the whole limit:
//! it fails open, as a single node would, rather than refusing the tenant's traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

/// Core NATS, no stream: a presence is only worth anything while it is fresh.
pub const API_PRESENCE_SUBJECT: &str = "presence.api";
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long is no longer counted: three announcements missed. A
/// killed node's share reaches the others this long after its last announcement.
pub const FORGET_AFTER: Duration = Duration::from_secs(3);

/// The most api nodes counted: more names heard within `FORGET_AFTER` are not kept.
const MAX_NODES: usize = 1024;

/// The number of api nodes up, as this node last counted them (itself included).
#[derive(Debug)]
pub struct ApiPeers {
    count: AtomicUsize,
}

impl Default for ApiPeers {
    fn default() -> Self {
        ApiPeers { count: AtomicUsize::new(1) }
    }
}

impl ApiPeers {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed).max(1)
    }
}

/// Announces this node and counts the others, until the process ends. `node` names this node;
/// a random suffix keeps two nodes configured with the same id apart (and makes a restarted
/// node count twice for [`FORGET_AFTER`], which only makes its shares smaller for that long).
pub async fn announce_and_count(client: async_nats::Client, node: &str, peers: Arc<ApiPeers>) {
    let me = format!("{node}/{:016x}", rand_u64());
    let mut logged = false;
    loop {
        let mut subscription = match client.subscribe(API_PRESENCE_SUBJECT).await {
            Ok(subscription) => subscription,
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot hear the other api nodes yet; rate limits count this node alone");
                    logged = true;
                }
                tokio::time::sleep(ANNOUNCE_EVERY).await;
                continue;
            }
        };
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // While NATS is away the client buffers the announcement, and once its buffer is
                    // full a publish waits: bounded, so that counting goes on (down to this node
                    // alone) whatever the connection does.
                    let announce = client.publish(API_PRESENCE_SUBJECT, me.clone().into());
                    let _ = tokio::time::timeout(ANNOUNCE_EVERY / 4, announce).await;
                    let now = Instant::now();
                    seen.insert(me.clone(), now);
                    seen.retain(|_, at| now.duration_since(*at) < FORGET_AFTER);
                    let count = seen.len();
                    if peers.count.swap(count, Ordering::Relaxed) != count {
                        tracing::info!(api_nodes = count, "api nodes sharing the tenants' rate limits");
                    }
                }
                message = subscription.next() => {
                    let Some(message) = message else { break };
                    // Anything else on the subject is not a node id this version wrote: ignored.
                    // The map stays bounded whatever is published.
                    if let Ok(name) = std::str::from_utf8(&message.payload) {
                        let room = seen.len() < MAX_NODES || seen.contains_key(name);
                        if !name.is_empty() && name.len() <= 256 && room {
                            seen.insert(name.to_owned(), Instant::now());
                        }
                    }
                }
            }
        }
        // The subscription ended (the client closed): try again, as after a failed subscribe.
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

fn rand_u64() -> u64 {
    let mut raw = [0u8; 8];
    // Without the OS's randomness the process id still tells two processes on a host apart.
    match getrandom::fill(&mut raw) {
        Ok(()) => u64::from_le_bytes(raw),
        Err(_) => u64::from(std::process::id()),
    }
}

/// A node's share of a tenant's limits: the rate divided among `nodes`, and the burst too (at
/// least one request, or a small burst would refuse everything).
pub fn limit_share(rate_per_sec: f64, burst: u32, nodes: usize) -> (f64, u32) {
    let nodes = nodes.max(1) as u32;
    (rate_per_sec / f64::from(nodes), burst.div_ceil(nodes).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_and_never_refuse_everything() {
        assert_eq!(limit_share(10.0, 20, 1), (10.0, 20));
        assert_eq!(limit_share(10.0, 20, 2), (5.0, 10));
        assert_eq!(limit_share(9.0, 5, 3), (3.0, 2));
        assert_eq!(limit_share(1.0, 1, 4), (0.25, 1));
        assert_eq!(limit_share(1.0, 0, 0), (1.0, 1));
        assert_eq!(ApiPeers::default().count(), 1);
    }
}
