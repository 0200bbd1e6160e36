//! Load generators for `bench/run`.
//!
//! `tftp_get` is a lean TFTP client (RFC 1350, 2347, 2348, 7440): it reads a
//! whole window with one `recvmmsg` call and keeps the file in memory, so a
//! benchmark of TFTP servers measures the servers. The atftp client spends more
//! CPU per 40 MiB than a fast server does (measured: 0.17 s vs 0.15 s), which
//! caps any windowed figure taken with it.

//!
//! `fleet` is the pure half of `fleet-sim` (N simulated machines deploying
//! against one `rackboot serve`): boot script and seed parsing, latency
//! percentiles, and the audit that counts lost steps.

//!
//! `inband` is the pure half of `deploy-bench` (image write against `dd`,
//! RAM-disk boot and deploy times under QEMU): the RAM-disk add-on that
//! times `wget | dd`, its console line, the bench's workflow definition.

//!
//! `storm` is the pure half of `boot-storm` (N machines network-booting at
//! once: DHCP as the PXE ROM, TFTP of iPXE, DHCP as iPXE, script, kernel and
//! initrd over HTTP): the firmware's DHCP messages, the frames and netlink
//! requests it needs, script parsing and the per-stage report.

pub mod fleet;
pub mod inband;
pub mod procstat;
pub mod storm;
pub mod tftp_get;
