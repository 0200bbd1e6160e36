//! Applies the rules of [`crate::access`] to requests: reads (and on the
//! first fetch writes) the install's access record through the fleet, logs
//! and counts every refusal. Boot HTTP and TFTP call it before they render
//! anything that carries an install's secrets.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use metrics::counter;
use rackboot_core::{InstallRequest, MacAddr, Machine, MachineId};
use rackboot_store::InstallAccessAmend;

use crate::access::{Accepted, AccessRefusal, Callback, Fetch, check_callback, check_fetch};
use crate::http::Refusal;
use crate::service::BootService;

/// How long a TFTP transfer thread waits for an install's access record
/// from the store (GRUB and pxelinux retransmit their requests after a
/// second or so; the record is one indexed row).
const STORE_WAIT: Duration = Duration::from_secs(2);

/// What asked: a label of the refusal counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A boot script or config over HTTP.
    Script,
    /// A GRUB or pxelinux config over TFTP.
    TftpConfig,
    /// An install file.
    File,
    Callback(Callback),
}

impl Asked {
    fn as_str(&self) -> &'static str {
        match self {
            Asked::Script => "script",
            Asked::TftpConfig => "tftp_config",
            Asked::File => "file",
            Asked::Callback(c) => c.as_str(),
        }
    }
}

impl BootService {
    fn files_window(&self) -> Duration {
        Duration::from_secs(self.config().install_files_window_secs)
    }

    /// rackboot's DHCP lease of one of `machine`'s MACs (`mac` first, the
    /// one it boots from when known).
    fn machine_lease(&self, machine: Option<&Machine>, mac: Option<MacAddr>) -> Option<IpAddr> {
        mac.into_iter()
            .chain(machine.into_iter().flat_map(|m| m.macs.iter().copied()))
            .find_map(|m| self.lease_of(m))
            .map(IpAddr::V4)
    }

    /// Whether rackboot's own DHCP serves `peer`'s subnet (then a machine
    /// there without a lease has not booted yet, whoever asks for it).
    fn dhcp_serves(&self, peer: IpAddr) -> bool {
        match crate::access::canonical_ip(peer) {
            IpAddr::V4(v4) => self.config().served_subnets.iter().any(|s| s.contains(v4)),
            IpAddr::V6(_) => false,
        }
    }

    /// Logs and counts a refusal of `peer`, and records it on the timeline
    /// of the install's machine (`machine`, else the pending install's;
    /// bounded, see [`rackboot_fleet::Fleet::record_refusal`]); the response says why,
    /// never more.
    pub(crate) fn refused(
        &self,
        asked: Asked,
        refusal: &AccessRefusal,
        machine: Option<MachineId>,
        peer: Option<IpAddr>,
    ) -> Refusal {
        tracing::warn!(
            asked = asked.as_str(),
            reason = refusal.reason(),
            "install access refused: {refusal}"
        );
        counter!(
            "rackboot_install_access_refused_total",
            "asked" => asked.as_str(),
            "reason" => refusal.reason()
        )
        .increment(1);
        let snapshot = self.inventory().snapshot();
        let machine =
            machine.or_else(|| snapshot.installs.get(&refusal.install()).map(|i| i.machine));
        if let Some(machine) = machine.and_then(|id| snapshot.machine_by_id(id)) {
            self.fleet().record_refusal(
                machine,
                asked.as_str(),
                refusal.reason(),
                peer,
                &refusal.to_string(),
            );
        }
        Refusal(refusal.status(), format!("{refusal}\n"))
    }

