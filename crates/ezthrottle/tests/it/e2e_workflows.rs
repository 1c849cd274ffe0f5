//! Static workflows end to end (issue 14 §2): data passing between steps, a non-blocking
//! failure, a critical failure compensated in reverse, kill -9 in the middle of a run, hostile
//! templates and bad definitions.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{PyReceiver, Reply, Target, TestServer};

const T: Duration = Duration::from_secs(40);

async fn submit(s: &TestServer, wf: Value) -> String {
    let (st, b) = s.post("/api/v1/workflows", wf).await;
    assert_eq!(st, 202, "{b}");
    b["workflow_id"].as_str().unwrap().to_string()
}

/// The run's `/events` stream read to its end: (event, data) in order. The server ends the
/// stream after the run's final event.
async fn events(s: &TestServer, id: &str) -> Vec<(String, Value)> {
    let resp = s
        .http
        .get(s.url(&format!("/api/v1/workflows/{id}/events")))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(T, resp.text())
        .await
        .expect("the stream ends with the run")
        .unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((name.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

/// Awaits `step`'s `step.started` event on the run's stream; answers its job id.
async fn started_job(s: &TestServer, id: &str, step: &str) -> String {
    let mut resp = s
        .http
        .get(s.url(&format!("/api/v1/workflows/{id}/events")))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    let mut name = String::new();
    loop {
        while let Some(at) = buf.find('\n') {
            let line: String = buf.drain(..=at).collect();
            let line = line.trim_end();
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap();
                if name == "step.started" && v["step"] == step {
                    return v["job_id"].as_str().unwrap().to_string();
                }
            }
        }
        let chunk = tokio::time::timeout(T, resp.chunk())
            .await
            .expect("step.started in time")
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {step} started"));
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Awaits the end of the run on its event stream; answers the run's view (the final event's
/// data).
async fn wait_done(s: &TestServer, id: &str) -> Value {
    let evs = events(s, id).await;
    let (name, view) = evs.last().cloned().expect("a final event");
    assert!(
        matches!(
            name.as_str(),
            "workflow.completed" | "workflow.failed" | "workflow.cancelled"
        ),
        "{evs:?}"
    );
    assert!(
        !matches!(view["status"].as_str(), Some("running" | "compensating")),
        "{view:#}"
    );
    view
}

fn step<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn five_steps_pass_data_and_a_non_blocking_failure_only_warns() {
    let target = Target::start().await;
    target.default_reply("broken", Reply::status(500));
    let s = TestServer::start();
    let no_retry = json!({"max_retries": 0, "max_reroutes": 0});
    let id = submit(
        &s,
        json!({
            "name": "order",
            "input": {"sku": "A \"1\"", "qty": 3},
            "steps": [
                {"name": "reserve", "url": target.url("reserve"), "method": "POST",
                 "body": "{\"sku\": \"{{input.sku}}\", \"qty\": {{input.qty}}}"},
                {"name": "charge", "url": target.url("charge"), "method": "POST", "depends_on": ["reserve"],
                 "headers": {"X-From": "{{steps.reserve.response.body.path}}"},
                 "body": "{\"reserved\": {{steps.reserve.response.status}}, \"note\": \"sku {{input.sku}}\"}"},
                {"name": "survey", "url": target.url("broken"), "depends_on": ["charge"],
                 "non_blocking": true, "retry_policy": no_retry},
                {"name": "ship", "url": target.url("ship"), "method": "POST", "depends_on": ["charge"],
                 "body": "{\"prev\": {{steps.charge.response.body.path}}}"},
                {"name": "email", "url": target.url("email"), "depends_on": ["ship", "reserve"]}
            ]
        }),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(step(&v, "survey")["status"], "failed");
    for name in ["reserve", "charge", "ship", "email"] {
        assert_eq!(step(&v, name)["status"], "succeeded", "{name}: {v:#}");
        assert_eq!(target.arrivals(name).len(), 1, "{name} called once");
        let job = &step(&v, name)["job"];
        assert_eq!(job["state"], "succeeded");
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    }
    let reserve: Value = serde_json::from_str(&target.arrivals("reserve")[0].body).unwrap();
    assert_eq!(
        reserve,
        json!({"sku": "A \"1\"", "qty": 3}),
        "typed and escaped"
    );
    let charge = &target.arrivals("charge")[0];
    assert_eq!(charge.headers["x-from"], "/reserve");
    assert_eq!(
        charge.headers["idempotency-key"],
        format!("{id}:charge"),
        "a deterministic key per (workflow, step)"
    );
    let body: Value = serde_json::from_str(&charge.body).unwrap();
    assert_eq!(body, json!({"reserved": 200, "note": "sku A \"1\""}));
    let ship: Value = serde_json::from_str(&target.arrivals("ship")[0].body).unwrap();
    assert_eq!(
        ship,
        json!({"prev": "/charge"}),
        "a bare placeholder takes the typed value"
    );
}

#[tokio::test]
async fn a_critical_failure_runs_the_compensations_in_reverse() {
    let target = Target::start().await;
    target.default_reply("ship", Reply::status(400));
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({
            "steps": [
                {"name": "charge", "url": target.url("charge"), "method": "POST",
                 "compensate": {"url": target.url("refund"), "method": "POST",
                                "body": "{\"charge\": \"{{steps.charge.response.body.path}}\"}"}},
                {"name": "reserve", "url": target.url("reserve"), "depends_on": ["charge"],
                 "compensate": {"url": target.url("release"), "method": "POST"}},
                {"name": "ship", "url": target.url("ship"), "depends_on": ["reserve"]},
                {"name": "notify", "url": target.url("notify"), "depends_on": ["ship"]}
            ]
        }),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    assert_eq!(step(&v, "ship")["status"], "failed");
    assert_eq!(step(&v, "notify")["status"], "cancelled");
    assert!(target.arrivals("notify").is_empty());
    assert_eq!(step(&v, "charge")["compensation"], "succeeded");
    assert_eq!(step(&v, "reserve")["compensation"], "succeeded");
    let (release, refund) = (target.arrivals("release"), target.arrivals("refund"));
    assert_eq!(
        (release.len(), refund.len()),
        (1, 1),
        "each compensation once"
    );
    assert!(release[0].at <= refund[0].at, "reverse order of completion");
    assert_eq!(refund[0].body, "{\"charge\": \"/charge\"}");
    assert_eq!(
        refund[0].headers["idempotency-key"],
        format!("{id}:charge:compensate")
    );
}

#[tokio::test]
async fn kill_9_mid_run_resumes_without_repeating_finished_steps() {
    let target = Target::start().await;
    target.default_reply(
        "s3",
        Reply {
            status: 200,
            headers: vec![],
            delay_ms: 1500,
        },
    );
    let mut server = TestServer::start();
    let (dir, key) = (server.dir.clone(), server.key.clone());
    let steps: Vec<Value> = (1..=5)
        .map(|i| {
            let mut st = json!({"name": format!("s{i}"), "url": target.url(&format!("s{i}"))});
            if i > 1 {
                st["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            st
        })
        .collect();
    let id = submit(&server, json!({"steps": steps})).await;
    // s3 is in flight: s1 and s2 are done and recorded.
    target.wait_for("s3", 1, T).await;
    server.kill9();
    let server2 = TestServer::spawn(&dir, "", Some(key));
    let v = wait_done(&server2, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    for (name, calls) in [("s1", 1), ("s2", 1), ("s4", 1), ("s5", 1)] {
        assert_eq!(target.arrivals(name).len(), calls, "{name}: {v:#}");
    }
    // The call cut off by the kill runs again (same Idempotency-Key); nothing else does.
    let s3 = target.arrivals("s3");
    assert_eq!(s3.len(), 2, "in flight at the kill, so sent again");
    assert_eq!(
        s3[0].headers["idempotency-key"],
        s3[1].headers["idempotency-key"]
    );
    let attempts = step(&v, "s3")["job"]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts[0]["decision"], "interrupted", "{attempts:?}");
}

#[tokio::test]
async fn hostile_templates_and_bad_definitions_are_refused_cleanly() {
    let target = Target::start().await;
    let s = TestServer::start();
    // CR/LF into a header, a path to a missing field: the step fails before any request.
    let id = submit(
        &s,
        json!({
            "input": {"evil": "x\r\nX-Injected: 1"},
            "steps": [
                {"name": "inject", "url": target.url("inject"), "critical": false,
                 "headers": {"X-V": "{{input.evil}}"}},
                {"name": "missing", "url": target.url("missing"), "body": "{{input.nope.deeper}}"}
            ]
        }),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    assert!(
        step(&v, "inject")["error"]
            .as_str()
            .unwrap()
            .starts_with("template_invalid"),
        "{v:#}"
    );
    assert!(
        step(&v, "missing")["error"]
            .as_str()
            .unwrap()
            .starts_with("template_unresolved"),
        "{v:#}"
    );
    assert!(target.arrivals("inject").is_empty() && target.arrivals("missing").is_empty());

    for (wf, status, code, field) in [
        (
            json!({"steps": [{"name": "a", "url": "http://{{input.host}}/x"}]}),
            400,
            "invalid_field",
            "steps[0].url",
        ),
        (
            json!({"steps": [{"name": "a", "url": "http://10.0.0.1/x"}]}),
            422,
            "ssrf_denied",
            "steps[0].url",
        ),
        (
            json!({"steps": [{"name": "a", "url": target.url("a"), "depends_on": ["b"]}, {"name": "b", "url": target.url("b"), "depends_on": ["a"]}]}),
            400,
            "invalid_field",
            "steps[0].depends_on",
        ),
        (
            json!({"steps": [{"name": "a", "url": target.url("a"), "body": "{{steps.b.response.body.id}}"}, {"name": "b", "url": target.url("b")}]}),
            400,
            "invalid_field",
            "steps[0].body",
        ),
        (
            json!({"steps": [{"name": "a", "url": target.url("a"), "paginate": {"style": "body_cursor"}}]}),
            400,
            "missing_field",
            "steps[0].paginate.next",
        ),
        (
            json!({"steps": [{"name": "a", "url": target.url("a"), "when": "input.x =="}]}),
            400,
            "invalid_field",
            "steps[0].when",
        ),
        (json!({"steps": []}), 400, "invalid_field", "steps"),
    ] {
        let (st, b) = s.post("/api/v1/workflows", wf.clone()).await;
        assert_eq!(st, status, "{wf}: {b}");
        assert_eq!(
            (b["error"]["code"].as_str(), b["error"]["field"].as_str()),
            (Some(code), Some(field)),
            "{b}"
        );
    }
    let (st, _) = s
        .get("/api/v1/workflows/wf_01JD6Q3K9V2M8X4T7B5N0R1C2E")
        .await;
    assert_eq!(st, 404);
}

/// A 50-page crawl following `Link: rel="next"`: a 429 with Retry-After on page 20 pauses the
/// lane and the crawl goes on; kill -9 during page 30 resumes at page 30 without fetching a
/// finished page again.
#[tokio::test]
async fn a_fifty_page_crawl_survives_a_429_and_kill_9() {
    let target = Target::start().await;
    let next = |n: u32| {
        Reply::status(200).header(
            "Link",
            &format!("<{}?page={n}>; rel=\"next\"", target.url("pages")),
        )
    };
    let mut script = Vec::new();
    for n in 1..=50u32 {
        if n == 20 {
            script.push(Reply::status(429).header("Retry-After", "1"));
        }
        let reply = if n == 50 {
            Reply::status(200)
        } else {
            next(n + 1)
        };
        if n == 30 {
            // In flight at the kill; answered again (immediately) after the restart.
            script.push(Reply {
                delay_ms: 3000,
                ..reply.clone()
            });
        }
        script.push(reply);
    }
    target.script("pages", script);
    let mut server = TestServer::start();
    let (dir, key) = (server.dir.clone(), server.key.clone());
    let id = submit(
        &server,
        json!({"steps": [{"name": "crawl", "url": format!("{}?page=1", target.url("pages")),
                          "paginate": {"style": "link"}}]}),
    )
    .await;
    // 29 pages and the 429, then page 30 is in flight.
    target.wait_for("pages", 31, T).await;
    server.kill9();
    let server2 = TestServer::spawn(&dir, "", Some(key));
    let v = wait_done(&server2, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    let pages = step(&v, "crawl")["pages"].as_array().unwrap().clone();
    assert_eq!(pages.len(), 50, "{v:#}");
    assert_eq!(pages[49]["next"], Value::Null);
    let mut seen: std::collections::BTreeMap<String, Vec<std::time::Instant>> = Default::default();
    for a in target.arrivals("pages") {
        seen.entry(a.headers["idempotency-key"].clone())
            .or_default()
            .push(a.at);
    }
    assert_eq!(seen.len(), 50, "one key per page");
    for n in 1..=50 {
        let times = &seen[&format!("{id}:crawl:page:{n}")];
        let want = if n == 20 || n == 30 { 2 } else { 1 };
        assert_eq!(times.len(), want, "page {n}");
    }
    let p20 = &seen[&format!("{id}:crawl:page:20")];
    let paused = p20[1].duration_since(p20[0]);
    assert!(
        paused >= Duration::from_millis(900),
        "Retry-After: 1 paused the lane only {paused:?}"
    );
}

/// `retry: "3s"` is the step's wall-clock budget: an always-503 critical step ends `expired`
/// within it and fails the run.
#[tokio::test]
async fn a_retry_budget_expires_the_step_and_fails_the_run() {
    let target = Target::start().await;
    target.default_reply("busy", Reply::status(503));
    let s = TestServer::start();
    let t0 = std::time::Instant::now();
    let id = submit(
        &s,
        json!({"steps": [{"name": "fulfil", "url": target.url("busy"), "retry": "3s",
                          "retry_policy": {"max_retries": 100}}]}),
    )
    .await;
    let v = wait_done(&s, &id).await;
    let took = t0.elapsed();
    assert_eq!(v["status"], "failed", "{v:#}");
    assert_eq!(step(&v, "fulfil")["job"]["state"], "expired", "{v:#}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Cancelling a step's job ends the step `cancelled`: a critical step's end fails the run and
/// the compensations run at once.
#[tokio::test]
async fn cancelling_a_step_job_fails_the_run_and_compensates() {
    let target = Target::start().await;
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({"steps": [
            {"name": "charge", "url": target.url("charge"),
             "compensate": {"url": target.url("refund"), "method": "POST"}},
            {"name": "later", "url": target.url("later"), "depends_on": ["charge"],
             "retry_at": crate::support::in_days(30)}
        ]}),
    )
    .await;
    // `later` waits for its far-future first attempt: cancel it.
    let job = started_job(&s, &id, "later").await;
    let (st, b) = s
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(st, 200, "{b}");
    target.wait_for("refund", 1, T).await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    assert_eq!(step(&v, "later")["status"], "cancelled");
    assert_eq!(step(&v, "charge")["compensation"], "succeeded");
}

const SECRET: &str = "wf-secret-0123456789abc";

/// Collects `n` verified deliveries from `rx`, as (type, body, delivery).
async fn hooks(rx: &crate::support::PyReceiver, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let got = rx.next(T).await;
        assert_eq!(
            (got["ezt_ok"].as_bool(), got["std_ok"].as_bool()),
            (Some(true), Some(true)),
            "signed like a job's outcome: {got}"
        );
        let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
        out.push((body["type"].as_str().unwrap().to_string(), body));
    }
    out
}

/// The run's webhooks get one signed `workflow.page` per page of a paginated step, with its
/// number and answer, and one `workflow.completed` (or `workflow.failed`) when it ends.
#[tokio::test]
async fn workflow_webhooks_report_pages_and_the_end_signed() {
    let target = Target::start().await;
    let s = TestServer::start();
    let (st, b) = s
        .post("/api/v1/webhook-secrets", json!({"primary_secret": SECRET}))
        .await;
    assert_eq!(st, 201, "{b}");
    let rx = crate::support::PyReceiver::start(&[SECRET], 0);
    let link = |n: u32| {
        Reply::status(200).header(
            "Link",
            &format!("<{}?page={n}>; rel=\"next\"", target.url("pages")),
        )
    };
    target.script("pages", vec![link(2), link(3), Reply::status(200)]);
    let id = submit(
        &s,
        json!({"name": "crawl", "webhooks": [{"url": rx.url("/wf")}],
               "steps": [{"name": "list", "url": format!("{}?page=1", target.url("pages")),
                          "paginate": {"style": "link"}},
                         {"name": "after", "url": target.url("after"), "depends_on": ["list"]}]}),
    )
    .await;
    let mut got = hooks(&rx, 4).await;
    got.sort_by_key(|(t, b)| (t != "workflow.page", b["page"].as_u64()));
    let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "workflow.page",
            "workflow.page",
            "workflow.page",
            "workflow.completed"
        ]
    );
    for (n, (_, b)) in got.iter().take(3).enumerate() {
        assert_eq!(b["workflow_id"], id.as_str());
        assert_eq!(b["step"], "list");
        assert_eq!(b["page"], n as u64 + 1, "{b}");
        assert_eq!(b["response"]["status_code"], 200);
    }
    let end = &got[3].1;
    assert_eq!(
        (end["workflow_id"].as_str(), end["status"].as_str()),
        (Some(id.as_str()), Some("succeeded")),
        "{end}"
    );
    assert_eq!(end["steps"].as_array().unwrap().len(), 2, "{end}");
    assert_eq!(end["steps"][1]["status"], "succeeded");
    // The run's view lists its deliveries; the receiver answers before the server records
    // that, and no event tells it: poll the view.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, v) = s.get(&format!("/api/v1/workflows/{id}")).await;
        let hooks = v["webhooks"].as_array().unwrap().clone();
        if hooks.len() == 4 && hooks.iter().all(|d| d["state"] == "delivered") {
            assert_eq!(hooks[0]["series"], 1, "the end's delivery first: {hooks:?}");
            assert_eq!(hooks[0]["attempts"][0]["status_code"], 200);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A failed run says so, once.
    target.default_reply("down", Reply::status(400));
    let failed = submit(
        &s,
        json!({"webhooks": [{"url": rx.url("/wf")}],
               "steps": [{"name": "only", "url": target.url("down")}]}),
    )
    .await;
    let got = hooks(&rx, 1).await;
    assert_eq!(got[0].0, "workflow.failed", "{:?}", got[0].1);
    assert_eq!(got[0].1["workflow_id"], failed.as_str());
    assert_eq!(got[0].1["steps"][0]["status"], "failed");
    // Bad webhooks are refused at submit, naming the field.
    let (st, b) = s
        .post(
            "/api/v1/workflows",
            json!({"webhooks": [{"url": "ftp://x"}], "steps": [{"name": "a", "url": target.url("a")}]}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"]["field"], "webhooks[0].url", "{b}");
}

/// The same `idempotent_key` from the same tenant is one run: the second submit (even sent
/// while the first is in flight) answers 200 `duplicate` with the first run's id, and the
/// target sees each step once.
#[tokio::test]
async fn a_workflow_key_makes_one_run() {
    let target = Target::start().await;
    let s = TestServer::start();
    let wf = json!({"idempotent_key": "order-42",
                    "steps": [{"name": "charge", "url": target.url("charge")}]});
    let (a, b) = tokio::join!(
        s.post("/api/v1/workflows", wf.clone()),
        s.post("/api/v1/workflows", wf.clone())
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [200, 202], "{a:?} {b:?}");
    assert_eq!(a.1["workflow_id"], b.1["workflow_id"]);
    let dup = if a.0 == 200 { &a.1 } else { &b.1 };
    assert_eq!(dup["status"], "duplicate");
    let id = a.1["workflow_id"].as_str().unwrap().to_string();
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "succeeded");
    // After the end too.
    let (st, again) = s.post("/api/v1/workflows", wf).await;
    assert_eq!(
        (st, again["workflow_id"].as_str()),
        (200, Some(id.as_str()))
    );
    assert_eq!(target.arrivals("charge").len(), 1, "one run, one call");
    let (st, b) = s
        .post(
            "/api/v1/workflows",
            json!({"idempotent_key": "", "steps": [{"name": "a", "url": target.url("a")}]}),
        )
        .await;
    assert_eq!(
        (st, b["error"]["field"].as_str()),
        (400, Some("idempotent_key")),
        "{b}"
    );
}

/// Cancel ends the run `cancelled` at once: a step waiting for its attempt is cancelled in the
/// same transaction and never reaches the target, the step after it never starts, no
/// compensation runs, and the webhooks get `workflow.cancelled`.
#[tokio::test]
async fn cancel_stops_the_run_and_nothing_more_is_sent() {
    let target = Target::start().await;
    let s = TestServer::start();
    let rx = crate::support::PyReceiver::start(&[], 0);
    let id = submit(
        &s,
        json!({"webhooks": [{"url": rx.url("/wf")}], "steps": [
            {"name": "charge", "url": target.url("charge"),
             "compensate": {"url": target.url("refund"), "method": "POST"}},
            {"name": "later", "url": target.url("later"), "depends_on": ["charge"],
             "retry_at": crate::support::in_days(30)},
            {"name": "last", "url": target.url("last"), "depends_on": ["later"]}
        ]}),
    )
    .await;
    let later_job = started_job(&s, &id, "later").await;
    let (st, v) = s
        .post(&format!("/api/v1/workflows/{id}/cancel"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "cancelled", "{v:#}");
    assert_eq!(step(&v, "later")["status"], "cancelled");
    assert_eq!(step(&v, "last")["status"], "cancelled");
    assert_eq!(step(&v, "later")["job"]["state"], "cancelled", "{v:#}");
    let got = rx.next(T).await;
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "workflow.cancelled", "{body}");
    assert_eq!(body["workflow_id"], id.as_str());
    let (st, b) = s
        .post(&format!("/api/v1/workflows/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );
    let (st, j) = s.get(&format!("/api/v1/jobs/{later_job}")).await;
    assert_eq!((st, j["state"].as_str()), (200, Some("cancelled")), "{j}");
    assert_eq!(target.arrivals("charge").len(), 1);
    assert!(
        target.arrivals("later").is_empty()
            && target.arrivals("last").is_empty()
            && target.arrivals("refund").is_empty(),
        "nothing after the cancel, no compensation"
    );
    let (st, _) = s
        .post(
            "/api/v1/workflows/wf_01JD6Q3K9V2M8X4T7B5N0R1C2E/cancel",
            json!({}),
        )
        .await;
    assert_eq!(st, 404);
}

/// After a critical failure, resume runs only the failed step and the ones it gated (new
/// Idempotency-Keys), keeps the finished step's result, and the run succeeds; replaying the
/// failed step's job alone is refused with a pointer to /resume; restart makes a new run.
#[tokio::test]
async fn resume_runs_only_the_failed_steps_and_restart_is_a_new_run() {
    let target = Target::start().await;
    target.script("pay", vec![Reply::status(400), Reply::status(200)]);
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({"steps": [
            {"name": "reserve", "url": target.url("reserve")},
            {"name": "pay", "url": target.url("pay"), "depends_on": ["reserve"]},
            {"name": "ship", "url": target.url("ship"), "depends_on": ["pay"],
             "body": "{\"reserved\": {{steps.reserve.response.status}}}", "method": "POST"}
        ]}),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    let failed_job = step(&v, "pay")["job_id"].as_str().unwrap().to_string();
    let (st, b) = s
        .post(&format!("/api/v1/jobs/{failed_job}/retry"), json!({}))
        .await;
    assert_eq!(st, 409, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("/api/v1/workflows/{id}/resume")),
        "{b}"
    );
    let (st, r) = s
        .post(&format!("/api/v1/workflows/{id}/resume"), json!({}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["resumes"].as_u64()),
        (Some("running"), Some(1))
    );
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_ne!(step(&v, "pay")["job_id"], failed_job.as_str(), "a new job");
    assert_eq!(
        target.arrivals("reserve").len(),
        1,
        "finished: not run again"
    );
    let pay = target.arrivals("pay");
    assert_eq!(pay.len(), 2);
    assert_eq!(pay[0].headers["idempotency-key"], format!("{id}:pay"));
    assert_eq!(
        pay[1].headers["idempotency-key"],
        format!("{id}:pay:resume:1")
    );
    let ship = target.arrivals("ship");
    assert_eq!(ship.len(), 1);
    assert_eq!(ship[0].body, "{\"reserved\": 200}", "reads the kept result");
    let (st, b) = s
        .post(&format!("/api/v1/workflows/{id}/resume"), json!({}))
        .await;
    assert_eq!(st, 409, "a succeeded run does not resume: {b}");

    let (st, r) = s
        .post(&format!("/api/v1/workflows/{id}/restart"), json!({}))
        .await;
    assert_eq!(st, 202, "{r}");
    let new = r["workflow_id"].as_str().unwrap().to_string();
    assert_ne!(new, id);
    let v = wait_done(&s, &new).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(
        target.arrivals("reserve").len(),
        2,
        "the new run runs every step"
    );
    assert_eq!(
        target.arrivals("reserve")[1].headers["idempotency-key"],
        format!("{new}:reserve")
    );
}

/// A run's event stream: each step starts and ends in dependency order, each page is
/// announced, the final event (with the run's view) is the last and the stream ends; a late
/// subscriber gets the same story.
#[tokio::test]
async fn the_event_stream_tells_the_run_and_ends_with_it() {
    let target = Target::start().await;
    target.default_reply(
        "slow",
        Reply {
            status: 200,
            headers: vec![],
            delay_ms: 300,
        },
    );
    let link = |n: u32| {
        Reply::status(200).header(
            "Link",
            &format!("<{}?page={n}>; rel=\"next\"", target.url("pages")),
        )
    };
    target.script("pages", vec![link(2), Reply::status(200)]);
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({"steps": [
            {"name": "a", "url": target.url("slow")},
            {"name": "b", "url": format!("{}?page=1", target.url("pages")), "depends_on": ["a"],
             "paginate": {"style": "link"}}
        ]}),
    )
    .await;
    let live = events(&s, &id).await;
    let names: Vec<String> = live
        .iter()
        .map(|(n, d)| match d["step"].as_str() {
            Some(step) => format!("{n}:{step}"),
            None => n.clone(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "step.started:a",
            "step.ended:a",
            "step.started:b",
            "workflow.page:b",
            "workflow.page:b",
            "step.ended:b",
            "workflow.completed"
        ],
        "{live:?}"
    );
    assert_eq!(live[3].1["page"], 1);
    assert_eq!(live[4].1["page"], 2);
    assert_eq!(live[1].1["status"], "succeeded");
    let last = &live[6].1;
    assert_eq!(
        (last["workflow_id"].as_str(), last["status"].as_str()),
        (Some(id.as_str()), Some("succeeded"))
    );
    let late = events(&s, &id).await;
    assert_eq!(
        late.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        live.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "a late subscriber gets the whole story"
    );
    let resp = s
        .http
        .get(s.url("/api/v1/workflows/wf_01JD6Q3K9V2M8X4T7B5N0R1C2E/events"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// A crawl whose page 3 fails (a non-retryable 400) fails the run; resume goes on from page 3
/// with the same URL, keeping pages 1 and 2 (never fetched again), and the crawl finishes.
#[tokio::test]
async fn resume_goes_on_from_the_page_that_failed() {
    let target = Target::start().await;
    let link = |n: u32| {
        Reply::status(200).header(
            "Link",
            &format!("<{}?page={n}>; rel=\"next\"", target.url("pages")),
        )
    };
    target.script(
        "pages",
        vec![
            link(2),
            link(3),
            Reply::status(400),
            link(4),
            Reply::status(200),
        ],
    );
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({"steps": [{"name": "crawl", "url": format!("{}?page=1", target.url("pages")),
                          "paginate": {"style": "link"}, "retry_policy": {"max_retries": 0}},
                         {"name": "load", "url": target.url("load"), "depends_on": ["crawl"]}]}),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    assert_eq!(step(&v, "crawl")["pages"].as_array().unwrap().len(), 3);
    let (st, r) = s
        .post(&format!("/api/v1/workflows/{id}/resume"), json!({}))
        .await;
    assert_eq!(st, 200, "{r}");
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    let pages = step(&v, "crawl")["pages"].as_array().unwrap().clone();
    assert_eq!(pages.len(), 4, "{v:#}");
    let keys: Vec<String> = target
        .arrivals("pages")
        .iter()
        .map(|a| a.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            format!("{id}:crawl:page:1"),
            format!("{id}:crawl:page:2"),
            format!("{id}:crawl:page:3"),
            format!("{id}:crawl:page:3:resume:1"),
            format!("{id}:crawl:page:4:resume:1"),
        ],
        "pages 1 and 2 are never fetched again"
    );
    let urls: Vec<String> = target
        .arrivals("pages")
        .iter()
        .map(|a| a.path.clone())
        .collect();
    assert_eq!(urls[2], urls[3], "page 3 again, same URL: {urls:?}");
    assert_eq!(target.arrivals("load").len(), 1);
}

/// `when`: a false condition skips its step (never sent) and its dependents proceed; a true one
/// runs it; one that reads a missing value fails its step unsent; a bad one is a 400 naming
/// the step, the field and the column.
#[tokio::test]
async fn when_conditions_skip_or_run_steps() {
    let target = Target::start().await;
    target.default_reply("check", Reply::status(202).header("X-Plan", "gold"));
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({
            "input": {"vip": false, "amount": 120},
            "steps": [
                {"name": "check", "url": target.url("check")},
                {"name": "gift", "url": target.url("gift"), "depends_on": ["check"],
                 "when": "input.vip || steps.check.response.status == 200"},
                {"name": "upsell", "url": target.url("upsell"), "depends_on": ["check"],
                 "when": "steps.check.response.headers.x-plan == 'gold' && input.amount >= 100 && steps.check.response.body.path != '/nope'"},
                {"name": "thanks", "url": target.url("thanks"), "depends_on": ["gift", "upsell"],
                 "when": "!exists(steps.gift.response.status) && exists(steps.upsell.response.status)"},
                {"name": "odd", "url": target.url("odd"), "depends_on": ["thanks"], "critical": false,
                 "when": "steps.gift.response.status == 200"}
            ]
        }),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(step(&v, "gift")["status"], "skipped", "{v:#}");
    assert_eq!(step(&v, "gift")["condition"], false);
    assert_eq!(step(&v, "gift")["job_id"], Value::Null);
    for name in ["upsell", "thanks"] {
        assert_eq!(step(&v, name)["status"], "succeeded", "{name}: {v:#}");
        assert_eq!(step(&v, name)["condition"], true);
        assert_eq!(target.arrivals(name).len(), 1, "{name}");
    }
    assert_eq!(step(&v, "odd")["status"], "failed");
    let err = step(&v, "odd")["error"].as_str().unwrap();
    assert!(err.starts_with("condition_unresolved"), "{err}");
    assert!(target.arrivals("gift").is_empty() && target.arrivals("odd").is_empty());

    let (st, b) = s
        .post(
            "/api/v1/workflows",
            json!({"steps": [
                {"name": "a", "url": target.url("a")},
                {"name": "b", "url": target.url("b"), "depends_on": ["a"],
                 "when": "steps.a.response.status == 200 && steps.c.response.status == 1"},
                {"name": "c", "url": target.url("c")}
            ]}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"]["field"], "steps[1].when", "{b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("at column 35") && msg.contains("not an ancestor"),
        "{msg}"
    );
}

/// A step's job may carry `webhooks`, delivered for that step's job like any job's (a
/// paginated step's: one per page); their URLs pass the SSRF rules at submit.
#[tokio::test]
async fn a_steps_own_webhooks_report_its_job() {
    let target = Target::start().await;
    target.script(
        "pages",
        vec![Reply::status(200).header(
            "Link",
            &format!("<{}?page=2>; rel=\"next\"", target.url("pages")),
        )],
    );
    let hooks = PyReceiver::start(&[], 0);
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({"steps": [
            {"name": "charge", "url": target.url("charge"),
             "webhooks": [{"url": hooks.url("/charge")}]},
            {"name": "list", "url": target.url("pages"), "depends_on": ["charge"],
             "paginate": {"style": "link"}, "webhooks": [{"url": hooks.url("/list")}]},
            {"name": "quiet", "url": target.url("quiet"), "depends_on": ["list"]}
        ]}),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = hooks.next(T).await;
        let b: Value = serde_json::from_str(d["body"].as_str().unwrap()).unwrap();
        assert_eq!(b["status"], "success", "{b}");
        got.push((
            d["path"].as_str().unwrap().to_string(),
            b["job_id"].as_str().unwrap().to_string(),
        ));
    }
    got.sort();
    let pages = step(&v, "list")["pages"].as_array().unwrap().clone();
    let mut want = vec![
        (
            "/charge".to_string(),
            step(&v, "charge")["job_id"].as_str().unwrap().to_string(),
        ),
        (
            "/list".to_string(),
            pages[0]["job_id"].as_str().unwrap().to_string(),
        ),
        (
            "/list".to_string(),
            pages[1]["job_id"].as_str().unwrap().to_string(),
        ),
    ];
    want.sort();
    assert_eq!(got, want, "one delivery per step job (per page)");
    assert_eq!(
        step(&v, "quiet")["job"]["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let (st, b) = s
        .post(
            "/api/v1/workflows",
            json!({"steps": [{"name": "a", "url": target.url("a"),
                              "webhooks": [{"url": "http://10.0.0.1/hook"}]}]}),
        )
        .await;
    assert_eq!(st, 422, "{b}");
    assert_eq!(b["error"]["field"], "steps[0].webhooks[0].url", "{b}");
}

/// A provider that refuses a cursor it gave (400/410 on a later page) fails the step
/// `cursor_expired`, not retried; finished pages are kept.
#[tokio::test]
async fn a_refused_cursor_ends_the_crawl_cursor_expired() {
    let target = Target::start().await;
    target.script(
        "feed",
        vec![
            Reply::status(200).header(
                "Link",
                &format!("<{}?page_info=abc>; rel=\"next\"", target.url("feed")),
            ),
            Reply::status(410),
        ],
    );
    let s = TestServer::start();
    let id = submit(
        &s,
        json!({"steps": [{"name": "feed", "url": target.url("feed"), "paginate": {"style": "link"}}]}),
    )
    .await;
    let v = wait_done(&s, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    let feed = step(&v, "feed");
    let err = feed["error"].as_str().unwrap();
    assert!(err.starts_with("cursor_expired: page 2"), "{err}");
    assert_eq!(feed["pages"].as_array().unwrap().len(), 2);
    assert_eq!(feed["pages"][1]["status"], 410);
    assert_eq!(
        target.arrivals("feed").len(),
        2,
        "the refused cursor is not retried"
    );
}
