//! Workflow records. The engine decides what a workflow does next; this is
//! where its state is written, so that a restarted server finds it.

use rackboot_core::{Workflow, WorkflowId};
use rackboot_store::WorkflowFilter;

use crate::{Fleet, Result};

impl Fleet {
    /// Stores the workflow as it is now (steps included).
    pub async fn put_workflow(&self, workflow: &Workflow) -> Result<()> {
        Ok(self.store().put_workflow(workflow).await?)
    }

    pub async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow> {
        Ok(self.store().get_workflow(id).await?)
    }

    pub async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<Workflow>> {
        Ok(self.store().list_workflows(filter).await?)
    }
}
