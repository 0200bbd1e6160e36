//! Workflows: a machine's inspection, cleaning, deploy or an operator's own
//! procedure, as a DAG of steps with per-step timeouts and retry policies.
//! Stored whole (one row per workflow) so that a restarted server resumes
//! every workflow where it was. The rules that run them live in
//! `rackboot-engine`; the step library in `rackboot-steps`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Lifecycle, MachineId, ProvisionState};

pub type WorkflowId = uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workflow {
    #[schema(value_type = String, format = Uuid)]
    pub id: WorkflowId,
    #[schema(value_type = String, format = Uuid)]
    pub machine: MachineId,
    /// Its definition's name: `deploy`, `inspect`, `clean`, `undeploy`,
    /// `rescue`, `unrescue`, or an operator's own.
    pub name: String,
    pub lifecycle: Lifecycle,
    pub state: WorkflowState,
    /// The machine's state when the workflow was requested.
    pub started_from: ProvisionState,
    /// What the request asked for (image, SSH keys, network, RAID, erase
    /// policy), checked when it was made; steps read their inputs from here.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// In definition order; `after` gives the DAG.
    pub steps: Vec<StepRun>,
    /// Who requested it: `api`, `api:<token name>`.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// When it left the queue.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Why it failed or was aborted.
    pub error: Option<String>,
    /// Requests made together (`rackboot deploy --parallel N`) share a batch
    /// that runs at most `limit` of its workflows at once.
    #[serde(default)]
    pub batch: Option<Batch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Batch {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Waiting for a concurrency slot.
    Queued,
    Running,
    Succeeded,
    /// A step failed after its retries; `rackboot workflow retry` resumes it
    /// from that step.
    Failed,
    /// Stopped by an operator.
    Aborted,
}

impl WorkflowState {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkflowState::Queued => "queued",
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<WorkflowState> {
        [
            WorkflowState::Queued,
            WorkflowState::Running,
            WorkflowState::Succeeded,
            WorkflowState::Failed,
            WorkflowState::Aborted,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Queued or running: the engine owns it.
    pub fn is_active(&self) -> bool {
        matches!(self, WorkflowState::Queued | WorkflowState::Running)
    }
}

/// One step of a workflow and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepRun {
    /// Unique within the workflow: `erase`, `write-image`.
    pub name: String,
    /// The library step it runs: `power_on`, `erase`, `write_image`...
    pub uses: String,
    /// Its parameters as written in the definition.
    #[schema(value_type = Object)]
    #[serde(default)]
    pub with: serde_json::Value,
    /// Steps that must succeed first. Steps whose `after` are all done run
    /// in parallel.
    #[serde(default)]
    pub after: Vec<String>,
    /// An attempt that runs longer fails (and may be retried).
    pub timeout_secs: u64,
    pub retry: RetryPolicy,
    pub state: StepState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The current (or last) attempt; agents quote it in their reports.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub attempt: Option<uuid::Uuid>,
    /// Start of the first attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// Start of the current attempt.
    pub attempt_started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The current attempt fails at this time.
    pub deadline: Option<DateTime<Utc>>,
    /// In backoff: the next attempt starts at this time.
    pub retry_at: Option<DateTime<Utc>>,
    /// What the step waits for, for people: "the agent to boot (power the
    /// machine on: it has no BMC)".
    pub waiting_for: Option<String>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// What the last successful attempt produced.
    #[schema(value_type = Object)]
    #[serde(default)]
    pub output: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    /// Failed, waiting for `retry_at` to try again.
    Backoff,
    Succeeded,
    Failed,
    /// Not needed for this machine (no BMC, no RAID asked for).
    Skipped,
}

impl StepState {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Backoff => "backoff",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }

    /// Succeeded or skipped: steps after it may run.
    pub fn is_done(&self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Skipped)
    }
}

/// When a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time up to `backoff_max_secs`.
    pub backoff_secs: u32,
    pub backoff_max_secs: u32,
    /// Retry only errors marked transient (a network error, a checksum
    /// mismatch); `false` retries every error.
    pub transient_only: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_secs: 5,
            backoff_max_secs: 60,
            transient_only: true,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let exp = attempt.saturating_sub(1).min(16);
        let secs = (self.backoff_secs as u64)
            .saturating_mul(1 << exp)
            .min(self.backoff_max_secs as u64);
        std::time::Duration::from_secs(secs)
    }

    /// Whether a failure of attempt number `attempt` is tried again.
    pub fn retries(&self, attempt: u32, transient: bool) -> bool {
        attempt < self.max_attempts && (transient || !self.transient_only)
    }
}

impl Workflow {
    pub fn step(&self, name: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn step_mut(&mut self, name: &str) -> Option<&mut StepRun> {
        self.steps.iter_mut().find(|s| s.name == name)
    }

    /// Steps that may start now: pending, with every `after` done.
    pub fn ready_steps(&self) -> Vec<usize> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == StepState::Pending)
            .filter(|(_, s)| {
                s.after
                    .iter()
                    .all(|a| self.step(a).is_some_and(|d| d.state.is_done()))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Every step done.
    pub fn all_done(&self) -> bool {
        self.steps.iter().all(|s| s.state.is_done())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, after: &[&str]) -> StepRun {
        StepRun {
            name: name.into(),
            uses: "noop".into(),
            with: serde_json::Value::Null,
            after: after.iter().map(|s| s.to_string()).collect(),
            timeout_secs: 60,
            retry: RetryPolicy::default(),
            state: StepState::Pending,
            attempts: 0,
            attempt: None,
            started_at: None,
            attempt_started_at: None,
            finished_at: None,
            deadline: None,
            retry_at: None,
            waiting_for: None,
            error: None,
            output: serde_json::Value::Null,
        }
    }

    #[test]
    fn ready_steps_follow_the_dag() {
        let now = Utc::now();
        let mut wf = Workflow {
            id: uuid::Uuid::new_v4(),
            machine: uuid::Uuid::new_v4(),
            name: "t".into(),
            lifecycle: Lifecycle::None,
            state: WorkflowState::Running,
            started_from: ProvisionState::Available,
            params: serde_json::Value::Null,
            steps: vec![
                step("a", &[]),
                step("b", &["a"]),
                step("c", &["a"]),
                step("d", &["b", "c"]),
            ],
            created_by: "test".into(),
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            error: None,
            batch: None,
        };
        assert_eq!(wf.ready_steps(), vec![0]);
        wf.steps[0].state = StepState::Succeeded;
        assert_eq!(wf.ready_steps(), vec![1, 2]);
        wf.steps[1].state = StepState::Skipped;
        wf.steps[2].state = StepState::Running;
        assert_eq!(wf.ready_steps(), Vec::<usize>::new());
        wf.steps[2].state = StepState::Succeeded;
        assert_eq!(wf.ready_steps(), vec![3]);
        assert!(!wf.all_done());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_retries_respect_the_policy() {
        let p = RetryPolicy {
            max_attempts: 4,
            backoff_secs: 5,
            backoff_max_secs: 12,
            transient_only: true,
        };
        let secs: Vec<u64> = (1..=4).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(secs, [5, 10, 12, 12]);
        assert!(p.retries(1, true));
        assert!(!p.retries(1, false));
        assert!(!p.retries(4, true));
        let any = RetryPolicy {
            transient_only: false,
            ..p
        };
        assert!(any.retries(2, false));
    }
}
