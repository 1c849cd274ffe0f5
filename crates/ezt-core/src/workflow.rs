//! Static workflows: the definition (checked at submit, frozen per run), the run's state, the
//! pure transition that decides what a step's end releases, and the path-only templates that
//! pass data between steps.
//!
//! Stores call [`Run::step_ended`] inside the transaction that makes a step's job final, so a
//! step's result and the release of its dependents are one commit: after a crash the run
//! resumes at the first unfinished step and never re-runs a finished one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::DurationIn;
use crate::error::FieldError;
use crate::job::{from_value, Context, JobSpec};
use crate::{JobId, JobState, WorkflowId};

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 100;
/// Longest step name, bytes.
pub const MAX_NAME_BYTES: usize = 64;

pub use crate::job::StepRef;

mod control;
pub use control::{series_job_id, series_page_job_id, ControlError};

/// A job spec whose url, header values and body may hold `{{…}}` templates, and its lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTemplate {
    /// The spec, templates unrendered.
    pub spec: JobSpec,
    /// Its lane (set at admission; the host is never templated).
    #[serde(default)]
    pub lane: String,
}

/// One step as frozen at submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDef {
    /// Unique name.
    pub name: String,
    /// The call.
    pub job: JobTemplate,
    /// Steps that must succeed first (indexes).
    pub depends_on: Vec<u32>,
    /// Its failure fails the workflow and runs the compensations (default true).
    pub critical: bool,
    /// Never gates dependents nor decides the outcome.
    pub non_blocking: bool,
    /// Run, in reverse order of completion, when a critical step fails after this one succeeded.
    pub compensate: Option<JobTemplate>,
    /// Follow pages: one job per page, each page a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Paginate>,
    /// A condition ([`crate::condition`]) decided when the step's dependencies are done: false
    /// skips the step (its dependents proceed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// How a paginated step finds its next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PageStyle {
    /// The `Link` header's `rel="next"` URL (GitHub, Shopify); same origin only.
    Link,
    /// A cursor at the JSON path `next` of the body (Stripe-like with `has_more`), sent as the
    /// query parameter `cursor_param`.
    BodyCursor,
    /// `offset_param` grows by `page_size` per page.
    Offset,
    /// `page_param` counts pages from 1.
    Page,
}

/// A step's `paginate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// How the next page is found.
    pub style: PageStyle,
    /// `body_cursor`: the JSON path of the next cursor (absent or null: last page).
    #[serde(default)]
    pub next: Option<String>,
    /// `body_cursor`: the JSON path of a boolean; false means last page.
    #[serde(default)]
    pub has_more: Option<String>,
    /// The query parameter that carries the cursor, offset or page number (default `cursor`,
    /// `offset` or `page`).
    #[serde(default)]
    pub param: Option<String>,
    /// The JSON path of the page's items: an empty array ends the walk (and, for `offset`,
    /// fewer than `page_size`).
    #[serde(default)]
    pub items: Option<String>,
    /// `offset`: items per page.
    #[serde(default)]
    pub page_size: Option<u64>,
    /// Most pages (default 1,000, at most 100,000); the step then ends `truncated`.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

fn default_max_pages() -> u32 {
    1000
}

/// One page of a paginated step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageState {
    /// From 1.
    pub n: u32,
    /// Its job.
    pub job_id: String,
    /// The URL it called.
    pub url: String,
    /// The cursor (or offset, page number, next link) it was called with.
    pub cursor: Option<String>,
    /// Its status, once answered.
    pub status: Option<u16>,
    /// The next page's cursor it produced, if any.
    pub next: Option<String>,
}

/// The frozen definition of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// Name.
    pub name: String,
    /// What `{{input.…}}` reads.
    pub input: Value,
    /// Steps in submit order.
    pub steps: Vec<StepDef>,
    /// The run's webhooks (`workflow.completed`, `workflow.failed`, `workflow.cancelled`,
    /// `workflow.page`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::webhook::Webhook>,
    /// The run's dedup key (its tenant's runs with the same key are one run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_key: Option<String>,
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its dependencies.
    Pending,
    /// Its job exists and is not final.
    Running,
    /// Its job succeeded.
    Succeeded,
    /// Its job failed, expired, or its templates could not be rendered.
    Failed,
    /// A non-critical dependency failed.
    Skipped,
    /// The workflow failed or was cancelled first.
    Cancelled,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are running.
    Running,
    /// A critical step failed; compensations run.
    Compensating,
    /// Every blocking step succeeded (or was skipped).
    Succeeded,
    /// A critical step failed (compensations done).
    Failed,
    /// A compensation failed: listed for manual action.
    CompensationFailed,
    /// Cancelled by its owner (`POST /api/v1/workflows/{id}/cancel`).
    Cancelled,
}

impl RunStatus {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Running | RunStatus::Compensating)
    }
}

/// The part of a step's answer later steps may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers as received.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::header_pairs))]
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

/// A step's state in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepState {
    /// Where it stands.
    pub status: StepStatus,
    /// Its job, once released.
    pub job_id: Option<String>,
    /// The job whose end released it (none: released at submit).
    pub released_by: Option<String>,
    /// Its answer, once final.
    pub response: Option<StepResponse>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its compensation's job, if one ran.
    pub compensation_job_id: Option<String>,
    /// Its compensation's status.
    pub compensation: Option<StepStatus>,
    /// Order of completion (for compensating in reverse).
    #[serde(default)]
    pub finished_seq: u32,
    /// A paginated step's pages so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<PageState>,
    /// The walk stopped at `max_pages`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// What its `when` decided (none: it has none, or it was not reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<bool>,
}

/// A run's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Where it stands.
    pub status: RunStatus,
    /// Per step, in definition order.
    pub steps: Vec<StepState>,
    /// Failures of non-blocking steps.
    pub warnings: Vec<String>,
    /// Compensations still to run, next first (step indexes).
    pub compensations: Vec<u32>,
    /// Completions so far.
    pub finished: u32,
    /// Times the run was resumed after a failure (its step jobs of resume `n` get new ids).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A job a transition creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Derived id ([`step_job_id`]).
    pub id: JobId,
    /// Rendered spec (its `workflow` set).
    pub spec: JobSpec,
    /// Its lane.
    pub lane: String,
    /// Its dedup key, also sent as `Idempotency-Key`: `<workflow id>:<step>[:compensate]`.
    pub key: String,
}

