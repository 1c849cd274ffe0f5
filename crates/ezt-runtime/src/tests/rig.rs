//! Test rig shared by the unit tests of dispatch, delivery and admission: the whole runtime
//! (`start_with_clock`) over a memory store and an injected clock, one tenant, and a tiny HTTP
//! target on 127.0.0.1 that answers from a script.
//!
//! The target is a raw TCP loop (no server crate needed): it reads one request, records it and
//! answers the next scripted reply with `Connection: close`, so every attempt is one
//! connection and replies are matched to requests in order.

use std::sync::{Arc, Mutex};

use ezt_core::job::JobSpecIn;
use ezt_core::tier::Tier;
use ezt_core::{JobId, TenantId};
use ezt_store::{JobRecord, MemoryStore, Store, Tenant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::events::JobEvent;
use crate::jobs::Admitted;

use super::{start_with_clock, Runtime};

/// One scripted answer: status and headers (the body is empty).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request the target received: its head and body as text.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) head: String,
    pub(crate) body: String,
}

/// The scripted target: replies in order, the last one repeated.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Target {
    pub(crate) async fn start(script: Vec<Reply>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let h = hits.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((mut sock, _)) = listener.accept().await {
                let reply = script[n.min(script.len() - 1)].clone();
                n += 1;
                let Some(hit) = read_request(&mut sock).await else {
                    continue;
                };
                let mut out = format!(
                    "HTTP/1.1 {} X\r\ncontent-length: 0\r\nconnection: close\r\n",
                    reply.status
                );
                for (k, v) in &reply.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
                h.lock().unwrap().push(hit);
            }
        });
        Self { url, hits }
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Hit> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return Some(Hit { head, body });
            }
        }
    }
}

/// A started runtime over a memory store, with one tenant.
pub(crate) struct Rig {
    pub(crate) rt: Runtime,
    pub(crate) tenant: Tenant,
    stop: CancellationToken,
    sched: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// The runtime with `cfg` (loopback allowed, data in a temporary directory) on `clock`.
    pub(crate) async fn start(mut cfg: Config, clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        cfg.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let tenant = store
            .create_tenant(Tenant {
                id: TenantId::new(clock.now_ms(), 7),
                name: "t".into(),
                tier: Tier::Paid,
                created_at: clock.now_ms(),
            })
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let (rt, sched) = start_with_clock(cfg, store, stop.clone(), clock)
            .await
            .unwrap();
        Self {
            rt,
            tenant,
            stop,
            sched: Some(sched),
            _dir: dir,
        }
    }

    /// Validates and admits one job given as the API's JSON, subscribed to its events first
    /// (its first attempt may end before `admit` returns).
    pub(crate) async fn submit(
        &self,
        spec: serde_json::Value,
    ) -> (Admitted, crate::events::Subscription) {
        let input: JobSpecIn = serde_json::from_value(spec).unwrap();
        let jobs = &self.rt.jobs;
        let job = jobs
            .prepare(self.tenant.id, input, jobs.now_ms())
            .await
            .unwrap();
        let sub = self.rt.events.subscribe(job.id);
        let admitted = jobs.admit(&self.tenant, vec![job]).await.unwrap().remove(0);
        (admitted, sub)
    }

    pub(crate) async fn job(&self, id: JobId) -> JobRecord {
        self.rt
            .store
            .get_job(Some(self.tenant.id), id)
            .await
            .unwrap()
            .expect("stored")
    }

    /// Waits for the job's next attempt event, or its final event; returns the job then.
    pub(crate) async fn next_event(
        &self,
        sub: &mut crate::events::Subscription,
        id: JobId,
    ) -> JobRecord {
        loop {
            match sub.recv().await.expect("events flow") {
                JobEvent::Attempt(_) | JobEvent::Final(_) => return self.job(id).await,
                _ => {}
            }
        }
    }

    /// The job once `done` holds for it (deliveries publish no events, so this re-reads the
    /// store each 10 ms, for at most 10 s).
    pub(crate) async fn until(&self, id: JobId, done: impl Fn(&JobRecord) -> bool) -> JobRecord {
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "condition not reached: {job:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(s) = self.sched.take() {
            self.rt.drain(s, std::time::Duration::from_secs(5)).await;
        }
    }
}
