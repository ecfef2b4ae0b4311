//! The `resizer` binary: parses the command line and hands each subcommand to its module in
//! `cmd/`. It wires crates together; it holds no business logic of its own.

mod cmd;
mod config;
mod dev_file;
mod logging;
mod node;
mod process_limits;
mod signals;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "resizer", version, about = "A multi-tenant image-resizing service and its tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole service in one process with embedded defaults: the API, identity, queue and workers.
    Dev(cmd::dev::DevArgs),
    /// One api node of the cluster: the HTTP edge, with conversions sent through the NATS JetStream queue.
    Api(cmd::api::ApiArgs),
    /// One image worker of the cluster: pulls jobs from the NATS JetStream queue and converts them.
    Worker(cmd::worker::WorkerArgs),
    /// The cluster's identity service: the admin API over PostgreSQL, relaying changes to every api node.
    Identity(cmd::identity::IdentityArgs),
    /// A usage aggregator of the cluster: applies the shipped usage batches exactly once (Parquet, PostgreSQL rollups).
    Usage(cmd::usage::UsageArgs),
    /// The cluster on this machine: NATS JetStream, api nodes behind HAProxy, workers (up, down, status).
    Lab(cmd::lab::LabArgs),
    /// Tenants, keys and limits through the admin API.
    Admin(cmd::admin::AdminArgs),
    /// Resize local files with the same parameters as the HTTP API (one file, or a folder with --batch).
    Resize(cmd::resize::ResizeArgs),
    /// HTTP load against a running deployment, with a latency report.
    Loadtest(cmd::loadtest::LoadtestArgs),
    /// A signed GET URL for a source image and options, made with a signing key (no server call).
    Url(cmd::url::UrlArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The load generator keeps SIGPIPE ignored: a server that answers before reading the
        // whole body and closes would otherwise kill it silently on its next write (hyper writes
        // with writev, which raises the signal); it counts that as an error and goes on. The
        // admin CLI and the lab send small bodies our servers read whole (a refused admin body is
        // drained up to 1 MiB before the answer), so they end quietly on a closed stdout instead.
        Command::Loadtest(_) => {}
        Command::Lab(_) | Command::Admin(_) | Command::Resize(_) | Command::Url(_) => {
            process_limits::die_on_closed_pipe()
        }
        Command::Dev(_) | Command::Api(_) | Command::Worker(_) | Command::Identity(_) | Command::Usage(_) => {
            process_limits::private_files();
            process_limits::raise_open_files();
            process_limits::file_size_limit_is_an_error();
        }
    }
    // The commands that convert images (an api node hands them to the workers).
    if matches!(cli.command, Command::Dev(_) | Command::Worker(_) | Command::Resize(_)) {
        imaging::keep_heap_between_images();
    }
    let result = match cli.command {
        Command::Dev(args) => cmd::dev::run(args),
        Command::Api(args) => cmd::api::run(args),
        Command::Worker(args) => cmd::worker::run(args),
        Command::Identity(args) => cmd::identity::run(args),
        Command::Usage(args) => cmd::usage::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Admin(args) => cmd::admin::run(args),
        Command::Resize(args) => cmd::resize::run(args),
        Command::Loadtest(args) => cmd::loadtest::run(args),
        Command::Url(args) => cmd::url::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
