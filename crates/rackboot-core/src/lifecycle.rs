//! A machine's provisioning lifecycle: where it stands between enrolment and
//! running its OS, which workflow may start from where, and where a workflow
//! leaves it. Pure rules; the fleet service records every change with who,
//! when and why ([`Transition`]).
//!
//! ```text
//! enrolled ─verify→ manageable ─inspect→ (back) ─clean→ available ─deploy→ active
//!                                                         ↑                 │
//!                                                         └──── undeploy ───┘
//! ```
//! Each workflow runs in a transitional state (`verifying`, `inspecting`,
//! `cleaning`, `deploying`, `undeploying`, `rescuing`) and ends in a stable
//! state or in its failed counterpart, which keeps the reason. Rescue boots
//! the agent without touching disks; unrescue returns to the state before it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::MachineId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionState {
    /// Known to rackboot (enrolled or discovered); its BMC not verified yet.
    #[default]
    Enrolled,
    Verifying,
    VerifyFailed,
    /// BMC verified (or the machine has none): rackboot may act on it.
    Manageable,
    Inspecting,
    InspectFailed,
    Cleaning,
    CleanFailed,
    /// Clean and ready for a deploy.
    Available,
    Deploying,
    DeployFailed,
    /// Running its deployed OS.
    Active,
    Undeploying,
    UndeployFailed,
    Rescuing,
    RescueFailed,
    /// Running the agent for an operator, disks untouched.
    Rescue,
}

impl ProvisionState {
    pub const ALL: [ProvisionState; 17] = [
        ProvisionState::Enrolled,
        ProvisionState::Verifying,
        ProvisionState::VerifyFailed,
        ProvisionState::Manageable,
        ProvisionState::Inspecting,
        ProvisionState::InspectFailed,
        ProvisionState::Cleaning,
        ProvisionState::CleanFailed,
        ProvisionState::Available,
        ProvisionState::Deploying,
        ProvisionState::DeployFailed,
        ProvisionState::Active,
        ProvisionState::Undeploying,
        ProvisionState::UndeployFailed,
        ProvisionState::Rescuing,
        ProvisionState::RescueFailed,
        ProvisionState::Rescue,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ProvisionState::Enrolled => "enrolled",
            ProvisionState::Verifying => "verifying",
            ProvisionState::VerifyFailed => "verify_failed",
            ProvisionState::Manageable => "manageable",
            ProvisionState::Inspecting => "inspecting",
            ProvisionState::InspectFailed => "inspect_failed",
            ProvisionState::Cleaning => "cleaning",
            ProvisionState::CleanFailed => "clean_failed",
            ProvisionState::Available => "available",
            ProvisionState::Deploying => "deploying",
            ProvisionState::DeployFailed => "deploy_failed",
            ProvisionState::Active => "active",
            ProvisionState::Undeploying => "undeploying",
            ProvisionState::UndeployFailed => "undeploy_failed",
            ProvisionState::Rescuing => "rescuing",
            ProvisionState::RescueFailed => "rescue_failed",
            ProvisionState::Rescue => "rescue",
        }
    }

    pub fn parse(s: &str) -> Option<ProvisionState> {
        ProvisionState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A workflow is running (the state changes on its own).
    pub fn is_transitional(&self) -> bool {
        matches!(
            self,
            ProvisionState::Verifying
                | ProvisionState::Inspecting
                | ProvisionState::Cleaning
                | ProvisionState::Deploying
                | ProvisionState::Undeploying
                | ProvisionState::Rescuing
        )
    }

    pub fn is_failed(&self) -> bool {
        matches!(
            self,
            ProvisionState::VerifyFailed
                | ProvisionState::InspectFailed
                | ProvisionState::CleanFailed
                | ProvisionState::DeployFailed
                | ProvisionState::UndeployFailed
                | ProvisionState::RescueFailed
        )
    }
}