    /// Whether `peer` may fetch the script or a file of `installs` (the
    /// pending installs of `machine`, booting from `mac` when known); the
    /// first fetch binds each install to its address, in the store.
    pub(crate) async fn admit_install_fetch(
        &self,
        asked: Asked,
        installs: &[&InstallRequest],
        machine: Option<&Machine>,
        mac: Option<MacAddr>,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        for install in installs {
            let Some(peer) = peer else {
                return Err(self.refused(
                    asked,
                    &AccessRefusal::NoPeer {
                        install: install.id,
                    },
                    Some(install.machine),
                    None,
                ));
            };
            let record = self
                .fleet()
                .install_access(install.id)
                .await
                .map_err(|e| unavailable(install.id, e))?;
            let decide = |record: Option<&rackboot_store::InstallAccess>| {
                check_fetch(
                    install.id,
                    record,
                    self.machine_lease(machine, mac),
                    self.dhcp_serves(peer),
                    peer,
                    Utc::now(),
                    self.files_window(),
                )
            };
            match decide(record.as_ref()) {
                Ok(Fetch::Serve) => {}
                Ok(Fetch::Bind(ip)) => {
                    let in_force = self
                        .fleet()
                        .bind_install_access(install.id, ip, Utc::now())
                        .await
                        .map_err(|e| unavailable(install.id, e))?;
                    if in_force.bound_ip != ip {
                        // Another request (or server) bound it first.
                        if let Err(r) = decide(Some(&in_force)) {
                            return Err(self.refused(asked, &r, Some(install.machine), Some(peer)));
                        }
                    } else {
                        tracing::info!(
                            install = %install.id,
                            "install {} bound to {ip}: its script and files are served there only",
                            install.id
                        );
                    }
                }
                Err(r) => return Err(self.refused(asked, &r, Some(install.machine), Some(peer))),
            }
        }
        Ok(())
    }

    /// [`BootService::admit_install_fetch`] for a config generated over
    /// TFTP, on a thread outside the service's runtime (TFTP generates files
    /// synchronously): the check runs on the runtime, against the store as
    /// boot HTTP's does (another server of a cluster may have bound the
    /// install, or closed its files), and this thread waits for it, at most
    /// [`STORE_WAIT`]. Without a runtime to wait on (or past the wait) it
    /// decides from the records this server has seen. The error is the
    /// refusal's sentence.
    pub(crate) fn admit_install_fetch_now(
        &self,
        installs: &[&InstallRequest],
        machine: &Machine,
        mac: MacAddr,
        peer: IpAddr,
    ) -> Result<(), String> {
        if let (Some(runtime), Some(service)) = (self.runtime_to_wait_on(), self.me.upgrade()) {
            let (tx, rx) = std::sync::mpsc::channel();
            let owned: Vec<InstallRequest> = installs.iter().map(|i| (*i).clone()).collect();
            let machine = machine.clone();
            runtime.spawn(async move {
                let installs: Vec<&InstallRequest> = owned.iter().collect();
                let decided = service
                    .admit_install_fetch(
                        Asked::TftpConfig,
                        &installs,
                        Some(&machine),
                        Some(mac),
                        Some(peer),
                    )
                    .await;
                let _ = tx.send(decided);
            });
            match rx.recv_timeout(STORE_WAIT) {
                Ok(decided) => {
                    return decided.map_err(|Refusal(_, why)| why.trim_end().to_string());
                }
                Err(_) => tracing::warn!(
                    %mac,
                    "the install's access record was not read within {} s: deciding from this server's cache",
                    STORE_WAIT.as_secs()
                ),
            }
        }
        self.admit_install_fetch_cached(installs, machine, mac, peer)
            .map_err(|r| r.to_string())
    }

    /// The service's runtime, unless this thread is the only one that runs
    /// it (a current-thread runtime's: waiting here for a task on it would
    /// never end).
    fn runtime_to_wait_on(&self) -> Option<&tokio::runtime::Handle> {
        let runtime = self.runtime.as_ref()?;
        match tokio::runtime::Handle::try_current() {
            Ok(current)
                if current.id() == runtime.id()
                    && current.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread =>
            {
                None
            }
            _ => Some(runtime),
        }
    }

