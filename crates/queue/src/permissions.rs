//! What each role may publish and subscribe to on NATS: the allow-lists a server's
//! `authorization` block gives each role's user (`resizer lab`, `deploy/nats/`). A worker
//! converts hostile images, so its login is the one most likely to leak: with it alone, nobody
//! can write an API key into the identity bucket, bill a tenant for usage it never had, or queue
//! jobs. Each role also gets its own inbox prefix, so that no role can read the replies and
//! deliveries (a watch of the identity bucket among them) addressed to another.
//!
//! The identity bucket lives in a NATS account of its own ([`IDENTITY_ACCOUNT`]), apart from the
//! jobs and usage ([`SERVICE_ACCOUNT`]). Allow-lists check only the subject a client publishes
//! to, not the reply subject it names, and JetStream sends its answers to that reply subject: in
//! one account, a worker's pull request with the reply subject `$KV.identity.t.<id>` made the
//! bucket store the pull's expiry notice as that tenant's entry (tried on nats-server 2.9). An
//! answer stays in the account the request was made in, so in another account the bucket is out
//! of reach; the api nodes watch it through the few JetStream subjects the identity account
//! exports ([`identity_links`]), under the prefix [`identity_api_prefix`]. The other way, the
//! service account exports only the api nodes' presence ([`service_links`]).
//!
//! The lists name every subject the role's code uses through async-nats 0.51 on nats-server 2.9;
//! a subject missing here is a "Permissions Violation" in the server's log and an error in the
//! role, which the cluster tests look for.

use crate::config::{PullClass, QueueConfig};
use crate::presence::API_PRESENCE_SUBJECT;
use crate::usage_stream::{USAGE_APPLIED_PREFIX, USAGE_CONSUMER, USAGE_STREAM, USAGE_SUBJECT};

/// A process that logs in to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Publishes jobs, ships usage batches, watches the identity bucket, announces itself to the
    /// other api nodes.
    Api,
    /// Pulls and acknowledges jobs.
    Worker,
    /// Writes the identity bucket.
    Identity,
    /// Pulls and acknowledges usage batches.
    Usage,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Worker, Role::Identity, Role::Usage];

    /// The role's name, which is also its NATS user in the lab and in `deploy/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Identity => "identity",
            Role::Usage => "usage",
        }
    }

    /// The prefix of the role's reply subjects (`_INBOX_<role>`), instead of the shared `_INBOX`.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.as_str())
    }

    /// The NATS account the role's user belongs to.
    pub fn account(self) -> &'static str {
        match self {
            Role::Identity => IDENTITY_ACCOUNT,
            Role::Api | Role::Worker | Role::Usage => SERVICE_ACCOUNT,
        }
    }
}

/// The account of the job and usage streams and of every role but the identity service.
pub const SERVICE_ACCOUNT: &str = "RESIZER";
/// The account of the identity service and its bucket.
pub const IDENTITY_ACCOUNT: &str = "IDENTITY";

/// The JetStream API prefix under which the service account reaches the identity account's
/// (`$JS.<bucket>.API`): the api nodes' `identity.jetstream_prefix`.
pub fn identity_api_prefix(identity_bucket: &str) -> String {
    format!("$JS.{identity_bucket}.API")
}

/// A subject one account shares with another: a service (requests in, answers back) or a stream
/// (messages one way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLink {
    pub kind: LinkKind,
    /// The subject in the exporting account.
    pub subject: String,
    /// What the importing account calls it, when not the same.
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Service,
    Stream,
}

/// What the identity account exports and the service account imports: watching the bucket
/// (looking up its stream; making, checking and dropping the watch's ordered consumer; its
/// deliveries, which go to the api nodes' inbox; the api nodes' answers to flow control) and
/// nothing else — no put, no get, no other stream.
pub fn identity_links(identity_bucket: &str) -> Vec<AccountLink> {
    let kv_stream = format!("KV_{identity_bucket}");
    let prefix = identity_api_prefix(identity_bucket);
    let service = |api_subject: String| AccountLink {
        kind: LinkKind::Service,
        to: Some(format!("{prefix}{}", api_subject.trim_start_matches("$JS.API"))),
        subject: api_subject,
    };
    vec![
        service(format!("$JS.API.STREAM.INFO.{kv_stream}")),
        service(format!("$JS.API.CONSUMER.CREATE.{kv_stream}")),
        service(format!("$JS.API.CONSUMER.CREATE.{kv_stream}.>")),
        service(format!("$JS.API.CONSUMER.DELETE.{kv_stream}.>")),
        service(format!("$JS.API.CONSUMER.INFO.{kv_stream}.>")),
        AccountLink { kind: LinkKind::Service, subject: format!("$JS.FC.{kv_stream}.>"), to: None },
        AccountLink { kind: LinkKind::Stream, subject: format!("{}.>", Role::Api.inbox_prefix()), to: None },
    ]
}

