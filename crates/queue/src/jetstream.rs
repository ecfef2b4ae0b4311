//! Talking to JetStream: connecting (with the reconnect policy a queue needs), creating the
//! stream and the consumer if they are missing, and publishing a job with the answers the api
//! maps to statuses.

use std::error::Error as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use dispatch::Lane;

use crate::config::{PullClass, QueueConfig};
use crate::credentials::{split_credentials, Credentials};
use crate::error::QueueError;
use crate::permissions::{Role, SERVER_PING_SUBJECT};
use crate::wire::JobMessage;

/// How often a client pings its server. async-nats drops a connection once more than two pings
/// go unanswered, so a frozen server (paused, cut off, its host hung while its sockets stay open)
/// is left after 2–3 s (3.1 s in the cluster test), well inside the 10 s request deadline; at
/// 5 s the same rule takes 10–15 s, longer than the deadline. A ping is a few bytes a second per connection. (Forcing a reconnect after
/// publishes go unanswered was tried and dropped: during a stream's leader election every server
/// is silent, so reconnecting cannot help, and it remakes the node's subscriptions; a leader-kill
/// test lost an identity watch once while it was in, cause not proven. [`JetStreamSilence`]
/// reconnects only after a silence longer than most elections, at most once per 30 s.)
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Connects to any of `urls` (with the credentials they carry, see `credentials.rs`), retrying
/// in the background if none answers yet (the caller's readiness reflects
/// [`Client::connection_state`]); reconnects quickly after a node is lost, since requests wait
/// on it, and leaves a server that stops answering within [`PING_INTERVAL`] × 3. A `role`'s
/// replies come to its own inbox prefix, the one its NATS user may subscribe to
/// (`permissions.rs`); None keeps NATS's shared `_INBOX` (tools and tests). With `tls_ca`
/// the connection must be TLS, the server's certificate signed by that CA and naming the host
/// of the URL: a server offering plaintext is refused rather than spoken to.
pub async fn connect(
    urls: &[String],
    name: &str,
    role: Option<Role>,
    tls_ca: Option<&Path>,
) -> Result<Client, QueueError> {
    let (urls, credentials) = split_credentials(urls)?;
    let options = match credentials {
        Some(Credentials::UserPassword { user, password }) => ConnectOptions::with_user_and_password(user, password),
        Some(Credentials::Token(token)) => ConnectOptions::with_token(token),
        None => ConnectOptions::new(),
    };
    let options = match role {
        Some(role) => options.custom_inbox_prefix(role.inbox_prefix()),
        None => options,
    };
    let options = match tls_ca {
        Some(ca) => {
            let config = tls::client_config(ca).map_err(|e| QueueError::Config(format!("NATS TLS: {e}")))?;
            options.require_tls(true).tls_client_config(config.as_ref().clone())
        }
        None => options,
    };
    options
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(1))
        .ping_interval(PING_INTERVAL)
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)))
        .reconnect_to_server_callback(|servers, left| async move { another_server(&servers, &left) })
        .connect(&urls[..])
        .await
        .map_err(|e| QueueError::Unavailable(format!("connecting to NATS at {}: {e}", urls.join(","))))
}

/// Where a reconnect goes: a server other than the one just left, among those that have failed
/// no more often than it, or (None) the client's own choice. The one left was slow
/// ([`SlowServer`]) or is gone; either way another is the better first try. It is known by the
/// host and port it reported; where several servers of the pool match (all listening on
/// 0.0.0.0:4222 on their own hosts), none is set aside.
fn another_server(
    servers: &[async_nats::Server],
    left: &async_nats::ServerInfo,
) -> Option<async_nats::ReconnectToServer> {
    let unspecified = left.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    let is_left = |s: &async_nats::Server| s.addr.port() == left.port && (unspecified || s.addr.host() == left.host);
    let [left_one] = servers.iter().filter(|s| is_left(s)).collect::<Vec<_>>()[..] else { return None };
    let others: Vec<&async_nats::Server> = servers.iter().filter(|s| !is_left(s)).collect();
    let fewest = others.iter().map(|s| s.failed_attempts).min()?;
    if left_one.failed_attempts < fewest {
        return None;
    }
    let candidates: Vec<&&async_nats::Server> = others.iter().filter(|s| s.failed_attempts == fewest).collect();
    // Spread the nodes that leave one server over the others (RandomState is seeded per process).
    let pick = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), Instant::now());
    let chosen = candidates[(pick % candidates.len() as u64) as usize];
    Some(async_nats::ReconnectToServer { addr: chosen.addr.clone(), delay: None })
}

