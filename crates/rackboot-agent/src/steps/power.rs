//! `reboot` / `power_off`: the step itself only reports `Accepted`; the agent
//! calls [`perform`] once that report is posted.

use std::time::Duration;

use crate::alog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    PowerOff,
}

impl PowerAction {
    /// Exit status of a simulated agent, for the simulator to act on.
    pub fn sim_exit_code(self) -> i32 {
        match self {
            PowerAction::Reboot => 10,
            PowerAction::PowerOff => 11,
        }
    }
}

/// Syncs, waits a moment (the result's TCP exchange has finished; the
/// console shows the last lines), then reboots or powers off the machine.
/// Returns only when the kernel refused.
pub fn perform(action: PowerAction) -> std::io::Error {
    alog!("{action:?} in 2 s");
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::sync() };
    let cmd = match action {
        PowerAction::Reboot => libc::RB_AUTOBOOT,
        PowerAction::PowerOff => libc::RB_POWER_OFF,
    };
    unsafe { libc::reboot(cmd) };
    let e = std::io::Error::last_os_error();
    alog!("{action:?} failed: {e}");
    e
}
