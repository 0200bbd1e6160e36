//! Running the RAM-disk's tools (mdadm, nvme, hdparm, mkdosfs) with their
//! errors turned into step errors that say what ran and what it printed.

use std::path::PathBuf;
use std::process::Command;

use rackboot_agent_proto::error_codes;

use crate::alog;
use crate::context::StepError;

/// The first of `names` found on `PATH` (`/sbin:/usr/sbin:/bin:/usr/bin` when unset).
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/sbin:/usr/sbin:/bin:/usr/bin".into());
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs a program to its end; `Ok(stdout)` on exit status 0, else a `tool`
/// error naming the command line and quoting its last lines of stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, StepError> {
    let command_line = format!("{program} {}", args.join(" "));
    alog!("running {command_line}");
    let out = Command::new(program).args(args).output().map_err(|e| {
        StepError::new(
            error_codes::TOOL,
            format!("{command_line}: cannot run {program}: {e}"),
            false,
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = said[said.len().saturating_sub(3)..].join(" | ");
    Err(StepError::new(
        error_codes::TOOL,
        format!("{command_line}: {}: {tail}", out.status),
        false,
    ))
}