/// The id of a step's job (or compensation's): derived from the run's, so a transaction run
/// again makes the same one and views can name it.
pub fn step_job_id(wf: WorkflowId, step: u32, compensation: bool) -> JobId {
    let salt = (u128::from(step) << 8) | u128::from(compensation) | 0x7700_0000_0000;
    let random = (wf.0 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & ((1u128 << 80) - 1);
    JobId::new(wf.timestamp_ms(), random)
}

/// The id of page `n` of a paginated step's job.
pub fn page_job_id(wf: WorkflowId, step: u32, n: u32) -> JobId {
    let salt = (u128::from(step) << 8) | (u128::from(n) << 24) | 0x5a00_0000_0000_0000;
    let random = (wf.0 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & ((1u128 << 80) - 1);
    JobId::new(wf.timestamp_ms(), random)
}

fn param_name(p: &Paginate) -> String {
    p.param.clone().unwrap_or_else(|| {
        match p.style {
            PageStyle::Offset => "offset",
            PageStyle::Page => "page",
            _ => "cursor",
        }
        .to_string()
    })
}

/// `url` with `name=value` (form-encoded) added to its query, replacing an earlier `name`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, frag) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let (path, query) = base.split_once('?').map_or((base, ""), |(p, q)| (p, q));
    let prefix = format!("{}=", encode(name, true));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    parts.push(format!("{prefix}{}", encode(value, true)));
    let mut out = format!("{path}?{}", parts.join("&"));
    if let Some(f) = frag {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The `rel="next"` target of a `Link` header (RFC 8288), if any.
fn next_link(headers: &[(String, String)]) -> Option<String> {
    for (n, v) in headers {
        if !n.eq_ignore_ascii_case("link") {
            continue;
        }
        for part in v.split(',') {
            let part = part.trim();
            let Some(end) = part.find('>') else { continue };
            let target = part.strip_prefix('<').map(|p| &p[..end - 1]);
            let params = &part[end + 1..];
            let is_next = params.split(';').any(|kv| {
                let kv = kv.trim();
                kv.strip_prefix("rel=").is_some_and(|r| {
                    r.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|x| x.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return target.map(str::to_string);
            }
        }
    }
    None
}

/// `link` made absolute against `base` (absolute links and `/path` links).
fn absolute(base: &str, link: &str) -> String {
    if link.contains("://") {
        return link.to_string();
    }
    let o = origin(base);
    if link.starts_with('/') {
        format!("{o}{link}")
    } else {
        format!("{o}/{link}")
    }
}

/// `scheme://host[:port]` of a URL, lower-cased.
fn origin(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return String::new();
    };
    let rest = &url[s + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    url[..s + 3 + end].to_ascii_lowercase()
}

/// A run: its frozen definition and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// What was submitted.
    pub def: Definition,
    /// Where it stands.
    pub state: RunState,
}

impl Run {
    /// A new run of `def`, nothing released yet.
    pub fn new(def: Definition) -> Self {
        let steps = def
            .steps
            .iter()
            .map(|_| StepState {
                status: StepStatus::Pending,
                job_id: None,
                released_by: None,
                response: None,
                error: None,
                compensation_job_id: None,
                compensation: None,
                finished_seq: 0,
                pages: Vec::new(),
                truncated: false,
                condition: None,
            })
            .collect();
        Self {
            def,
            state: RunState {
                status: RunStatus::Running,
                steps,
                warnings: Vec::new(),
                compensations: Vec::new(),
                finished: 0,
                resumes: 0,
            },
        }
    }

    /// Releases the steps that can start at submit.
    pub fn start(&mut self, wf: WorkflowId) -> Vec<Release> {
        let mut out = Vec::new();
        self.release(wf, None, &mut out);
        out
    }

    /// Records the end of a step's job (or of a compensation) and answers the jobs it
    /// releases. A second call for the same step changes nothing.
    pub fn step_ended(
        &mut self,
        wf: WorkflowId,
        r: &StepRef,
        job: JobId,
        state: JobState,
        response: Option<StepResponse>,
        error: Option<String>,
    ) -> Vec<Release> {
        let mut out = Vec::new();
        let i = r.step as usize;
        if i >= self.state.steps.len() {
            return out;
        }
        if r.compensation {
            if self.state.steps[i].compensation != Some(StepStatus::Running) {
                return out;
            }
            let ok = state == JobState::Succeeded;
            self.state.steps[i].compensation = Some(if ok {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            });
            if !ok {
                self.state.status = RunStatus::CompensationFailed;
            }
            self.next_compensation(wf, Some(job), &mut out);
            return out;
        }
        if self.state.steps[i].status != StepStatus::Running {
            return out;
        }
        if self.state.steps[i].job_id.as_deref() != Some(job.to_string().as_str()) {
            return out; // a job of an earlier resume series
        }
        if self.def.steps[i].paginate.is_some() {
            let current = self.state.steps[i].pages.last().map_or(0, |p| p.n);
            if r.page != current {
                return out; // an earlier page's end, recorded already
            }
            if state == JobState::Succeeded {
                if let Some(resp) = &response {
                    match self.next_page(wf, i, resp, job) {
                        Ok(Some(release)) => {
                            self.state.steps[i].response = response;
                            out.push(release);
                            return out;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            return self.finish_step(
                                wf,
                                i,
                                job,
                                response,
                                Some(e),
                                StepStatus::Failed,
                            );
                        }
                    }
                }
            }
            if let Some(p) = self.state.steps[i].pages.last_mut() {
                p.status = response.as_ref().map(|r| r.status);
            }
            if let Some(e) = self.cursor_expired(i, state, response.as_ref()) {
                return self.finish_step(wf, i, job, response, Some(e), StepStatus::Failed);
            }
        }
        let status = match state {
            JobState::Succeeded => StepStatus::Succeeded,
            JobState::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Failed,
        };
        self.finish_step(wf, i, job, response, error, status)
    }

    /// Ends step `i` with `status` (recording its answer or error and its place in the finish
    /// order), runs what a failure implies, and releases what follows.
    fn finish_step(
        &mut self,
        wf: WorkflowId,
        i: usize,
        job: JobId,
        response: Option<StepResponse>,
        error: Option<String>,
        status: StepStatus,
    ) -> Vec<Release> {
        let mut out = Vec::new();
        self.state.finished += 1;
        let seq = self.state.finished;
        let st = &mut self.state.steps[i];
        st.response = response;
        st.error = error;
        st.finished_seq = seq;
        st.status = status;
        if status != StepStatus::Succeeded {
            self.step_failed(wf, i, Some(job), &mut out);
        }
        self.release(wf, Some(job), &mut out);
        out
    }

    /// After page N of step `i` succeeded: the job of page N + 1, or `None` when the walk is
    /// over (no next page, or `max_pages`), or an error (`loop_detected`, a link elsewhere).
    fn next_page(
        &mut self,
        wf: WorkflowId,
        i: usize,
        resp: &StepResponse,
        by: JobId,
    ) -> Result<Option<Release>, String> {
        let p = self.def.steps[i].paginate.clone().expect("paginated");
        let st = &self.state.steps[i];
        let last = st.pages.last().cloned().expect("a page ran");
        let body = || serde_json::from_str::<Value>(&resp.body).ok();
        let items_len = |b: &Option<Value>| -> Option<usize> {
            let path = p.items.as_deref()?;
            let segs = parse_path(path).ok()?;
            walk(b.as_ref()?, &segs)?.as_array().map(Vec::len)
        };
        let b = body();
        let n_items = items_len(&b);
        let next: Option<String> = if n_items == Some(0) {
            None
        } else {
            match p.style {
                PageStyle::Link => next_link(&resp.headers),
                PageStyle::BodyCursor => {
                    let at = |path: &Option<String>| {
                        let segs = parse_path(path.as_deref()?).ok()?;
                        walk(b.as_ref()?, &segs).cloned()
                    };
                    if at(&p.has_more) == Some(Value::Bool(false)) {
                        None
                    } else {
                        match at(&p.next) {
                            Some(Value::String(c)) if !c.is_empty() => Some(c),
                            Some(Value::Number(c)) => Some(c.to_string()),
                            _ => None,
                        }
                    }
                }
                PageStyle::Offset => {
                    let size = p.page_size.unwrap_or(0);
                    if n_items.is_some_and(|k| (k as u64) < size) {
                        None
                    } else {
                        Some((u64::from(last.n) * size).to_string())
                    }
                }
                PageStyle::Page => Some((last.n + 1).to_string()),
            }
        };
        let st = &mut self.state.steps[i];
        if let Some(l) = st.pages.last_mut() {
            l.status = Some(resp.status);
            l.next = next.clone();
        }
        let Some(cursor) = next else { return Ok(None) };
        if st
            .pages
            .iter()
            .any(|q| q.cursor.as_deref() == Some(cursor.as_str()))
        {
            return Err(format!(
                "loop_detected: page {} gave the cursor {cursor:?} again",
                last.n
            ));
        }
        if last.n >= p.max_pages {
            st.truncated = true;
            return Ok(None);
        }
        let url = match p.style {
            PageStyle::Link => {
                let u = absolute(&last.url, &cursor);
                if origin(&u) != origin(&last.url) {
                    return Err(format!(
                        "pagination_invalid: the next link {u:?} leaves the step's host"
                    ));
                }
                u
            }
            _ => with_param(&st.pages[0].url, &param_name(&p), &cursor),
        };
        let n = last.n + 1;
        let mut spec = self.def.steps[i].job.spec.clone();
        // Headers and body render as for page 1 (from the same checkpointed results).
        let rendered = render(&spec, &self.def.input, &self.def, &self.state)?;
        spec = rendered;
        spec.url = url.clone();
        let id = control::series_page_job_id(wf, i as u32, n, self.state.resumes);
        let st = &mut self.state.steps[i];
        st.pages.push(PageState {
            n,
            job_id: id.to_string(),
            url,
            cursor: Some(cursor),
            status: None,
            next: None,
        });
        st.job_id = Some(id.to_string());
        st.released_by = Some(by.to_string());
        let lane = self.def.steps[i].job.lane.clone();
        Ok(Some(self.released(wf, i, false, spec, lane, id)))
    }

    /// A page after the first, called with a provider's cursor (`link`, `body_cursor`), that
    /// ended failed with 400 or 410: the provider no longer accepts the cursor (AWS tokens last
    /// 24 h, Shopify's `page_info` expires). The step fails `cursor_expired`; retrying the same
    /// cursor cannot help, and restarting the walk would fetch finished pages again.
    fn cursor_expired(
        &self,
        i: usize,
        state: JobState,
        response: Option<&StepResponse>,
    ) -> Option<String> {
        let p = self.def.steps[i].paginate.as_ref()?;
        if state == JobState::Succeeded
            || !matches!(p.style, PageStyle::Link | PageStyle::BodyCursor)
        {
            return None;
        }
        let status = response?.status;
        let page = self.state.steps[i].pages.last()?;
        if page.n < 2 || !matches!(status, 400 | 410) {
            return None;
        }
        Some(format!(
            "cursor_expired: page {} was refused ({status}) with the cursor {:?} that page {} gave: the provider no longer accepts it; submit the workflow again to start a new walk",
            page.n,
            page.cursor.as_deref().unwrap_or_default(),
            page.n - 1
        ))
    }

    fn step_failed(&mut self, wf: WorkflowId, i: usize, by: Option<JobId>, out: &mut Vec<Release>) {
        let d = &self.def.steps[i];
        if d.non_blocking {
            let why = self.state.steps[i].error.clone().unwrap_or_default();
            self.state
                .warnings
                .push(format!("non-blocking step {} failed: {why}", d.name));
            return;
        }
        if !d.critical {
            self.skip_dependents(i);
            return;
        }
        if self.state.status != RunStatus::Running {
            return;
        }
        // A critical failure: nothing new starts; compensations run in reverse order.
        for s in self.state.steps.iter_mut() {
            if s.status == StepStatus::Pending {
                s.status = StepStatus::Cancelled;
            }
        }
        let mut done: Vec<(u32, u32)> = self
            .state
            .steps
            .iter()
            .enumerate()
            .filter(|(j, s)| {
                s.status == StepStatus::Succeeded && self.def.steps[*j].compensate.is_some()
            })
            .map(|(j, s)| (s.finished_seq, j as u32))
            .collect();
        done.sort_by(|a, b| b.cmp(a));
        self.state.compensations = done.into_iter().map(|(_, j)| j).collect();
        self.state.status = RunStatus::Compensating;
        self.next_compensation(wf, by, out);
    }

    fn next_compensation(&mut self, wf: WorkflowId, by: Option<JobId>, out: &mut Vec<Release>) {
        if self.state.status == RunStatus::CompensationFailed {
            return;
        }
        if self.state.compensations.is_empty() {
            self.state.status = RunStatus::Failed;
            return;
        }
        let j = self.state.compensations.remove(0) as usize;
        let t = self.def.steps[j]
            .compensate
            .clone()
            .expect("listed steps compensate");
        let spec = match render(&t.spec, &self.def.input, &self.def, &self.state) {
            Ok(s) => s,
            Err(e) => {
                self.state.steps[j].compensation = Some(StepStatus::Failed);
                self.state.steps[j].error = Some(e);
                self.state.status = RunStatus::CompensationFailed;
                return;
            }
        };
        let id = control::series_job_id(wf, j as u32, true, self.state.resumes);
        self.state.steps[j].compensation = Some(StepStatus::Running);
        self.state.steps[j].compensation_job_id = Some(id.to_string());
        let _ = by;
        out.push(self.released(wf, j, true, spec, t.lane, id));
    }

    fn skip_dependents(&mut self, i: usize) {
        let mut changed = true;
        let mut failed = vec![i];
        while changed {
            changed = false;
            for (j, d) in self.def.steps.iter().enumerate() {
                if self.state.steps[j].status == StepStatus::Pending
                    && d.depends_on.iter().any(|x| failed.contains(&(*x as usize)))
                {
                    self.state.steps[j].status = StepStatus::Skipped;
                    failed.push(j);
                    changed = true;
                }
            }
        }
    }

    fn released(
        &self,
        wf: WorkflowId,
        step: usize,
        compensation: bool,
        mut spec: JobSpec,
        lane: String,
        id: JobId,
    ) -> Release {
        let page = if compensation {
            0
        } else {
            self.state.steps[step].pages.last().map_or(0, |p| p.n)
        };
        spec.workflow = Some(StepRef {
            workflow_id: wf.to_string(),
            step: step as u32,
            compensation,
            page,
        });
        let name = &self.def.steps[step].name;
        let mut key = if compensation {
            format!("{wf}:{name}:compensate")
        } else if page > 0 {
            format!("{wf}:{name}:page:{page}")
        } else {
            format!("{wf}:{name}")
        };
        if self.state.resumes > 0 {
            // A resume series sends (and dedups) under keys of its own.
            key.push_str(&format!(":resume:{}", self.state.resumes));
        }
        Release {
            id,
            spec,
            lane,
            key,
        }
    }

    /// Decides step `j`'s `when` (true without one) from checkpointed results.
    fn condition(&self, j: usize) -> Result<bool, String> {
        let Some(w) = &self.def.steps[j].when else {
            return Ok(true);
        };
        let c = crate::condition::parse(w).map_err(|e| format!("condition_invalid: {e}"))?;
        let (input, def, state) = (&self.def.input, &self.def, &self.state);
        c.eval(&mut |p: &str| resolve(p, input, def, state).ok())
            .map_err(|e| match e {
                crate::condition::EvalError::Unresolved(p) => {
                    format!("condition_unresolved: {p} has no value (guard it with exists({p}))")
                }
                crate::condition::EvalError::Type(m) => format!("condition_invalid: {m}"),
            })
    }

    /// Ends step `j`, never sent, failed with `error` (a template or condition that could not
    /// be decided: not retryable).
    fn failed_unsent(
        &mut self,
        wf: WorkflowId,
        j: usize,
        by: Option<JobId>,
        error: String,
        out: &mut Vec<Release>,
    ) {
        self.state.finished += 1;
        let st = &mut self.state.steps[j];
        st.status = StepStatus::Failed;
        st.error = Some(error);
        st.finished_seq = self.state.finished;
        self.step_failed(wf, j, by, out);
    }

    /// Starts every pending step whose dependencies all succeeded (or were skipped by their
    /// `when`) and whose own `when` holds; ends the run when nothing is left.
    fn release(&mut self, wf: WorkflowId, by: Option<JobId>, out: &mut Vec<Release>) {
        loop {
            if self.state.status != RunStatus::Running {
                break;
            }
            // A skipped dependency counts as done: a failure's dependents were skipped with it
            // (`skip_dependents`), so only a false `when` leaves a skipped step's dependents
            // pending.
            let ready = (0..self.def.steps.len()).find(|&j| {
                self.state.steps[j].status == StepStatus::Pending
                    && self.def.steps[j].depends_on.iter().all(|d| {
                        matches!(
                            self.state.steps[*d as usize].status,
                            StepStatus::Succeeded | StepStatus::Skipped
                        )
                    })
            });
            let Some(j) = ready else { break };
            match self.condition(j) {
                Ok(holds) => {
                    if self.def.steps[j].when.is_some() {
                        self.state.steps[j].condition = Some(holds);
                    }
                    if !holds {
                        let st = &mut self.state.steps[j];
                        st.status = StepStatus::Skipped;
                        st.released_by = by.map(|b| b.to_string());
                        continue;
                    }
                }
                Err(e) => {
                    self.failed_unsent(wf, j, by, e, out);
                    continue;
                }
            }
            let t = self.def.steps[j].job.clone();
            match render(&t.spec, &self.def.input, &self.def, &self.state) {
                Ok(spec) => {
                    let paginated = self.def.steps[j].paginate.is_some();
                    let id = if paginated {
                        control::series_page_job_id(wf, j as u32, 1, self.state.resumes)
                    } else {
                        control::series_job_id(wf, j as u32, false, self.state.resumes)
                    };
                    let st = &mut self.state.steps[j];
                    st.status = StepStatus::Running;
                    st.job_id = Some(id.to_string());
                    st.released_by = by.map(|b| b.to_string());
                    if paginated {
                        st.pages.push(PageState {
                            n: 1,
                            job_id: id.to_string(),
                            url: spec.url.clone(),
                            cursor: None,
                            status: None,
                            next: None,
                        });
                    }
                    out.push(self.released(wf, j, false, spec, t.lane, id));
                }
                // Never sent: a missing path is not retryable.
                Err(e) => self.failed_unsent(wf, j, by, e, out),
            }
        }
        if self.state.status == RunStatus::Running
            && !self
                .state
                .steps
                .iter()
                .any(|s| matches!(s.status, StepStatus::Pending | StepStatus::Running))
        {
            self.state.status = RunStatus::Succeeded;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Submit: parsing and validation.

/// The body of `POST /api/v1/workflows`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowIn {
    /// A name for humans.
    pub name: Option<String>,
    /// What `{{input.<path>}}` reads.
    pub input: Option<Value>,
    /// Steps: job fields plus `name`, `depends_on`, `critical`, `non_blocking`, `retry`,
    /// `compensate`, `paginate`, `when`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>, min_items = 1, max_items = 100))]
    pub steps: Vec<Value>,
    /// The run's webhooks (same shape as a job's): `workflow.completed`, `workflow.failed`,
    /// `workflow.cancelled` and `workflow.page` events, signed and retried like job outcomes.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub webhooks: Option<Vec<Value>>,
    /// Dedup key of the run.
    #[serde(alias = "idempotentKey")]
    pub idempotent_key: Option<String>,
}

/// A checked workflow: the definition plus the targets admission resolves.
#[derive(Debug, Clone)]
pub struct ValidatedWorkflow {
    /// The definition to freeze.
    pub def: Definition,
    /// Targets of every step and compensation (field path, parsed URL with the templates
    /// masked): domains still to be resolved and checked.
    pub targets: Vec<(String, crate::ssrf::TargetUrl)>,
}

pub use crate::template::mask;
use crate::template::templates;

fn take_bool(
    o: &mut serde_json::Map<String, Value>,
    names: &[&str],
    field: &str,
) -> Result<Option<bool>, FieldError> {
    for n in names {
        if let Some(v) = o.remove(*n) {
            return v
                .as_bool()
                .map(Some)
                .ok_or_else(|| FieldError::invalid(field, "must be true or false"));
        }
    }
    Ok(None)
}

/// Parses and checks one job template (a step's call or its compensation) at `field`.
fn job_template(
    mut o: serde_json::Map<String, Value>,
    field: &str,
    cx: &Context<'_>,
    targets: &mut Vec<(String, crate::ssrf::TargetUrl)>,
) -> Result<JobSpec, FieldError> {
    for n in [
        "fallback_job",
        "fallbackJob",
        "on_success",
        "onSuccess",
        "on_failure",
        "onFailure",
        "on_failure_timeout_ms",
        "onFailureTimeoutMs",
    ] {
        if o.get(n).is_some_and(|v| !v.is_null()) {
            return Err(FieldError::invalid(
                format!("{field}.{n}"),
                "not allowed in a workflow step: the workflow decides what follows",
            ));
        }
    }
    let raw_url = o.get("url").and_then(Value::as_str).map(str::to_string);
    let raw_body = o.get("body").and_then(Value::as_str).map(str::to_string);
    let mut raw_headers: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Value::Object(h)) = o.get_mut("headers") {
        for (k, v) in h.iter_mut() {
            if let Value::String(s) = v {
                raw_headers.insert(k.clone(), s.clone());
                *s = mask(s);
            }
        }
    }
    if let Some(u) = &raw_url {
        if let Some(at) = u.find("{{") {
            let authority_end = u
                .find("://")
                .map(|s| s + 3)
                .and_then(|s| u[s..].find(['/', '?', '#']).map(|e| s + e));
            if authority_end.is_none_or(|e| at < e) {
                return Err(FieldError::invalid(
                    format!("{field}.url"),
                    "the scheme and host may not be templated (only the path and query)",
                ));
            }
        }
        o.insert("url".into(), Value::String(mask(u)));
    }
    if let Some(b) = &raw_body {
        o.insert("body".into(), Value::String(mask(b)));
    }
    let input = from_value(Value::Object(o)).map_err(|e| nest(e, field))?;
    let v = input.validate(cx).map_err(|e| nest(e, field))?;
    targets.push((format!("{field}.url"), v.target));
    // A step's own webhooks report its job (each page's, for a paginated step).
    for (k, t) in v.webhook_targets.into_iter().enumerate() {
        targets.push((format!("{field}.webhooks[{k}].url"), t));
    }
    let mut spec = v.spec;
    if let Some(u) = raw_url {
        if u.contains("{{") {
            spec.url = u;
        }
    }
    for (n, val) in spec.headers.iter_mut() {
        if let Some(raw) = raw_headers.get(n) {
            if raw.contains("{{") {
                *val = raw.clone();
            }
        }
    }
    spec.body = raw_body.or(spec.body);
    Ok(spec)
}

fn nest(mut e: FieldError, prefix: &str) -> FieldError {
    if e.code == "invalid_json" {
        e.code = "invalid_field";
    }
    e.field = if e.field.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{}", e.field)
    };
    e
}

impl WorkflowIn {
    /// Checks the definition: names, references (no cycles, no unknown or later step), limits,
    /// templates (paths only, from ancestors that block), per-step jobs.
    pub fn validate(self, cx: &Context<'_>) -> Result<ValidatedWorkflow, FieldError> {
        let (webhooks, hook_targets) =
            crate::job::validate_webhook_values(self.webhooks.unwrap_or_default(), cx)?;
        let idempotent_key = match self.idempotent_key {
            None => None,
            Some(k) if k.is_empty() || k.len() > 256 || k.chars().any(char::is_control) => {
                return Err(FieldError::invalid(
                    "idempotent_key",
                    "1 to 256 printable characters",
                ))
            }
            Some(k) => Some(k),
        };
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(FieldError::invalid(
                "steps",
                format!("1 to {MAX_STEPS} steps"),
            ));
        }
        let name = self.name.unwrap_or_default();
        if name.len() > 256 || name.chars().any(char::is_control) {
            return Err(FieldError::invalid(
                "name",
                "at most 256 printable characters",
            ));
        }
        let input = self.input.unwrap_or(Value::Object(Default::default()));
        // Names first, so references can point anywhere and be checked as a graph.
        let mut objs = Vec::with_capacity(self.steps.len());
        let mut names: Vec<String> = Vec::new();
        for (i, s) in self.steps.into_iter().enumerate() {
            let f = format!("steps[{i}]");
            let Value::Object(mut o) = s else {
                return Err(FieldError::invalid(f, "must be a step object"));
            };
            let n = match o.remove("name") {
                Some(Value::String(n)) => n,
                Some(_) => {
                    return Err(FieldError::invalid(format!("{f}.name"), "must be a string"))
                }
                None => return Err(FieldError::missing(format!("{f}.name"))),
            };
            if n.is_empty()
                || n.len() > MAX_NAME_BYTES
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(FieldError::invalid(
                    format!("{f}.name"),
                    format!("1-{MAX_NAME_BYTES} letters, digits, '_' or '-'"),
                ));
            }
            if names.contains(&n) {
                return Err(FieldError::invalid(
                    format!("{f}.name"),
                    "two steps have this name",
                ));
            }
            names.push(n);
            objs.push(o);
        }
        let mut steps = Vec::with_capacity(objs.len());
        let mut targets: Vec<(String, crate::ssrf::TargetUrl)> = hook_targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("webhooks[{i}].url"), t))
            .collect();
        for (i, mut o) in objs.into_iter().enumerate() {
            let f = format!("steps[{i}]");
            let when =
                match o.remove("when") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(w)) => {
                        crate::condition::parse(&w)
                            .map_err(|e| FieldError::invalid(format!("{f}.when"), e.to_string()))?;
                        Some(w)
                    }
                    Some(_) => return Err(FieldError::invalid(
                        format!("{f}.when"),
                        "must be a condition (a string such as \"steps.a.response.status == 200\")",
                    )),
                };
            let paginate = match o.remove("paginate") {
                None | Some(Value::Null) => None,
                Some(v) => Some(check_paginate(v, &format!("{f}.paginate"))?),
            };
            let deps = match o.remove("depends_on").or_else(|| o.remove("dependsOn")) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => {
                    let mut out = Vec::new();
                    for (k, d) in a.iter().enumerate() {
                        let df = format!("{f}.depends_on[{k}]");
                        let d = d
                            .as_str()
                            .ok_or_else(|| FieldError::invalid(&df, "must be a step name"))?;
                        let j = names.iter().position(|n| n == d).ok_or_else(|| {
                            FieldError::invalid(&df, format!("no step is named {d:?}"))
                        })?;
                        if j == i {
                            return Err(FieldError::invalid(df, "a step cannot depend on itself"));
                        }
                        out.push(j as u32);
                    }
                    out
                }
                Some(_) => {
                    return Err(FieldError::invalid(
                        format!("{f}.depends_on"),
                        "must be a list of step names",
                    ))
                }
            };
            let critical = take_bool(&mut o, &["critical"], &format!("{f}.critical"))?;
            let non_blocking = take_bool(
                &mut o,
                &["non_blocking", "nonBlocking"],
                &format!("{f}.non_blocking"),
            )?
            .unwrap_or(false);
            if non_blocking && critical == Some(true) {
                return Err(FieldError::invalid(
                    format!("{f}.critical"),
                    "a non-blocking step cannot be critical",
                ));
            }
            let retry = o.remove("retry");
            let compensate = match o.remove("compensate") {
                None | Some(Value::Null) => None,
                Some(Value::Object(c)) => Some(c),
                Some(_) => {
                    return Err(FieldError::invalid(
                        format!("{f}.compensate"),
                        "must be a job object",
                    ))
                }
            };
            if retry.is_some() && o.contains_key("timeout") {
                return Err(FieldError::invalid(
                    format!("{f}.retry"),
                    "give retry (the step's wall-clock budget) or timeout, not both",
                ));
            }
            let mut spec = job_template(o, &f, cx, &mut targets)?;
            if let Some(r) = retry {
                let d: DurationIn = serde_json::from_value(r)
                    .map_err(|e| FieldError::invalid(format!("{f}.retry"), e.to_string()))?;
                let ms = d
                    .to_millis()
                    .map_err(|m| FieldError::invalid(format!("{f}.retry"), m))?;
                if ms < 1 || ms > cx.limits.max_timeout_ms {
                    return Err(FieldError::invalid(format!("{f}.retry"), "out of range"));
                }
                spec.timeout_ms = ms;
            }
            let compensate = compensate
                .map(|c| job_template(c, &format!("{f}.compensate"), cx, &mut targets))
                .transpose()?
                .map(|spec| JobTemplate {
                    spec,
                    lane: String::new(),
                });
            steps.push(StepDef {
                name: names[i].clone(),
                job: JobTemplate {
                    spec,
                    lane: String::new(),
                },
                depends_on: deps,
                critical: critical.unwrap_or(!non_blocking),
                non_blocking,
                compensate,
                paginate,
                when,
            });
        }
        check_graph(&steps)?;
        for (i, s) in steps.iter().enumerate() {
            if let Some(j) = s
                .depends_on
                .iter()
                .find(|j| steps[**j as usize].non_blocking)
            {
                return Err(FieldError::invalid(
                    format!("steps[{i}].depends_on"),
                    format!(
                        "{} is non-blocking: nothing may depend on it",
                        steps[*j as usize].name
                    ),
                ));
            }
            let ancestors = ancestors(&steps, i);
            if let Some(w) = &s.when {
                let c = crate::condition::parse(w)
                    .map_err(|e| FieldError::invalid(format!("steps[{i}].when"), e.to_string()))?;
                for (col, path) in c.paths() {
                    check_reference(path, &steps, &ancestors, i, false).map_err(|m| {
                        FieldError::invalid(
                            format!("steps[{i}].when"),
                            format!("at column {col}: {path}: {m}"),
                        )
                    })?;
                }
            }
            let check = |t: &JobTemplate, f: String| -> Result<(), FieldError> {
                let sp = &t.spec;
                let mut texts: Vec<(String, &str)> = vec![(format!("{f}.url"), sp.url.as_str())];
                for (n, v) in &sp.headers {
                    texts.push((format!("{f}.headers.{n}"), v.as_str()));
                }
                if let Some(b) = &sp.body {
                    texts.push((format!("{f}.body"), b.as_str()));
                }
                for (field, text) in texts {
                    for expr in templates(text) {
                        check_reference(&expr, &steps, &ancestors, i, t.spec.workflow.is_some())
                            .map_err(|m| {
                                FieldError::invalid(&field, format!("{{{{{expr}}}}}: {m}"))
                            })?;
                    }
                }
                Ok(())
            };
            check(&s.job, format!("steps[{i}]"))?;
            if let Some(c) = &s.compensate {
                // A compensation may also read its own step's answer.
                let mut with_self = ancestors.clone();
                with_self.push(i);
                for (field, text) in
                    [(format!("steps[{i}].compensate.url"), c.spec.url.as_str())]
                        .into_iter()
                        .chain(
                            c.spec
                                .body
                                .as_deref()
                                .map(|b| (format!("steps[{i}].compensate.body"), b)),
                        )
                        .chain(c.spec.headers.iter().map(|(n, v)| {
                            (format!("steps[{i}].compensate.headers.{n}"), v.as_str())
                        }))
                {
                    for expr in templates(text) {
                        check_reference(&expr, &steps, &with_self, usize::MAX, false).map_err(
                            |m| FieldError::invalid(&field, format!("{{{{{expr}}}}}: {m}")),
                        )?;
                    }
                }
            }
        }
        Ok(ValidatedWorkflow {
            def: Definition {
                name,
                input,
                steps,
                webhooks,
                idempotent_key,
            },
            targets,
        })
    }
}