/// A round trip to the server longer than this is slow: one takes a millisecond or two here,
/// tens under load.
const SLOW_SERVER_RTT: Duration = Duration::from_millis(50);

/// Round trips in a row ([`SERVER_PING_EVERY`] apart, so a second) slower than
/// [`SLOW_SERVER_RTT`] before a node leaves its server.
const SLOW_SERVER_PINGS: u32 = 4;

/// At most one move in this long: a cluster that is slow everywhere (overloaded) is not hopped
/// around.
const MOVE_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// Watches the round trips to the node's own server and says when to leave it. A server whose
/// links are slow (a congested or lossy network to its host) adds its delay to every message
/// of every client connected to it — a job publish goes through it twice and back — while the
/// other servers answer at once; a reconnect goes elsewhere ([`another_server`]). What is in
/// flight on the old connection is sent again by its owner: a publish after
/// [`PUBLISH_ATTEMPT_TIMEOUT`] (once, by its message id), a pulled job after its ack wait.
#[derive(Debug, Default)]
pub struct SlowServer {
    slow_in_a_row: u32,
    last_move: Option<Instant>,
}

impl SlowServer {
    /// Notes one round trip (None: no answer, which the client's own pings deal with); true when
    /// the node should move now.
    pub fn should_move(&mut self, rtt: Option<Duration>, now: Instant) -> bool {
        match rtt {
            Some(rtt) if rtt > SLOW_SERVER_RTT => self.slow_in_a_row += 1,
            _ => self.slow_in_a_row = 0,
        }
        let may_move = self.last_move.is_none_or(|t| now.duration_since(t) >= MOVE_AT_MOST_EVERY);
        if self.slow_in_a_row >= SLOW_SERVER_PINGS && may_move {
            self.slow_in_a_row = 0;
            self.last_move = Some(now);
            return true;
        }
        false
    }
}

/// How long JetStream may stay out of reach through a server that itself answers quickly before
/// a node leaves that server ([`JetStreamSilence`]). Above the leader elections measured here
/// (a new JOBS leader 4.9–7.7 s after kill -9 of the old one, docs/cluster.md), during which every
/// server is as silent as a cut-off one and moving cannot help; well under a 20 s partition.
const JETSTREAM_SILENCE_LIMIT: Duration = Duration::from_secs(8);

/// JetStream requests in a row left unanswered before that, at the least: one lost request
/// followed by a long quiet spell (a worker whose slots are all busy) is not a silence.
const JETSTREAM_SILENCE_REQUESTS: u32 = 3;

/// Watches the JetStream requests a node sends through its server — an api node's `STREAM.INFO`
/// every 2 s, a worker's pulls — and says when to leave that server. A NATS server cut off from
/// the rest of the cluster (a partition between the servers; its clients still reach it) answers
/// its clients' pings at once, so neither the client's pings nor [`SlowServer`] move them, but
/// no stream or consumer leader is reachable through it: an api node's publishes are not
/// acknowledged, a worker's pulls are not answered, and jobs wait for their deadline (504). A
/// node that sees JetStream silent for [`JETSTREAM_SILENCE_LIMIT`] (and at least
/// [`JETSTREAM_SILENCE_REQUESTS`] requests) while its server answers quickly moves to another
/// ([`another_server`]), at most once every [`MOVE_AT_MOST_EVERY`].
///
/// An election looks the same from one node (every server silent for its length), which is why
/// the limit is above the elections measured here; one that lasts longer moves each node at most
/// once (to another server as leaderless as the first, which costs a reconnect: the node's
/// subscriptions are made again, its publishes in flight sent again under their ids), and the
/// 30 s rule keeps it there.
#[derive(Debug, Default)]
pub struct JetStreamSilence {
    /// When the first of the unanswered requests in a row was noted, and how many there are.
    since: Option<Instant>,
    unanswered: u32,
    last_move: Option<Instant>,
}

