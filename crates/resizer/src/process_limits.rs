//! Process-wide settings a command makes for itself at start: the open-files limit, the file
//! mode and SIGXFSZ of a server, and SIGPIPE for the command-line tools.

/// Raises the soft limit on open files to the hard one, as Go's runtime does for every program:
/// the soft default of 1,024 is meant for shells, not servers. Called once, at a server's start.
pub fn raise_open_files() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

/// How many descriptors connections may take: the open-files limit less a reserve for the
/// spool, the archive, NATS and the database.
pub fn connection_budget() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    // SAFETY: getrlimit only writes the struct passed to it.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    let open = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX).min(1 << 20);
    open.saturating_sub((open / 4).min(512))
}

/// A tool whose output goes to a closed pipe (`resizer admin ... | head -1`) ends quietly, as
/// Unix tools do, instead of panicking on the failed write: Rust ignores SIGPIPE by default.
/// Servers keep ignoring it, so a client that goes away is an error on its socket only.
pub fn die_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A write past the process's file-size limit (RLIMIT_FSIZE: a unit's `LimitFSIZE`, an
/// operator's `prlimit`) fails with EFBIG, as a full disk fails with ENOSPC, instead of killing
/// the server with SIGXFSZ: the usage spool then answers 503 and the node leaves rotation until
/// writes work again, with no request answered 200 unrecorded.
pub fn file_size_limit_is_an_error() {
    // SAFETY: sets the disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// A server's files are its own: the identity store holds key hashes, the spool and the archive
/// every tenant's records. Nothing it creates is readable by other local users.
pub fn private_files() {
    // SAFETY: sets this process's file mode creation mask; no memory is involved.
    unsafe {
        libc::umask(0o077);
    }
}