fn check_paginate(v: Value, field: &str) -> Result<Paginate, FieldError> {
    let p: Paginate =
        serde_json::from_value(v).map_err(|e| FieldError::invalid(field, e.to_string()))?;
    if p.max_pages < 1 || p.max_pages > 100_000 {
        return Err(FieldError::invalid(
            format!("{field}.max_pages"),
            "1 to 100000",
        ));
    }
    for (name, path) in [
        ("next", &p.next),
        ("has_more", &p.has_more),
        ("items", &p.items),
    ] {
        if let Some(path) = path {
            parse_path(path).map_err(|e| FieldError::invalid(format!("{field}.{name}"), e))?;
        }
    }
    match p.style {
        PageStyle::BodyCursor if p.next.is_none() => {
            Err(FieldError::missing(format!("{field}.next")))
        }
        PageStyle::Offset if p.page_size.is_none_or(|s| s == 0) => Err(FieldError::invalid(
            format!("{field}.page_size"),
            "offset pagination needs page_size (items per page)",
        )),
        PageStyle::Page | PageStyle::Offset if p.items.is_none() => {
            Err(FieldError::missing(format!("{field}.items")))
        }
        _ => Ok(p),
    }
}

fn check_graph(steps: &[StepDef]) -> Result<(), FieldError> {
    // Kahn: whatever is never freed sits on a cycle.
    let n = steps.len();
    let mut indeg: Vec<usize> = steps.iter().map(|s| s.depends_on.len()).collect();
    let mut done = vec![false; n];
    let mut progress = true;
    while progress {
        progress = false;
        for i in 0..n {
            if !done[i] && indeg[i] == 0 {
                done[i] = true;
                progress = true;
                for (j, s) in steps.iter().enumerate() {
                    indeg[j] -= s.depends_on.iter().filter(|d| **d as usize == i).count();
                }
            }
        }
    }
    match done.iter().position(|d| !d) {
        Some(i) => Err(FieldError::invalid(
            format!("steps[{i}].depends_on"),
            format!("step {} is on a dependency cycle", steps[i].name),
        )),
        None => Ok(()),
    }
}

