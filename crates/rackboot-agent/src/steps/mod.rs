//! One module per [`Action`]; [`run`] dispatches.

pub mod configure;
pub mod erase;
pub mod image;
pub mod inspect;
pub mod lldp;
pub mod power;
pub mod raid;

use rackboot_agent_proto::{Action, StepOutput};

use crate::context::{StepContext, StepError};

/// Runs one action to its end (or to its first error or the cancel flag).
/// Written by the RAM-disk's /init once the md and file system modules are
/// loaded (they load in the background while DHCP runs, to start the agent
/// sooner).
pub const MODULES_LOADED: &str = "/run/rackboot/modules-loaded";

/// Longest wait for [`MODULES_LOADED`]: loading takes seconds under emulation.
const MODULES_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until the RAM-disk has loaded the RAID and file system modules.
/// Outside the RAM-disk (no /run/rackboot) there is nothing to wait for.
fn wait_for_modules(ctx: &StepContext) -> Result<(), StepError> {
    let marker = std::path::Path::new(MODULES_LOADED);
    if marker.exists() || !marker.parent().is_some_and(|d| d.is_dir()) {
        return Ok(());
    }
    crate::alog!("waiting for the RAM-disk to load the RAID and file system modules");
    let start = std::time::Instant::now();
    while !marker.exists() {
        ctx.check_cancel()?;
        if start.elapsed() > MODULES_WAIT {
            return Err(StepError::new(
                rackboot_agent_proto::error_codes::TOOL,
                format!(
                    "the RAM-disk did not finish loading modules in {} s ({MODULES_LOADED} missing)",
                    MODULES_WAIT.as_secs()
                ),
                true,
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

pub fn run(ctx: &StepContext, action: &Action) -> Result<StepOutput, StepError> {
    ctx.check_cancel()?;
    if matches!(
        action,
        Action::Erase(_) | Action::BuildRaid(_) | Action::Configure(_)
    ) && ctx.env.sim.is_none()
    {
        wait_for_modules(ctx)?;
    }
    match action {
        Action::Inspect { lldp_wait_secs } => {
            inspect::run(ctx, *lldp_wait_secs).map(|f| StepOutput::Facts(Box::new(f)))
        }
        Action::Erase(a) => erase::run(ctx, a).map(|disks| StepOutput::Erased { disks }),
        Action::BuildRaid(a) => raid::run(ctx, a).map(StepOutput::RaidBuilt),
        Action::WriteImage(a) => image::run(ctx, a).map(StepOutput::ImageWritten),
        Action::Configure(a) => configure::run(ctx, a),
        // The power action itself happens after the result is posted.
        Action::Reboot | Action::PowerOff => Ok(StepOutput::Accepted),
    }
}
