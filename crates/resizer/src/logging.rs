//! Logs go to stderr, one JSON object per line by default (what log shippers expect), or as
//! plain text for a human at a terminal (`log.format = "text"`).

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;

use crate::config::LogSection;

pub fn init(log: &LogSection) -> anyhow::Result<()> {
    let level: LevelFilter = log
        .level
        .parse()
        .with_context(|| format!("log.level `{}`: use error, warn, info, debug or trace", log.level))?;
    // A log line that cannot be written (stderr on a full disk) is dropped. By default the
    // subscriber reports that with `eprintln!`, which panics when stderr fails too: every request
    // that logged then died unanswered.
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .log_internal_errors(false);
    let installed = if log.format == "json" {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    installed.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
