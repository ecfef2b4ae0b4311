//! # lab
//!
//! The cluster on one machine (`resizer lab up --dir DIR`, `down`, `status`): the processes of
//! the distributed deployment started on free loopback ports — or, with `--netns`, each in a
//! network namespace of its own on a bridge, so that its links can be cut or slowed
//! ([`LabNetwork`], [`partition`], [`slow`]) — for tests, benchmarks and users.
//! It owns process orchestration only — a NATS JetStream cluster of N `nats-server` processes
//! ([`NatsCluster`]), HAProxy in front of the api nodes ([`Haproxy`]), a private PostgreSQL
//! server with its own `initdb` in DIR ([`Postgres`]), any other process through
//! [`start_process`], the record of all of them in `DIR/cluster.json` ([`ClusterFile`]), and
//! stopping ([`down`]), inspecting ([`status`]) and hurting them (kill -9, SIGSTOP, restart) for
//! fault tests.
//!
//! It must not know what an api node or a worker does (they are command lines with a `/readyz`
//! URL to it), must not speak the NATS protocol (only nats-server's HTTP monitoring endpoints),
//! and must not outlive its promise: every process it starts is in its own process group, is
//! recorded before it matters, and `down` verifies none is left. nats-server, HAProxy and
//! PostgreSQL come from Debian's packages; their absence is an error naming the packages to install.
//!
//! `lab up` in four steps:
//!
//! ```no_run
//! # fn main() -> Result<(), lab::LabError> {
//! use lab::{up_infrastructure, Backend, InfraOptions, ProcessSpec};
//! let dir = std::path::Path::new("/tmp/lab");
//! let mut infra = up_infrastructure(dir, &InfraOptions::default())?; // 3 NATS nodes, meta leader
//! let nats = infra.nats_urls().join(",");
//! let mut backends = Vec::new();
//! for i in 0..2 {
//!     let port = lab::free_port()?;
//!     let name = format!("api-{i}");
//!     infra.start_process(
//!         ProcessSpec::new("api", &name, "target/debug/resizer")
//!             .args(["api", "--listen", &format!("127.0.0.1:{port}")])
//!             .env("RESIZER_NATS", &nats)
//!             .url("http", format!("http://127.0.0.1:{port}"))
//!             .health(format!("http://127.0.0.1:{port}/readyz")),
//!     )?;
//!     lab::wait_for_http_ok(&format!("http://127.0.0.1:{port}/readyz"), std::time::Duration::from_secs(20))?;
//!     backends.push(Backend::new(name, ([127, 0, 0, 1], port).into()));
//! }
//! infra.add_haproxy(&backends)?; // waits until both pass /readyz
//! let mut fields = serde_json::Map::new();
//! fields.insert("demo_key".into(), "rsz_...".into());
//! infra.finish(fields)?; // complete cluster.json; processes keep running
//! # Ok(()) }
//! ```
//!
//! Files: `process.rs` spawning, signals and `/proc`; `net.rs` ports and waiting; `nats.rs` the
//! NATS cluster; `haproxy.rs` the load balancer; `postgres.rs` PostgreSQL; `pki.rs` the lab's CA and
//! node certificates; `netns.rs` the lab's own network (`--netns`); `faults.rs` the faults on it; `cluster.rs`
//! cluster.json, down, status;
//! `infra.rs` the `lab up` steps; `binaries.rs` finding the programs; `prometheus.rs` Prometheus
//! scraping the lab (`lab up --prometheus`).

mod binaries;
mod cluster;
mod error;
mod faults;
mod haproxy;
mod infra;
mod nats;
mod net;
mod netns;
mod pki;
mod postgres;
mod process;
mod prometheus;

pub use binaries::{
    check_binaries, find_postgres_program, find_program, HAPROXY, INITDB, NATS_SERVER, POSTGRES, SETPRIV,
};
pub use cluster::{
    down, format_status, restart_component, signal_component, status, write_atomic, ClusterFile, ComponentStatus,
    DownReport, LabGuard, CLUSTER_FILE,
};
pub use error::{LabError, MissingBinary, Result};
pub use faults::{fill_volume, heal_network, partition, run_delay_queue, slow, Slowness, FAULT_ROLE};
pub use haproxy::{
    server_states_at, Backend, Haproxy, HaproxyOptions, HaproxyTls, ServerState, BACKEND_NAME, HAPROXY_ROLE,
    METRICS_REFUSAL, PROBLEM_ERRORS,
};
pub use infra::{up_infrastructure, InfraOptions, Infrastructure, TLS_DIR};
pub use nats::{
    render_authorization, render_config as render_nats_config, Jsz, MetaCluster, NatsAccount, NatsAuth, NatsCluster,
    NatsLink, NatsNode, NatsOptions, NatsPermissions, NatsTls, NatsUser, Passwords, PeerInfo, Routez, StreamDetail,
    LEADER_ELECTION_BOUND, NATS_ROLE,
};
pub use net::{
    free_port, free_ports, http_get, http_get_json, http_get_trusting, poll_until, tcp_accepts, ureq_tls,
    wait_for_http_ok, wait_for_http_ok_trusting, wait_for_tcp, HttpAnswer, LOOPBACK,
};
pub use netns::{remove as remove_network, sweep_stale, Host, LabNetwork, NetworkRecord, Volume, NETWORK_FIELD};
pub use pki::{CertFiles, LabCa};
pub use postgres::{Postgres, PostgresAccess, PostgresOptions, POSTGRES_DATABASE, POSTGRES_ROLE, POSTGRES_USER};
pub use process::{
    group_members, log_tail, logs_dir, process_state, respawn, send_signal, signal_leader, start_process,
    stop_components, wait_gone, Component, ProcessGuard, ProcessSpec, ProcessState, Signal,
};
pub use prometheus::{
    render_config as render_prometheus_config, scale_rule_durations, PrometheusOptions, RuleFile, PROMETHEUS,
    PROMETHEUS_ROLE, PROMETHEUS_URL_FIELD,
};