impl JetStreamSilence {
    /// Notes one JetStream request: `answered` by a stream or consumer leader (a pull's job or its
    /// timeout notice, a `STREAM.INFO` naming a leader) or not (no answer in time, "no
    /// responders"), and whether the node's own server answered its last round trip quickly
    /// (`server_quick`; a slow or silent server is [`SlowServer`]'s and the client's business, and
    /// starts the count again). True when the node should move now.
    pub fn should_move(&mut self, answered: bool, server_quick: bool, now: Instant) -> bool {
        if answered || !server_quick {
            self.since = None;
            self.unanswered = 0;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        self.unanswered += 1;
        let silent_long = now.duration_since(since) >= JETSTREAM_SILENCE_LIMIT;
        let may_move = self.last_move.is_none_or(|t| now.duration_since(t) >= MOVE_AT_MOST_EVERY);
        if silent_long && self.unanswered >= JETSTREAM_SILENCE_REQUESTS && may_move {
            self.since = None;
            self.unanswered = 0;
            self.last_move = Some(now);
            return true;
        }
        false
    }
}

/// A node's [`JetStreamSilence`] with what it needs to act: its client and the last round trip
/// to its server. Cloned into every task that sends JetStream requests (a worker's slots) and
/// the one that pings the server.
#[derive(Clone)]
pub struct JetStreamWatch {
    client: Client,
    silence: Arc<std::sync::Mutex<JetStreamSilence>>,
    /// The last round trip to the server in microseconds; `u64::MAX`: unanswered or not yet.
    server_rtt_us: Arc<AtomicU64>,
}

impl JetStreamWatch {
    pub fn new(client: Client) -> JetStreamWatch {
        JetStreamWatch { client, silence: Arc::default(), server_rtt_us: Arc::new(AtomicU64::new(u64::MAX)) }
    }

