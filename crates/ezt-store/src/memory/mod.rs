//! The in-memory store: the "zero data storage" mode, and the reference the other backends are
//! checked against by the conformance suite. Everything is lost when the process ends.
//!
//! One mutex guards everything, so each call is atomic the way a backend's transaction is. The
//! capability traits are implemented one module each, like the SQLite backend's.

mod cluster;
mod deliveries;
mod jobs;
mod lanes;
mod maintenance;
mod secrets;
mod tenants;
mod workflows;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use ezt_core::webhook::DeliveryState;
use ezt_core::{DeliveryId, JobId, TenantId};

use crate::records::*;

#[derive(Debug, Default)]
struct Inner {
    tenants: Vec<Tenant>,
    keys: Vec<ApiKeyRecord>,
    meta: HashMap<String, Vec<u8>>,
    jobs: BTreeMap<JobId, JobRecord>,
    /// Job leases: (fencing token, holder).
    leases: HashMap<JobId, (u64, NodeId)>,
    by_key: HashMap<(TenantId, String), JobId>,
    wakeups: Vec<JobId>,
    payloads: HashMap<(JobId, u32), Vec<u8>>,
    deliveries: BTreeMap<DeliveryId, DeliveryRecord>,
    /// The webhook `regions` of deliveries that have some.
    delivery_regions: HashMap<DeliveryId, Vec<String>>,
    /// Delivery leases: (fencing token, holder).
    delivery_leases: HashMap<DeliveryId, (u64, NodeId)>,
    secrets: HashMap<TenantId, WebhookSecrets>,
    lane_states: HashMap<String, LaneState>,
    workflows: BTreeMap<ezt_core::WorkflowId, crate::WorkflowRecord>,
}

impl Inner {
    /// Stores the webhook outcome of a job that has just become final (same critical section).
    fn record_outcome(&mut self, id: JobId, region: &str, now_ms: u64) -> Vec<PendingDelivery> {
        let j = &self.jobs[&id];
        let ending = Ending {
            id,
            spec: &j.spec,
            idempotent_key: &j.idempotent_key,
            state: j.state,
            response: j.response.as_ref(),
            error: j.error.as_ref(),
            attempts: j.attempt_count,
            region,
            now_ms,
        };
        let child = ending.child(j.tenant_id, j.series);
        let mut steps = Vec::new();
        let mut run_outs = None;
        if let Some((wf, r)) = crate::workflow_of(&j.spec) {
            if let Some(rec) = self.workflows.get_mut(&wf) {
                let (jobs, outs) = crate::step_ended_with_events(rec, r, &ending);
                steps = jobs;
                run_outs = Some((crate::run_key(wf), rec.tenant_id, outs));
            }
        }
        let outcome = ending.outcome();
        let mut run_pending = match run_outs {
            Some((key, tenant, outs)) => self.insert_run_outcomes(key, tenant, outs, now_ms),
            None => Vec::new(),
        };
        if let Some(child) = child {
            // A key held by a live job makes the child a duplicate of it (not created).
            self.insert_one(child, 0);
        }
        for job in steps {
            self.insert_one(job, 0);
        }
        let Some(outcome) = outcome else {
            return run_pending;
        };
        let j = &self.jobs[&id];
        let (tenant_id, series) = (j.tenant_id, j.series);
        let pending = outcome.pending(tenant_id, now_ms);
        self.payloads.insert((id, series), outcome.payload);
        for (did, index, url, voting, regions) in outcome.deliveries {
            if !regions.is_empty() {
                self.delivery_regions.insert(did, regions);
            }
            self.deliveries.insert(
                did,
                DeliveryRecord {
                    id: did,
                    job_id: id,
                    tenant_id,
                    series,
                    index,
                    url,
                    has_quorum_vote: voting,
                    state: DeliveryState::Pending,
                    attempts: Vec::new(),
                    created_at: now_ms,
                    next_at: Some(now_ms),
                    acked_at: None,
                    failed_in_run: 0,
                },
            );
        }
        run_pending.extend(pending);
        run_pending
    }

    /// Stores the payloads and deliveries of a run's events under the run's key.
    fn insert_run_outcomes(
        &mut self,
        key: JobId,
        tenant_id: TenantId,
        outs: Vec<crate::RunOutcome>,
        now_ms: u64,
    ) -> Vec<PendingDelivery> {
        let mut pending = Vec::new();
        for o in outs {
            if o.outcome.deliveries.is_empty() {
                continue;
            }
            let series = o.event.series;
            pending.extend(o.pending(tenant_id, now_ms));
            self.payloads.insert((key, series), o.outcome.payload);
            for (did, index, url, voting, regions) in o.outcome.deliveries {
                if !regions.is_empty() {
                    self.delivery_regions.insert(did, regions);
                }
                self.deliveries.insert(
                    did,
                    DeliveryRecord {
                        id: did,
                        job_id: key,
                        tenant_id,
                        series,
                        index,
                        url,
                        has_quorum_vote: voting,
                        state: DeliveryState::Pending,
                        attempts: Vec::new(),
                        created_at: now_ms,
                        next_at: Some(now_ms),
                        acked_at: None,
                        failed_in_run: 0,
                    },
                );
            }
        }
        pending
    }

    /// Admits one job (see `JobStore::insert_jobs`).
    fn insert_one(&mut self, j: NewJob, dedup_window_ms: u64) -> Admission {
        let k = (j.tenant_id, j.idempotent_key.clone());
        if let Some(existing) = self.by_key.get(&k).copied() {
            let e = &self.jobs[&existing];
            if crate::dedups(e.state, e.finished_at, j.created_at, dedup_window_ms) {
                return Admission::Duplicate { existing };
            }
        }
        if self.jobs.contains_key(&j.id) {
            return Admission::Duplicate { existing: j.id };
        }
        self.by_key.insert(k, j.id);
        let state = if j.run_at > j.created_at {
            ezt_core::JobState::Scheduled
        } else {
            ezt_core::JobState::Queued
        };
        self.jobs.insert(
            j.id,
            JobRecord {
                id: j.id,
                tenant_id: j.tenant_id,
                lane: j.lane,
                state,
                spec: j.spec,
                idempotent_key: j.idempotent_key,
                created_at: j.created_at,
                updated_at: j.created_at,
                run_at: j.run_at,
                deadline_at: j.deadline_at,
                attempt_count: 0,
                retries: 0,
                reroutes: 0,
                series: 1,
                response: None,
                error: None,
                finished_at: None,
                attempts: Vec::new(),
                deliveries: Vec::new(),
            },
        );
        Admission::Inserted
    }

    /// The deliveries of a job's latest outcome, in webhook order.
    fn latest_deliveries(&self, job: JobId) -> Vec<DeliveryRecord> {
        let mine: Vec<&DeliveryRecord> = self
            .deliveries
            .values()
            .filter(|d| d.job_id == job)
            .collect();
        let Some(series) = mine.iter().map(|d| d.series).max() else {
            return Vec::new();
        };
        let mut out: Vec<DeliveryRecord> = mine
            .into_iter()
            .filter(|d| d.series == series)
            .cloned()
            .collect();
        out.sort_by_key(|d| d.index);
        out
    }
}

/// A store that keeps everything in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Membership and lane ownership of the one-member cluster.
    solo: crate::SoloCluster,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn owned(job: &JobRecord, tenant: Option<TenantId>) -> bool {
    tenant.is_none_or(|t| t == job.tenant_id)
}
