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
//!
//! Each announcement also carries the node's status (its readiness and how its credentials keep
//! up), and a node out of rotation goes on announcing that it is, so that a [`NodeBoard`] — at
//! each api node and at the identity service, which imports the subject — shows operators the
//! health of every node, the ones that left rotation included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
/// The header of the announcements a node sends while it is out of the rotation (shutting down,
/// not ready any more).
const LEAVING_HEADER: &str = "Resizer-Leaving";
/// The header carrying the node's status: JSON the api crate writes, opaque here.
const STATUS_HEADER: &str = "Resizer-Status";
/// A status longer than this is not kept: the one this version writes is a few hundred bytes.
const MAX_STATUS_BYTES: usize = 4096;

/// What a node says of itself in each announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// It takes requests (is in the load balancer's rotation).
    pub in_rotation: bool,
    /// Its status as one line of JSON (`/readyz`'s answer), shown on the node boards.
    pub status: String,
}

/// The number of api nodes up, as this node last counted them (itself included), and what each
/// last said of itself.
#[derive(Debug)]
pub struct ApiPeers {
    count: AtomicUsize,
    rotation_changed: Notify,
    board: NodeBoard,
}

impl Default for ApiPeers {
    fn default() -> Self {
        ApiPeers { count: AtomicUsize::new(1), rotation_changed: Notify::new(), board: NodeBoard::default() }
    }
}

impl ApiPeers {
    /// Every api node heard from lately, this one included, with its status.
    pub fn board(&self) -> &NodeBoard {
        &self.board
    }

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

/// What a node board says of one api node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// Its id and the random suffix of this process (`api-0/1f2e…`).
    pub node: String,
    pub in_rotation: bool,
    /// Since its last announcement: more than [`FORGET_AFTER`] means it fell silent (killed,
    /// cut off from NATS) without saying it left.
    pub since_heard: Duration,
    /// What it said of itself (`/readyz`'s answer); None from a node of an older version, or
    /// one whose status did not parse.
    pub status: Option<serde_json::Value>,
}

/// Every api node heard lately and what it last said of itself: the operator console's node
/// board. Bounded like the roster; a node silent for [`BOARD_KEEPS`] is dropped.
#[derive(Debug, Default)]
pub struct NodeBoard {
    nodes: Mutex<HashMap<String, Heard>>,
}

#[derive(Debug)]
struct Heard {
    at: Instant,
    in_rotation: bool,
    status: String,
}

/// How long a node that fell silent stays on a board, shown as silent: long enough for an
/// operator to see which one went away, short enough that restarted processes (each a new name)
/// do not pile up.
pub const BOARD_KEEPS: Duration = Duration::from_secs(600);

impl NodeBoard {
    fn heard(&self, name: &str, in_rotation: bool, status: &str, now: Instant) {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return;
        }
        let status = if status.len() <= MAX_STATUS_BYTES { status } else { "" };
        let Ok(mut nodes) = self.nodes.lock() else { return };
        nodes.retain(|_, heard| now.duration_since(heard.at) < BOARD_KEEPS);
        if nodes.len() < MAX_NODES || nodes.contains_key(name) {
            nodes.insert(name.to_owned(), Heard { at: now, in_rotation, status: status.to_owned() });
        }
    }

    /// The nodes, by name.
    pub fn nodes(&self) -> Vec<NodeReport> {
        let now = Instant::now();
        let Ok(nodes) = self.nodes.lock() else { return Vec::new() };
        let mut reports: Vec<NodeReport> = nodes
            .iter()
            .filter(|(_, heard)| now.duration_since(heard.at) < BOARD_KEEPS)
            .map(|(name, heard)| NodeReport {
                node: name.clone(),
                in_rotation: heard.in_rotation,
                since_heard: now.duration_since(heard.at),
                status: serde_json::from_str(&heard.status).ok(),
            })
            .collect();
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        reports
    }

    /// Notes one announcement: its payload names the node, its headers say the rest.
    fn note(&self, message: &async_nats::Message, now: Instant) -> Option<(String, bool)> {
        let name = std::str::from_utf8(&message.payload).ok()?;
        let header = |key: &str| message.headers.as_ref().and_then(|h| h.get(key)).map(|v| v.as_str().to_owned());
        let in_rotation = header(LEAVING_HEADER).is_none();
        self.heard(name, in_rotation, &header(STATUS_HEADER).unwrap_or_default(), now);
        Some((name.to_owned(), in_rotation))
    }
}

