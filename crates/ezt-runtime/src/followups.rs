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
        }
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