impl std::fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a workflow does to the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Check the BMC answers: enrolled → manageable.
    Verify,
    /// Collect hardware facts; returns to the state it started from.
    Inspect,
    /// Erase disks: → available.
    Clean,
    /// Write and boot an OS: → active.
    Deploy,
    /// Take an active machine back: → available.
    Undeploy,
    /// Boot the agent for an operator: → rescue.
    Rescue,
    /// Leave rescue: back to the state before it.
    Unrescue,
    /// An operator's own workflow that changes no state (firmware settings,
    /// a burn-in); runs from any stable state and returns to it.
    None,
}

impl Lifecycle {
    pub fn as_str(&self) -> &'static str {
        match self {
            Lifecycle::Verify => "verify",
            Lifecycle::Inspect => "inspect",
            Lifecycle::Clean => "clean",
            Lifecycle::Deploy => "deploy",
            Lifecycle::Undeploy => "undeploy",
            Lifecycle::Rescue => "rescue",
            Lifecycle::Unrescue => "unrescue",
            Lifecycle::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Lifecycle> {
        [
            Lifecycle::Verify,
            Lifecycle::Inspect,
            Lifecycle::Clean,
            Lifecycle::Deploy,
            Lifecycle::Undeploy,
            Lifecycle::Rescue,
            Lifecycle::Unrescue,
            Lifecycle::None,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }

    /// The state a machine is in while this workflow runs, when the workflow
    /// may start from `from`; otherwise why not. `None` workflows keep the
    /// state they start from.
    pub fn begin(&self, from: ProvisionState) -> Result<ProvisionState, String> {
        use ProvisionState as S;
        if from.is_transitional() {
            return Err(format!(
                "the machine is {from}: a workflow is running (wait, or abort it)"
            ));
        }
        let allowed: &[ProvisionState] = match self {
            Lifecycle::Verify => &[S::Enrolled, S::VerifyFailed, S::Manageable],
            Lifecycle::Inspect => &[
                S::Enrolled,
                S::VerifyFailed,
                S::Manageable,
                S::InspectFailed,
                S::Available,
                S::CleanFailed,
            ],
            Lifecycle::Clean => &[
                S::Enrolled,
                S::VerifyFailed,
                S::Manageable,
                S::InspectFailed,
                S::CleanFailed,
                S::Available,
                S::DeployFailed,
            ],
            Lifecycle::Deploy => &[
                S::Enrolled,
                S::VerifyFailed,
                S::Manageable,
                S::InspectFailed,
                S::CleanFailed,
                S::Available,
                S::DeployFailed,
            ],
            Lifecycle::Undeploy => &[S::Active, S::DeployFailed, S::UndeployFailed],
            // Rescue touches no disk: any machine that is not busy may
            // boot the agent for an operator.
            Lifecycle::Rescue => &[
                S::Enrolled,
                S::VerifyFailed,
                S::Manageable,
                S::Available,
                S::Active,
                S::InspectFailed,
                S::CleanFailed,
                S::DeployFailed,
                S::UndeployFailed,
                S::RescueFailed,
            ],
            Lifecycle::Unrescue => &[S::Rescue, S::RescueFailed],
            Lifecycle::None => &[
                S::Enrolled,
                S::Manageable,
                S::Available,
                S::Active,
                S::InspectFailed,
                S::CleanFailed,
                S::DeployFailed,
            ],
        };
        if !allowed.contains(&from) {
            let hint = match (self, from) {
                (Lifecycle::Deploy, S::Active) => " (undeploy it first, or redeploy)",
                (Lifecycle::Unrescue, _) => " (it is not in rescue)",
                _ => "",
            };
            return Err(format!(
                "cannot {} a machine that is {from}{hint}",
                self.as_str()
            ));
        }
        Ok(match self {
            Lifecycle::Verify => S::Verifying,
            Lifecycle::Inspect => S::Inspecting,
            Lifecycle::Clean => S::Cleaning,
            Lifecycle::Deploy => S::Deploying,
            Lifecycle::Undeploy => S::Undeploying,
            Lifecycle::Rescue => S::Rescuing,
            // Unrescue powers the agent off; the machine goes back at once
            // when the workflow ends.
            Lifecycle::Unrescue | Lifecycle::None => from,
        })
    }

    /// Where a workflow that began from `from` leaves the machine.
    /// `return_to` is the stable state before a rescue (for unrescue).
    pub fn end(
        &self,
        from: ProvisionState,
        succeeded: bool,
        return_to: Option<ProvisionState>,
    ) -> ProvisionState {
        use ProvisionState as S;
        match (self, succeeded) {
            (Lifecycle::Verify, true) => S::Manageable,
            (Lifecycle::Verify, false) => S::VerifyFailed,
            // Inspection refreshes facts and leaves the machine where it was
            // (an enrolled machine's BMC answered on the way: manageable).
            (Lifecycle::Inspect, true) => match from {
                S::Available => S::Available,
                _ => S::Manageable,
            },
            (Lifecycle::Inspect, false) => S::InspectFailed,
            (Lifecycle::Clean, true) => S::Available,
            (Lifecycle::Clean, false) => S::CleanFailed,
            (Lifecycle::Deploy, true) => S::Active,
            (Lifecycle::Deploy, false) => S::DeployFailed,
            (Lifecycle::Undeploy, true) => S::Available,
            (Lifecycle::Undeploy, false) => S::UndeployFailed,
            (Lifecycle::Rescue, true) => S::Rescue,
            (Lifecycle::Rescue, false) => S::RescueFailed,
            (Lifecycle::Unrescue, true) => return_to.unwrap_or(S::Manageable),
            (Lifecycle::Unrescue, false) => S::RescueFailed,
            (Lifecycle::None, _) => from,
        }
    }
}

/// Operators set this to keep rackboot's hands off a machine: no workflow
/// starts or advances and power is not polled until it is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Maintenance {
    pub reason: String,
    pub by: String,
    pub since: DateTime<Utc>,
}

/// One recorded change of a machine's lifecycle state or maintenance flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    #[schema(value_type = String, format = Uuid)]
    pub machine: MachineId,
    pub at: DateTime<Utc>,
    pub from: ProvisionState,
    pub to: ProvisionState,
    /// Who asked: `api`, `api:<token name>`, `engine`, `agent`.
    pub by: String,
    /// Why, in words: "deploy of ubuntu-24.04 requested", "step erase failed: ...".
    pub reason: String,
    /// The workflow that caused it, if one did.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workflow: Option<uuid::Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProvisionState as S;