fn ancestors(steps: &[StepDef], i: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut todo: Vec<usize> = steps[i].depends_on.iter().map(|d| *d as usize).collect();
    while let Some(j) = todo.pop() {
        if !out.contains(&j) {
            out.push(j);
            todo.extend(steps[j].depends_on.iter().map(|d| *d as usize));
        }
    }
    out
}

fn check_reference(
    expr: &str,
    steps: &[StepDef],
    ancestors: &[usize],
    _me: usize,
    _unused: bool,
) -> Result<(), String> {
    let path = parse_path(expr)?;
    match path.first() {
        Some(Seg::Name(n)) if n == "input" => Ok(()),
        Some(Seg::Name(n)) if n == "page" => Err(
            "page.cursor is not a template: a paginated step adds its cursor to the query".into(),
        ),
        Some(Seg::Name(n)) if n == "steps" => {
            let Some(Seg::Name(step)) = path.get(1) else {
                return Err("expected steps.<name>.response…".into());
            };
            let j = steps
                .iter()
                .position(|s| &s.name == step)
                .ok_or_else(|| format!("no step is named {step:?}"))?;
            if !ancestors.contains(&j) {
                return Err(format!(
                    "step {step} is not an ancestor (list it in depends_on, directly or through another step)"
                ));
            }
            if steps[j].non_blocking {
                return Err(format!(
                    "step {step} is non-blocking: its results cannot be used"
                ));
            }
            match (path.get(2), path.get(3)) {
                (Some(Seg::Name(r)), Some(Seg::Name(k)))
                    if r == "response"
                        && (k == "status" && path.len() == 4
                            || k == "headers" && path.len() == 5
                            || k == "body") =>
                {
                    Ok(())
                }
                _ => Err(
                    "expected steps.<name>.response.status, .headers.<name> or .body<path>".into(),
                ),
            }
        }
        _ => Err("a template is a path starting with input, steps or page".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Templates: RFC 9535 singular paths only (names and indexes), encoded per slot.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Name(String),
    Index(usize),
}

/// `a.b[0]['c d']` → segments. Names are letters, digits, `_` and `-` (others in `['…']`).
fn parse_path(expr: &str) -> Result<Vec<Seg>, String> {
    let e = expr.strip_prefix("$.").unwrap_or(expr);
    let b = e.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut expect_name = true;
    while i < b.len() {
        match b[i] {
            b'.' if !expect_name => {
                expect_name = true;
                i += 1;
            }
            b'[' => {
                let end = e[i..].find(']').ok_or("unclosed [")? + i;
                let inner = &e[i + 1..end];
                if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    out.push(Seg::Name(q.to_string()));
                } else {
                    out.push(Seg::Index(
                        inner.parse().map_err(|_| format!("bad index [{inner}]"))?,
                    ));
                }
                i = end + 1;
                expect_name = false;
            }
            _ if expect_name => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-')
                {
                    i += 1;
                }
                if i == start {
                    return Err(format!("unexpected {:?} in the path", &e[i..i + 1]));
                }
                out.push(Seg::Name(e[start..i].to_string()));
                expect_name = false;
            }
            _ => return Err(format!("unexpected {:?} in the path", &e[i..i + 1])),
        }
    }
    if out.is_empty() || expect_name {
        return Err("empty path".into());
    }
    Ok(out)
}