    /// Notes a round trip to the server ([`ping_server`]).
    fn note_server(&self, rtt: Option<Duration>) {
        let us = rtt.map_or(u64::MAX, |rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        self.server_rtt_us.store(us, Ordering::Relaxed);
    }

    /// Whether the server's last round trip came back within [`SLOW_SERVER_RTT`] (not when it
    /// went unanswered): the one record of it, read by the job queue's slow-leader stepdown too.
    fn server_quick(&self) -> bool {
        self.server_rtt_us.load(Ordering::Relaxed) <= SLOW_SERVER_RTT.as_micros() as u64
    }

    /// Notes one JetStream request ([`JetStreamSilence::should_move`]) and moves the node to
    /// another server when JetStream has been silent through this one for long enough.
    pub async fn note_jetstream(&self, answered: bool) {
        let server_quick = self.server_quick();
        let (move_now, unanswered) = {
            let mut silence = self.silence.lock().unwrap_or_else(|e| e.into_inner());
            let unanswered = silence.unanswered + 1;
            (silence.should_move(answered, server_quick, Instant::now()), unanswered)
        };
        if move_now {
            let server = self.client.server_info();
            tracing::warn!(
                server = server.server_name,
                unanswered,
                silent_for_s = JETSTREAM_SILENCE_LIMIT.as_secs(),
                "JetStream is unreachable through this node's NATS server while it answers: moving to another"
            );
            if let Err(e) = self.client.force_reconnect().await {
                tracing::warn!(error = %e, "could not ask the NATS client to reconnect");
            }
        }
    }
}

/// One round trip to the server (a request on [`SERVER_PING_SUBJECT`], answered "no
/// responders" by the server itself); None without an answer in [`SERVER_SILENCE_LIMIT`].
async fn ping_server(client: &Client) -> Option<Duration> {
    let sent = Instant::now();
    let answer = tokio::time::timeout(SERVER_SILENCE_LIMIT, client.request(SERVER_PING_SUBJECT, Bytes::new()));
    let heard = match answer.await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e.kind() == async_nats::RequestErrorKind::NoResponders,
        Err(_) => false,
    };
    heard.then(|| sent.elapsed())
}

/// Moves `client` to another server when [`SlowServer`] says so.
async fn leave_if_slow(client: &Client, slow: &mut SlowServer, rtt: Option<Duration>) {
    if slow.should_move(rtt, Instant::now()) {
        let server = client.server_info();
        tracing::warn!(
            server = server.server_name,
            rtt_ms = rtt.unwrap_or_default().as_millis() as u64,
            "this node's NATS server is slow while it answers: moving to another"
        );
        if let Err(e) = client.force_reconnect().await {
            tracing::warn!(error = %e, "could not ask the NATS client to reconnect");
        }
    }
}

/// For a node without a [`JobQueue`] (a worker): its round trip to the server every
/// [`SERVER_PING_EVERY`], leaving a slow one ([`SlowServer`]), for as long as it runs; each is
/// noted in `jetstream` (whether the server answers quickly while JetStream does not).
pub async fn watch_server_speed(client: Client, jetstream: JetStreamWatch) {
    let mut slow = SlowServer::default();
    loop {
        let sent = Instant::now();
        let rtt = ping_server(&client).await;
        jetstream.note_server(rtt);
        leave_if_slow(&client, &mut slow, rtt).await;
        tokio::time::sleep_until((sent + SERVER_PING_EVERY).into()).await;
    }
}

/// The job stream: work-queue retention (a job leaves when acked), one subject per lane, a
/// bounded size with discard-new, jobs dropped past the request deadline, `replicas` copies.
/// Creates it if missing; an existing stream is kept as it is, unless its subjects are not this
/// version's (a stream made before the `fast`/`large` consumers): that is refused with what to do.
pub async fn ensure_stream(js: &jetstream::Context, config: &QueueConfig) -> Result<stream::Stream, QueueError> {
    let subjects: Vec<String> = Lane::ALL.iter().map(|&lane| config.subject(lane)).collect();
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: subjects.clone(),
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_messages: config.max_jobs,
            max_age: config.max_age,
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            // Retried publishes of one job within this window are stored once.
            duplicate_window: config.max_age,
            ..Default::default()
        })
        .await
        .map_err(|e| QueueError::Unavailable(format!("creating the {} stream: {e}", config.stream)))?;
    let found = &stream.cached_info().config.subjects;
    if !subjects.iter().all(|s| found.contains(s)) {
        return Err(QueueError::Config(format!(
            "the {name} stream takes {found:?}, not this version's {subjects:?}: it was made by an older \
             version. Stop the api nodes and workers, delete it (`nats stream rm {name}`; it holds only jobs \
             younger than the request deadline) and start them again",
            name = config.stream
        )));
    }
    Ok(stream)
}

/// A stream another role creates, looked up (`STREAM.INFO` only): workers wait for the api
/// nodes' job stream, aggregators for their usage stream, since neither may create a stream
/// (`permissions.rs`: a stream made by the wrong role could capture subjects it should not).
pub async fn existing_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream, QueueError> {
    js.get_stream(name).await.map_err(|e| QueueError::Unavailable(format!("the {name} stream: {e}")))
}

/// One of the durable pull consumers every worker shares, one per lane ([`PullClass`]):
/// explicit acks, redelivery after `ack_wait`, at most `max_deliver` deliveries.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: &QueueConfig,
    class: PullClass,
) -> Result<consumer::Consumer<consumer::pull::Config>, QueueError> {
    let name = config.consumer_name(class);
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: config.filter_subject(class),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver(),
                // Every worker's waiting pulls; far above any cluster we run.
                max_waiting: 4096,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| QueueError::Unavailable(format!("creating the {name} consumer: {e}")))
}

/// Deletes the consumer that took small and medium jobs together before each had its own
/// ([`QueueConfig::retired_consumer_name`]); one that is not there is fine. Its undelivered
/// jobs are not lost: a work-queue stream keeps them for the new consumers. A job it had
/// delivered and not yet acknowledged (an older worker still running) is kept too, and goes to
/// the new consumers: at worst it is converted twice, and its api node answers once.
pub async fn retire_fast_consumer(stream: &stream::Stream, config: &QueueConfig) -> Result<(), QueueError> {
    let name = config.retired_consumer_name();
    match stream.delete_consumer(&name).await {
        Ok(_) => {
            tracing::info!(consumer = name, "deleted the consumer older versions pulled small and medium jobs from");
            Ok(())
        }
        Err(e)
            if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(ref js)
            if js.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            Ok(())
        }
        Err(e) => Err(QueueError::Unavailable(format!("deleting the retired {name} consumer: {e}"))),
    }
}

