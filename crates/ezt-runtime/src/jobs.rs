//! The jobs service: admission (`prepare`, `admit`), reading, waiting, and control (cancel,
//! retry, redeliver). The HTTP handlers parse a request, call one method here and map the
//! result; the CLI uses the store-only control functions ([`cancel_stored`], [`retry_stored`]),
//! whose consequences a running server picks up through the notifier.

use std::sync::Arc;
use std::time::Duration;

use ezt_core::job::JobSpecIn;
use ezt_core::lane::LaneKey;
use ezt_core::ssrf::{SsrfPolicy, TargetHost, TargetUrl};
use ezt_core::{FieldError, JobId, JobState, TenantId};
use ezt_outbound::resolver::ResolveError;
use ezt_outbound::SsrfResolver;
use ezt_store::{
    Admission, CancelOutcome, JobFilter, JobRecord, NewJob, PendingDelivery, PendingJob,
    RedeliverOutcome, ReplayOutcome, Store, Tenant,
};
use tokio::sync::broadcast::error::RecvError;

use crate::clock::Clock;
use crate::config::Config;
use crate::events::{Events, JobEvent, JobView, Subscription, TooManyWaiters, WaiterPermit};
use crate::followups::{Followups, Transition};
use crate::lanes::{Enqueue, SchedulerHandle, TooManyLanes};
use crate::metrics::Metrics;
use crate::sealing::Sealer;
use crate::spool::{Spool, SpoolError};

/// What a submission became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SubmitStatus {
    /// Stored; it will run.
    Queued,
    /// Stored; it will run, and it lists `regions` in `race` mode (the hosted service's
    /// answer for such a job, whatever the number of live regions).
    Racing,
    /// A job with the same idempotency key exists; that job is answered.
    Duplicate,
}

/// One admitted submission.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The job (or the existing job, for a duplicate).
    pub job_id: JobId,
    /// Stored or duplicate.
    pub status: SubmitStatus,
    /// The dedup key in force.
    pub idempotent_key: String,
}

