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

    async fn control_workflow(
        &self,
        tenant: TenantId,
        id: WorkflowId,
        control: RunControl,
        now_ms: u64,
    ) -> Result<ControlOutcome> {
        let mut g = self.lock();
        let Some(rec) = g.workflows.get(&id).filter(|w| w.tenant_id == tenant) else {
            return Ok(ControlOutcome::NotFound);
        };
        let mut rec = rec.clone();
        let applied = match apply_control(&mut rec, control, now_ms) {
            Ok(a) => a,
            Err(e) => return Ok(ControlOutcome::Refused(e)),
        };
        let mut cancelled = Vec::new();
        for jid in applied.cancel {
            let Some(j) = g.jobs.get_mut(&jid) else {
                continue;
            };
            if j.state.is_final() {
                continue;
            }
            j.state = ezt_core::JobState::Cancelled;
            j.finished_at = Some(now_ms);
            j.updated_at = now_ms;
            j.error = Some(JobError::cancelled());
            g.leases.remove(&jid);
            cancelled.push(jid);
        }
        let released = applied.jobs.iter().map(pending_of).collect();
        for j in applied.jobs {
            g.insert_one(j, 0);
        }
        let deliveries =
            g.insert_run_outcomes(run_key(id), rec.tenant_id, applied.outcomes, now_ms);
        g.workflows.insert(id, rec.clone());
        Ok(ControlOutcome::Applied {
            record: Box::new(rec),
            cancelled,
            released,
            deliveries,
        })
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
