//! The one place that knows what a store transition implies.
//!
//! The store decides (in one transaction) what a job's change means for the durable state:
//! an attempt ending a job creates its webhook deliveries, a cancel ends it, a replay requeues
//! it. What must then happen in memory — hand the deliveries to the webhook lanes, put the job
//! back in (or take it out of) the job lanes, tell watchers the job is final — is decided here
//! and nowhere else. Dispatch, the jobs service and the notifier report a [`Transition`]; a
//! later feature (workflows enqueueing children, cluster mode telling a lane's owner) changes
//! this module alone.

use std::sync::Arc;

use ezt_core::JobId;
use ezt_store::{JobRecord, PendingDelivery, PendingJob, Store};

use crate::deliver::{self, Deliveries};
use crate::events::{Events, JobEvent, JobView};
use crate::lanes::{Enqueue, SchedulerHandle};

/// A change the store has recorded, with what it returned.
#[derive(Debug)]
pub enum Transition {
    /// Jobs were stored and are waiting (admission).
    Admitted(Vec<Enqueue>),
    /// The job is final (succeeded, failed or expired); the deliveries of its outcome.
    Final {
        /// The job.
        id: JobId,
        /// Deliveries the store created for the outcome.
        deliveries: Vec<PendingDelivery>,
    },
    /// An attempt was recorded and the job waits for its next one (the lane keeps it).
    Retrying {
        /// Deliveries the store created, if any.
        deliveries: Vec<PendingDelivery>,
    },
    /// The job was cancelled (it may still sit in its lane).
    Cancelled {
        /// The job.
        id: JobId,
        /// Deliveries of the cancellation.
        deliveries: Vec<PendingDelivery>,
    },
    /// A final job was replayed as a new attempt series.
    Requeued {
        /// The job as its lane indexes it.
        job: PendingJob,
        /// Its tenant's weight.
        weight: u32,
    },
    /// Deliveries were restarted (redeliver).
    Redelivered(Vec<PendingDelivery>),
    /// Jobs a job's end created (`on_success` / `on_failure` children, by their derived ids):
    /// those stored and waiting go to their lanes.
    Spawned(Vec<JobId>),
    /// A workflow step's job (or compensation) ended: the store advanced its run; the steps
    /// that end released go to their lanes.
    StepEnded {
        /// The step's job.
        job: JobId,
        /// Its run.
        workflow: ezt_core::WorkflowId,
    },
    /// The owner cancelled or resumed a run: the step jobs it cancelled leave their lanes,
    /// the jobs it released go to theirs, the deliveries of its events go out.
    RunChanged {
        /// The run.
        workflow: ezt_core::WorkflowId,
        /// Step jobs ended `cancelled`.
        cancelled: Vec<JobId>,
        /// Jobs stored for the run's next steps.
        released: Vec<JobId>,
        /// Deliveries of the run's events.
        deliveries: Vec<PendingDelivery>,
    },
    /// Another process changed these jobs (the CLI's `jobs cancel` / `jobs retry`), with their
    /// tenants' weights: pending deliveries go out, jobs not final go back to their lanes.
    Woken(Vec<(JobRecord, u32)>),
}

/// Carries out what transitions imply.
pub struct Followups {
    store: Arc<dyn Store>,
    events: Arc<Events>,
    jobs: SchedulerHandle,
    deliveries: Deliveries,
    credential_headers: Vec<String>,
    tiers: ezt_core::tier::TierWeights,
}

impl std::fmt::Debug for Followups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followups").finish_non_exhaustive()
    }
}

