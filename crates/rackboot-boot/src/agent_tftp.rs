//! The agent's boot through GRUB (Secure Boot machines: shim → signed GRUB;
//! arm64 machines). GRUB fetches its per-machine config over TFTP, so the
//! agent's per-boot token is minted while TFTP generates that file, under
//! the rules boot HTTP applies to an iPXE script
//! ([`BootService::prepare_agent_boot`]: bound to the machine's lease, or to
//! the address that fetched the config; replaced by the next boot's).
//!
//! TFTP generates files synchronously on its transfer threads, and minting
//! stores the token: the transfer thread hands the minting to the service's
//! runtime and waits for it, at most [`MINT_TIMEOUT`]. GRUB retransmits its
//! read request after 400 ms; a retransmission that arrives while the first
//! request is still minting, or just after, must get the same config, else
//! the second token replaces the one GRUB boots with. So one machine's
//! config is minted once and reused for [`SAME_BOOT_WINDOW`] when the same
//! address asks again.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rackboot_core::{MacAddr, Machine};

use crate::render::{AgentPlan, BootPlan};
use crate::service::{BootService, lock};

/// How long a TFTP transfer thread waits for a token to be stored.
const MINT_TIMEOUT: Duration = Duration::from_secs(5);

/// A GRUB config asked for again from the same address within this time is
/// the same boot's (GRUB retransmitting): it gets the same token. Shorter
/// than any reboot through firmware, shim and GRUB.
const SAME_BOOT_WINDOW: Duration = Duration::from_secs(10);

/// An agent boot rendered into a GRUB config.
#[derive(Debug, Clone)]
pub(crate) struct RecentAgentBoot {
    at: Instant,
    peer: IpAddr,
    plan: BootPlan,
}

impl BootService {
    /// [`BootService::prepare_agent_boot`] for a file generated outside the
    /// service's runtime (a TFTP transfer thread): the minting runs on the
    /// runtime the service was built on and this thread waits for it. Must
    /// not be called from a thread of a current-thread runtime that is the
    /// service's own (the minting could never run): it would wait
    /// [`MINT_TIMEOUT`] and answer with an error config.
    pub(crate) fn prepare_agent_boot_blocking(
        &self,
        machine: &Machine,
        mac: MacAddr,
        plan: BootPlan,
        peer: IpAddr,
        base_url: &str,
    ) -> BootPlan {
        let error = |message: String| BootPlan::Error { message };
        // Held while minting: a retransmitted request waits for the first
        // one's token instead of minting its own.
        let mut recent = lock(&self.recent_agent_boots);
        recent.retain(|_, r| r.at.elapsed() < SAME_BOOT_WINDOW);
        if let Some(r) = recent.get(&mac)
            && r.peer == peer
        {
            tracing::debug!(%mac, %peer, "GRUB asked again for its agent config: same token");
            return r.plan.clone();
        }
        let (Some(runtime), Some(service)) = (&self.runtime, self.me.upgrade()) else {
            return error("this server cannot mint agent tokens for GRUB (no runtime)".into());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let machine = machine.clone();
        let base_url = base_url.to_string();
        runtime.spawn(async move {
            let plan = service
                .prepare_agent_boot(&machine, mac, plan, Some(peer), &base_url)
                .await;
            let _ = tx.send(plan);
        });
        let plan = match rx.recv_timeout(MINT_TIMEOUT) {
            Ok(plan) => plan,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(%mac, "agent token for a GRUB config not stored in time");
                return error(format!(
                    "the agent token was not stored within {} s; the next boot tries again",
                    MINT_TIMEOUT.as_secs()
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return error("minting the agent token failed".into());
            }
        };
        if matches!(&plan, BootPlan::Agent(AgentPlan { boot: Some(_), .. })) {
            recent.insert(
                mac,
                RecentAgentBoot {
                    at: Instant::now(),
                    peer,
                    plan: plan.clone(),
                },
            );
        }
        plan
    }
}
