//! Where the jobs go and how JetStream keeps them: one stream, one subject per size lane, and a
//! durable pull consumer per lane shared by every worker (see [`PullClass`]). Every field has a
//! documented default.

use std::time::Duration;

use dispatch::Lane;

/// A worker tells JetStream it is still on a job this often, so `ack_wait` only has to cover a
/// dead or frozen worker, not a slow conversion.
pub const ACK_PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The stream's name (`JOBS`).
    pub stream: String,
    /// Subjects: `jobs.fast.small`, `jobs.fast.medium`, `jobs.large` (see [`QueueConfig::subject`]).
    pub subject_prefix: String,
    /// The durable pull consumers every worker pulls from are `<consumer>-small`,
    /// `<consumer>-medium` and `<consumer>-large` (`workers-small`, …).
    pub consumer: String,
    /// Copies of each job across the NATS cluster (3: one node may fail).
    pub replicas: usize,
    /// The most jobs the stream holds; past it a publish is refused (discard-new) and the api
    /// answers 503 at once instead of queueing work nobody will wait for.
    pub max_jobs: i64,
    /// A job older than this is dropped by JetStream: the request's deadline, after which
    /// nobody waits for the result.
    pub max_age: Duration,
    /// A delivered job not acknowledged (nor marked in progress) for this long goes to another
    /// worker: the time a dead or frozen worker costs its jobs.
    pub ack_wait: Duration,
    /// Deliveries that may run a job. A job delivered once more than this has killed or lost
    /// that many workers: the next worker fails it (422) without running it.
    pub max_attempts: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            stream: "JOBS".into(),
            subject_prefix: "jobs".into(),
            consumer: "workers".into(),
            replicas: 3,
            max_jobs: 4096,
            max_age: Duration::from_secs(10),
            ack_wait: Duration::from_secs(2),
            max_attempts: 3,
        }
    }
}

/// Which consumer a lane's jobs are pulled from: each lane its own, since JetStream delivers
/// one consumer's jobs in arrival order, and a small image queued behind medium ones (half a
/// second each) or large ones (seconds) waits for all of them. With a consumer per lane a worker
/// pulls small jobs with pulls of their own and runs them on a thread kept for them, medium ones
/// with its other threads, and large ones with all its threads but one — the embedded
/// dispatcher's lane rules, kept by each worker. nats-server 2.9 gives a consumer one filter
/// subject and a work-queue stream refuses overlapping ones: hence one subject per consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullClass {
    Small,
    Medium,
    Large,
}

impl PullClass {
    pub const ALL: [PullClass; 3] = [PullClass::Small, PullClass::Medium, PullClass::Large];

    pub fn of(lane: Lane) -> PullClass {
        match lane {
            Lane::Small => PullClass::Small,
            Lane::Medium => PullClass::Medium,
            Lane::Large => PullClass::Large,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullClass::Small => "small",
            PullClass::Medium => "medium",
            PullClass::Large => "large",
        }
    }
}

impl QueueConfig {
    /// A lane's subject: `<prefix>.fast.<lane>` for small and medium, `<prefix>.large`. (The
    /// `fast` level stays from when one consumer took both: the stream keeps its subjects.)
    pub fn subject(&self, lane: Lane) -> String {
        match lane {
            Lane::Small | Lane::Medium => format!("{}.fast.{}", self.subject_prefix, lane.as_str()),
            Lane::Large => format!("{}.large", self.subject_prefix),
        }
    }

    /// The subject a class's consumer takes: its lane's.
    pub fn filter_subject(&self, class: PullClass) -> String {
        let lane = match class {
            PullClass::Small => Lane::Small,
            PullClass::Medium => Lane::Medium,
            PullClass::Large => Lane::Large,
        };
        self.subject(lane)
    }

    /// A class's durable consumer: `<consumer>-small`, `<consumer>-medium`, `<consumer>-large`.
    pub fn consumer_name(&self, class: PullClass) -> String {
        format!("{}-{}", self.consumer, class.as_str())
    }

    /// The consumer of small and medium jobs before they had one each (`<consumer>-fast`, filter
    /// `<prefix>.fast.*`). It overlaps both of theirs, which a work-queue stream refuses, so a
    /// worker of this version deletes it before making them.
    pub fn retired_consumer_name(&self) -> String {
        format!("{}-fast", self.consumer)
    }

    /// JetStream's `max_deliver`: the attempts that run, plus the one that fails the job.
    pub fn max_deliver(&self) -> i64 {
        i64::from(self.max_attempts) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lane_is_taken_by_exactly_its_class_consumer() {
        let config = QueueConfig::default();
        let matches = |filter: &str, subject: &str| {
            let (f, s): (Vec<&str>, Vec<&str>) = (filter.split('.').collect(), subject.split('.').collect());
            f.len() == s.len() && f.iter().zip(&s).all(|(f, s)| *f == "*" || f == s)
        };
        for lane in Lane::ALL {
            let subject = config.subject(lane);
            for class in PullClass::ALL {
                assert_eq!(matches(&config.filter_subject(class), &subject), PullClass::of(lane) == class, "{subject}");
            }
        }
        assert_eq!(config.subject(Lane::Small), "jobs.fast.small");
        assert_eq!(config.consumer_name(PullClass::Large), "workers-large");
        assert_eq!(config.consumer_name(PullClass::Small), "workers-small");
        let retired = format!("{}.fast.*", config.subject_prefix);
        assert!(
            PullClass::ALL.iter().all(|&c| c == PullClass::Large || matches(&retired, &config.filter_subject(c))),
            "the retired consumer's filter overlaps the small and medium ones, so it must go"
        );
    }
}