impl Followups {
    /// Follow-ups over the job lanes `jobs` and the webhook lanes `deliveries`; final views
    /// redact `credential_headers`.
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<Events>,
        jobs: SchedulerHandle,
        deliveries: Deliveries,
        credential_headers: Vec<String>,
    ) -> Self {
        Self {
            store,
            events,
            jobs,
            deliveries,
            credential_headers,
            tiers: Default::default(),
        }
    }

    /// The tiers' fair-share weights, for the children it puts in lanes.
    pub fn with_tiers(mut self, tiers: ezt_core::tier::TierWeights) -> Self {
        self.tiers = tiers;
        self
    }

    /// Does what `t` implies.
    pub async fn after(&self, t: Transition) {
        match t {
            Transition::Admitted(jobs) => self.jobs.enqueue(jobs),
            Transition::Final { id, deliveries } => {
                deliver::enqueue(&self.deliveries, deliveries);
                self.publish_final(id).await;
            }
            Transition::Retrying { deliveries } | Transition::Redelivered(deliveries) => {
                deliver::enqueue(&self.deliveries, deliveries);
            }
            Transition::Cancelled { id, deliveries } => {
                self.jobs.remove(id);
                deliver::enqueue(&self.deliveries, deliveries);
                self.publish_final(id).await;
            }
            Transition::Requeued { job, weight } => {
                self.jobs.enqueue(vec![Enqueue { job, weight }]);
            }
            Transition::Spawned(ids) => self.spawned(ids).await,
            Transition::StepEnded { job, workflow } => {
                self.run_changed(workflow);
                let Ok(Some(rec)) = self.store.get_workflow(None, workflow).await else {
                    return;
                };
                let by = job.to_string();
                let mut ids: Vec<JobId> = Vec::new();
                for st in &rec.run.state.steps {
                    let running = st.status == ezt_core::workflow::StepStatus::Running;
                    // A step's current job (a paginated step's latest page).
                    if running && st.released_by.as_deref() == Some(by.as_str()) {
                        ids.extend(st.job_id.as_deref().and_then(|j| j.parse::<JobId>().ok()));
                    }
                    // At most one compensation runs at a time; the lanes ignore a job they hold.
                    if st.compensation == Some(ezt_core::workflow::StepStatus::Running) {
                        ids.extend(
                            st.compensation_job_id
                                .as_deref()
                                .and_then(|j| j.parse::<JobId>().ok()),
                        );
                    }
                }
                self.spawned(ids).await;
            }
            Transition::RunChanged {
                workflow,
                cancelled,
                released,
                deliveries,
            } => {
                self.run_changed(workflow);
                for id in cancelled {
                    self.jobs.remove(id);
                    self.publish_final(id).await;
                }
                deliver::enqueue(&self.deliveries, deliveries);
                self.spawned(released).await;
            }
            Transition::Woken(records) => {
                let mut jobs = Vec::new();
                for (j, weight) in records {
                    let pending = j.deliveries.iter().filter_map(|d| d.pending());
                    deliver::enqueue(&self.deliveries, pending.collect());
                    if !j.state.is_final() {
                        let job = PendingJob {
                            id: j.id,
                            tenant_id: j.tenant_id,
                            lane: j.lane,
                            run_at: j.run_at,
                            deadline_at: j.deadline_at,
                        };
                        jobs.push(Enqueue { job, weight });
                    }
                }
                self.jobs.enqueue(jobs);
            }
        }
    }

    /// Puts stored children that wait into their lanes, with their tenant's weight. A child
    /// the store did not create (its key was held by a live job) is skipped; one that cannot
    /// be read now waits for the next start's recovery.
    async fn spawned(&self, ids: Vec<JobId>) {
        let mut jobs = Vec::new();
        for id in ids {
            let Ok(Some(j)) = self.store.get_job(None, id).await else {
                continue;
            };
            if j.state.is_final() {
                continue;
            }
            let tier = match self.store.list_tenants().await {
                Ok(ts) => ts.into_iter().find(|t| t.id == j.tenant_id).map(|t| t.tier),
                Err(_) => None,
            };
            let weight = tier.map_or(1, |t| self.tiers.weight(t));
            tracing::info!(job_id = %id, lane = %j.lane, "child job created by its parent's outcome");
            jobs.push(Enqueue {
                job: PendingJob {
                    id: j.id,
                    tenant_id: j.tenant_id,
                    lane: j.lane,
                    run_at: j.run_at,
                    deadline_at: j.deadline_at,
                },
                weight,
            });
        }
        self.jobs.enqueue(jobs);
    }

    /// Tells the run's `/events` watchers to read it again (they diff what changed).
    fn run_changed(&self, workflow: ezt_core::WorkflowId) {
        let key = ezt_store::run_key(workflow);
        self.events
            .publish(key, || JobEvent::Queued { job_id: key, at: 0 });
    }

    /// Sends the final event with the job's view to watchers (reading the job only if anyone
    /// watches it).
    async fn publish_final(&self, id: JobId) {
        if !self.events.is_watched(id) {
            return;
        }
        if let Ok(Some(job)) = self.store.get_job(None, id).await {
            let view = JobView::from_record(&job, &self.credential_headers);
            self.events.publish(id, || JobEvent::Final(Arc::new(view)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ezt_core::lane::LaneKey;
    use ezt_core::{DeliveryId, TenantId};
    use ezt_store::{MemoryStore, NewJob};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::LanesConfig;
    use crate::lanes::{AttemptEnd, GateTicket, Ran, Runner, Scheduler};

    /// Reports every id its lanes run.
    struct Record<Id>(mpsc::UnboundedSender<Id>);

    impl<Id> Runner for Record<Id>
    where
        Id: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug + std::fmt::Display,
        Id: Send + Sync + 'static,
    {
        type Id = Id;
        async fn run(
            &self,
            id: Id,
            _tenant: TenantId,
            _lane: &LaneKey,
            gate: &mut GateTicket<Id>,
        ) -> Ran {
            gate.pass().await;
            let _ = self.0.send(id);
            Ran {
                end: AttemptEnd::Finished,
                change: None,
                healthy: None,
            }
        }
        async fn expire(&self, _id: Id) {}
    }

    struct Rig {
        followups: Followups,
        store: Arc<dyn Store>,
        events: Arc<Events>,
        jobs_ran: mpsc::UnboundedReceiver<JobId>,
        deliveries_ran: mpsc::UnboundedReceiver<DeliveryId>,
        stop: CancellationToken,
    }

    /// Followups over two real lane schedulers whose runners only report what they ran.
    fn rig() -> Rig {
        rig_with(LanesConfig::default())
    }

    fn rig_with(job_lanes: LanesConfig) -> Rig {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let events = Arc::new(Events::default());
        let stop = CancellationToken::new();
        let (jtx, jobs_ran) = mpsc::unbounded_channel();
        let (dtx, deliveries_ran) = mpsc::unbounded_channel();
        let tasks = TaskTracker::new();
        let (js, jobs) = Scheduler::new(
            job_lanes,
            Arc::new(Record(jtx)),
            Arc::default(),
            None,
            tasks.clone(),
            Arc::new(crate::clock::SystemClock),
        );
        let (ds, deliveries) = Scheduler::new(
            LanesConfig::default(),
            Arc::new(Record(dtx)),
            Arc::default(),
            None,
            tasks,
            Arc::new(crate::clock::SystemClock),
        );
        tokio::spawn(js.run(stop.clone()));
        tokio::spawn(ds.run(stop.clone()));
        Rig {
            followups: Followups::new(store.clone(), events.clone(), jobs, deliveries, Vec::new()),
            store,
            events,
            jobs_ran,
            deliveries_ran,
            stop,
        }
    }

    fn pending_job(n: u64, run_at: u64) -> PendingJob {
        PendingJob {
            id: JobId::new(1_700_000_000_000 + n, u128::from(n)),
            tenant_id: TenantId::new(1, 1),
            lane: LaneKey("example.com:443".into()),
            run_at,
            deadline_at: u64::MAX,
        }
    }

    fn delivery(n: u64) -> PendingDelivery {
        PendingDelivery {
            id: DeliveryId::new(1_700_000_000_000 + n, u128::from(n)),
            tenant_id: TenantId::new(1, 1),
            url: "https://hooks.example.com/in".into(),
            next_at: 0,
        }
    }

    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("ran within the (paused) minute")
            .expect("channel open")
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_and_requeued_jobs_run_in_their_lanes() {
        let mut r = rig();
        let (a, b) = (pending_job(1, 0), pending_job(2, 0));
        let (ida, idb) = (a.id, b.id);
        r.followups
            .after(Transition::Admitted(vec![Enqueue { job: a, weight: 1 }]))
            .await;
        assert_eq!(
            next(&mut r.jobs_ran).await,
            ida,
            "admitted work reaches its lane"
        );
        r.followups
            .after(Transition::Requeued { job: b, weight: 1 })
            .await;
        assert_eq!(
            next(&mut r.jobs_ran).await,
            idb,
            "a replay goes back to its lane"
        );
        r.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_job_leaves_its_lane_and_its_deliveries_go_out() {
        // One call per 100 s: the first job runs, the second waits in the lane.
        let slow = LanesConfig {
            default: crate::config::LaneLimit {
                rate: 0.01,
                burst: 1,
                max_in_flight: 1,
            },
            ..LanesConfig::default()
        };
        let mut r = rig_with(slow);
        let (first, waiting) = (pending_job(3, 0), pending_job(4, 0));
        let (first_id, id) = (first.id, waiting.id);
        let enqueue = |job| Enqueue { job, weight: 1 };
        r.followups
            .after(Transition::Admitted(vec![enqueue(first), enqueue(waiting)]))
            .await;
        assert_eq!(next(&mut r.jobs_ran).await, first_id);
        assert_eq!(r.followups.jobs.position(id).await, Some(0), "waiting next");
        r.followups
            .after(Transition::Cancelled {
                id,
                deliveries: vec![delivery(1)],
            })
            .await;
        assert_eq!(
            next(&mut r.deliveries_ran).await,
            delivery(1).id,
            "the cancellation's delivery is sent"
        );
        assert_eq!(
            r.followups.jobs.position(id).await,
            None,
            "the cancelled job left its lane"
        );
        r.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_job_tells_its_watchers_and_woken_jobs_resume() {
        let mut r = rig();
        let v = crate::events::views::sample("queued");
        let p = pending_job(5, 0);
        let new = NewJob {
            id: p.id,
            tenant_id: p.tenant_id,
            lane: p.lane.clone(),
            spec: v.spec,
            idempotent_key: "k5".into(),
            created_at: 1,
            run_at: 1,
            deadline_at: u64::MAX,
        };
        r.store.insert_jobs(vec![new], 60_000).await.unwrap();
        let mut sub = r.events.subscribe(p.id);
        r.followups
            .after(Transition::Final {
                id: p.id,
                deliveries: vec![delivery(2)],
            })
            .await;
        let ev = sub.recv().await.expect("a final event");
        assert!(ev.is_terminal(), "the watcher learns the job ended: {ev:?}");
        assert_eq!(next(&mut r.deliveries_ran).await, delivery(2).id);
        // Another process requeued it: the stored job (not final) goes back to its lane.
        let job = r.store.get_job(None, p.id).await.unwrap().expect("stored");
        r.followups.after(Transition::Woken(vec![(job, 1)])).await;
        assert_eq!(next(&mut r.jobs_ran).await, p.id, "a woken job resumes");
        r.stop.cancel();
    }
}