/// The api node's handle on the queue.
#[derive(Clone)]
pub struct JobQueue {
    client: Client,
    js: jetstream::Context,
    config: QueueConfig,
    /// What [`JobQueue::watch_stream_leader`] last saw: [`LEADER_UNKNOWN`], `LEADER_SEEN`,
    /// `LEADER_NONE`.
    leader: Arc<AtomicU8>,
    /// When the server last answered [`JobQueue::watch_server`]'s round trip, in milliseconds
    /// after `born`; 0: never.
    heard_ms: Arc<AtomicU64>,
    born: Instant,
    /// Publish acknowledgements since [`JobQueue::watch_stream_leader`] last looked, and how many
    /// of them took longer than [`SLOW_ACK`].
    acks: Arc<AtomicU64>,
    slow_acks: Arc<AtomicU64>,
    /// Publish attempts since the last look that got no acknowledgement (no answer in time, no
    /// responders, a lost connection).
    unacked: Arc<AtomicU64>,
    /// Whether JetStream answers through the node's server ([`JobQueue::watch_stream_leader`]).
    jetstream: JetStreamWatch,
}

/// A publish acknowledgement slower than this is slow: normally one takes a millisecond or two
/// here, even under load.
const SLOW_ACK: Duration = Duration::from_millis(150);

/// Acknowledgements in one look (2 s) before their times are trusted to say the leader is slow.
const SLOW_LEADER_MIN_ACKS: u64 = 8;

/// At most one stepdown asked by a node in this long: a leader that is slow wherever it goes
/// (the whole cluster overloaded) is not chased around.
const STEPDOWN_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// How often [`JobQueue::watch_server`] goes to the server and back.
const SERVER_PING_EVERY: Duration = Duration::from_millis(250);

/// Silence after which the server counts as unreachable for `/readyz` (a partition, a frozen
/// server): with HAProxy checking every 500 ms and taking a node out after two failures, a node
/// cut off from NATS leaves the rotation within 2 s. Long enough that a loaded but working
/// server (round trips of tens of ms here) never trips it.
pub const SERVER_SILENCE_LIMIT: Duration = Duration::from_millis(900);

const LEADER_UNKNOWN: u8 = 0;
const LEADER_SEEN: u8 = 1;
const LEADER_NONE: u8 = 2;

/// How often the api node asks whether the job stream has a leader (for `/readyz` and metrics).
const LEADER_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Longest wait for one publish acknowledgement before trying again under the same message id:
/// short, so that a publish lost with a leader is re-sent soon after a new one is elected.
const PUBLISH_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);

