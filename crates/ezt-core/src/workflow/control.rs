//! The owner's control of a run: cancel it, resume it after a failure. Stores apply these in
//! the transaction that writes the run, with the jobs they cancel or release.

use super::*;

/// Most resumes of one run.
pub(super) const MAX_RESUMES: u32 = 1000;

/// Why a run refuses a control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Cancel of a run that is over.
    #[error("the workflow is already {}", status_name(*.0))]
    AlreadyFinal(RunStatus),
    /// Resume of a run that is not failed or cancelled.
    #[error("only a failed or cancelled workflow can be resumed; this one is {}", status_name(*.0))]
    NotResumable(RunStatus),
    /// Restart of a run that is not over.
    #[error("only a finished workflow can be restarted; this one is {} (cancel it first)", status_name(*.0))]
    NotFinal(RunStatus),
    /// [`MAX_RESUMES`] reached.
    #[error("the workflow was resumed {MAX_RESUMES} times; restart it instead")]
    TooManyResumes,
}

/// A run status as the API spells it.
fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Compensating => "compensating",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::CompensationFailed => "compensation_failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// The id of a step's job (or compensation's) in resume series `series` (0: the first run,
/// [`step_job_id`]); every series has its own ids, so nothing collides.
pub fn series_job_id(wf: WorkflowId, step: u32, compensation: bool, series: u32) -> JobId {
    if series == 0 {
        return step_job_id(wf, step, compensation);
    }
    let salt = (u128::from(series) << 64)
        | (u128::from(step) << 8)
        | u128::from(compensation)
        | 0x7700_0000_0000;
    let random = (wf.0 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & ((1u128 << 80) - 1);
    JobId::new(wf.timestamp_ms(), random)
}

/// The id of page `n` of a paginated step's job in resume series `series`.
pub fn series_page_job_id(wf: WorkflowId, step: u32, n: u32, series: u32) -> JobId {
    if series == 0 {
        return page_job_id(wf, step, n);
    }
    let salt = (u128::from(series) << 42)
        | (u128::from(step) << 8)
        | (u128::from(n) << 24)
        | 0x5a00_0000_0000_0000;
    let random = (wf.0 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & ((1u128 << 80) - 1);
    JobId::new(wf.timestamp_ms(), random)
}

impl Run {
    /// Cancels a run that is not over: waiting steps end `cancelled`, and so do running steps
    /// and a running compensation, whose jobs are answered (to cancel in the same
    /// transaction). No compensation starts: a cancel is the owner's decision.
    pub fn cancel(&mut self) -> Result<Vec<JobId>, ControlError> {
        if self.state.status.is_final() {
            return Err(ControlError::AlreadyFinal(self.state.status));
        }
        let mut jobs = Vec::new();
        for st in &mut self.state.steps {
            match st.status {
                StepStatus::Pending => st.status = StepStatus::Cancelled,
                StepStatus::Running => {
                    jobs.extend(st.job_id.as_deref().and_then(|j| j.parse::<JobId>().ok()));
                    st.status = StepStatus::Cancelled;
                    st.error = Some("cancelled: the workflow was cancelled".into());
                }
                _ => {}
            }
            if st.compensation == Some(StepStatus::Running) {
                jobs.extend(
                    st.compensation_job_id
                        .as_deref()
                        .and_then(|j| j.parse::<JobId>().ok()),
                );
                st.compensation = Some(StepStatus::Cancelled);
            }
        }
        self.state.compensations.clear();
        self.state.status = RunStatus::Cancelled;
        Ok(jobs)
    }

    /// Continues a failed or cancelled run as resume series `resumes + 1`: steps that
    /// succeeded (and were not compensated) keep their results; every other step runs again
    /// (a failed non-blocking step excepted), a paginated step from the page that failed.
    /// Answers the jobs released now, with ids and keys of the new series.
    pub fn resume(&mut self, wf: WorkflowId) -> Result<Vec<Release>, ControlError> {
        if !matches!(self.state.status, RunStatus::Failed | RunStatus::Cancelled) {
            return Err(ControlError::NotResumable(self.state.status));
        }
        if self.state.resumes >= MAX_RESUMES {
            return Err(ControlError::TooManyResumes);
        }
        self.state.resumes += 1;
        self.state.status = RunStatus::Running;
        self.state.compensations.clear();
        let mut out = Vec::new();
        for i in 0..self.state.steps.len() {
            let d = &self.def.steps[i];
            let st = &mut self.state.steps[i];
            let compensated = st.compensation.is_some();
            let keep = match st.status {
                StepStatus::Succeeded => !compensated,
                StepStatus::Running => true,
                StepStatus::Failed => d.non_blocking,
                _ => false,
            };
            if keep {
                continue;
            }
            let at_page = d.paginate.is_some()
                && st.status == StepStatus::Failed
                && !compensated
                && !st.pages.is_empty();
            st.compensation = None;
            st.compensation_job_id = None;
            st.error = None;
            st.finished_seq = 0;
            if at_page {
                if let Some(r) = self.resume_page(wf, i) {
                    out.push(r);
                    continue;
                }
            }
            let st = &mut self.state.steps[i];
            st.status = StepStatus::Pending;
            st.response = None;
            st.job_id = None;
            st.released_by = None;
            st.pages.clear();
            st.truncated = false;
        }
        self.release(wf, None, &mut out);
        Ok(out)
    }

    /// Runs the failed last page of paginated step `i` again (same URL and cursor, the pages
    /// before it kept), or `None` when its templates no longer render.
    fn resume_page(&mut self, wf: WorkflowId, i: usize) -> Option<Release> {
        let t = self.def.steps[i].job.clone();
        let mut spec = render(&t.spec, &self.def.input, &self.def, &self.state).ok()?;
        let series = self.state.resumes;
        let st = &mut self.state.steps[i];
        let last = st.pages.last_mut()?;
        let id = series_page_job_id(wf, i as u32, last.n, series);
        spec.url = last.url.clone();
        last.job_id = id.to_string();
        last.status = None;
        last.next = None;
        st.status = StepStatus::Running;
        st.job_id = Some(id.to_string());
        st.released_by = None;
        Some(self.released(wf, i, false, spec, t.lane, id))
    }

    /// The definition a restart runs again: the same steps and input, without the dedup key
    /// (the new run is a run of its own).
    pub fn restart_definition(&self) -> Result<Definition, ControlError> {
        if !self.state.status.is_final() {
            return Err(ControlError::NotFinal(self.state.status));
        }
        let mut def = self.def.clone();
        def.idempotent_key = None;
        Ok(def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(steps: &[(&str, &[u32])]) -> Definition {
        let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
        let steps: Vec<Value> = steps
            .iter()
            .map(|(n, deps)| {
                let deps: Vec<&str> = deps.iter().map(|d| names[*d as usize]).collect();
                serde_json::json!({"name": n, "url": "http://127.0.0.1/x", "depends_on": deps})
            })
            .collect();
        let limits = crate::job::Limits::default();
        let policy = crate::ssrf::SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let cx = Context {
            limits: &limits,
            ssrf: &policy,
            local_region: "local",
            clustered: false,
            now_ms: 1_000,
        };
        serde_json::from_value::<WorkflowIn>(
            serde_json::json!({"steps": steps, "idempotent_key": "k"}),
        )
        .unwrap()
        .validate(&cx)
        .expect("a valid definition")
        .def
    }

    fn end(run: &mut Run, wf: WorkflowId, r: &Release, state: JobState) -> Vec<Release> {
        let resp = StepResponse {
            status: if state == JobState::Succeeded {
                200
            } else {
                400
            },
            headers: vec![],
            body: "{}".into(),
        };
        let sr = r.spec.workflow.clone().expect("a step ref");
        run.step_ended(wf, &sr, r.id, state, Some(resp), None)
    }

    #[test]
    fn resume_runs_only_the_failed_and_unfinished_steps_with_new_ids_and_keys() {
        let wf = WorkflowId::new(1_700_000_000_000, 42);
        let mut run = Run::new(def(&[("a", &[]), ("b", &[0]), ("c", &[1])]));
        let a = run.start(wf).remove(0);
        let b = end(&mut run, wf, &a, JobState::Succeeded).remove(0);
        assert!(end(&mut run, wf, &b, JobState::Failed).is_empty());
        assert_eq!(run.state.status, RunStatus::Failed);
        assert_eq!(run.state.steps[2].status, StepStatus::Cancelled);
        assert_eq!(
            run.clone().cancel(),
            Err(ControlError::AlreadyFinal(RunStatus::Failed))
        );
        let again = run.resume(wf).expect("a failed run resumes");
        assert_eq!(again.len(), 1, "only b: a keeps its result");
        assert_eq!(again[0].spec.workflow.as_ref().unwrap().step, 1);
        assert_ne!(again[0].id, b.id, "a new id per resume series");
        assert_eq!(again[0].id, series_job_id(wf, 1, false, 1));
        assert_eq!(again[0].key, format!("{wf}:b:resume:1"));
        assert_eq!(run.state.steps[0].status, StepStatus::Succeeded);
        // A stale end of the first series' b changes nothing.
        assert!(end(&mut run, wf, &b, JobState::Succeeded).is_empty());
        assert_eq!(run.state.steps[1].status, StepStatus::Running);
        let c = end(&mut run, wf, &again[0], JobState::Succeeded).remove(0);
        assert_eq!(c.id, series_job_id(wf, 2, false, 1));
        end(&mut run, wf, &c, JobState::Succeeded);
        assert_eq!(run.state.status, RunStatus::Succeeded);
        assert_eq!(
            run.resume(wf),
            Err(ControlError::NotResumable(RunStatus::Succeeded))
        );
        let d = run.restart_definition().expect("a finished run restarts");
        assert_eq!((d.steps.len(), d.idempotent_key), (3, None));
    }

    #[test]
    fn cancel_ends_waiting_and_running_steps_and_answers_the_jobs() {
        let wf = WorkflowId::new(1_700_000_000_000, 7);
        let mut run = Run::new(def(&[("a", &[]), ("b", &[]), ("c", &[0, 1])]));
        let started = run.start(wf);
        assert_eq!(started.len(), 2);
        end(&mut run, wf, &started[0], JobState::Succeeded);
        assert_eq!(
            run.restart_definition(),
            Err(ControlError::NotFinal(RunStatus::Running))
        );
        let jobs = run.cancel().expect("a running run cancels");
        assert_eq!(jobs, vec![started[1].id], "b was running");
        assert_eq!(run.state.status, RunStatus::Cancelled);
        let st: Vec<StepStatus> = run.state.steps.iter().map(|s| s.status).collect();
        assert_eq!(
            st,
            [
                StepStatus::Succeeded,
                StepStatus::Cancelled,
                StepStatus::Cancelled
            ]
        );
        // Its cancelled job's end is not news.
        assert!(end(&mut run, wf, &started[1], JobState::Cancelled).is_empty());
        assert_eq!(run.state.status, RunStatus::Cancelled);
        let again = run.resume(wf).expect("a cancelled run resumes");
        assert_eq!(again.len(), 1, "b again; c waits for it");
        assert_eq!(again[0].id, series_job_id(wf, 1, false, 1));
    }
}
