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
pub fn run(ctx: &StepContext, action: &Action) -> Result<StepOutput, StepError> {
    ctx.check_cancel()?;
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
