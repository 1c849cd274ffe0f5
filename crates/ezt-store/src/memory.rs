//! The in-memory store: the "zero data storage" mode, and the reference the other backends are
//! checked against by the conformance suite. Everything is lost when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ezt_core::{ApiKeyId, JobId, JobState, TenantId};

use crate::records::*;
use crate::{Error, Result, Store};

#[derive(Debug, Default)]
struct Inner {
    tenants: Vec<Tenant>,
    keys: Vec<ApiKeyRecord>,
    meta: HashMap<String, Vec<u8>>,
    jobs: BTreeMap<JobId, JobRecord>,
    leases: HashMap<JobId, u64>,
    by_key: HashMap<(TenantId, String), JobId>,
    wakeups: Vec<JobId>,
}

/// A store that keeps everything in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
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

/// True if a job still blocks new jobs with its idempotency key.
pub(crate) fn dedups(
    state: JobState,
    finished_at: Option<u64>,
    now_ms: u64,
    window_ms: u64,
) -> bool {
    !state.is_final() || finished_at.is_some_and(|f| now_ms.saturating_sub(f) < window_ms)
}

fn owned(job: &JobRecord, tenant: Option<TenantId>) -> bool {
    tenant.is_none_or(|t| t == job.tenant_id)
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        let mut g = self.lock();
        if g.tenants.iter().any(|t| t.name == tenant.name) {
            return Err(Error::Conflict(format!("tenant {:?} exists", tenant.name)));
        }
        g.tenants.push(tenant.clone());
        Ok(tenant)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.lock().tenants.clone())
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        Ok(self.lock().tenants.iter().find(|t| t.name == name).cloned())
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        self.lock().keys.push(key);
        Ok(())
    }

    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>> {
        Ok(self
            .lock()
            .keys
            .iter()
            .filter(|k| tenant.is_none_or(|t| t == k.tenant_id))
            .cloned()
            .collect())
    }

    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()> {
        let mut g = self.lock();
        let k = g
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or(Error::NotFound)?;
        k.revoked_at.get_or_insert(now_ms);
        Ok(())
    }

    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>> {
        let g = self.lock();
        let Some(k) = g.keys.iter().find(|k| {
            k.revoked_at.is_none() && ezt_core::api_key::digests_match(&k.digest, &digest)
        }) else {
            return Ok(None);
        };
        Ok(g.tenants
            .iter()
            .find(|t| t.id == k.tenant_id)
            .map(|t| (t.clone(), k.id)))
    }

    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self
            .lock()
            .meta
            .entry(key.to_string())
            .or_insert(init)
            .clone())
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let k = (j.tenant_id, j.idempotent_key.clone());
            if let Some(existing) = g.by_key.get(&k).copied() {
                let e = &g.jobs[&existing];
                if dedups(e.state, e.finished_at, j.created_at, dedup_window_ms) {
                    out.push(Admission::Duplicate { existing });
                    continue;
                }
            }
            g.by_key.insert(k, j.id);
            let state = if j.run_at > j.created_at {
                JobState::Scheduled
            } else {
                JobState::Queued
            };
            g.jobs.insert(
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
                },
            );
            out.push(Admission::Inserted);
        }
        Ok(out)
    }

    async fn get_job(&self, tenant: Option<TenantId>, id: JobId) -> Result<Option<JobRecord>> {
        Ok(self
            .lock()
            .jobs
            .get(&id)
            .filter(|j| owned(j, tenant))
            .cloned())
    }

    async fn list_jobs(&self, tenant: Option<TenantId>, f: &JobFilter) -> Result<Vec<JobRecord>> {
        let g = self.lock();
        Ok(g.jobs
            .values()
            .rev()
            .filter(|j| owned(j, tenant))
            .filter(|j| f.before.is_none_or(|b| j.id < b))
            .filter(|j| f.state.is_none_or(|s| j.state == s))
            .filter(|j| f.lane.as_ref().is_none_or(|l| &j.lane.0 == l))
            .filter(|j| f.created_after.is_none_or(|c| j.created_at > c))
            .take(f.limit)
            .map(|j| JobRecord {
                attempts: Vec::new(),
                ..j.clone()
            })
            .collect())
    }

    async fn recover(&self, _now_ms: u64) -> Result<Vec<PendingJob>> {
        let mut g = self.lock();
        g.leases.clear();
        let mut out = Vec::new();
        for j in g.jobs.values_mut() {
            if j.state == JobState::Running {
                j.state = JobState::Queued;
            }
            if !j.state.is_final() {
                out.push(PendingJob {
                    id: j.id,
                    tenant_id: j.tenant_id,
                    lane: j.lane.clone(),
                    run_at: j.run_at,
                    deadline_at: j.deadline_at,
                });
            }
        }
        Ok(out)
    }

    async fn lease(&self, id: JobId, lease: Lease) -> Result<Option<LeasedJob>> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(&id) else {
            return Ok(None);
        };
        if !matches!(j.state, JobState::Queued | JobState::Scheduled) {
            return Ok(None);
        }
        j.state = JobState::Running;
        j.attempt_count += 1;
        j.updated_at = lease.now_ms;
        let leased = LeasedJob {
            spec: j.spec.clone(),
            tenant_id: j.tenant_id,
            idempotent_key: j.idempotent_key.clone(),
            attempt_no: j.attempt_count,
            series: j.series,
            counters: ezt_core::retry::Counters {
                retries: j.retries,
                reroutes: j.reroutes,
            },
            deadline_at: j.deadline_at,
        };
        g.leases.insert(id, lease.token);
        Ok(Some(leased))
    }

    async fn complete_attempt(&self, done: AttemptDone) -> Result<bool> {
        let mut g = self.lock();
        if g.leases.get(&done.id) != Some(&done.lease_token) {
            return Ok(false);
        }
        let Some(j) = g.jobs.get_mut(&done.id) else {
            return Ok(false);
        };
        if j.state != JobState::Running {
            return Ok(false);
        }
        j.attempts.push(done.attempt);
        j.updated_at = done.now_ms;
        match done.next {
            Next::Final {
                state,
                response,
                error,
            } => {
                j.state = state;
                j.response = response.or(j.response.take());
                j.error = error;
                j.finished_at = Some(done.now_ms);
            }
            Next::Retry {
                run_at,
                counters,
                response,
            } => {
                j.state = JobState::Scheduled;
                j.run_at = run_at;
                j.retries = counters.retries;
                j.reroutes = counters.reroutes;
                if response.is_some() {
                    j.response = response;
                }
            }
        }
        g.leases.remove(&done.id);
        Ok(true)
    }

    async fn expire(&self, id: JobId, now_ms: u64) -> Result<bool> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(&id) else {
            return Ok(false);
        };
        if !matches!(j.state, JobState::Queued | JobState::Scheduled) {
            return Ok(false);
        }
        j.state = JobState::Expired;
        j.finished_at = Some(now_ms);
        j.updated_at = now_ms;
        j.error = Some(JobError {
            code: "deadline".into(),
            message: "the job's timeout passed before it succeeded".into(),
        });
        Ok(true)
    }

    async fn cancel(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
    ) -> Result<CancelOutcome> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(&id).filter(|j| owned(j, tenant)) else {
            return Ok(CancelOutcome::NotFound);
        };
        if j.state.is_final() {
            return Ok(CancelOutcome::AlreadyFinal(j.state));
        }
        j.state = JobState::Cancelled;
        j.finished_at = Some(now_ms);
        j.updated_at = now_ms;
        j.error = Some(JobError {
            code: "cancelled".into(),
            message: "cancelled by the caller".into(),
        });
        g.leases.remove(&id);
        Ok(CancelOutcome::Cancelled)
    }

    async fn replay(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<ReplayOutcome> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(&id).filter(|j| owned(j, tenant)) else {
            return Ok(ReplayOutcome::NotFound);
        };
        if !j.state.can_retry() {
            return Ok(ReplayOutcome::NotReplayable(j.state));
        }
        j.state = JobState::Queued;
        j.series += 1;
        j.retries = 0;
        j.reroutes = 0;
        j.run_at = now_ms;
        j.deadline_at = deadline_ms;
        j.finished_at = None;
        j.error = None;
        j.updated_at = now_ms;
        let pending = PendingJob {
            id,
            tenant_id: j.tenant_id,
            lane: j.lane.clone(),
            run_at: now_ms,
            deadline_at: deadline_ms,
        };
        g.wakeups.push(id);
        Ok(ReplayOutcome::Requeued(pending))
    }

    async fn take_wakeups(&self) -> Result<Vec<JobId>> {
        Ok(std::mem::take(&mut self.lock().wakeups))
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        let g = self.lock();
        Ok(JobState::ALL
            .into_iter()
            .map(|s| (s, g.jobs.values().filter(|j| j.state == s).count() as u64))
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