fn walk<'a>(mut v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for s in segs {
        v = match s {
            Seg::Name(n) => v.get(n)?,
            Seg::Index(k) => v.get(*k)?,
        };
    }
    Some(v)
}

/// The value of a template, from checkpointed results only.
fn resolve(expr: &str, input: &Value, def: &Definition, state: &RunState) -> Result<Value, String> {
    let unresolved = || format!("template_unresolved: {{{{{expr}}}}} has no value");
    let path = parse_path(expr).map_err(|e| format!("template_unresolved: {e}"))?;
    match path.first() {
        Some(Seg::Name(n)) if n == "input" => {
            walk(input, &path[1..]).cloned().ok_or_else(unresolved)
        }
        Some(Seg::Name(n)) if n == "steps" => {
            let Some(Seg::Name(step)) = path.get(1) else {
                return Err(unresolved());
            };
            let j = def
                .steps
                .iter()
                .position(|s| &s.name == step)
                .ok_or_else(unresolved)?;
            let r = state.steps[j].response.as_ref().ok_or_else(unresolved)?;
            read_response(expr, &path[3..], r, step)
        }
        _ => Err(unresolved()),
    }
}

/// The value at `path` (`status`, `headers.<name>`, `body`, `body<path>`) of the answer `r`
/// of `who`.
fn read_response(expr: &str, path: &[Seg], r: &StepResponse, who: &str) -> Result<Value, String> {
    let unresolved = || format!("template_unresolved: {{{{{expr}}}}} has no value");
    match path.first() {
        Some(Seg::Name(k)) if k == "status" => Ok(Value::from(r.status)),
        Some(Seg::Name(k)) if k == "headers" => {
            let Some(Seg::Name(h)) = path.get(1) else {
                return Err(unresolved());
            };
            r.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(h))
                .map(|(_, v)| Value::String(v.clone()))
                .ok_or_else(unresolved)
        }
        Some(Seg::Name(k)) if k == "body" => {
            if path.len() == 1 {
                return Ok(Value::String(r.body.clone()));
            }
            let body: Value = serde_json::from_str(&r.body).map_err(|_| {
                format!("template_unresolved: {{{{{expr}}}}}: the body of {who} is not JSON")
            })?;
            walk(&body, &path[1..]).cloned().ok_or_else(unresolved)
        }
        _ => Err(unresolved()),
    }
}

// ---------------------------------------------------------------------------------------------
// Chain children (`on_success`, `on_failure`) read their parent's answer:
// `{{parent.response.status|headers.<name>|body<path>}}`, encoded per slot as in steps.

/// Checks the templates of a job's children (at any depth): only `parent.response.status`,
/// `.headers.<name>` or `.body<path>`, never in the scheme or host, never in a credential
/// header (those are sealed at rest). The job itself and its fallback links are not templated.
pub fn check_child_templates(spec: &JobSpec) -> Result<(), FieldError> {
    check_children(spec, "")
}

fn check_children(spec: &JobSpec, prefix: &str) -> Result<(), FieldError> {
    for (name, child) in [
        ("on_success", &spec.on_success),
        ("on_failure", &spec.on_failure),
    ] {
        let Some(c) = child.as_deref() else { continue };
        let f = format!("{prefix}{name}");
        let s = &c.spec;
        if let Some(at) = s.url.find("{{") {
            let authority_end = s
                .url
                .find("://")
                .map(|i| i + 3)
                .and_then(|i| s.url[i..].find(['/', '?', '#']).map(|e| i + e));
            if authority_end.is_none_or(|e| at < e) {
                return Err(FieldError::invalid(
                    format!("{f}.url"),
                    "the scheme and host may not be templated (only the path and query)",
                ));
            }
        }
        let mut texts: Vec<(String, &str)> = vec![(format!("{f}.url"), s.url.as_str())];
        for (n, v) in &s.headers {
            if v.contains("{{") && crate::lane::is_credential_header(n, &[]) {
                return Err(FieldError::invalid(
                    format!("{f}.headers.{n}"),
                    "a credential header is sealed at rest and cannot be templated",
                ));
            }
            texts.push((format!("{f}.headers.{n}"), v.as_str()));
        }
        if let Some(b) = &s.body {
            texts.push((format!("{f}.body"), b.as_str()));
        }
        for (field, text) in texts {
            for expr in templates(text) {
                check_parent_reference(&expr)
                    .map_err(|m| FieldError::invalid(&field, format!("{{{{{expr}}}}}: {m}")))?;
            }
        }
        check_children(s, &format!("{f}."))?;
    }
    Ok(())
}

