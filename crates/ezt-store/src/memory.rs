//! The in-memory store: the "zero data storage" mode, and the reference the other backends are
//! checked against by the conformance suite. Everything is lost when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ezt_core::webhook::DeliveryState;
use ezt_core::{ApiKeyId, DeliveryId, JobId, JobState, TenantId};

use crate::records::*;
use crate::{
    DeliveryStore, Error, JobStore, LaneStore, MaintenanceStore, Result, SecretStore, TenantStore,
};

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
    /// Delivery leases: (fencing token, holder).
    delivery_leases: HashMap<DeliveryId, (u64, NodeId)>,
    secrets: HashMap<TenantId, WebhookSecrets>,
    lane_states: HashMap<String, LaneState>,
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
        let Some(outcome) = ending.outcome() else {
            return Vec::new();
        };
        let (tenant_id, series) = (j.tenant_id, j.series);
        let pending = outcome.pending(tenant_id, now_ms);
        self.payloads.insert((id, series), outcome.payload);
        for (did, index, url, voting) in outcome.deliveries {
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
        pending
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

#[async_trait]
impl TenantStore for MemoryStore {
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
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let k = (j.tenant_id, j.idempotent_key.clone());
            if let Some(existing) = g.by_key.get(&k).copied() {
                let e = &g.jobs[&existing];
                if crate::dedups(e.state, e.finished_at, j.created_at, dedup_window_ms) {
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
                    deliveries: Vec::new(),
                },
            );
            out.push(Admission::Inserted);
        }
        Ok(out)
    }

    async fn get_job(&self, tenant: Option<TenantId>, id: JobId) -> Result<Option<JobRecord>> {
        let g = self.lock();
        Ok(g.jobs.get(&id).filter(|j| owned(j, tenant)).map(|j| {
            let mut j = j.clone();
            j.deliveries = g.latest_deliveries(id);
            j
        }))
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

    async fn recover(&self, holder: &NodeId, _now_ms: u64, region: &str) -> Result<Recovered> {
        let mut g = self.lock();
        g.leases.retain(|_, (_, h)| h != holder);
        g.delivery_leases.retain(|_, (_, h)| h != holder);
        let g = &mut *g;
        let deliveries = g
            .deliveries
            .values()
            .filter(|d| !g.delivery_leases.contains_key(&d.id))
            .filter_map(DeliveryRecord::pending)
            .collect();
        let mut out = Vec::new();
        for j in g.jobs.values_mut() {
            if j.state == JobState::Running && g.leases.contains_key(&j.id) {
                continue; // a live holder's attempt: not ours to release
            }
            if j.state == JobState::Running {
                // Leased at `updated_at` as attempt `attempt_count`; its result never came.
                let cut = Attempt::interrupted(j.attempt_count, j.series, j.updated_at, region);
                if !j.attempts.iter().any(|a| a.n == cut.n) {
                    j.attempts.push(cut);
                }
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
        Ok(Recovered {
            jobs: out,
            deliveries,
        })
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
        g.leases.insert(id, (lease.token, lease.holder));
        Ok(Some(leased))
    }

    async fn complete_attempt(&self, done: AttemptDone) -> Result<Option<Vec<PendingDelivery>>> {
        let mut g = self.lock();
        if g.leases.get(&done.id).map(|(t, _)| *t) != Some(done.lease_token) {
            return Ok(None);
        }
        let Some(j) = g.jobs.get_mut(&done.id) else {
            return Ok(None);
        };
        if j.state != JobState::Running {
            return Ok(None);
        }
        let region = done.attempt.region.clone();
        let is_final = matches!(done.next, Next::Final { .. });
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
        Ok(Some(if is_final {
            g.record_outcome(done.id, &region, done.now_ms)
        } else {
            Vec::new()
        }))
    }

    async fn expire(
        &self,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<Option<Vec<PendingDelivery>>> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(&id) else {
            return Ok(None);
        };
        if !matches!(j.state, JobState::Queued | JobState::Scheduled) {
            return Ok(None);
        }
        j.state = JobState::Expired;
        j.finished_at = Some(now_ms);
        j.updated_at = now_ms;
        j.error = Some(JobError::deadline());
        Ok(Some(g.record_outcome(id, region, now_ms)))
    }

    async fn cancel(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        region: &str,
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
        j.error = Some(JobError::cancelled());
        g.leases.remove(&id);
        let deliveries = g.record_outcome(id, region, now_ms);
        if !deliveries.is_empty() {
            g.wakeups.push(id);
        }
        Ok(CancelOutcome::Cancelled(deliveries))
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
}

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn lease_delivery(&self, id: DeliveryId, lease: Lease) -> Result<Option<LeasedDelivery>> {
        let mut g = self.lock();
        if g.delivery_leases.contains_key(&id) {
            return Ok(None);
        }
        let Some(d) = g.deliveries.get(&id) else {
            return Ok(None);
        };
        if d.state != DeliveryState::Pending {
            return Ok(None);
        }
        let Some(payload) = g.payloads.get(&(d.job_id, d.series)).cloned() else {
            return Err(Error::Other(format!("delivery {id} has no payload")));
        };
        let leased = LeasedDelivery {
            id,
            job_id: d.job_id,
            tenant_id: d.tenant_id,
            url: d.url.clone(),
            payload,
            attempt_no: d.attempts.len() as u32 + 1,
            failed_in_run: d.failed_in_run,
            created_at: d.created_at,
            acked_before: d.acked_at.is_some(),
        };
        g.delivery_leases.insert(id, (lease.token, lease.holder));
        Ok(Some(leased))
    }

    async fn complete_delivery(&self, done: DeliveryDone) -> Result<bool> {
        let mut g = self.lock();
        if g.delivery_leases.get(&done.id).map(|(t, _)| *t) != Some(done.lease_token) {
            return Ok(false);
        }
        g.delivery_leases.remove(&done.id);
        let Some(d) = g.deliveries.get_mut(&done.id) else {
            return Ok(false);
        };
        d.attempts.push(done.attempt);
        match done.next {
            DeliveryNext::Delivered => {
                d.state = DeliveryState::Delivered;
                d.next_at = None;
                d.acked_at.get_or_insert(done.now_ms);
            }
            DeliveryNext::RetryAt(t) => {
                d.next_at = Some(t);
                d.failed_in_run += 1;
            }
            DeliveryNext::Failed => {
                d.state = DeliveryState::Failed;
                d.next_at = None;
                d.failed_in_run += 1;
            }
        }
        Ok(true)
    }

    async fn redeliver(
        &self,
        tenant: Option<TenantId>,
        job: JobId,
        now_ms: u64,
    ) -> Result<RedeliverOutcome> {
        let mut g = self.lock();
        if !g.jobs.get(&job).is_some_and(|j| owned(j, tenant)) {
            return Ok(RedeliverOutcome::NotFound);
        }
        let latest = g.latest_deliveries(job);
        if latest.is_empty() {
            return Ok(RedeliverOutcome::NoDeliveries);
        }
        let mut out = Vec::new();
        for d in latest {
            if g.delivery_leases.contains_key(&d.id) {
                continue; // in flight: that attempt is the redelivery
            }
            let r = g.deliveries.get_mut(&d.id).expect("listed");
            r.state = DeliveryState::Pending;
            r.next_at = Some(now_ms);
            r.failed_in_run = 0;
            out.extend(r.pending());
        }
        Ok(RedeliverOutcome::Requeued(out))
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<u64>> {
        Ok(self
            .lock()
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Pending)
            .map(|d| d.created_at)
            .min())
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn put_webhook_secrets(&self, tenant: TenantId, secrets: WebhookSecrets) -> Result<()> {
        self.lock().secrets.insert(tenant, secrets);
        Ok(())
    }

    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>> {
        Ok(self.lock().secrets.get(&tenant).cloned())
    }

    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>> {
        let mut g = self.lock();
        let Some(s) = g.secrets.get_mut(&tenant) else {
            return Ok(None);
        };
        s.secondary = Some(std::mem::replace(&mut s.primary, primary));
        s.updated_at = now_ms;
        Ok(Some(s.clone()))
    }

    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool> {
        Ok(self.lock().secrets.remove(&tenant).is_some())
    }

    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self
            .lock()
            .meta
            .entry(key.to_string())
            .or_insert(init)
            .clone())
    }
}

#[async_trait]
impl LaneStore for MemoryStore {
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()> {
        self.lock().lane_states.insert(lane.to_string(), state);
        Ok(())
    }

    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>> {
        Ok(self.lock().lane_states.get(lane).copied())
    }
}

#[async_trait]
impl MaintenanceStore for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize> {
        let mut g = self.lock();
        let pending_hooks: std::collections::HashSet<JobId> = g
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Pending)
            .map(|d| d.job_id)
            .collect();
        let mut due: Vec<(u64, JobId)> = g
            .jobs
            .values()
            .filter_map(|j| {
                let done = j.finished_at?;
                let cutoff = cutoffs.of(j.tenant_id)?;
                (done < cutoff && !pending_hooks.contains(&j.id)).then_some((done, j.id))
            })
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        for (_, id) in &due {
            let Some(j) = g.jobs.remove(id) else { continue };
            let k = (j.tenant_id, j.idempotent_key);
            if g.by_key.get(&k) == Some(id) {
                g.by_key.remove(&k);
            }
            g.leases.remove(id);
            g.wakeups.retain(|w| w != id);
            g.payloads.retain(|(job, _), _| job != id);
            let gone: Vec<DeliveryId> = g
                .deliveries
                .values()
                .filter(|d| d.job_id == *id)
                .map(|d| d.id)
                .collect();
            for d in gone {
                g.deliveries.remove(&d);
                g.delivery_leases.remove(&d);
            }
        }
        Ok(due.len())
    }
}