    #[test]
    fn names_round_trip() {
        for s in ProvisionState::ALL {
            assert_eq!(ProvisionState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn the_main_path() {
        let mut state = S::Enrolled;
        for (lc, during, after) in [
            (Lifecycle::Verify, S::Verifying, S::Manageable),
            (Lifecycle::Inspect, S::Inspecting, S::Manageable),
            (Lifecycle::Clean, S::Cleaning, S::Available),
            (Lifecycle::Deploy, S::Deploying, S::Active),
            (Lifecycle::Undeploy, S::Undeploying, S::Available),
        ] {
            assert_eq!(lc.begin(state), Ok(during), "{lc:?} from {state}");
            state = lc.end(state, true, None);
            assert_eq!(state, after);
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = Lifecycle::Deploy.begin(S::Active).unwrap_err();
        assert!(e.contains("undeploy it first"), "{e}");
        let e = Lifecycle::Clean.begin(S::Deploying).unwrap_err();
        assert!(e.contains("a workflow is running"), "{e}");
        let e = Lifecycle::Unrescue.begin(S::Available).unwrap_err();
        assert!(e.contains("not in rescue"), "{e}");
    }

    #[test]
    fn failures_keep_a_failed_state_and_rescue_returns() {
        assert_eq!(
            Lifecycle::Deploy.end(S::Available, false, None),
            S::DeployFailed
        );
        assert!(S::DeployFailed.is_failed());
        assert_eq!(Lifecycle::Deploy.begin(S::DeployFailed), Ok(S::Deploying));
        assert_eq!(Lifecycle::Rescue.begin(S::Active), Ok(S::Rescuing));
        assert_eq!(
            Lifecycle::Unrescue.end(S::Rescue, true, Some(S::Active)),
            S::Active
        );
        assert_eq!(
            Lifecycle::Inspect.end(S::Available, true, None),
            S::Available
        );
        assert_eq!(Lifecycle::None.begin(S::Active), Ok(S::Active));
    }
}