fn check_parent_reference(expr: &str) -> Result<(), String> {
    let path = parse_path(expr)?;
    let ok = matches!(
        (path.first(), path.get(1), path.get(2)),
        (Some(Seg::Name(p)), Some(Seg::Name(r)), Some(Seg::Name(k)))
            if p == "parent" && r == "response"
                && (k == "status" && path.len() == 3 || k == "headers" && path.len() == 4 || k == "body")
    );
    if ok {
        Ok(())
    } else {
        Err(
            "a child job's template is parent.response.status, .headers.<name> or .body<path>"
                .into(),
        )
    }
}

/// Whether a child's url, header values or body hold templates.
pub fn has_templates(spec: &JobSpec) -> bool {
    spec.url.contains("{{")
        || spec.body.as_deref().is_some_and(|b| b.contains("{{"))
        || spec.headers.iter().any(|(_, v)| v.contains("{{"))
}

/// Renders a child's url, header values and body from its parent's final answer (none: the
/// parent had no answer, so every path is unresolved). Its own children and fallback links are
/// left as they are (a grandchild reads this child's answer).
pub fn render_child(spec: &JobSpec, parent: Option<&StepResponse>) -> Result<JobSpec, String> {
    render_with(spec, &|expr: &str| {
        let unresolved = || format!("template_unresolved: {{{{{expr}}}}} has no value");
        let path = parse_path(expr).map_err(|e| format!("template_unresolved: {e}"))?;
        match (path.first(), path.get(1)) {
            (Some(Seg::Name(p)), Some(Seg::Name(r))) if p == "parent" && r == "response" => {
                let r = parent.ok_or_else(|| {
                    format!("template_unresolved: {{{{{expr}}}}}: the parent has no answer")
                })?;
                read_response(expr, &path[2..], r, "the parent")
            }
            _ => Err(unresolved()),
        }
    })
}

fn scalar(v: &Value, expr: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!(
            "template_unresolved: {{{{{expr}}}}} is not a string, number or boolean"
        )),
    }
}