impl JobQueue {
    pub fn new(client: Client, config: QueueConfig) -> JobQueue {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(PUBLISH_ATTEMPT_TIMEOUT);
        JobQueue {
            jetstream: JetStreamWatch::new(client.clone()),
            client,
            js,
            config,
            leader: Arc::new(AtomicU8::new(LEADER_UNKNOWN)),
            heard_ms: Arc::new(AtomicU64::new(0)),
            born: Instant::now(),
            acks: Arc::new(AtomicU64::new(0)),
            slow_acks: Arc::new(AtomicU64::new(0)),
            unacked: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Goes to the NATS server and back every 250 ms, for as long as the node runs
    /// ([`ping_server`]), and notes when it last came back: the client's own pings take seconds
    /// to give up on a silent server. It leaves a slow server ([`SlowServer`]).
    pub async fn watch_server(self) {
        let mut slow = SlowServer::default();
        loop {
            let sent = Instant::now();
            let rtt = ping_server(&self.client).await;
            if rtt.is_some() {
                let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
                self.heard_ms.store(ms, Ordering::Relaxed);
            }
            self.jetstream.note_server(rtt);
            leave_if_slow(&self.client, &mut slow, rtt).await;
            tokio::time::sleep_until((sent + SERVER_PING_EVERY).into()).await;
        }
    }

    /// Since the server last answered [`JobQueue::watch_server`]; None before its first answer
    /// (or when the watch does not run).
    pub fn server_silence(&self) -> Option<Duration> {
        match self.heard_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.born.elapsed().saturating_sub(Duration::from_millis(ms))),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Whether the job stream had a leader when last asked (every 2 s by
    /// [`JobQueue::watch_stream_leader`]); None before the first answer.
    pub fn stream_leader(&self) -> Option<bool> {
        match self.leader.load(Ordering::Relaxed) {
            LEADER_SEEN => Some(true),
            LEADER_NONE => Some(false),
            _ => None,
        }
    }

    /// Asks the job stream for its leader every 2 s, for as long as the node runs. A stream
    /// without one cannot store jobs: publishes wait (up to the request's deadline) for an
    /// election. It is reported, not made a reason to leave the load balancer's rotation: every
    /// api node sees the same stream, and taking them all out would turn the seconds of an
    /// election into refusals for every request, including those that would have waited it out.
    ///
    /// It also moves the leadership off a leader that is slow: when most of this node's publish
    /// acknowledgements over a look took longer than [`SLOW_ACK`], under the same leader, while
    /// its own server answers at once, it asks the stream's leader to step down (at most every
    /// [`STEPDOWN_AT_MOST_EVERY`]). The leader is in three hops of every job — replication,
    /// acknowledgement, delivery — so a leader whose links are slow slows every request; as a
    /// follower it costs only the clients connected to it. The new leader is a current follower.
    ///
    /// And it moves the node off a server through which the stream has no leader for long
    /// ([`JetStreamSilence`]: a server cut off from the others answers its clients, not for
    /// JetStream), asking again after 1 s instead of 2 while none answers. A look in which
    /// publishes went unacknowledged and none was acknowledged counts as silent too, leader or
    /// not: a stream leader cut off from its followers still answers `STREAM.INFO` (naming
    /// itself) until it sees it has lost its quorum, but stores nothing.
    pub async fn watch_stream_leader(self) {
        let mut last = LEADER_UNKNOWN;
        let mut last_name = None::<String>;
        let mut last_stepdown = None::<Instant>;
        loop {
            // STREAM.INFO is answered by the stream's leader: no answer in time is no leader.
            let (leader, name) = match self.js.get_stream(&self.config.stream).await {
                Ok(stream) => {
                    // A server outside a cluster leads its streams itself and names no leader.
                    let cluster = stream.cached_info().cluster.as_ref();
                    let name = cluster.and_then(|c| c.leader.clone()).filter(|l| !l.is_empty());
                    match cluster.is_none_or(|c| c.leader.as_deref().is_some_and(|l| !l.is_empty())) {
                        true => (LEADER_SEEN, name),
                        false => (LEADER_NONE, None),
                    }
                }
                Err(_) => (LEADER_NONE, None),
            };
            let (acks, slow) = (self.acks.swap(0, Ordering::Relaxed), self.slow_acks.swap(0, Ordering::Relaxed));
            let server_quick = self.jetstream.server_quick();
            let same_leader = name.is_some() && name == last_name;
            let may_step_down = last_stepdown.is_none_or(|t| t.elapsed() >= STEPDOWN_AT_MOST_EVERY);
            if same_leader && acks >= SLOW_LEADER_MIN_ACKS && slow * 2 > acks && server_quick && may_step_down {
                last_stepdown = Some(Instant::now());
                let leader = name.as_deref().unwrap_or_default();
                let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", self.config.stream);
                let answer = self.ask(subject).await;
                tracing::warn!(
                    stream = self.config.stream,
                    leader,
                    slow_acks = slow,
                    acks,
                    answered = answer,
                    "the job stream's leader is slow: asked it to step down"
                );
                self.step_down_consumers_led_by(leader).await;
            }
            last_name = name;
            self.leader.store(leader, Ordering::Relaxed);
            if leader != last && leader == LEADER_NONE {
                tracing::warn!(stream = self.config.stream, "the job stream has no leader: jobs wait for an election");
            } else if leader != last && last == LEADER_NONE {
                tracing::info!(stream = self.config.stream, "the job stream has a leader again");
            }
            last = leader;
            let unacked = self.unacked.swap(0, Ordering::Relaxed);
            let storing = leader == LEADER_SEEN && (acks > 0 || unacked == 0);
            self.jetstream.note_jetstream(storing).await;
            tokio::time::sleep(if storing { LEADER_CHECK_EVERY } else { LEADER_CHECK_EVERY / 2 }).await;
        }
    }

    /// A JetStream API request with an empty body: whether it was answered within 2 s.
    async fn ask(&self, subject: String) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.client.request(subject, Bytes::new())).await,
            Ok(Ok(_))
        )
    }

