//! SIGKILL trials (bench protocol B7): kill -9 at a random point during admission and during
//! drain, restart on the same data dir, and count.
//!
//! - lost: a job that got a 2xx but is unknown after the restart, or never becomes final. Must be 0.
//! - duplicates: calls beyond the first with the same Idempotency-Key. Allowed only for jobs in
//!   flight (leased, `running` in the store) at the kill, so at most that many, and only for
//!   those keys.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::fault_common::{await_final, calls_per_key, cli_jobs, record, scale, Rng};
use crate::support::{Reply, Target, TestServer};

const IN_FLIGHT: usize = 16;

fn config() -> String {
    format!("[lanes.default]\nrate = 1000.0\nburst = {IN_FLIGHT}\nmax_in_flight = {IN_FLIGHT}\n")
}

/// Many concurrent submitters, kill -9 after a random number of acks; every acked job must be
/// there after the restart and end `succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill9_during_admission_loses_no_acked_job() {
    const SUBMITTERS: usize = 16;
    const PER_SUBMITTER: usize = 2_000; // bound on each loop; the kill comes long before
    let trials = scale(2, 10);
    let mut rng = Rng::new("kill9_admission");
    let target = Target::start().await;
    let (mut total_acked, mut total_lost, mut total_recovered) = (0, 0, 0);
    let mut per_trial = Vec::new();
    for trial in 0..trials {
        let mut server = TestServer::start_with(&config());
        let dir = server.dir.clone();
        let key = server.key.clone();
        let kill_after = rng.range(50, 600);
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let (tx, mut rx) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        for s in 0..SUBMITTERS {
            let (http, url, key) = (server.http.clone(), server.url("/api/v1/jobs"), key.clone());
            let (acked, tx, job_url) = (acked.clone(), tx.clone(), target.url("adm"));
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_SUBMITTER {
                    let body =
                        json!({"url": job_url, "idempotent_key": format!("a{trial}-{s}-{i}")});
                    let Ok(r) = http.post(&url).bearer_auth(&key).json(&body).send().await else {
                        return; // the server is gone
                    };
                    let status = r.status().as_u16();
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        return; // killed between the head and the body: not an ack
                    };
                    assert_eq!(status, 202, "submission refused: {v}");
                    let mut a = acked.lock().unwrap();
                    a.push(v["job_id"].as_str().unwrap().to_string());
                    tx.send_replace(a.len());
                }
            }));
        }
        rx.wait_for(|n| *n >= kill_after)
            .await
            .expect("submitters ended before the kill point");
        server.kill9();
        for t in tasks {
            t.await.expect("submitter panicked");
        }
        let acked = acked.lock().unwrap().clone();

        // `server` (killed) keeps owning the temp data dir until the trial ends.
        let restarted = TestServer::spawn(&dir, &config(), Some(key));
        let (views, lost) = await_final(&restarted, &acked, Duration::from_secs(60)).await;
        for v in views.values() {
            assert_eq!(v["state"], "succeeded", "{v}");
        }
        // Jobs the server stored but whose 202 never reached the client: allowed ("recovered").
        let stored = cli_jobs(&dir, None).len();
        let recovered = stored.saturating_sub(acked.len());
        eprintln!(
            "admission trial {trial}: killed after {kill_after} acks; acked {}, lost {}, recovered {recovered}",
            acked.len(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "trial {trial}: {} acked jobs lost: {lost:?}",
            lost.len()
        );
        total_acked += acked.len();
        total_lost += lost.len();
        total_recovered += recovered;
        per_trial.push(json!({"acked": acked.len(), "lost": lost.len(), "recovered": recovered}));
    }
    record(
        "kill9_admission",
        json!({"trials": trials, "acked": total_acked, "lost": total_lost,
               "recovered": total_recovered, "seed": rng.seed(), "per_trial": per_trial}),
    );
}

/// Jobs calling a slow target; kill -9 after a random number of calls; after the restart every
/// job ends `succeeded`, and only jobs leased at the kill are called twice, with the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill9_during_drain_repeats_only_in_flight_calls() {
    const JOBS: usize = 400;
    let trials = scale(2, 10);
    let mut rng = Rng::new("kill9_drain");
    let (mut total_acked, mut total_lost, mut total_dups, mut max_in_flight) = (0, 0, 0, 0);
    let mut per_trial = Vec::new();
    for trial in 0..trials {
        // A fresh target per trial: its arrivals are this trial's calls only.
        let target = Target::start().await;
        target.default_reply(
            "drain",
            Reply {
                status: 200,
                headers: vec![],
                delay_ms: 40,
            },
        );
        let mut server = TestServer::start_with(&config());
        let dir = server.dir.clone();
        let key = server.key.clone();
        let jobs: Vec<_> = (0..JOBS)
            .map(|i| json!({"url": target.url("drain"), "idempotent_key": format!("d{trial}-{i}")}))
            .collect();
        let (s, b) = server
            .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
            .await;
        assert_eq!(s, 202, "{b}");
        let acked: Vec<String> = b["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["job_id"].as_str().unwrap().to_string())
            .collect();
        let kill_at = rng.range(IN_FLIGHT, JOBS * 3 / 4);
        target
            .wait_for("drain", kill_at, Duration::from_secs(60))
            .await;
        server.kill9();
        let seen_at_kill = target.arrivals("drain").len();
        // In flight at the kill = leased and not recorded: `running` in the store.
        let running: HashSet<String> = cli_jobs(&dir, Some("running"))
            .iter()
            .map(|j| j["idempotent_key"].as_str().unwrap().to_string())
            .collect();

        let restarted = TestServer::spawn(&dir, &config(), Some(key));
        let (views, lost) = await_final(&restarted, &acked, Duration::from_secs(60)).await;
        for v in views.values() {
            assert_eq!(v["state"], "succeeded", "{v}");
        }
        let calls = calls_per_key(&target.arrivals("drain"));
        let expected: HashSet<String> = (0..JOBS).map(|i| format!("d{trial}-{i}")).collect();
        let called: HashSet<String> = calls.keys().cloned().collect();
        assert_eq!(
            called, expected,
            "every job's call carries its own key, and only those"
        );
        let repeated: Vec<(&String, &usize)> = calls.iter().filter(|(_, n)| **n > 1).collect();
        let dups: usize = repeated.iter().map(|(_, n)| *n - 1).sum();
        eprintln!(
            "drain trial {trial}: killed after {kill_at} calls ({seen_at_kill} seen); in flight {}, lost {}, duplicates {dups}",
            running.len(),
            lost.len()
        );
        assert!(lost.is_empty(), "trial {trial}: acked jobs lost: {lost:?}");
        assert!(
            running.len() <= IN_FLIGHT,
            "{} running at the kill, cap {IN_FLIGHT}",
            running.len()
        );
        for (k, n) in &repeated {
            assert!(
                running.contains(*k),
                "{k} was called {n} times but was not in flight at the kill"
            );
            assert_eq!(**n, 2, "{k} called {n} times after one kill");
        }
        assert!(dups <= running.len());
        total_acked += acked.len();
        total_lost += lost.len();
        total_dups += dups;
        max_in_flight = max_in_flight.max(running.len());
        per_trial.push(json!({"acked": acked.len(), "lost": lost.len(), "duplicates": dups,
                              "in_flight_at_kill": running.len(), "calls_before_kill": seen_at_kill}));
    }
    record(
        "kill9_drain",
        json!({"trials": trials, "acked": total_acked, "lost": total_lost,
               "duplicates": total_dups, "max_in_flight": max_in_flight, "seed": rng.seed(),
               "per_trial": per_trial}),
    );
}