fn encode(s: &str, query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if query => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What a placeholder's path reads (its value, or why it has none).
type Resolver<'a> = dyn Fn(&str) -> Result<Value, String> + 'a;

/// Replaces the templates of `text`; `slot` encodes each value for where it lands.
fn substitute(
    text: &str,
    mut slot: impl FnMut(&str, &Value, &str, &str) -> Result<String, String>,
    resolve: &Resolver<'_>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(a) = rest.find("{{") {
        let Some(b) = rest[a..].find("}}") else { break };
        let expr = rest[a + 2..a + b].trim();
        let value = resolve(expr)?;
        let before = &rest[..a];
        let after = &rest[a + b + 2..];
        out.push_str(before);
        out.push_str(&slot(expr, &value, &out.clone(), after)?);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders a template spec from the run's checkpointed results: URL path segments are
/// percent-encoded, query values form-encoded, header values refused if they would carry CR,
/// LF or NUL, and a body placeholder that is a whole JSON string takes the typed value (inside
/// a string: JSON-escaped). A missing path is `template_unresolved`.
pub fn render(
    t: &JobSpec,
    input: &Value,
    def: &Definition,
    state: &RunState,
) -> Result<JobSpec, String> {
    render_with(t, &|expr: &str| resolve(expr, input, def, state))
}

/// [`render`] with the paths read by `resolve`.
fn render_with(t: &JobSpec, resolve: &Resolver<'_>) -> Result<JobSpec, String> {
    let mut spec = t.clone();
    spec.url = substitute(
        &t.url,
        |expr, v, before, _| Ok(encode(&scalar(v, expr)?, before.contains('?'))),
        resolve,
    )?;
    for (n, v) in spec.headers.iter_mut() {
        if v.contains("{{") {
            *v = substitute(
                v,
                |expr, val, _, _| {
                    let s = scalar(val, expr)?;
                    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return Err(format!(
                            "template_invalid: {{{{{expr}}}}} would put CR, LF or NUL in header {n}"
                        ));
                    }
                    Ok(s)
                },
                resolve,
            )?;
        }
    }
    if let Some(b) = &t.body {
        if b.contains("{{") {
            // `"{{x}}"` (the whole JSON string) → the typed value; inside a string → escaped;
            // elsewhere → the value as JSON.
            let mut out = String::new();
            let mut rest = b.as_str();
            while let Some(a) = rest.find("{{") {
                let Some(e) = rest[a..].find("}}") else { break };
                let expr = rest[a + 2..a + e].trim().to_string();
                let value = resolve(&expr)?;
                let before = &rest[..a];
                let after = &rest[a + e + 2..];
                let quotes_before = out.matches('"').count() + before.matches('"').count()
                    - out.matches("\\\"").count()
                    - before.matches("\\\"").count();
                let in_string = quotes_before % 2 == 1;
                if in_string && before.ends_with('"') && after.starts_with('"') {
                    out.push_str(&before[..before.len() - 1]);
                    out.push_str(&value.to_string());
                    rest = &after[1..];
                    continue;
                }
                out.push_str(before);
                if in_string {
                    let s = match &value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let esc = Value::String(s).to_string();
                    out.push_str(&esc[1..esc.len() - 1]);
                } else {
                    out.push_str(&value.to_string());
                }
                rest = after;
            }
            out.push_str(rest);
            spec.body = Some(out);
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Limits;
    use crate::ssrf::SsrfPolicy;

    fn validate(v: Value) -> Result<ValidatedWorkflow, FieldError> {
        let limits = Limits::default();
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let cx = Context {
            limits: &limits,
            ssrf: &policy,
            local_region: "local",
            clustered: false,
            now_ms: 1_000,
        };
        serde_json::from_value::<WorkflowIn>(v)
            .unwrap()
            .validate(&cx)
    }

    fn resp(status: u16, body: &str) -> Option<StepResponse> {
        Some(StepResponse {
            status,
            headers: vec![("X-Id".into(), "h-1".into())],
            body: body.into(),
        })
    }

    #[test]
    fn a_run_releases_in_dependency_order_and_renders_per_slot() {
        let v = validate(serde_json::json!({
            "name": "checkout",
            "input": {"order": {"id": 7}},
            "steps": [
                {"name": "charge", "url": "http://127.0.0.1/charge/{{input.order.id}}", "method": "POST",
                 "compensate": {"url": "http://127.0.0.1/refund?charge={{steps.charge.response.body.id}}"}},
                {"name": "fulfil", "url": "http://127.0.0.1/fulfil/{{steps.charge.response.body.id}}", "depends_on": ["charge"],
                 "retry": "1h", "method": "POST",
                 "headers": {"X-Charge": "{{steps.charge.response.headers.x-id}}"},
                 "body": "{\"charge\": \"{{steps.charge.response.body.id}}\", \"n\": {{steps.charge.response.status}}, \"note\": \"id={{steps.charge.response.body.id}}\"}"},
                {"name": "email", "url": "http://127.0.0.1/email", "depends_on": ["fulfil"], "non_blocking": true}
            ]
        }))
        .unwrap();
        assert_eq!(v.def.steps[1].job.spec.timeout_ms, 3_600_000);
        assert!(!v.def.steps[2].critical && v.def.steps[2].non_blocking);
        let wf = WorkflowId::new(10, 99);
        let mut run = Run::new(v.def);
        let first = run.start(wf);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].spec.url, "http://127.0.0.1/charge/7");
        assert_eq!(first[0].key, format!("{wf}:charge"));
        assert_eq!(first[0].id, step_job_id(wf, 0, false));
        let r0 = StepRef {
            workflow_id: wf.to_string(),
            step: 0,
            compensation: false,
            page: 0,
        };
        let next = run.step_ended(
            wf,
            &r0,
            first[0].id,
            JobState::Succeeded,
            resp(201, r#"{"id":"a/b c"}"#),
            None,
        );
        assert_eq!(next.len(), 1);
        let s = &next[0].spec;
        assert_eq!(s.url, "http://127.0.0.1/fulfil/a%2Fb%20c");
        assert_eq!(s.headers[0].1, "h-1");
        let body: Value = serde_json::from_str(s.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"charge": "a/b c", "n": 201, "note": "id=a/b c"})
        );
        assert!(
            run.step_ended(wf, &r0, first[0].id, JobState::Succeeded, None, None)
                .is_empty(),
            "once"
        );
        // fulfil fails: email never starts, charge is compensated, the run ends failed.
        let r1 = StepRef {
            step: 1,
            ..r0.clone()
        };
        let comp = run.step_ended(
            wf,
            &r1,
            next[0].id,
            JobState::Failed,
            resp(500, ""),
            Some("500".into()),
        );
        assert_eq!(comp.len(), 1);
        assert_eq!(comp[0].spec.url, "http://127.0.0.1/refund?charge=a%2Fb+c");
        assert_eq!(comp[0].key, format!("{wf}:charge:compensate"));
        assert_eq!(run.state.status, RunStatus::Compensating);
        assert_eq!(run.state.steps[2].status, StepStatus::Cancelled);
        let rc = StepRef {
            step: 0,
            compensation: true,
            ..r0
        };
        assert!(run
            .step_ended(wf, &rc, comp[0].id, JobState::Succeeded, None, None)
            .is_empty());
        assert_eq!(run.state.status, RunStatus::Failed);
    }

    #[test]
    fn hostile_templates_are_refused() {
        let v = validate(serde_json::json!({
            "input": {"evil": "a\r\nX-Injected: 1", "missing": null},
            "steps": [
                {"name": "a", "url": "http://127.0.0.1/a", "headers": {"X-V": "{{input.evil}}"}, "critical": false},
                {"name": "b", "url": "http://127.0.0.1/b/{{input.nothing.here}}"}
            ]
        }))
        .unwrap();
        let mut run = Run::new(v.def);
        let out = run.start(WorkflowId::new(1, 1));
        assert!(out.is_empty(), "{out:?}");
        assert!(run.state.steps[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("template_invalid"));
        assert!(run.state.steps[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with("template_unresolved"));
        assert_eq!(run.state.status, RunStatus::Failed);
    }

    #[test]
    fn bad_definitions_name_the_step_and_field() {
        for (v, field) in [
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://127.0.0.1/", "depends_on": ["b"]}, {"name": "b", "url": "http://127.0.0.1/", "depends_on": ["a"]}]}),
                "steps[0].depends_on",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://127.0.0.1/", "depends_on": ["zz"]}]}),
                "steps[0].depends_on[0]",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://127.0.0.1/{{steps.b.response.status}}"}, {"name": "b", "url": "http://127.0.0.1/"}]}),
                "steps[0].url",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://{{input.host}}/"}]}),
                "steps[0].url",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://127.0.0.1/", "non_blocking": true}, {"name": "b", "url": "http://127.0.0.1/", "depends_on": ["a"]}]}),
                "steps[1].depends_on",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://10.0.0.1/"}]}),
                "steps[0].url",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://127.0.0.1/"}, {"name": "a", "url": "http://127.0.0.1/"}]}),
                "steps[1].name",
            ),
            (
                serde_json::json!({"steps": [{"name": "a", "url": "http://127.0.0.1/", "bogus": 1}]}),
                "steps[0].bogus",
            ),
        ] {
            let e = validate(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.field, field, "{v}: {e:?}");
        }
        let many: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| serde_json::json!({"name": format!("s{i}"), "url": "http://127.0.0.1/"}))
            .collect();
        assert_eq!(
            validate(serde_json::json!({"steps": many}))
                .unwrap_err()
                .field,
            "steps"
        );
    }

    #[test]
    fn when_is_checked_at_submit_naming_the_step_and_position() {
        let base = |when: Value| {
            serde_json::json!({"steps": [
                {"name": "a", "url": "http://127.0.0.1/a"},
                {"name": "n", "url": "http://127.0.0.1/n", "non_blocking": true},
                {"name": "b", "url": "http://127.0.0.1/b", "depends_on": ["a"], "when": when}
            ]})
        };
        for (when, msg) in [
            (
                serde_json::json!("steps.a.response.status =="),
                "at column 27",
            ),
            (
                serde_json::json!("steps.a.response.status == 200 &&"),
                "at column 34",
            ),
            (
                serde_json::json!("steps.zz.response.status == 1"),
                "no step is named",
            ),
            (
                serde_json::json!("steps.n.response.status == 1"),
                "not an ancestor",
            ),
            (
                serde_json::json!("true && steps.a.resp == 1"),
                "at column 9",
            ),
            (serde_json::json!("page.cursor == 'x'"), "page.cursor"),
            (serde_json::json!(true), "must be a condition"),
        ] {
            let e = validate(base(when.clone())).expect_err(&when.to_string());
            assert_eq!(e.field, "steps[2].when", "{when}: {e:?}");
            assert_eq!(e.code, "invalid_field", "{when}: {e:?}");
            assert!(e.message.contains(msg), "{when}: {e:?}");
        }
        let ok = validate(base(serde_json::json!(
            "exists(steps.a.response.body.x) && steps.a.response.headers.x-id != 'y' || input.f == null"
        )))
        .unwrap();
        assert!(ok.def.steps[2].when.is_some());
    }

    #[test]
    fn a_false_when_skips_the_step_and_its_dependents_proceed() {
        let v = validate(serde_json::json!({
            "input": {"vip": false},
            "steps": [
                {"name": "a", "url": "http://127.0.0.1/a"},
                {"name": "gift", "url": "http://127.0.0.1/gift", "depends_on": ["a"],
                 "when": "input.vip == true || steps.a.response.body.total > 100"},
                {"name": "big", "url": "http://127.0.0.1/big", "depends_on": ["a"],
                 "when": "steps.a.response.status == 200 && steps.a.response.body.total >= 50"},
                {"name": "mail", "url": "http://127.0.0.1/mail", "depends_on": ["gift", "big"],
                 "when": "!exists(steps.gift.response.status)"},
                {"name": "read", "url": "http://127.0.0.1/r/{{steps.gift.response.status}}",
                 "depends_on": ["mail"], "critical": false}
            ]
        }))
        .unwrap();
        let wf = WorkflowId::new(10, 7);
        let mut run = Run::new(v.def);
        let first = run.start(wf);
        let r = |step: u32| StepRef {
            workflow_id: wf.to_string(),
            step,
            compensation: false,
            page: 0,
        };
        let next = run.step_ended(
            wf,
            &r(0),
            first[0].id,
            JobState::Succeeded,
            resp(200, r#"{"total": 60}"#),
            None,
        );
        // gift's condition is false: skipped, never sent; big runs.
        assert_eq!(next.len(), 1, "{next:?}");
        assert_eq!(next[0].spec.url, "http://127.0.0.1/big");
        assert_eq!(run.state.steps[1].status, StepStatus::Skipped);
        assert_eq!(run.state.steps[1].condition, Some(false));
        assert_eq!(run.state.steps[2].condition, Some(true));
        let next = run.step_ended(
            wf,
            &r(2),
            next[0].id,
            JobState::Succeeded,
            resp(200, "{}"),
            None,
        );
        // mail depends on the skipped gift: it proceeds; gift has no response.
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].spec.url, "http://127.0.0.1/mail");
        let next = run.step_ended(
            wf,
            &r(3),
            next[0].id,
            JobState::Succeeded,
            resp(200, "{}"),
            None,
        );
        // read templates from the skipped step: unresolved, not sent; not critical.
        assert!(next.is_empty());
        assert_eq!(run.state.steps[4].status, StepStatus::Failed);
        let err = run.state.steps[4].error.clone().unwrap();
        assert!(err.starts_with("template_unresolved"), "{err}");
        assert_eq!(run.state.status, RunStatus::Succeeded);
    }

    #[test]
    fn a_when_that_cannot_be_decided_fails_the_step_unsent() {
        let v = validate(serde_json::json!({
            "steps": [
                {"name": "a", "url": "http://127.0.0.1/a",
                 "compensate": {"url": "http://127.0.0.1/undo"}},
                {"name": "b", "url": "http://127.0.0.1/b", "depends_on": ["a"], "critical": false,
                 "when": "steps.a.response.body.missing == 1"},
                {"name": "c", "url": "http://127.0.0.1/c", "depends_on": ["a"],
                 "when": "steps.a.response.body.s > 1"}
            ]
        }))
        .unwrap();
        let wf = WorkflowId::new(10, 8);
        let mut run = Run::new(v.def);
        let first = run.start(wf);
        let r0 = StepRef {
            workflow_id: wf.to_string(),
            step: 0,
            compensation: false,
            page: 0,
        };
        let next = run.step_ended(
            wf,
            &r0,
            first[0].id,
            JobState::Succeeded,
            resp(200, r#"{"s": "text"}"#),
            None,
        );
        let b = run.state.steps[1].error.clone().unwrap();
        assert!(b.starts_with("condition_unresolved"), "{b}");
        let c = run.state.steps[2].error.clone().unwrap();
        assert!(c.starts_with("condition_invalid"), "{c}");
        // c is critical: the run compensates a.
        assert_eq!(run.state.status, RunStatus::Compensating);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].spec.url, "http://127.0.0.1/undo");
    }

    fn child_job(v: Value) -> Result<JobSpec, FieldError> {
        let limits = Limits::default();
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let cx = Context {
            limits: &limits,
            ssrf: &policy,
            local_region: "local",
            clustered: false,
            now_ms: 1_000,
        };
        let spec = crate::job::from_value(v)?.validate(&cx)?.spec;
        check_child_templates(&spec)?;
        Ok(spec)
    }

    #[test]
    fn children_render_their_parents_answer_per_slot() {
        let spec = child_job(serde_json::json!({
            "url": "http://127.0.0.1/a",
            "on_success": {
                "url": "http://127.0.0.1/orders/{{parent.response.body.id}}?s={{parent.response.status}}&id={{ parent.response.body.id }}",
                "method": "POST",
                "headers": {"X-Req": "{{parent.response.headers.x-id}}"},
                "body": "{\"id\": \"{{parent.response.body.id}}\", \"n\": {{parent.response.body.n}}, \"all\": {{parent.response.body}}}",
                "on_success": {"url": "http://127.0.0.1/g/{{parent.response.status}}"}
            }
        }))
        .unwrap();
        let c = &spec.on_success.as_ref().unwrap().spec;
        assert!(
            c.url.contains("{{parent.response.body.id}}"),
            "kept as given: {}",
            c.url
        );
        assert!(!has_templates(&spec), "the job itself is not templated");
        let parent = StepResponse {
            status: 201,
            headers: vec![("X-Id".into(), "r-1".into())],
            body: r#"{"id": "a/b c", "n": 3}"#.into(),
        };
        let r = render_child(c, Some(&parent)).unwrap();
        assert_eq!(r.url, "http://127.0.0.1/orders/a%2Fb%20c?s=201&id=a%2Fb+c");
        assert_eq!(r.headers, vec![("X-Req".to_string(), "r-1".to_string())]);
        let body: Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "a/b c", "n": 3, "all": "{\"id\": \"a/b c\", \"n\": 3}"})
        );
        // The grandchild reads its own parent (this child): left as is.
        assert_eq!(
            r.on_success.as_ref().unwrap().spec.url,
            "http://127.0.0.1/g/{{parent.response.status}}"
        );
        // A missing path, no answer at all, CR/LF into a header: refused, with the code.
        let e = render_child(
            c,
            Some(&StepResponse {
                body: "{}".into(),
                ..parent.clone()
            }),
        )
        .unwrap_err();
        assert!(e.starts_with("template_unresolved"), "{e}");
        let e = render_child(c, None).unwrap_err();
        assert!(
            e.starts_with("template_unresolved") && e.contains("no answer"),
            "{e}"
        );
        let evil = StepResponse {
            headers: vec![("X-Id".into(), "a\r\nX-Evil: 1".into())],
            ..parent
        };
        let e = render_child(c, Some(&evil)).unwrap_err();
        assert!(e.starts_with("template_invalid"), "{e}");
    }

    #[test]
    fn bad_child_templates_name_the_field() {
        for (job, field) in [
            (
                serde_json::json!({"url": "http://127.0.0.1/a", "on_success": {"url": "http://127.0.0.1/{{input.x}}"}}),
                "on_success.url",
            ),
            (
                serde_json::json!({"url": "http://127.0.0.1/a", "on_failure": {"url": "http://127.0.0.1/b",
                    "body": "{{parent.response.nope}}"}}),
                "on_failure.body",
            ),
            (
                serde_json::json!({"url": "http://127.0.0.1/a", "on_success": {"url": "http://127.0.0.1/b",
                    "on_failure": {"url": "http://127.0.0.1/c", "headers": {"X-A": "{{steps.a.response.status}}"}}}}),
                "on_success.on_failure.headers.X-A",
            ),
            (
                serde_json::json!({"url": "http://127.0.0.1/a", "on_success": {"url": "http://127.0.0.1/b",
                    "headers": {"Authorization": "Bearer {{parent.response.body.token}}"}}}),
                "on_success.headers.Authorization",
            ),
        ] {
            let e = child_job(job.clone()).expect_err(&job.to_string());
            assert_eq!(e.field, field, "{job}: {e:?}");
            assert_eq!(e.code, "invalid_field", "{job}: {e:?}");
        }
        // A template in the host does not parse as a URL at all.
        let e = child_job(serde_json::json!({"url": "http://127.0.0.1/a",
            "on_success": {"url": "http://{{parent.response.body.host}}/x"}}))
        .unwrap_err();
        assert_eq!(e.field, "on_success.url", "{e:?}");
    }

    #[test]
    fn a_refused_cursor_fails_the_step_cursor_expired() {
        let v = validate(serde_json::json!({
            "steps": [
                {"name": "c", "url": "http://127.0.0.1/c", "critical": false,
                 "paginate": {"style": "body_cursor", "next": "next"}},
                {"name": "o", "url": "http://127.0.0.1/o", "critical": false,
                 "paginate": {"style": "offset", "page_size": 1, "items": "items"}}
            ]
        }))
        .unwrap();
        let wf = WorkflowId::new(10, 9);
        let mut run = Run::new(v.def);
        let first = run.start(wf);
        let page = |n: u32, step: u32| StepRef {
            workflow_id: wf.to_string(),
            step,
            compensation: false,
            page: n,
        };
        let body = |b: &str| resp(200, b);
        let c2 = run.step_ended(
            wf,
            &page(1, 0),
            first[0].id,
            JobState::Succeeded,
            body(r#"{"next": "tok-1"}"#),
            None,
        );
        let o2 = run.step_ended(
            wf,
            &page(1, 1),
            first[1].id,
            JobState::Succeeded,
            body(r#"{"items": [1]}"#),
            None,
        );
        // Page 2 of the cursor walk: 410 → cursor_expired; of the offset walk: a plain failure.
        run.step_ended(
            wf,
            &page(2, 0),
            c2[0].id,
            JobState::Failed,
            resp(410, "gone"),
            Some("http_status: target answered 410".into()),
        );
        run.step_ended(
            wf,
            &page(2, 1),
            o2[0].id,
            JobState::Failed,
            resp(400, "bad"),
            Some("http_status: target answered 400".into()),
        );
        let c = run.state.steps[0].error.clone().unwrap();
        assert!(
            c.starts_with("cursor_expired: page 2") && c.contains("tok-1"),
            "{c}"
        );
        assert_eq!(run.state.steps[0].status, StepStatus::Failed);
        let o = run.state.steps[1].error.clone().unwrap();
        assert!(o.starts_with("http_status"), "{o}");
    }

    #[test]
    fn pages_follow_links_and_cursors_and_stop() {
        let v = validate(serde_json::json!({
            "steps": [
                {"name": "crawl", "url": "http://127.0.0.1/items?per_page=2",
                 "paginate": {"style": "link", "max_pages": 3}},
                {"name": "stripe", "url": "http://127.0.0.1/charges", "depends_on": ["crawl"],
                 "paginate": {"style": "body_cursor", "next": "data[1].id", "has_more": "has_more", "param": "starting_after"}}
            ]
        }))
        .unwrap();
        let wf = WorkflowId::new(10, 7);
        let mut run = Run::new(v.def);
        let first = run.start(wf);
        assert_eq!(first[0].id, page_job_id(wf, 0, 1));
        assert_eq!(first[0].key, format!("{wf}:crawl:page:1"));
        let page = |n: u32, step: u32| StepRef {
            workflow_id: wf.to_string(),
            step,
            compensation: false,
            page: n,
        };
        let link = |next: &str| StepResponse {
            status: 200,
            headers: vec![(
                "Link".into(),
                format!("<{next}>; rel=\"next\", <http://127.0.0.1/items?page=1>; rel=\"first\""),
            )],
            body: "[]".into(),
        };
        let out = run.step_ended(
            wf,
            &page(1, 0),
            first[0].id,
            JobState::Succeeded,
            Some(link("/items?page=2")),
            None,
        );
        assert_eq!(out[0].spec.url, "http://127.0.0.1/items?page=2");
        assert_eq!(out[0].key, format!("{wf}:crawl:page:2"));
        assert!(
            run.step_ended(
                wf,
                &page(1, 0),
                first[0].id,
                JobState::Succeeded,
                Some(link("/x")),
                None
            )
            .is_empty(),
            "page 1 once"
        );
        let out = run.step_ended(
            wf,
            &page(2, 0),
            out[0].id,
            JobState::Succeeded,
            Some(link("http://127.0.0.1/items?page=3")),
            None,
        );
        let out = run.step_ended(
            wf,
            &page(3, 0),
            out[0].id,
            JobState::Succeeded,
            Some(link("/items?page=4")),
            None,
        );
        // max_pages 3: truncated, and the next step starts.
        assert!(run.state.steps[0].truncated);
        assert_eq!(run.state.steps[0].status, StepStatus::Succeeded);
        assert_eq!(run.state.steps[0].pages.len(), 3);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].spec.url, "http://127.0.0.1/charges");
        let body = |more: bool, last: &str| StepResponse {
            status: 200,
            headers: vec![],
            body: format!(
                "{{\"has_more\": {more}, \"data\": [{{\"id\": \"a\"}}, {{\"id\": \"{last}\"}}]}}"
            ),
        };
        let p2 = run.step_ended(
            wf,
            &page(1, 1),
            out[0].id,
            JobState::Succeeded,
            Some(body(true, "ch 2")),
            None,
        );
        assert_eq!(
            p2[0].spec.url,
            "http://127.0.0.1/charges?starting_after=ch+2"
        );
        // The same cursor again: a loop, the step fails.
        let end = run.step_ended(
            wf,
            &page(2, 1),
            p2[0].id,
            JobState::Succeeded,
            Some(body(true, "ch 2")),
            None,
        );
        assert!(end.is_empty());
        assert!(run.state.steps[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with("loop_detected"));
        assert_eq!(run.state.status, RunStatus::Failed);
    }

    #[test]
    fn a_next_link_to_another_host_is_refused() {
        let v = validate(serde_json::json!({"steps": [{"name": "c", "url": "http://127.0.0.1/a", "paginate": {"style": "link"}}]})).unwrap();
        let wf = WorkflowId::new(10, 8);
        let mut run = Run::new(v.def);
        let first = run.start(wf);
        let r = StepRef {
            workflow_id: wf.to_string(),
            step: 0,
            compensation: false,
            page: 1,
        };
        let resp = StepResponse {
            status: 200,
            headers: vec![("link".into(), "<http://169.254.169.254/x>; rel=next".into())],
            body: String::new(),
        };
        assert!(run
            .step_ended(wf, &r, first[0].id, JobState::Succeeded, Some(resp), None)
            .is_empty());
        assert!(run.state.steps[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("pagination_invalid"));
        for (p, field) in [
            (
                serde_json::json!({"style": "body_cursor"}),
                "steps[0].paginate.next",
            ),
            (
                serde_json::json!({"style": "offset", "items": "data"}),
                "steps[0].paginate.page_size",
            ),
            (
                serde_json::json!({"style": "link", "max_pages": 0}),
                "steps[0].paginate.max_pages",
            ),
            (
                serde_json::json!({"style": "sideways"}),
                "steps[0].paginate",
            ),
        ] {
            let e = validate(serde_json::json!({"steps": [{"name": "c", "url": "http://127.0.0.1/a", "paginate": p}]})).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
        }
    }
}