/// Feeds `board` with the api nodes' announcements until the NATS client is closed: the
/// identity service's board, which imports the subject from the service account.
pub async fn watch_nodes(client: async_nats::Client, board: Arc<NodeBoard>) {
    let mut subscription = match client.subscribe(API_PRESENCE_SUBJECT).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hear the api nodes' announcements; the node board stays empty");
            return;
        }
    };
    while let Some(message) = subscription.next().await {
        board.note(&message, Instant::now());
    }
}

/// Announces this node and what `announcement()` says of it, and counts the others in rotation,
/// until the NATS client is closed (then this node counts itself alone). `node` names this node;
/// a random suffix keeps two nodes configured with the same id apart.
pub async fn announce_and_count(
    client: async_nats::Client,
    node: &str,
    peers: Arc<ApiPeers>,
    announcement: impl Fn() -> Announcement,
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
                let Announcement { in_rotation, status } = announcement();
                let mut headers = async_nats::HeaderMap::new();
                if !in_rotation {
                    // Sent at every tick while out of rotation (the others drop it from their
                    // count each time, which changes nothing after the first): the node boards
                    // show it, and why.
                    headers.insert(LEAVING_HEADER, "1");
                }
                // A header value is one line; serde_json's compact form is.
                if !status.contains(['\r', '\n']) {
                    headers.insert(STATUS_HEADER, status.as_str());
                }
                // While NATS is away the client buffers the announcement, and once its buffer is
                // full a publish waits: bounded, so that counting goes on (down to this node
                // alone) whatever the connection does.
                let announce = client.publish_with_headers(API_PRESENCE_SUBJECT, headers, me.clone().into());
                let _ = tokio::time::timeout(ANNOUNCE_EVERY / 4, announce).await;
                if !in_rotation && announced {
                    // Leaving: its share is free for the others now, not at the next flush.
                    let _ = tokio::time::timeout(ANNOUNCE_EVERY / 4, client.flush()).await;
                }
                announced = in_rotation;
                peers.set(roster.count(&me, Instant::now()));
            }
            Some(None) => break,
            Some(Some(message)) => {
                let now = Instant::now();
                let Some((name, in_rotation)) = peers.board.note(&message, now) else { continue };
                if in_rotation {
                    roster.heard(&name, now);
                } else {
                    // Its share is free now: counted at once, not at the next tick.
                    roster.left(&name);
                    peers.set(roster.count(&me, now));
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
    fn the_board_keeps_each_nodes_last_word_and_forgets_the_long_silent() {
        let t0 = Instant::now();
        let board = NodeBoard::default();
        board.heard("api-0/a", true, r#"{"status":"ready"}"#, t0);
        board.heard("api-1/b", false, r#"{"status":"not ready","reason":"shutting down"}"#, t0);
        board.heard("api-2/c", true, "not json", t0);
        board.heard("api-3/d", true, &"x".repeat(MAX_STATUS_BYTES + 1), t0);
        board.heard(&"x".repeat(MAX_NAME_BYTES + 1), true, "{}", t0);
        let nodes = board.nodes();
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["api-0/a", "api-1/b", "api-2/c", "api-3/d"]);
        assert_eq!(nodes[0].status, Some(serde_json::json!({ "status": "ready" })));
        assert!(!nodes[1].in_rotation && nodes[0].in_rotation);
        assert_eq!((nodes[2].status.clone(), nodes[3].status.clone()), (None, None));
        board.heard("api-1/b", true, "{}", t0 + Duration::from_secs(1));
        assert!(board.nodes()[1].in_rotation, "the last word counts");
        board.heard("api-0/a", true, "{}", t0 + BOARD_KEEPS);
        let names: Vec<String> = board.nodes().into_iter().map(|n| n.node).collect();
        assert_eq!(names, ["api-0/a", "api-1/b"], "silent for BOARD_KEEPS: dropped");
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
