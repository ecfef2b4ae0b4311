//! `LabError`: every way starting, watching or stopping the lab's processes can fail.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong, with enough context (path, URL, log tail) to act on it without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A required program is not installed. Names each missing program with its Debian package.
    #[error("{}", missing_message(.0))]
    MissingBinaries(Vec<MissingBinary>),

    /// Making a certificate or key failed (rcgen).
    #[error("issuing {what}: {message}")]
    Certificate { what: String, message: String },

    /// A file or directory operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A socket operation (free port, TCP probe) failed.
    #[error("{action}: {source}")]
    Net {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// A child process could not be started.
    #[error("could not start {name} ({}): {source}", .program.display())]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Sending a signal failed for another reason than "no such process".
    #[error("signal {signal} to {name} (process group {pgid}): {source}")]
    Signal {
        signal: &'static str,
        name: String,
        pgid: u32,
        #[source]
        source: std::io::Error,
    },

    /// An HTTP request got no answer (refused, timed out, broken).
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },

    /// An HTTP answer came but was not what we expected (status, unparsable body).
    #[error("GET {url}: {message}")]
    BadAnswer { url: String, message: String },

    /// A JSON document (cluster.json) could not be read or written.
    #[error("{}: {source}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A condition did not become true in time. `detail` holds the last observation and, for a
    /// process, the end of its log.
    #[error("timed out after {waited:?} waiting for {what}: {detail}")]
    Timeout { what: String, waited: Duration, detail: String },

    /// A process exited while we waited for it to become ready.
    #[error("{name} exited while starting; end of {}:\n{tail}", .log.display())]
    Exited { name: String, log: PathBuf, tail: String },

    /// `haproxy -c` refused a generated configuration (a bug of ours or a bad backend).
    #[error("haproxy refused the configuration {}:\n{output}", .path.display())]
    HaproxyConfig { path: PathBuf, output: String },

    /// DIR holds no cluster.json (`file`: its path, as the caller named it).
    #[error("no cluster in {}: {} is missing", .dir.display(), .file.display())]
    NoCluster { dir: PathBuf, file: PathBuf },

    /// DIR's cluster.json still lists live processes.
    #[error("a cluster is already running in {} (live: {}); run `down` first", .dir.display(), .live.join(", "))]
    AlreadyRunning { dir: PathBuf, live: Vec<String> },

    /// No component of that name in the cluster (or node index out of range).
    #[error("no component named {0}")]
    UnknownComponent(String),

    /// Processes survived SIGTERM and SIGKILL.
    #[error("still alive after SIGKILL: {}", .0.join(", "))]
    Survivors(Vec<String>),

    /// An argument or option is unusable (zero nodes, a backend name HAProxy would reject...).
    #[error("{0}")]
    Invalid(String),
}

/// One program the lab needs and the Debian package that ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingBinary {
    pub program: &'static str,
    pub package: &'static str,
}

fn missing_message(missing: &[MissingBinary]) -> String {
    let what: Vec<String> =
        missing.iter().map(|m| format!("`{}` (Debian package `{}`)", m.program, m.package)).collect();
    // The install command names exactly the packages that are missing, each once.
    let mut packages: Vec<&str> = Vec::new();
    for m in missing {
        if !packages.contains(&m.package) {
            packages.push(m.package);
        }
    }
    format!(
        "not installed: {}. The lab cluster runs these from Debian's packages; as root run: \
         apt-get install -y {}",
        what.join(", "),
        packages.join(" ")
    )
}

impl LabError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io { action, path: path.into(), source }
    }
}

/// The crate's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