/// Why the service refused.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A field is invalid (400/413/422 by its code).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such job (or not the caller's).
    #[error("no such job")]
    NotFound,
    /// Cancel of a job that is already final.
    #[error("job is already {}", .0.as_str())]
    AlreadyFinal(JobState),
    /// Retry of a job that is neither failed nor expired.
    #[error("only failed or expired jobs can be retried; this one is {}", .0.as_str())]
    NotReplayable(JobState),
    /// Retry of a workflow step's job: the run decides what runs again.
    #[error("this job is a step of workflow {0}; resume the run with POST /api/v1/workflows/{0}/resume (it runs the failed steps again and keeps finished results)")]
    StepOfWorkflow(String),
    /// The run refused a cancel, resume or restart.
    #[error(transparent)]
    Workflow(#[from] ezt_core::workflow::ControlError),
    /// Redeliver of a job without deliveries.
    #[error("the job has no webhook deliveries yet: it has no webhooks or is not final")]
    NoDeliveries,
    /// The submission would open too many lanes for its tenant.
    #[error(transparent)]
    TooManyLanes(#[from] TooManyLanes),
    /// The tenant holds too many open streams and long polls.
    #[error("this tenant already has {} open event streams and long polls; close one or retry later", .0.limit)]
    TooManyWaiters(TooManyWaiters),
    /// A lane pin could not be applied.
    #[error(transparent)]
    Lane(#[from] crate::lanes::PinError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ezt_store::Error),
    /// The database is unreachable and the node's spool cannot take the jobs (full, or its
    /// disk failed): nothing was stored.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// An open long poll or event stream: the tenant's waiter slot and the job's subscription,
/// both given back when it is dropped.
#[derive(Debug)]
pub struct Watch {
    sub: Subscription,
    _permit: WaiterPermit,
    /// Cluster mode: the job may end on another node (its lane's owner), whose events this
    /// node never sees; its stored state is read every [`REMOTE_POLL`] instead.
    remote: Option<RemoteEnd>,
}

/// How often a cluster node re-reads a watched job that another node may end.
const REMOTE_POLL: Duration = Duration::from_millis(500);

struct RemoteEnd {
    store: Arc<dyn Store>,
    id: JobId,
    credential_headers: Vec<String>,
    tick: tokio::time::Interval,
}

impl std::fmt::Debug for RemoteEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEnd").field("id", &self.id).finish()
    }
}

impl Watch {
    /// The job's next event: from this node's fan-out, or (cluster mode) its final view once
    /// the store says another node ended it.
    pub async fn recv(&mut self) -> Result<JobEvent, RecvError> {
        let Self { sub, remote, .. } = self;
        let Some(r) = remote.as_mut() else {
            return sub.recv().await;
        };
        loop {
            tokio::select! {
                ev = sub.recv() => return ev,
                _ = r.tick.tick() => {
                    if let Ok(Some(job)) = r.store.get_job(None, r.id).await {
                        if job.state.is_final() {
                            let view = JobView::from_record(&job, &r.credential_headers);
                            return Ok(JobEvent::Final(Arc::new(view)));
                        }
                    }
                }
            }
        }
    }
}

/// The stored names of job lanes start with this.
const LANE_PREFIX: &str = "job:";

/// The service. Cheap to share behind an `Arc`.
pub struct Jobs {
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    lanes: SchedulerHandle,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    sealer: Arc<Sealer>,
    ssrf: SsrfPolicy,
    resolver: SsrfResolver,
    fingerprint_key: Arc<Vec<u8>>,
    followups: Arc<Followups>,
    clock: Arc<dyn Clock>,
    spool: Option<Arc<Spool>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// What the service is built from (see `start`).
#[allow(missing_debug_implementations)] // holds `dyn Store`
pub struct JobsParts {
    /// Merged configuration.
    pub cfg: Arc<Config>,
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// The job lanes (for the per-tenant lane cap).
    pub lanes: SchedulerHandle,
    /// Per-job event fan-out.
    pub events: Arc<Events>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Seals credential headers at admission.
    pub sealer: Arc<Sealer>,
    /// Key for lane credential fingerprints.
    pub fingerprint_key: Arc<Vec<u8>>,
    /// What transitions imply.
    pub followups: Arc<Followups>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Store and forward while the database is unreachable (cluster store only).
    pub spool: Option<Arc<Spool>>,
}

impl Jobs {
    /// The service over `parts`.
    pub fn new(parts: JobsParts) -> Self {
        let ssrf = SsrfPolicy::new(parts.cfg.allow_cidrs.clone());
        Self {
            resolver: SsrfResolver::new(ssrf.clone()),
            ssrf,
            cfg: parts.cfg,
            store: parts.store,
            lanes: parts.lanes,
            events: parts.events,
            metrics: parts.metrics,
            sealer: parts.sealer,
            fingerprint_key: parts.fingerprint_key,
            followups: parts.followups,
            clock: parts.clock,
            spool: parts.spool,
        }
    }

    /// The caller's lanes (those it has had work in since they were loaded), key order. In
    /// cluster mode, from the shared store (the lanes it has work in, or had within
    /// `lanes.idle_evict_after_ms`), so every node answers the same; this node's memory only
    /// while the database cannot answer.
    pub async fn lanes(&self, tenant: TenantId) -> Vec<crate::lanes::LaneView> {
        if self.cfg.clustered() {
            let since = self
                .clock
                .now_ms()
                .saturating_sub(self.cfg.lanes.idle_evict_after_ms);
            match self.store.lane_rows(LANE_PREFIX, Some(tenant), since).await {
                Ok(Some(rows)) => {
                    return rows
                        .iter()
                        .map(|r| crate::lanes::row_view(&self.cfg.lanes, LANE_PREFIX, r))
                        .collect();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the lanes from the database; answering this node's view")
                }
            }
        }
        let mut mine: Vec<_> = self
            .lanes
            .lanes()
            .await
            .into_iter()
            .filter(|l| l.tenants.contains(&tenant))
            .collect();
        mine.sort_by(|a, b| a.lane.cmp(&b.lane));
        mine
    }

    /// Pins the limits of the caller's lanes to `host` (`host` or `host:port`); an empty pin
    /// unpins them. The pin is saved with the lane and outlives restarts.
    pub async fn pin_lane_limits(
        &self,
        tenant: TenantId,
        host: &str,
        mut pin: ezt_store::LanePin,
    ) -> Result<Vec<crate::lanes::LaneView>, JobsError> {
        pin.at_ms = self.clock.now_ms();
        Ok(self
            .lanes
            .pin(tenant, host.to_ascii_lowercase(), pin)
            .await?)
    }

    /// The client-side deadline of store calls on the admission path when store and forward is
    /// on (a cluster store with a spool): a call not answered in it counts as unreachable.
    pub fn store_deadline(&self) -> Option<Duration> {
        self.spool.as_ref().map(|s| s.deadline())
    }

    /// Whether admissions currently go to the spool (the database was found unreachable and
    /// the spool is not yet forwarded): callers skip database reads they can do without.
    pub fn spooling(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| s.waiting() > 0)
    }

    /// Now, from the service's clock (one value for a whole batch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Validates one spec and builds the job to store.
    pub async fn prepare(
        &self,
        tenant: TenantId,
        input: JobSpecIn,
        now: u64,
    ) -> Result<NewJob, JobsError> {
        let mut v = input.validate(&self.context(now))?;
        ezt_core::workflow::check_child_templates(&v.spec)?;
        let hooks = v.webhook_targets.iter().enumerate();
        self.refuse_blocked(
            std::iter::once(("url".to_string(), &v.target))
                .chain(hooks.map(|(i, t)| (format!("webhooks[{i}].url"), t)))
                .chain(v.nested_targets.iter().map(|(f, t)| (f.clone(), t))),
        )
        .await?;
        let lane = self.lane_of(&v.target, &v.spec.headers);
        // The lane's credential fingerprint is part of the default key: two upstream
        // credentials never share a job (nor see each other's response).
        let idempotent_key = v.idempotent_key.clone().unwrap_or_else(|| {
            ezt_core::idempotency::default_key(
                tenant,
                ezt_core::idempotency::credential_fingerprint(&lane),
                &v.spec.method,
                &v.spec.url,
                v.spec.body.as_deref(),
            )
        });
        self.child_lanes(&mut v.spec);
        let run_at = v.spec.retry_at.unwrap_or(now).max(now);
        // `on_failure_timeout_ms`: no success by then ends the job (expired), which runs
        // `on_failure`.
        let budget = v
            .spec
            .on_failure_timeout_ms
            .map_or(v.spec.timeout_ms, |t| t.min(v.spec.timeout_ms));
        Ok(NewJob {
            id: JobId::new(now, rand::random()),
            tenant_id: tenant,
            lane,
            deadline_at: now.saturating_add(budget),
            spec: v.spec,
            idempotent_key,
            created_at: now,
            run_at,
        })
    }

    /// What validation needs from the configuration, at `now`.
    fn context(&self, now: u64) -> ezt_core::job::Context<'_> {
        ezt_core::job::Context {
            limits: &self.cfg.limits.job,
            ssrf: &self.ssrf,
            local_region: &self.cfg.region,
            clustered: self.cfg.clustered(),
            now_ms: now,
        }
    }

    /// The admission check of resolved addresses (the connect-time check repeats it): the
    /// first `(field, target)` whose name resolves into a denied range is refused.
    async fn refuse_blocked<'a>(
        &self,
        targets: impl Iterator<Item = (String, &'a TargetUrl)>,
    ) -> Result<(), JobsError> {
        for (field, target) in targets {
            if let TargetHost::Domain(host) = &target.host {
                if let Err(ResolveError::Blocked(b)) =
                    self.resolver.resolve_checked(host, target.port).await
                {
                    return Err(FieldError::ssrf(field, b.to_string()).into());
                }
            }
        }
        Ok(())
    }

    /// The lane of a call to `target` with `headers` (host and upstream credential).
    fn lane_of(&self, target: &TargetUrl, headers: &[(String, String)]) -> LaneKey {
        ezt_core::lane::lane_for(
            &target.authority(),
            headers,
            &self.cfg.lanes.credential_headers,
            &self.fingerprint_key,
        )
    }

    /// Sets the lane of every child job (`on_success`, `on_failure`, at any depth) the way a
    /// submitted job's is set, before its credentials are sealed.
    fn child_lanes(&self, spec: &mut ezt_core::job::JobSpec) {
        for c in [
            spec.on_success.as_deref_mut(),
            spec.on_failure.as_deref_mut(),
        ]
        .into_iter()
        .flatten()
        {
            // Validation parsed this URL already (`{{parent…}}` never in its host).
            let url = ezt_core::workflow::mask(&c.spec.url);
            if let Ok(t) = ezt_core::ssrf::check_url(&self.ssrf, &url) {
                c.lane = self.lane_of(&t, &c.spec.headers).0;
            }
            self.child_lanes(&mut c.spec);
        }
    }

    /// Refuses work that would give the tenant more lanes with waiting work than
    /// `lanes.max_lanes_per_tenant` (each upstream credential or host is a lane, and lanes
    /// cost memory and metrics): nothing is stored.
    pub fn check_lane_cap(&self, tenant: TenantId, jobs: &[NewJob]) -> Result<(), JobsError> {
        self.lanes
            .admit_lanes(tenant, jobs.iter().map(|j| &j.lane))
            .map_err(|e| {
                self.metrics.rejected.inc();
                JobsError::TooManyLanes(e)
            })
    }

    /// Stores jobs durably (one transaction, group-committed) and hands the new ones to the
    /// lanes; answers one [`Admitted`] per job, in order.
    pub async fn admit(
        &self,
        tenant: &Tenant,
        mut jobs: Vec<NewJob>,
    ) -> Result<Vec<Admitted>, JobsError> {
        self.check_lane_cap(tenant.id, &jobs)?;
        // After `prepare` fingerprinted the credentials for the lane and the default key.
        for j in &mut jobs {
            let tenant = j.tenant_id;
            j.spec.for_each_mut(&mut |s| {
                crate::credentials::seal_headers(&self.sealer, tenant, &self.cfg, &mut s.headers)
            });
        }
        let summaries: Vec<(PendingJob, String, SubmitStatus)> = jobs
            .iter()
            .map(|j| (pending(j), j.idempotent_key.clone(), fresh_status(&j.spec)))
            .collect();
        let outcomes = match self.insert(jobs).await? {
            Stored::Database(o) => o,
            Stored::Spool(o) => {
                // Answered as stored; the forwarder hands them to the lanes later.
                return Ok(summaries
                    .into_iter()
                    .zip(o)
                    .map(|((job, idempotent_key, status), o)| match o {
                        Admission::Inserted => Admitted {
                            job_id: job.id,
                            status,
                            idempotent_key,
                        },
                        Admission::Duplicate { existing } => Admitted {
                            job_id: existing,
                            status: SubmitStatus::Duplicate,
                            idempotent_key,
                        },
                    })
                    .collect());
            }
        };
        let weight = self.cfg.tiers.weight(tenant.tier);
        let mut fresh = Vec::new();
        let mut out = Vec::with_capacity(summaries.len());
        for ((job, idempotent_key, status), o) in summaries.into_iter().zip(outcomes) {
            match o {
                Admission::Inserted => {
                    tracing::debug!(job_id = %job.id, lane = %job.lane, "job admitted");
                    out.push(Admitted {
                        job_id: job.id,
                        status,
                        idempotent_key,
                    });
                    fresh.push(Enqueue { job, weight });
                }
                Admission::Duplicate { existing } => {
                    self.metrics.duplicates.inc();
                    out.push(Admitted {
                        job_id: existing,
                        status: SubmitStatus::Duplicate,
                        idempotent_key,
                    });
                }
            }
        }
        self.metrics.admitted.add(fresh.len() as u64);
        self.followups.after(Transition::Admitted(fresh)).await;
        Ok(out)
    }

    /// Checks a workflow, freezes its definition, and stores the run with the jobs of the
    /// steps it starts with (one transaction); answers the run's id and whether it is the
    /// tenant's earlier run with the same `idempotent_key` (then nothing was stored).
    pub async fn submit_workflow(
        &self,
        tenant: &Tenant,
        input: ezt_core::workflow::WorkflowIn,
    ) -> Result<(ezt_core::WorkflowId, bool), JobsError> {
        let now = self.clock.now_ms();
        let mut v = input.validate(&self.context(now))?;
        self.refuse_blocked(v.targets.iter().map(|(f, t)| (f.clone(), t)))
            .await?;
        for step in &mut v.def.steps {
            for t in std::iter::once(&mut step.job).chain(step.compensate.as_mut()) {
                // The host is never templated: the masked URL names the lane.
                if let Ok(target) =
                    ezt_core::ssrf::check_url(&self.ssrf, &ezt_core::workflow::mask(&t.spec.url))
                {
                    t.lane = self.lane_of(&target, &t.spec.headers).0;
                }
                crate::credentials::seal_headers(
                    &self.sealer,
                    tenant.id,
                    &self.cfg,
                    &mut t.spec.headers,
                );
            }
        }
        self.admit_run(tenant, v.def, now).await
    }

    /// Stores a new run of `def` with the jobs of the steps it starts with and queues them;
    /// answers its id and whether it is a duplicate (of the run answered).
    async fn admit_run(
        &self,
        tenant: &Tenant,
        def: ezt_core::workflow::Definition,
        now: u64,
    ) -> Result<(ezt_core::WorkflowId, bool), JobsError> {
        let id = ezt_core::WorkflowId::new(now, rand::random());
        let mut run = ezt_core::workflow::Run::new(def);
        let jobs = ezt_store::release_jobs(run.start(id), tenant.id, now);
        self.check_lane_cap(tenant.id, &jobs)?;
        let pending: Vec<PendingJob> = jobs.iter().map(pending).collect();
        let admission = self
            .store
            .insert_workflow(
                ezt_store::WorkflowRecord {
                    id,
                    tenant_id: tenant.id,
                    run,
                    created_at: now,
                    updated_at: now,
                },
                jobs,
            )
            .await?;
        if let ezt_store::WorkflowAdmission::Duplicate { existing } = admission {
            self.metrics.duplicates.inc();
            tracing::info!(workflow_id = %existing, "workflow duplicate of an earlier run");
            return Ok((existing, true));
        }
        let weight = self.cfg.tiers.weight(tenant.tier);
        tracing::info!(workflow_id = %id, steps_started = pending.len(), "workflow admitted");
        self.metrics.admitted.add(pending.len() as u64);
        let fresh = pending
            .into_iter()
            .map(|job| Enqueue { job, weight })
            .collect();
        self.followups.after(Transition::Admitted(fresh)).await;
        Ok((id, false))
    }

    /// Cancels the tenant's run: its unfinished step jobs end `cancelled` in the same
    /// transaction, nothing more is sent, and its webhooks get `workflow.cancelled`.
    pub async fn cancel_workflow(
        &self,
        tenant: TenantId,
        id: ezt_core::WorkflowId,
    ) -> Result<ezt_store::WorkflowRecord, JobsError> {
        self.control_workflow(tenant, id, ezt_store::RunControl::Cancel)
            .await
    }

    /// Resumes the tenant's failed or cancelled run: the steps that did not succeed run again
    /// (new job ids and keys), finished results are kept.
    pub async fn resume_workflow(
        &self,
        tenant: TenantId,
        id: ezt_core::WorkflowId,
    ) -> Result<ezt_store::WorkflowRecord, JobsError> {
        self.control_workflow(tenant, id, ezt_store::RunControl::Resume)
            .await
    }

    /// Starts a new run of the tenant's finished run's frozen definition and input; answers
    /// the new run's id.
    pub async fn restart_workflow(
        &self,
        tenant: &Tenant,
        id: ezt_core::WorkflowId,
    ) -> Result<ezt_core::WorkflowId, JobsError> {
        let rec = self.get_workflow(tenant.id, id).await?;
        let def = rec.run.restart_definition()?;
        let (new, _) = self.admit_run(tenant, def, self.clock.now_ms()).await?;
        tracing::info!(workflow_id = %new, restart_of = %id, "workflow restarted");
        Ok(new)
    }

    async fn control_workflow(
        &self,
        tenant: TenantId,
        id: ezt_core::WorkflowId,
        control: ezt_store::RunControl,
    ) -> Result<ezt_store::WorkflowRecord, JobsError> {
        let now = self.clock.now_ms();
        match self
            .store
            .control_workflow(tenant, id, control, now)
            .await?
        {
            ezt_store::ControlOutcome::NotFound => Err(JobsError::NotFound),
            ezt_store::ControlOutcome::Refused(e) => Err(e.into()),
            ezt_store::ControlOutcome::Applied {
                record,
                cancelled,
                released,
                deliveries,
            } => {
                tracing::info!(workflow_id = %id, ?control, cancelled = cancelled.len(), released = released.len(), "workflow control applied");
                self.followups
                    .after(Transition::RunChanged {
                        workflow: id,
                        cancelled,
                        released: released.iter().map(|p| p.id).collect(),
                        deliveries,
                    })
                    .await;
                Ok(*record)
            }
        }
    }

    /// Watches a run the caller owns: every change of it (a step's end, a cancel, a resume)
    /// wakes the watch, which then reads the run again. Read the run after this.
    pub fn watch_workflow(
        &self,
        tenant: TenantId,
        id: ezt_core::WorkflowId,
    ) -> Result<Watch, JobsError> {
        self.watch(tenant, ezt_store::run_key(id))
    }

    /// Every webhook delivery of the tenant's run (its events: pages, its end), oldest first.
    pub async fn workflow_deliveries(
        &self,
        tenant: TenantId,
        id: ezt_core::WorkflowId,
    ) -> Result<Vec<ezt_store::DeliveryRecord>, JobsError> {
        Ok(self
            .store
            .deliveries_under(tenant, ezt_store::run_key(id))
            .await?)
    }

    /// The tenant's workflow run.
    pub async fn get_workflow(
        &self,
        tenant: TenantId,
        id: ezt_core::WorkflowId,
    ) -> Result<ezt_store::WorkflowRecord, JobsError> {
        self.store
            .get_workflow(Some(tenant), id)
            .await?
            .ok_or(JobsError::NotFound)
    }

    /// Stores admitted jobs: in the database, or (with a spool) in the node's spool when the
    /// database is unreachable, does not answer within the deadline, or jobs already wait in
    /// the spool (admission order is kept, unless the spool is full).
    async fn insert(&self, jobs: Vec<NewJob>) -> Result<Stored, JobsError> {
        let window = self.cfg.dedup_window_ms;
        let Some(spool) = &self.spool else {
            return Ok(Stored::Database(
                self.store.insert_jobs(jobs, window).await?,
            ));
        };
        // A full spool tries the database too, before refusing: when it answers, availability
        // wins over strict admission order (the spool is still being forwarded).
        if spool.waiting() == 0 || spool.would_overflow(jobs.len()) {
            let tried = tokio::time::timeout(
                spool.deadline(),
                self.store.insert_jobs(jobs.clone(), window),
            )
            .await;
            match tried {
                Ok(Ok(o)) => return Ok(Stored::Database(o)),
                Ok(Err(ezt_store::Error::Unavailable { message })) => {
                    tracing::warn!(error = %message, "the database is unavailable; admitting into the spool");
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    tracing::warn!(
                        deadline_ms = spool.deadline().as_millis() as u64,
                        "the database did not answer in time; admitting into the spool"
                    );
                }
            }
        }
        Ok(Stored::Spool(spool.admit(jobs, window).await?))
    }

    /// The tenant's job. With a spool: a job waiting there is answered from it when the
    /// database does not have it or cannot answer, and a spooled id forwarded as a duplicate
    /// resolves to the surviving job.
    pub async fn get(&self, tenant: TenantId, id: JobId) -> Result<JobRecord, JobsError> {
        let Some(spool) = &self.spool else {
            return self
                .store
                .get_job(Some(tenant), id)
                .await?
                .ok_or(JobsError::NotFound);
        };
        let db = async {
            if let Some(j) = self.store.get_job(Some(tenant), id).await? {
                return Ok(Some(j));
            }
            match crate::spool::alias_of(self.store.as_ref(), tenant, id).await? {
                Some(other) => self.store.get_job(Some(tenant), other).await,
                None => Ok(None),
            }
        };
        let unreachable = match tokio::time::timeout(spool.deadline(), db).await {
            Ok(Ok(Some(j))) => return Ok(j),
            Ok(Ok(None)) => JobsError::NotFound,
            Ok(Err(e @ ezt_store::Error::Unavailable { .. })) => JobsError::Store(e),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => JobsError::Store(ezt_store::Error::Unavailable {
                message: "the database did not answer in time".into(),
            }),
        };
        // Not in the database (yet), or it cannot say: a job still waiting in the spool.
        spool.waiting_job(tenant, id).await?.ok_or(unreachable)
    }

    /// The tenant's jobs, newest first.
    pub async fn list(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
    ) -> Result<Vec<JobRecord>, JobsError> {
        Ok(self.store.list_jobs(Some(tenant), filter).await?)
    }

    /// Takes one of the tenant's waiter slots (`server.max_waiters_per_tenant`).
    pub fn admit_waiter(&self, tenant: TenantId) -> Result<WaiterPermit, JobsError> {
        self.events
            .admit_waiter(tenant, self.cfg.server.max_waiters_per_tenant)
            .map_err(JobsError::TooManyWaiters)
    }

    /// Subscribes to `id`'s events with a slot already taken (submit `?wait=` subscribes
    /// before the job is stored: it can end before `admit` returns).
    pub fn subscribe(&self, permit: WaiterPermit, id: JobId) -> Watch {
        let remote = self.cfg.clustered().then(|| {
            let mut tick = tokio::time::interval(REMOTE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.reset(); // the caller has just read the job
            RemoteEnd {
                store: self.store.clone(),
                id,
                credential_headers: self.cfg.lanes.credential_headers.clone(),
                tick,
            }
        });
        Watch {
            sub: self.events.subscribe(id),
            _permit: permit,
            remote,
        }
    }

    /// Watches a job the caller owns and that was not final when read. Re-read the job after
    /// this: a final event sent between that read and the subscription is not delivered.
    pub fn watch(&self, tenant: TenantId, id: JobId) -> Result<Watch, JobsError> {
        let permit = self.admit_waiter(tenant)?;
        Ok(self.subscribe(permit, id))
    }

    /// The item's place in its lane (0 = next), if it is waiting there.
    pub async fn position(&self, id: JobId) -> Option<usize> {
        self.lanes.position(id).await
    }

    /// Waits until the job is final or `wait` passes; returns the job and whether it is
    /// final. Unknown, foreign and final jobs answer without subscribing; `watch` is a
    /// subscription made before the job was stored (submit `?wait=`).
    pub async fn wait_final(
        &self,
        tenant: TenantId,
        id: JobId,
        wait: Duration,
        watch: Option<Watch>,
    ) -> Result<(JobRecord, bool), JobsError> {
        let deadline = tokio::time::Instant::now() + wait;
        let job = self.get(tenant, id).await?;
        if job.state.is_final() {
            return Ok((job, true));
        }
        let mut w = match watch {
            Some(w) => w,
            None => {
                let w = self.watch(tenant, id)?;
                let job = self.get(tenant, id).await?;
                if job.state.is_final() {
                    return Ok((job, true));
                }
                w
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, w.recv()).await {
                Err(_) => break,
                Ok(Ok(ev)) if !ev.is_terminal() => continue,
                Ok(Ok(_)) | Ok(Err(RecvError::Closed)) => break,
                Ok(Err(RecvError::Lagged(_))) => {
                    let job = self.get(tenant, id).await?;
                    if job.state.is_final() {
                        return Ok((job, true));
                    }
                }
            }
        }
        drop(w);
        let job = self.get(tenant, id).await?;
        let done = job.state.is_final();
        Ok((job, done))
    }

    /// Cancels a job that is not final; returns it as it is now.
    pub async fn cancel(&self, tenant: TenantId, id: JobId) -> Result<JobRecord, JobsError> {
        let now = self.clock.now_ms();
        let deliveries =
            cancel_stored(self.store.as_ref(), Some(tenant), id, now, &self.cfg.region).await?;
        tracing::info!(job_id = %id, "job cancelled");
        self.followups
            .after(Transition::Cancelled { id, deliveries })
            .await;
        let job = self.get(tenant, id).await?;
        // A cancelled workflow step fails its run like any end (compensations may start).
        if let Some((workflow, _)) = ezt_store::workflow_of(&job.spec) {
            self.followups
                .after(Transition::StepEnded { job: id, workflow })
                .await;
        }
        Ok(job)
    }

    /// Replays a failed or expired job as a new attempt series; returns it as it is now.
    pub async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<JobRecord, JobsError> {
        let now = self.clock.now_ms();
        let job = retry_stored(self.store.as_ref(), Some(tenant.id), id, now).await?;
        tracing::info!(job_id = %id, "job replayed");
        self.followups
            .after(Transition::Requeued {
                job,
                weight: self.cfg.tiers.weight(tenant.tier),
            })
            .await;
        self.get(tenant.id, id).await
    }

    /// Re-sends the job's latest outcome to every webhook now, restarting their retry
    /// schedules (deliveries keep their ids); returns the ids re-sent.
    pub async fn redeliver(
        &self,
        tenant: TenantId,
        id: JobId,
    ) -> Result<Vec<ezt_core::DeliveryId>, JobsError> {
        let now = self.clock.now_ms();
        match self.store.redeliver(Some(tenant), id, now).await? {
            RedeliverOutcome::NotFound => Err(JobsError::NotFound),
            RedeliverOutcome::NoDeliveries => Err(JobsError::NoDeliveries),
            RedeliverOutcome::Requeued(pending) => {
                tracing::info!(job_id = %id, deliveries = pending.len(), "redelivery requested");
                let ids = pending.iter().map(|p| p.id).collect();
                self.followups.after(Transition::Redelivered(pending)).await;
                Ok(ids)
            }
        }
    }
}

/// Where admitted jobs went.
enum Stored {
    Database(Vec<Admission>),
    Spool(Vec<Admission>),
}

/// What a newly stored job's submit answer says: `racing` when it lists regions in race mode
/// (API.md), else `queued`.
fn fresh_status(spec: &ezt_core::job::JobSpec) -> SubmitStatus {
    if !spec.regions.is_empty() && spec.execution_mode == ezt_core::job::ExecutionMode::Race {
        SubmitStatus::Racing
    } else {
        SubmitStatus::Queued
    }
}

fn pending(j: &NewJob) -> PendingJob {
    PendingJob {
        id: j.id,
        tenant_id: j.tenant_id,
        lane: j.lane.clone(),
        run_at: j.run_at,
        deadline_at: j.deadline_at,
    }
}

/// Cancels in the store alone (the CLI, in another process, uses this; a running server
/// picks the deliveries up through the notifier). Returns the deliveries of the cancellation.
pub async fn cancel_stored(
    store: &dyn Store,
    tenant: Option<TenantId>,
    id: JobId,
    now: u64,
    region: &str,
) -> Result<Vec<PendingDelivery>, JobsError> {
    match store.cancel(tenant, id, now, region).await? {
        CancelOutcome::NotFound => Err(JobsError::NotFound),
        CancelOutcome::AlreadyFinal(s) => Err(JobsError::AlreadyFinal(s)),
        CancelOutcome::Cancelled(deliveries) => Ok(deliveries),
    }
}

/// Replays a failed or expired job in the store alone, with a fresh deadline of its spec's
/// `timeout` from `now` (the CLI uses this; a running server picks the job up through the
/// notifier). Returns the job as its lane indexes it.
pub async fn retry_stored(
    store: &dyn Store,
    tenant: Option<TenantId>,
    id: JobId,
    now: u64,
) -> Result<PendingJob, JobsError> {
    let job = store
        .get_job(tenant, id)
        .await?
        .ok_or(JobsError::NotFound)?;
    if let Some(r) = &job.spec.workflow {
        // Replaying a step alone would run it outside its run's state: the run resumes.
        return Err(JobsError::StepOfWorkflow(r.workflow_id.clone()));
    }
    let deadline = now.saturating_add(job.spec.timeout_ms);
    match store.replay(tenant, id, now, deadline).await? {
        ReplayOutcome::NotFound => Err(JobsError::NotFound),
        ReplayOutcome::NotReplayable(s) => Err(JobsError::NotReplayable(s)),
        ReplayOutcome::Requeued(p) => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use ezt_core::lane::LaneKey;
    use ezt_store::MemoryStore;

    use super::*;

    async fn stored_job(store: &dyn Store, n: u64) -> JobId {
        let id = JobId::new(1_700_000_000_000 + n, u128::from(n));
        let job = NewJob {
            id,
            tenant_id: TenantId::new(1, 1),
            lane: LaneKey("example.com:443".into()),
            spec: crate::events::views::sample("queued").spec,
            idempotent_key: format!("k{n}"),
            created_at: 1,
            run_at: 1,
            deadline_at: u64::MAX,
        };
        store.insert_jobs(vec![job], 60_000).await.unwrap();
        id
    }

    #[tokio::test]
    async fn the_cli_control_answers_typed_refusals() {
        let store = MemoryStore::new();
        let missing = JobId::new(1, 1);
        assert!(
            matches!(
                cancel_stored(&store, None, missing, 10, "local").await,
                Err(JobsError::NotFound)
            ),
            "cancel of an unknown job"
        );
        assert!(
            matches!(
                retry_stored(&store, None, missing, 10).await,
                Err(JobsError::NotFound)
            ),
            "retry of an unknown job"
        );
        let id = stored_job(&store, 1).await;
        cancel_stored(&store, None, id, 10, "local")
            .await
            .expect("a waiting job can be cancelled");
        let again = cancel_stored(&store, None, id, 11, "local").await;
        assert!(
            matches!(again, Err(JobsError::AlreadyFinal(JobState::Cancelled))),
            "{again:?}"
        );
        let retried = retry_stored(&store, None, id, 12).await;
        assert!(
            matches!(retried, Err(JobsError::NotReplayable(JobState::Cancelled))),
            "only failed or expired jobs are replayed: {retried:?}"
        );
        assert_eq!(
            JobsError::NotReplayable(JobState::Cancelled).to_string(),
            "only failed or expired jobs can be retried; this one is cancelled",
            "the API's 409 message"
        );
    }
}