    /// [`BootService::admit_install_fetch_now`] from the records this
    /// server has seen; a first binding is written in the background.
    fn admit_install_fetch_cached(
        &self,
        installs: &[&InstallRequest],
        machine: &Machine,
        mac: MacAddr,
        peer: IpAddr,
    ) -> Result<(), AccessRefusal> {
        for install in installs {
            let record = self.fleet().install_access_cached(install.id);
            let decision = check_fetch(
                install.id,
                record.as_ref(),
                self.machine_lease(Some(machine), Some(mac)),
                self.dhcp_serves(peer),
                peer,
                Utc::now(),
                self.files_window(),
            );
            match decision {
                Ok(Fetch::Serve) => {}
                Ok(Fetch::Bind(ip)) => {
                    let now = Utc::now();
                    self.fleet()
                        .bind_install_access_provisionally(install.id, ip, now);
                    let fleet = self.fleet().clone();
                    let id = install.id;
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            runtime.spawn(async move {
                                if let Err(e) = fleet.bind_install_access(id, ip, now).await {
                                    tracing::warn!(install = %id, error = %e, "recording the install's address failed");
                                }
                            });
                        }
                        Err(_) => tracing::warn!(
                            install = %id,
                            "no runtime: install {id}'s binding to {ip} is kept in memory only"
                        ),
                    }
                }
                Err(r) => {
                    self.refused(Asked::TftpConfig, &r, Some(install.machine), Some(peer));
                    return Err(r);
                }
            }
        }
        Ok(())
    }

    /// Whether `peer` may call `kind` of `install` (whose token the caller
    /// has checked). `started` closes the install's files; the installed
    /// system's first completion from a new address records it.
    pub(crate) async fn admit_install_callback(
        &self,
        kind: Callback,
        install: &InstallRequest,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let asked = Asked::Callback(kind);
        let Some(peer) = peer else {
            return Err(self.refused(
                asked,
                &AccessRefusal::NoPeer {
                    install: install.id,
                },
                Some(install.machine),
                None,
            ));
        };
        let snapshot = self.inventory().snapshot();
        let machine = snapshot
            .machines
            .iter()
            .find(|m| m.id == install.machine)
            .map(|m| m.as_ref());
        let record = self
            .fleet()
            .install_access(install.id)
            .await
            .map_err(|e| unavailable(install.id, e))?;
        let lease = self.machine_lease(machine, None);
        let accepted = check_callback(
            kind,
            install.id,
            install.state,
            lease,
            record.as_ref(),
            peer,
        )
        .map_err(|r| self.refused(asked, &r, Some(install.machine), Some(peer)))?;
        let amend = match (kind, accepted) {
            (_, Accepted::RecordDoneAddress(ip)) => InstallAccessAmend {
                closed_at: None,
                done_ip: Some(ip),
            },
            (Callback::Started, Accepted::Plain) => InstallAccessAmend {
                closed_at: Some(Utc::now()),
                done_ip: None,
            },
            _ => return Ok(()),
        };
        let amended = self
            .fleet()
            .amend_install_access(install.id, amend)
            .await
            .map_err(|e| unavailable(install.id, e))?;
        if let Accepted::RecordDoneAddress(ip) = accepted {
            // Two first reports from two addresses: the one recorded wins.
            let kept = amended.and_then(|a| a.done_ip);
            if kept != Some(ip) {
                return Err(self.refused(
                    asked,
                    &AccessRefusal::WrongAddress {
                        install: install.id,
                        allowed: kept.unwrap_or(ip),
                        peer: ip,
                    },
                    Some(install.machine),
                    Some(peer),
                ));
            }
        }
        Ok(())
    }
}

fn unavailable(install: uuid::Uuid, e: rackboot_fleet::FleetError) -> Refusal {
    tracing::warn!(install = %install, error = %e, "reading the install's access record failed");
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("install {install}: {e}\n"),
    )
}