    /// Asks each workers' consumer led by `leader` to step down too. A consumer is a Raft group
    /// of its own, often led by the stream's leader, and it delivers every job of its lane: a
    /// slow consumer leader adds its delay to every job however quick the stream's leader is.
    async fn step_down_consumers_led_by(&self, leader: &str) {
        let Ok(stream) = self.js.get_stream(&self.config.stream).await else { return };
        for class in PullClass::ALL {
            let consumer = self.config.consumer_name(class);
            let Ok(info) = stream.consumer_info(&consumer).await else { continue };
            if info.cluster.as_ref().and_then(|c| c.leader.as_deref()) != Some(leader) {
                continue;
            }
            let subject = format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{}.{consumer}", self.config.stream);
            let answered = self.ask(subject).await;
            tracing::warn!(
                stream = self.config.stream,
                consumer,
                leader,
                answered,
                "the workers' consumer has the same slow leader: asked it to step down"
            );
        }
    }

    /// Publishes `job` to its lane's subject and waits for JetStream to have stored it (on a
    /// quorum of its replicas). A full stream answers [`QueueError::Full`] at once. Without an
    /// answer (a lost connection, a stream leader being elected) it sends again under the same
    /// message id — JetStream stores a job once however often it arrives — until `give_up`.
    pub async fn publish(&self, lane: Lane, job: &JobMessage, give_up: Instant) -> Result<(), QueueError> {
        let payload = Bytes::from(serde_json::to_vec(job).map_err(|e| QueueError::Unavailable(e.to_string()))?);
        let subject = self.config.subject(lane);
        let mut last_error;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, job.job_id.as_str());
            let attempt = async {
                let ack = self.js.publish_with_headers(subject.clone(), headers, payload.clone()).await?;
                ack.await
            };
            let sent = Instant::now();
            match tokio::time::timeout_at(give_up.into(), attempt).await {
                Ok(Ok(_)) => {
                    self.acks.fetch_add(1, Ordering::Relaxed);
                    if sent.elapsed() > SLOW_ACK {
                        self.slow_acks.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Ok(Err(e)) if is_full(&e) => return Err(QueueError::Full),
                Ok(Err(e)) => {
                    self.unacked.fetch_add(1, Ordering::Relaxed);
                    last_error = e.to_string();
                }
                Err(_) => {
                    self.unacked.fetch_add(1, Ordering::Relaxed);
                    return Err(QueueError::Unavailable("no acknowledgement before the deadline".into()));
                }
            }
            // Pause a little so a queue without a leader is not hammered, then retry while the
            // request may still be answered in time.
            let pause = Duration::from_millis(100);
            if Instant::now() + pause + Duration::from_millis(50) >= give_up {
                return Err(QueueError::Unavailable(last_error));
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// JetStream refused the message because the stream is at `max_msgs` with discard-new
/// (nats-server: "maximum messages exceeded", error code 10077).
fn is_full(e: &async_nats::jetstream::context::PublishError) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(js) = s.downcast_ref::<async_nats::jetstream::Error>() {
            return js.error_code().0 == 10077 || js.to_string().contains("maximum messages");
        }
        source = s.source();
    }
    e.to_string().contains("maximum messages")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, failed_attempts: usize) -> async_nats::Server {
        async_nats::Server {
            addr: url.parse().expect("a server address"),
            failed_attempts,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        }
    }

    fn left(host: &str, port: u16) -> async_nats::ServerInfo {
        async_nats::ServerInfo { host: host.into(), port, ..Default::default() }
    }

    #[test]
    fn a_reconnect_goes_to_another_server_unless_the_others_fail_more() {
        let pool =
            [server("nats://10.9.0.1:4222", 0), server("nats://10.9.0.2:4222", 0), server("nats://10.9.0.3:4222", 0)];
        for _ in 0..50 {
            let to = another_server(&pool, &left("10.9.0.2", 4222)).expect("another server");
            assert_ne!(to.addr.host(), "10.9.0.2");
        }
        // On loopback the port tells them apart.
        let local = [server("nats://127.0.0.1:4001", 0), server("nats://127.0.0.1:4002", 0)];
        let to = another_server(&local, &left("127.0.0.1", 4001)).expect("another server");
        assert_eq!(to.addr.port(), 4002);
        // The only other server keeps failing: the client chooses (and comes back to the first).
        let failing = [server("nats://127.0.0.1:4001", 0), server("nats://127.0.0.1:4002", 3)];
        assert!(another_server(&failing, &left("127.0.0.1", 4001)).is_none());
        // Every server listens on 0.0.0.0:4222 on its own host: which one was left is unknown.
        let same_port = [server("nats://a.example:4222", 0), server("nats://b.example:4222", 0)];
        assert!(another_server(&same_port, &left("0.0.0.0", 4222)).is_none());
        // One server, or before the first connection: nothing to choose.
        assert!(another_server(&pool[..1], &left("10.9.0.1", 4222)).is_none());
        assert!(another_server(&pool, &async_nats::ServerInfo::default()).is_none());
    }

    #[test]
    fn a_node_moves_after_a_second_of_slow_round_trips_and_at_most_every_30_s() {
        let (slow, quick) = (Some(Duration::from_millis(120)), Some(Duration::from_millis(2)));
        let mut watch = SlowServer::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // A quick answer or a silence between slow ones starts the count again.
        let rtts = [slow, slow, slow, quick, slow, slow, None, slow, slow, slow];
        let moves: Vec<bool> =
            rtts.iter().enumerate().map(|(i, rtt)| watch.should_move(*rtt, at(i as u64 * 250))).collect();
        assert_eq!(moves, [false; 10]);
        assert!(watch.should_move(slow, at(2500)), "the fourth slow round trip in a row");
        // Still slow on the next server (the whole cluster is): no move for 30 s.
        assert!((0..100).all(|i| !watch.should_move(slow, at(2750 + i * 250))));
        assert!(watch.should_move(slow, at(32_750)));
    }

    #[test]
    fn a_node_moves_after_8_s_of_jetstream_silence_through_a_quick_server_and_at_most_every_30_s() {
        let mut watch = JetStreamSilence::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Unanswered every 2 s: not before 8 s have passed since the first.
        let moves: Vec<bool> = (0..4).map(|i| watch.should_move(false, true, at(i * 2000))).collect();
        assert_eq!(moves, [false; 4]);
        // An answer (a leader elected) starts the count again, and so does a slow or silent server.
        assert!(!watch.should_move(true, true, at(7000)));
        assert!(!watch.should_move(false, true, at(8000)));
        assert!(!watch.should_move(false, true, at(15_000)));
        assert!(!watch.should_move(false, false, at(16_000)), "the server itself slow: not this watch's case");
        assert!(!watch.should_move(false, true, at(17_000)));
        assert!(!watch.should_move(false, true, at(25_000)), "8 s, but only two unanswered");
        assert!(watch.should_move(false, true, at(26_000)), "three unanswered over 9 s");
        // Silent on the next server too (an election longer than the limit): no move for 30 s.
        assert!((0..29).all(|i| !watch.should_move(false, true, at(27_000 + i * 1000))));
        assert!(watch.should_move(false, true, at(56_000)), "30 s after the last move, and silent since 27 s");
        // Many requests in a second (a worker's slots) count the same as a few over 8 s.
        let mut watch = JetStreamSilence::default();
        assert!((0..100).all(|i| !watch.should_move(false, true, at(i * 50))));
        assert!(watch.should_move(false, true, at(8000)));
    }
}