/// What the service account exports and the identity account imports: the api nodes' presence
/// announcements, which carry each node's readiness, so that the operator console at the
/// identity service shows the health of every api node. One way, read only: the identity user
/// hears them and publishes nothing into the service account.
pub fn service_links() -> Vec<AccountLink> {
    vec![AccountLink { kind: LinkKind::Stream, subject: API_PRESENCE_SUBJECT.to_owned(), to: None }]
}

/// Allow-lists of subjects (NATS wildcards); everything else is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The subject of the api node's round trip to its NATS server: nobody subscribes to it, so the
/// server itself answers at once with "no responders" — an answer that needs neither JetStream
/// nor any other process, only the server and the link to it.
pub const SERVER_PING_SUBJECT: &str = "ping.server";

/// The subjects `role` needs, for the job stream of `jobs` and the identity bucket
/// `identity_bucket`.
pub fn permissions(role: Role, jobs: &QueueConfig, identity_bucket: &str) -> Permissions {
    let api = "$JS.API";
    // Only the role that writes a stream creates it: a stream made by another (say, a worker,
    // while the job stream is missing) could be given subjects that capture what it should
    // never see.
    let stream_setup = |stream: &str| [format!("{api}.STREAM.INFO.{stream}"), format!("{api}.STREAM.CREATE.{stream}")];
    // A durable pull consumer: looked up, created if missing (as `CREATE.<stream>.<name>` or, by
    // older clients, `DURABLE.CREATE`), pulled from, and acknowledged.
    let pull_consumer = |stream: &str, consumer: &str| {
        [
            format!("{api}.CONSUMER.INFO.{stream}.{consumer}"),
            format!("{api}.CONSUMER.CREATE.{stream}.{consumer}"),
            format!("{api}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
            format!("{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            format!("$JS.ACK.{stream}.{consumer}.>"),
        ]
    };
    let kv_stream = format!("KV_{identity_bucket}");
    let mut publish: Vec<String> = match role {
        Role::Api => {
            let mut subjects =
                vec![format!("{}.>", jobs.subject_prefix), USAGE_SUBJECT.to_owned(), API_PRESENCE_SUBJECT.to_owned()];
            // Its round trip to the server (`JobQueue::watch_server`), which nobody subscribes to.
            subjects.push(SERVER_PING_SUBJECT.to_owned());
            // Moving the job stream's leadership off a slow leader (`JobQueue::watch_stream_leader`),
            // and that of the workers' consumers it leads.
            subjects.push(format!("{api}.STREAM.LEADER.STEPDOWN.{}", jobs.stream));
            for class in PullClass::ALL {
                let consumer = jobs.consumer_name(class);
                subjects.push(format!("{api}.CONSUMER.INFO.{}.{consumer}", jobs.stream));
                subjects.push(format!("{api}.CONSUMER.LEADER.STEPDOWN.{}.{consumer}", jobs.stream));
            }
            subjects.extend(stream_setup(&jobs.stream));
            subjects.extend(stream_setup(USAGE_STREAM));
            // Watching the bucket, in the identity account: an ordered consumer on its stream,
            // made again after a gap, with flow control answered.
            subjects.extend(identity_links(identity_bucket).into_iter().filter_map(|link| match link.kind {
                LinkKind::Service => Some(link.to.unwrap_or(link.subject)),
                LinkKind::Stream => None,
            }));
            subjects
        }
        Role::Worker => {
            // Its round trip to the server (`watch_server_speed`).
            let mut subjects = vec![format!("{api}.STREAM.INFO.{}", jobs.stream), SERVER_PING_SUBJECT.to_owned()];
            for class in PullClass::ALL {
                let consumer = jobs.consumer_name(class);
                subjects.extend(pull_consumer(&jobs.stream, &consumer));
                // A filtered consumer is created as `CREATE.<stream>.<name>.<filter>`.
                subjects.push(format!(
                    "{api}.CONSUMER.CREATE.{}.{consumer}.{}",
                    jobs.stream,
                    jobs.filter_subject(class)
                ));
            }
            // The one consumer it may delete: the one older versions shared for small and
            // medium jobs, which overlaps the new ones (`QueueConfig::retired_consumer_name`).
            subjects.push(format!("{api}.CONSUMER.DELETE.{}.{}", jobs.stream, jobs.retired_consumer_name()));
            subjects
        }
        Role::Identity => {
            let mut subjects = vec![format!("$KV.{identity_bucket}.>")];
            subjects.extend(stream_setup(&kv_stream));
            // Reading its own marker key back: a direct get, or a stream message get.
            subjects.extend([format!("{api}.DIRECT.GET.{kv_stream}.>"), format!("{api}.STREAM.MSG.GET.{kv_stream}")]);
            subjects
        }
        Role::Usage => {
            // `usage.applied.<node>`: an api node deletes a batch only once told it is applied.
            let mut subjects = vec![format!("{api}.STREAM.INFO.{USAGE_STREAM}"), format!("{USAGE_APPLIED_PREFIX}.*")];
            subjects.extend(pull_consumer(USAGE_STREAM, USAGE_CONSUMER));
            subjects
        }
    };
    publish.sort();
    let mut subscribe = vec![format!("{}.>", role.inbox_prefix())];
    if role == Role::Api {
        // The api nodes hear each other's presence (and only the api nodes announce one), and
        // the aggregators' word that a batch is applied (they share one login: a node may hear
        // another's batch ids, which tell it nothing it could use).
        subscribe.push(API_PRESENCE_SUBJECT.to_owned());
        subscribe.push(format!("{USAGE_APPLIED_PREFIX}.*"));
    }
    if role == Role::Identity {
        // The api nodes' presence, imported from the service account (`service_links`): the
        // node board of the operator console.
        subscribe.push(API_PRESENCE_SUBJECT.to_owned());
    }
    Permissions { publish, subscribe }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_account_exports_a_watch_and_nothing_that_writes_or_reads_values() {
        let links = identity_links("identity");
        for link in &links {
            let s = &link.subject;
            assert!(!s.starts_with("$KV."), "{s}: the bucket's own subjects stay inside");
            for verb in
                ["PURGE", "STREAM.DELETE", "STREAM.CREATE", "STREAM.UPDATE", "DIRECT.GET", "MSG.GET", "MSG.DELETE"]
            {
                assert!(!s.contains(verb), "{s}: exports {verb}");
            }
            if link.kind == LinkKind::Service && s.starts_with("$JS.API.") {
                let to = link.to.as_deref().unwrap_or("");
                assert_eq!(to.strip_prefix("$JS.identity.API"), s.strip_prefix("$JS.API"), "{s} imported as {to}");
            }
        }
        let streams: Vec<&str> =
            links.iter().filter(|l| l.kind == LinkKind::Stream).map(|l| l.subject.as_str()).collect();
        assert_eq!(streams, ["_INBOX_api.>"], "deliveries go to the api nodes' inbox only");
    }

    #[test]
    fn the_service_account_exports_only_the_presence_stream() {
        let links = service_links();
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].kind, links[0].subject.as_str()), (LinkKind::Stream, "presence.api"));
    }

    #[test]
    fn only_the_identity_service_writes_the_bucket_and_only_the_api_queues_jobs() {
        let jobs = QueueConfig::default();
        for role in Role::ALL {
            let p = permissions(role, &jobs, "identity");
            let may_publish = |subject: &str| p.publish.iter().any(|s| s == subject);
            assert_eq!(may_publish("$KV.identity.>"), role == Role::Identity, "{role:?}");
            assert_eq!(may_publish("jobs.>"), role == Role::Api, "{role:?}");
            assert_eq!(may_publish("usage.batches"), role == Role::Api, "{role:?}");
            let mut subscribe = vec![format!("_INBOX_{}.>", role.as_str())];
            match role {
                Role::Api => subscribe.extend(["presence.api".into(), "usage.applied.*".into()]),
                Role::Identity => subscribe.push("presence.api".into()),
                Role::Worker | Role::Usage => {}
            }
            assert_eq!(may_publish("usage.applied.*"), role == Role::Usage, "{role:?}: only aggregators confirm");
            assert_eq!(p.subscribe, subscribe, "{role:?}");
            assert_eq!(may_publish("presence.api"), role == Role::Api, "{role:?}");
            assert!(p.publish.iter().all(|s| !s.starts_with("_INBOX")), "{role:?}: no one answers for another");
            assert!(
                p.publish.iter().all(|s| !s.contains(".DELETE.")
                    || s.contains("CONSUMER.DELETE.KV_")
                    || (role == Role::Worker && s == "$JS.API.CONSUMER.DELETE.JOBS.workers-fast")),
                "{role:?}: deletes nothing but its own watch (and a worker the retired job consumer)"
            );
            let creates: Vec<&str> =
                p.publish.iter().filter_map(|s| s.strip_prefix("$JS.API.STREAM.CREATE.")).collect();
            let writes: &[&str] = match role {
                Role::Api => &["JOBS", "USAGE"],
                Role::Identity => &["KV_identity"],
                Role::Worker | Role::Usage => &[],
            };
            assert_eq!(creates, writes, "{role:?}: creates only the streams it writes");
            if role != Role::Identity {
                assert!(
                    p.publish.iter().all(|s| !s.starts_with("$JS.API") || !s.contains("KV_identity")),
                    "{role:?} reaches the identity bucket only through the identity account's exports"
                );
            }
        }
    }
}
