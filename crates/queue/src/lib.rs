//! # queue
//!
//! The cluster's job queue on NATS JetStream (../shared/BLUEPRINT.md §2–3), shared by the api
//! nodes that publish jobs and the workers that run them: the stream and consumer setup
//! ([`QueueConfig`], [`ensure_stream`]), the wire formats of a job and of its result
//! ([`JobMessage`], [`ResultMeta`]), publishing with the answers a full or leaderless queue
//! gives ([`JobQueue::publish`]), and the api node's [`Staging`]: the source bytes stay on the
//! api node, the job carries only the node's internal address and a single-use, expiring
//! capability token for them. It also carries the usage stream (`usage_stream.rs`): api nodes
//! ship spool batches to it under their batch ids, the usage aggregators consume it, and
//! `usage_auth.rs` signs what an api node ships and checks it for the aggregators (each node's key
//! derived from a master secret only they hold). And what each
//! role may publish and subscribe to (`permissions.rs`), for the servers' user configuration, and
//! the api nodes' count of each other (`presence.rs`), by which they share the tenants' rate limits and cluster-wide bounds.
//!
//! It must not run conversions (the worker crate does, through `dispatch`), must not know HTTP
//! routes or statuses (the api maps [`QueueError`] and [`Failure`]), and never implements
//! replication itself: durability and leader election are JetStream's.

mod config;
mod credentials;
mod error;
mod jetstream;
mod permissions;
mod presence;
mod privilege;
mod staging;
mod usage_auth;
mod usage_stream;
mod wire;

pub use config::{PullClass, QueueConfig, ACK_PROGRESS_EVERY};
pub use credentials::{redact_url, redact_urls};
pub use error::QueueError;
pub use jetstream::{
    connect, ensure_consumer, ensure_stream, existing_stream, retire_fast_consumer, watch_server_speed,
    JetStreamSilence, JetStreamWatch, JobQueue, SlowServer, SERVER_SILENCE_LIMIT,
};
pub use permissions::{
    identity_api_prefix, identity_links, permissions, service_links, AccountLink, LinkKind, Permissions, Role,
    IDENTITY_ACCOUNT, SERVER_PING_SUBJECT, SERVICE_ACCOUNT,
};
pub use presence::{
    announce_and_count, node_share, watch_nodes, Announcement, ApiPeers, NodeBoard, NodeReport, API_PRESENCE_SUBJECT,
    BOARD_KEEPS, FORGET_AFTER,
};
pub use privilege::{check_login_scope, LoginScope, PROBE_SUBJECT};
pub use staging::{StagedJob, Staging, StagingError};
pub use usage_auth::{
    open_usage_message, BatchSigningSecret, NodeKey, OpenedBatch, RejectedBatch, Rejection, UsageAuthError, UsageSigner,
};
pub use usage_stream::{
    ensure_usage_consumer, ensure_usage_stream, lift_usage_age_limit, ship_batch, usage_age_limit,
    usage_applied_subject, usage_duplicate_window_too_long, usage_messages, USAGE_APPLIED_PREFIX, USAGE_CONSUMER,
    USAGE_DUPLICATE_WINDOW, USAGE_PART_BYTES, USAGE_STREAM, USAGE_SUBJECT,
};
pub use wire::output_format;
pub use wire::{
    unix_micros, unix_millis, Failure, FailureKind, JobMessage, RemoteDone, ResultMeta, WireReport, RESULT_HEADER,
};
