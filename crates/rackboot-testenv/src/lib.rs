//! Which tests may run here. One scheme for the whole workspace:
//!
//! - A plain `cargo test` (any user, nothing installed beyond the build)
//!   runs every test that needs only the build and loopback.
//! - Tests that need root: network namespaces, veth/tap/bridges, QEMU
//!   machines, block devices, a PostgreSQL server started for them, run
//!   only when `RACKBOOT_TEST_PRIV=1` is set; `scripts/test-all` (as root)
//!   sets it. Without it they print why they skip and pass.
//! - Tests that need an outside program (atftp, kea, ipmi_sim, xorriso...)
//!   run when it is on `PATH` and skip with the reason when it is not;
//!   under `RACKBOOT_TEST_PRIV=1` a missing program is a failure instead
//!   (`scripts/install-deps` installs them all), so the full suite never
//!   skips silently.
//!
//! A test asks at its top and returns when told no:
//!
//! ```no_run
//! #[test]
//! fn boots_a_vm() {
//!     if !rackboot_testenv::privileged("network namespaces and QEMU") {
//!         return;
//!     }
//!     // ...
//! }
//! ```
//!
//! The reason is written to the test process's stderr directly (not through
//! the test harness's capture), so a plain `cargo test` shows each skip.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The variable that enables privileged tests.
pub const PRIV_VAR: &str = "RACKBOOT_TEST_PRIV";

/// True when `RACKBOOT_TEST_PRIV` is set to `1` (the full suite).
pub fn privileged_enabled() -> bool {
    std::env::var(PRIV_VAR).is_ok_and(|v| v.trim() == "1")
}

fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_string()
}

/// Writes one "skipped" line past the harness's output capture.
pub fn skip(reason: &str) {
    let line = format!("test {} skipped: {reason}\n", test_name());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// May a test that needs `what` (root, namespaces, QEMU...) run? Prints why
/// not when it may not.
pub fn privileged(what: &str) -> bool {
    if privileged_enabled() {
        return true;
    }
    skip(&format!(
        "needs {what}: run as root with {PRIV_VAR}=1 (sudo scripts/test-all)"
    ));
    false
}

/// The Python virtual environment scripts/install-deps makes for the tools
/// pip provides (pykickstart, openapi-spec-validator, sushy-tools...).
pub const VENV_BIN: &str = "/opt/rackboot-venv/bin";

/// The full path of `program` if it is on `PATH` or in [`VENV_BIN`] (or is
/// a path that exists).
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from(VENV_BIN)])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// May a test that runs `programs` run? Yes when all are installed; when
/// some are missing: no (with the reason) on a plain `cargo test`, a panic
/// naming them under `RACKBOOT_TEST_PRIV=1`.
pub fn programs(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !privileged_enabled(),
        "{} not installed (scripts/install-deps installs them)",
        missing.join(", ")
    );
    skip(&format!(
        "needs {} (scripts/install-deps installs them)",
        missing.join(", ")
    ));
    false
}

/// Both: a privileged test that also runs `programs`.
pub fn privileged_with(what: &str, programs: &[&str]) -> bool {
    privileged(what) && self::programs(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("rackboot-no-such-program").is_none());
        assert!(find_program("/nonexistent/sh").is_none());
    }
}
