//! Where the jobs go and how JetStream keeps them: one stream, one subject per size lane, two
//! durable pull consumers shared by every worker — one for the small and medium lanes, one for
//! the large lane (see [`PullClass`]). Every field has a documented default.

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
    /// The durable pull consumers every worker pulls from are `<consumer>-fast` and
    /// `<consumer>-large` (`workers-fast`, `workers-large`).
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

/// Which consumer a lane's jobs are pulled from. A worker pulls small and medium jobs with every
/// slot it has, and large ones (seconds each) with all its slots but one: a burst of huge images
/// then never holds a small one behind it for seconds — the embedded dispatcher's lane rule, kept
/// by each worker. JetStream delivers one consumer's jobs in arrival order, so the large lane
/// needs a consumer of its own; nats-server 2.9 gives a consumer one filter subject, hence the
/// `fast` level in the small and medium subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullClass {
    Fast,
    Large,
}

impl PullClass {
    pub const ALL: [PullClass; 2] = [PullClass::Fast, PullClass::Large];

    pub fn of(lane: Lane) -> PullClass {
        match lane {
            Lane::Small | Lane::Medium => PullClass::Fast,
            Lane::Large => PullClass::Large,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullClass::Fast => "fast",
            PullClass::Large => "large",
        }
    }
}

impl QueueConfig {
    /// A lane's subject: `<prefix>.fast.<lane>` for small and medium, `<prefix>.large`.
    pub fn subject(&self, lane: Lane) -> String {
        match PullClass::of(lane) {
            PullClass::Fast => format!("{}.fast.{}", self.subject_prefix, lane.as_str()),
            PullClass::Large => format!("{}.large", self.subject_prefix),
        }
    }

    /// The subjects a class's consumer takes.
    pub fn filter_subject(&self, class: PullClass) -> String {
        match class {
            PullClass::Fast => format!("{}.fast.*", self.subject_prefix),
            PullClass::Large => format!("{}.large", self.subject_prefix),
        }
    }

    /// A class's durable consumer: `<consumer>-fast`, `<consumer>-large`.
    pub fn consumer_name(&self, class: PullClass) -> String {
        format!("{}-{}", self.consumer, class.as_str())
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
    }
}
