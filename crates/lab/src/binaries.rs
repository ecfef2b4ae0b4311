//! Finding `nats-server`, `haproxy` and PostgreSQL's programs, with an error that says which Debian
//! package to install.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{LabError, MissingBinary, Result};

/// The NATS server program and its Debian package (Debian 12 ships 2.9.x).
pub const NATS_SERVER: MissingBinary = MissingBinary { program: "nats-server", package: "nats-server" };
/// The HAProxy program and its Debian package (installed into /usr/sbin, often not on a user's PATH).
pub const HAPROXY: MissingBinary = MissingBinary { program: "haproxy", package: "haproxy" };

/// PostgreSQL's server (Debian puts it in /usr/lib/postgresql/<version>/bin, off every PATH).
pub const POSTGRES: MissingBinary = MissingBinary { program: "postgres", package: "postgresql" };
/// PostgreSQL's `initdb`, from the same package and directory as `postgres`.
pub const INITDB: MissingBinary = MissingBinary { program: "initdb", package: "postgresql" };
/// Runs PostgreSQL as an unprivileged user when the lab is root.
pub const SETPRIV: MissingBinary = MissingBinary { program: "setpriv", package: "util-linux" };

/// Debian's PostgreSQL installations: one `<version>/bin` directory per major version.
const POSTGRES_LIB: &str = "/usr/lib/postgresql";

/// Where to look after `$PATH`: the sbin directories are not on every user's PATH.
const EXTRA_DIRS: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The full path of `program`: `$PATH` first, then the usual system directories.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    from_path
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// A PostgreSQL program (`postgres`, `initdb`): like [`find_program`], then in
/// `/usr/lib/postgresql/<version>/bin`, highest version first.
pub fn find_postgres_program(program: &str) -> Option<PathBuf> {
    find_program(program).or_else(|| {
        let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(POSTGRES_LIB)
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                // "15", or "9.6" before PostgreSQL 10; anything else is not a version directory.
                let version: Vec<u32> =
                    e.file_name().to_str()?.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
                Some((version, e.path().join("bin").join(program)))
            })
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        versions.into_iter().map(|(_, path)| path).find(|p| is_executable(p))
    })
}

pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// `explicit` if given (and executable), else the program found by [`find_program`].
pub fn resolve(binary: MissingBinary, explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(path) if is_executable(path) => Ok(path.to_path_buf()),
        Some(path) => Err(LabError::Invalid(format!(
            "{} is not an executable file (given for `{}`, Debian package `{}`)",
            path.display(),
            binary.program,
            binary.package
        ))),
        None => find_program(binary.program).ok_or_else(|| LabError::MissingBinaries(vec![binary])),
    }
}

/// Both programs the lab needs; one error naming every missing one.
pub fn check_binaries() -> Result<(PathBuf, PathBuf)> {
    let nats = find_program(NATS_SERVER.program);
    let haproxy = find_program(HAPROXY.program);
    match (nats, haproxy) {
        (Some(n), Some(h)) => Ok((n, h)),
        (n, h) => {
            let mut missing = Vec::new();
            if n.is_none() {
                missing.push(NATS_SERVER);
            }
            if h.is_none() {
                missing.push(HAPROXY);
            }
            Err(LabError::MissingBinaries(missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package_and_the_install_command() {
        let text = LabError::MissingBinaries(vec![HAPROXY]).to_string();
        assert!(text.contains("`haproxy` (Debian package `haproxy`)"), "{text}");
        assert!(text.ends_with("apt-get install -y haproxy"), "{text}");
        let text = LabError::MissingBinaries(vec![POSTGRES, INITDB]).to_string();
        assert!(text.ends_with("apt-get install -y postgresql"), "{text}");
        let bad = resolve(NATS_SERVER, Some(Path::new("/nonexistent/nats-server"))).expect_err("not executable");
        assert!(bad.to_string().contains("nats-server"), "{bad}");
    }

    #[test]
    fn postgres_programs_name_their_package() {
        let text = LabError::MissingBinaries(vec![INITDB]).to_string();
        assert!(text.contains("`initdb` (Debian package `postgresql`)"), "{text}");
        assert!(find_postgres_program("surely-no-such-program-here").is_none());
    }

    #[test]
    fn finds_programs_outside_path_in_sbin() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-no-such-program-here").is_none());
    }
}
