//! The `resizer` binary: parses the command line and hands each subcommand to its module in
//! `cmd/`. It wires crates together; it holds no business logic of its own.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "resizer", version, about = "A multi-tenant image-resizing service and its tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resize local files with the same parameters as the HTTP API (one file, or a folder with --batch).
    Resize(cmd::resize::ResizeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Resize(args) => cmd::resize::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
