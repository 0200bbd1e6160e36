//! The lab state file (e.g. STATE_DIR/lab.json): which namespace and processes a lab owns, so
//! `rackboot lab down` in another process can remove a lab that `rackboot lab up` left running.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::chassis::kill_recorded_qemu;
use crate::netns::destroy_netns;
use crate::process::stop_recorded;
use crate::{LabError, Result, io_err};

/// What a running lab owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// The network namespace name (under /run/netns).
    pub netns: String,
    /// The lab directory (serial logs, disks, UEFI variable stores).
    pub dir: Option<PathBuf>,
    /// Processes started in the lab that were still running at the last update.
    pub processes: Vec<ProcessRecord>,
    /// The lab's machines (written when the lab is created).
    #[serde(default)]
    pub machines: Vec<MachineRecord>,
}

/// One machine of the lab, as `rackboot lab` needs it to enroll the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// `m1`, `m2`, ...
    pub name: String,
    /// `52:54:00:00:00:01` form.
    pub mac: String,
    /// The machine's emulated BMC (`ipmi://admin:password@10.77.0.1:6231`), in a BMC lab.
    #[serde(default)]
    pub bmc_url: Option<String>,
    /// Where the machine's BMC side (chassis program, libvirt) records the PID of the QEMU it
    /// started (BMC labs): [`down`] stops that QEMU too.
    #[serde(default)]
    pub qemu_pid_file: Option<PathBuf>,
    /// A command-line argument that identifies that QEMU (guards against a reused PID); the pid
    /// file path when absent.
    #[serde(default)]
    pub qemu_tag: Option<String>,
}

impl MachineRecord {
    /// Stops the machine's BMC-started QEMU, if it runs; returns its PID.
    pub(crate) fn kill_qemu(&self) -> Option<u32> {
        let pid_file = self.qemu_pid_file.as_deref()?;
        let tag = self
            .qemu_tag
            .clone()
            .unwrap_or_else(|| pid_file.display().to_string());
        kill_recorded_qemu(pid_file, &tag)
    }
}

/// One process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: u32,
    /// /proc/PID/stat start time; a PID whose start time differs was reused and is left alone.
    pub start_time: u64,
}

/// What [`down`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// The namespace that was deleted, if it still existed.
    pub netns_deleted: Option<String>,
    /// PIDs that were still running and were stopped.
    pub stopped: Vec<u32>,
}

pub(crate) type SharedState = Arc<Mutex<StateFile>>;

/// The state file on disk plus its in-memory copy; rewritten (atomically) on every change.
#[derive(Debug)]
pub(crate) struct StateFile {
    path: PathBuf,
    state: LabState,
}

impl StateFile {
    pub(crate) fn create(path: &Path, state: LabState) -> Result<SharedState> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("create {}", parent.display())))?;
        }
        let file = StateFile {
            path: path.to_path_buf(),
            state,
        };
        file.save()?;
        Ok(Arc::new(Mutex::new(file)))
    }

    pub(crate) fn add(&mut self, record: ProcessRecord) -> Result<()> {
        self.state.processes.push(record);
        self.save()
    }

    pub(crate) fn remove(&mut self, pid: u32) -> Result<()> {
        let before = self.state.processes.len();
        self.state.processes.retain(|p| p.pid != pid);
        if self.state.processes.len() != before {
            self.save()?;
        }
        Ok(())
    }

    pub(crate) fn delete(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io {
                what: format!("remove {}", self.path.display()),
                source: err,
            }),
            _ => Ok(()),
        }
    }

    fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| LabError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(io_err(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(io_err(format!("rename {} into place", tmp.display())))
    }
}

/// Reads a lab state file.
pub fn read_state(path: &Path) -> Result<LabState> {
    let bytes = std::fs::read(path).map_err(io_err(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| LabError::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Removes the lab recorded in `state_file`: stops its recorded processes (only while their PID
/// still has the recorded start time), stops whatever else still runs inside its namespace, deletes
/// the namespace and the state file. Idempotent: a missing state file or namespace is not an error.
pub fn down(state_file: &Path) -> Result<DownReport> {
    if !state_file.exists() {
        return Ok(DownReport::default());
    }
    let state = read_state(state_file)?;
    let mut report = DownReport::default();
    for record in &state.processes {
        if stop_recorded(record.pid, record.start_time) {
            report.stopped.push(record.pid);
        }
    }
    // VMs started by BMC chassis programs or libvirt run in their own sessions: not in any
    // recorded process group, so stop them by their pid files.
    for machine in &state.machines {
        if let Some(pid) = machine.kill_qemu() {
            report.stopped.push(pid);
        }
    }
    if !state.netns.is_empty() {
        let (deleted, stopped) = destroy_netns(&state.netns)?;
        report.stopped.extend(stopped);
        if deleted {
            report.netns_deleted = Some(state.netns.clone());
        }
    }
    match std::fs::remove_file(state_file) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(LabError::Io {
                what: format!("remove {}", state_file.display()),
                source: err,
            });
        }
        _ => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_and_tracks_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/lab.json");
        let shared = StateFile::create(
            &path,
            LabState {
                netns: "rbl-test".into(),
                dir: Some(dir.path().to_path_buf()),
                processes: vec![],
                machines: vec![],
            },
        )
        .unwrap();
        let record = ProcessRecord {
            name: "qemu-m1".into(),
            pid: 42,
            start_time: 7,
        };
        shared.lock().unwrap().add(record.clone()).unwrap();
        assert_eq!(read_state(&path).unwrap().processes, vec![record]);
        shared.lock().unwrap().remove(42).unwrap();
        assert!(read_state(&path).unwrap().processes.is_empty());
    }

    #[test]
    fn state_files_without_machines_still_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.json");
        std::fs::write(&path, r#"{"netns":"rbl-1-0","dir":null,"processes":[]}"#).unwrap();
        assert!(read_state(&path).unwrap().machines.is_empty());
        let record = r#"{"netns":"x","dir":null,"processes":[],
            "machines":[{"name":"m1","mac":"52:54:00:00:00:01"}]}"#;
        std::fs::write(&path, record).unwrap();
        let machine = &read_state(&path).unwrap().machines[0];
        assert_eq!(
            (machine.bmc_url.as_deref(), machine.kill_qemu()),
            (None, None)
        );
    }

    #[test]
    fn down_without_state_file_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let report = down(&dir.path().join("lab.json")).unwrap();
        assert_eq!(report, DownReport::default());
    }

    #[test]
    fn down_rejects_a_malformed_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(down(&path), Err(LabError::State { .. })));
        // Left in place for a human to look at.
        assert!(path.exists());
    }

    #[test]
    fn down_skips_a_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.json");
        // Our own PID with a start time that cannot be ours: must not be signalled.
        let state = LabState {
            netns: String::new(),
            dir: None,
            processes: vec![ProcessRecord {
                name: "reused".into(),
                pid: std::process::id(),
                start_time: u64::MAX,
            }],
            machines: vec![],
        };
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let report = down(&path).unwrap();
        assert!(report.stopped.is_empty());
        assert!(!path.exists());
    }
}
