//! `WorkflowStore` in memory.

use async_trait::async_trait;
use ezt_core::{TenantId, WorkflowId};

use super::MemoryStore;
use crate::*;

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn insert_workflow(
        &self,
        wf: WorkflowRecord,
        jobs: Vec<NewJob>,
    ) -> Result<WorkflowAdmission> {
        let mut g = self.lock();
        if let Some(key) = &wf.run.def.idempotent_key {
            let existing = g.workflows.values().find(|w| {
                w.tenant_id == wf.tenant_id && w.run.def.idempotent_key.as_ref() == Some(key)
            });
            if let Some(e) = existing {
                return Ok(WorkflowAdmission::Duplicate { existing: e.id });
            }
        }
        g.workflows.insert(wf.id, wf);
        for j in jobs {
            g.insert_one(j, 0);
        }
        Ok(WorkflowAdmission::Stored)
    }

    async fn get_workflow(
        &self,
        tenant: Option<TenantId>,
        id: WorkflowId,
    ) -> Result<Option<WorkflowRecord>> {
        let g = self.lock();
        Ok(g.workflows
            .get(&id)
            .filter(|w| tenant.is_none_or(|t| t == w.tenant_id))
            .cloned())
    }
}
