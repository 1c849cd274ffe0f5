//! `JobStore` in memory: each call holds the one lock, so each is atomic like a transaction.

use async_trait::async_trait;
use ezt_core::{JobId, JobState, TenantId};

use super::{owned, MemoryStore};
use crate::*;

#[async_trait]
impl JobStore for MemoryStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>> {
        let mut g = self.lock();
        Ok(jobs
            .into_iter()
            .map(|j| g.insert_one(j, dedup_window_ms))
            .collect())
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
        if let Some(f) = &lease.fence {
            if !self
                .solo
                .fence_holds(&lease.holder, f, crate::SoloCluster::wall_ms())
            {
                return Ok(None);
            }
        }
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
