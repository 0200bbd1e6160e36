//! `rackboot-agent`: the program that runs in the deploy RAM-disk.
//!
//! It registers with the rackboot server, heartbeats, and runs the steps the
//! server sends (inspect, erase, build RAID, write an image, configure,
//! reboot) on a worker thread, posting progress and results. Blocking I/O on
//! threads, no async runtime; links no server crate (only the wire contract,
//! `rackboot-agent-proto`).
//!
//! Module map:
//! - [`agent`]: the main loop (hello, heartbeats, commands, results).
//! - [`client`]: the typed agent endpoints over [`http`], a minimal HTTP/1.1 client.
//! - [`steps`]: one module per action; [`context`] is what they run with.
//! - [`sysfs`], [`blockdev`], [`disk`], [`parttable`], [`fsprobe`], [`tools`]:
//!   the machine, read and written.
//! - [`logbuf`]: the console log and its in-memory tail.

pub mod logbuf;

pub mod agent;
pub mod blockdev;
pub mod client;
pub mod context;
pub mod disk;
pub mod fsprobe;
pub mod http;
pub mod parttable;
pub mod random;
pub mod steps;
pub mod sysfs;
pub mod tools;
