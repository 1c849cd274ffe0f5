//! The hosted SDKs' chains (issue 14 §1) end to end: `fallback_job` on an error and racing a
//! slow link, `on_success` / `on_failure` children with their own webhooks, and
//! `on_failure_timeout_ms`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{PyReceiver, Reply, Target, TestServer};

const T: Duration = Duration::from_secs(30);

fn body(delivery: &Value) -> Value {
    serde_json::from_str(delivery["body"].as_str().unwrap()).unwrap()
}

/// 500 → the `on_error` fallback → 200: one logical job, `succeeded`, one webhook for the root
/// job saying success, and its view shows every link's attempts.
#[tokio::test]
async fn an_on_error_fallback_rescues_the_chain() {
    let target = Target::start().await;
    target.default_reply("primary", Reply::status(500));
    let hooks = PyReceiver::start(&[], 0);
    let s = TestServer::start();
    let id = s
        .submit(json!({
            "url": target.url("primary"),
            "method": "POST",
            "idempotent_key": "chain-1",
            "retry_policy": {"max_reroutes": 1},
            "webhooks": [{"url": hooks.url("/hook")}],
            // As the hosted Node/Go SDKs spell it.
            "fallbackJob": {
                "url": target.url("rescue"),
                "method": "POST",
                "trigger": {"type": "on_error", "codes": [500, 502, 503]}
            }
        }))
        .await;
    let v = s.wait_final(&id, 30).await;
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["response"]["status_code"], 200);
    let attempts = v["attempts"].as_array().unwrap();
    let links: Vec<u64> = attempts
        .iter()
        .map(|a| a["link"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        links,
        vec![0, 0, 1],
        "the primary's reroute, then the fallback: {v:#}"
    );
    assert_eq!(attempts[1]["next_link"], 1, "{v:#}");
    assert_eq!(target.arrivals("primary").len(), 2);
    let rescue = target.arrivals("rescue");
    assert_eq!(rescue.len(), 1);
    assert_eq!(
        rescue[0].headers.get("idempotency-key").map(String::as_str),
        Some("chain-1"),
        "a link without its own key sends the chain's"
    );
    let d = hooks.next(T).await;
    let b = body(&d);
    assert_eq!(
        (b["job_id"].as_str(), b["status"].as_str()),
        (Some(id.as_str()), Some("success")),
        "{b}"
    );
    assert_eq!(b["idempotent_key"], "chain-1");
    assert_eq!(
        v["webhooks"].as_array().unwrap().len(),
        1,
        "one delivery for the chain"
    );

    // A status the trigger does not list fails the chain without the fallback.
    target.default_reply("other", Reply::status(404));
    let id = s
        .submit(json!({
            "url": target.url("other"),
            "fallback_job": {"url": target.url("unused"), "trigger": {"type": "on_error", "codes": [500]}}
        }))
        .await;
    let v = s.wait_final(&id, 30).await;
    assert_eq!(v["state"], "failed", "{v:#}");
    assert!(target.arrivals("unused").is_empty());
}

/// A slow link is raced by its `on_timeout` fallback: the first 2xx wins and the slow call is
/// cancelled (the target sees the caller hang up).
#[tokio::test]
async fn an_on_timeout_fallback_races_a_slow_link_and_wins() {
    let target = Target::start().await;
    target.default_reply(
        "slow",
        Reply {
            status: 200,
            headers: vec![],
            delay_ms: 20_000,
        },
    );
    let s = TestServer::start();
    let t0 = Instant::now();
    let id = s
        .submit(json!({
            "url": target.url("slow"),
            "fallback_job": {"url": target.url("fast"), "trigger": {"type": "on_timeout", "timeout_ms": 300}}
        }))
        .await;
    let v = s.wait_final(&id, 30).await;
    let took = t0.elapsed();
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert!(
        took < Duration::from_secs(10),
        "the race was not won early: {took:?}"
    );
    let fast = target.arrivals("fast");
    let slow = target.arrivals("slow");
    assert_eq!((slow.len(), fast.len()), (1, 1));
    let gap = fast[0].at.duration_since(slow[0].at);
    assert!(
        gap >= Duration::from_millis(290),
        "started before its timeout: {gap:?}"
    );
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "one attempt, two racing calls: {v:#}");
    assert_eq!(attempts[0]["link"], 1, "the fallback answered: {v:#}");
    target.wait_aborted("slow", T).await;
}

/// `on_success` and `on_failure` children are jobs of their own: own ids, keys and webhooks,
/// linked to their parent both ways.
#[tokio::test]
async fn children_run_with_their_own_webhooks() {
    let target = Target::start().await;
    target.default_reply("broken", Reply::status(400));
    let hooks = PyReceiver::start(&[], 0);
    let s = TestServer::start();
    let child_hook = hooks.url("/child");
    let ok = s
        .submit(json!({
            "url": target.url("charge"),
            "on_success": {
                "url": target.url("fulfil"),
                "method": "POST",
                "body": "{\"order\": 7}",
                "webhooks": [{"url": child_hook}]
            },
            "on_failure": {"url": target.url("never")}
        }))
        .await;
    let bad = s
        .submit(json!({
            "url": target.url("broken"),
            "onSuccess": {"url": target.url("never")},
            "onFailure": {"url": target.url("apologise"), "idempotentKey": "sorry-1", "webhooks": [{"url": child_hook}]}
        }))
        .await;
    let v = s.wait_final(&ok, 30).await;
    assert_eq!(v["state"], "succeeded");
    let child = v["children"][0].as_str().expect("a child id").to_string();
    let c = s.wait_final(&child, 30).await;
    assert_eq!(c["state"], "succeeded", "{c:#}");
    assert_eq!(c["parent_id"], ok.as_str());
    assert_eq!(c["idempotent_key"], format!("{ok}:on_success"));
    assert_eq!(target.arrivals("fulfil")[0].body, "{\"order\": 7}");

    let v = s.wait_final(&bad, 30).await;
    assert_eq!(v["state"], "failed");
    let child2 = v["children"][0].as_str().expect("a child id").to_string();
    let c2 = s.wait_final(&child2, 30).await;
    assert_eq!(c2["state"], "succeeded");
    assert_eq!(c2["parent_id"], bad.as_str());
    assert_eq!(c2["idempotent_key"], "sorry-1");
    assert!(target.arrivals("never").is_empty());

    let mut got = vec![];
    for _ in 0..2 {
        let d = hooks.next(T).await;
        assert_eq!(d["path"], "/child");
        got.push(body(&d)["job_id"].as_str().unwrap().to_string());
    }
    got.sort();
    let mut want = vec![child, child2];
    want.sort();
    assert_eq!(got, want, "each child's own webhook reports it");
}

/// `on_failure_timeout_ms`: a job that has not succeeded by then ends `expired` and its
/// `on_failure` child runs.
#[tokio::test]
async fn on_failure_timeout_fires() {
    let target = Target::start().await;
    target.default_reply("busy", Reply::status(503));
    let s = TestServer::start();
    let t0 = Instant::now();
    let id = s
        .submit(json!({
            "url": target.url("busy"),
            "retry_policy": {"max_retries": 100},
            "on_failure": {"url": target.url("alert")},
            "on_failure_timeout_ms": 1500
        }))
        .await;
    target.wait_for("alert", 1, T).await;
    // Expired once no retry fits before the budget's end (never after it).
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let (_, v) = s.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(v["state"], "expired", "{v:#}");
    assert_eq!(v["error"]["code"], "deadline");
    assert!(v["attempt_count"].as_u64().unwrap() >= 1);
    assert_eq!(v["children"].as_array().unwrap().len(), 1);
}

/// Bad chains are refused at submit, naming the nested field.
#[tokio::test]
async fn bad_chains_are_refused_with_the_nested_field() {
    let s = TestServer::start();
    for (job, status, code, field) in [
        (
            json!({"url": "http://127.0.0.1:9/a", "fallback_job": {"url": "http://127.0.0.1:9/b"}}),
            400,
            "missing_field",
            "fallback_job.trigger",
        ),
        (
            json!({"url": "http://127.0.0.1:9/a", "on_success": {"url": "http://10.1.2.3/b"}}),
            422,
            "ssrf_denied",
            "on_success.url",
        ),
        (
            json!({"url": "http://127.0.0.1:9/a", "on_failure_timeout_ms": 100}),
            400,
            "invalid_field",
            "on_failure_timeout_ms",
        ),
    ] {
        let (st, b) = s.post("/api/v1/jobs", job.clone()).await;
        assert_eq!(st, status, "{job}: {b}");
        assert_eq!(
            (b["error"]["code"].as_str(), b["error"]["field"].as_str()),
            (Some(code), Some(field)),
            "{b}"
        );
    }
}

/// The hosted Python package 1.3.0, unmodified, builds a fallback + on-success chain; our
/// server runs it: the primary's 500 hands over to the fallback, the root job's webhook says
/// success, and the on-success child runs.
#[tokio::test]
async fn the_hosted_python_package_builds_a_chain_that_runs() {
    let s = TestServer::start();
    let t = Target::start().await;
    t.default_reply("boom", Reply::status(500));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hosted-sdk");
    assert!(
        dir.join("ezthrottle").is_dir(),
        "the hosted Python package is missing from {}: run `bash scripts/test-deps.sh`",
        dir.display()
    );
    let driver = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/hosted_chain_driver.py"
    );
    let (url, key) = (s.url(""), s.key.clone());
    let (boom, rescue, after) = (t.url("boom"), t.url("rescue"), t.url("after"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(driver)
            .env("PYTHONPATH", dir)
            .env("PYTHONNOUSERSITE", "1")
            .env("EZT_URL", url.trim_end_matches('/'))
            .env("EZT_KEY", key)
            .env("PRIMARY", boom)
            .env("RESCUE", rescue)
            .env("AFTER", after)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "driver failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("driver prints JSON");
    assert_eq!(
        r["payload"]["fallback_job"]["trigger"]["type"], "on_error",
        "{r}"
    );
    let id = r["result"]["job_id"].as_str().expect("job_id").to_string();
    assert_eq!(r["webhook"]["job_id"], id.as_str(), "{r}");
    assert_eq!(r["webhook"]["status"], "success", "{r}");
    assert_eq!(r["webhook"]["idempotent_key"], "hosted-chain-42");
    let v = s.wait_final(&id, 30).await;
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(t.arrivals("rescue").len(), 1);
    let child = v["children"][0]
        .as_str()
        .expect("the on_success child")
        .to_string();
    let c = s.wait_final(&child, 30).await;
    assert_eq!(c["state"], "succeeded", "{c:#}");
    assert_eq!(t.arrivals("after")[0].body, "{\"next\": true}");
}

/// The research brief's chain: the primary answers 500 → its `on_error` fallback is slow →
/// that one's `on_timeout` fallback wins; one webhook for the root, `success`.
#[tokio::test]
async fn error_then_timeout_fallbacks_compose() {
    let target = Target::start().await;
    target.default_reply("status500", Reply::status(500));
    target.default_reply(
        "delay2",
        Reply {
            status: 200,
            headers: vec![],
            delay_ms: 2000,
        },
    );
    let hooks = PyReceiver::start(&[], 0);
    let s = TestServer::start();
    let id = s
        .submit(json!({
            "url": target.url("status500"),
            "retry_policy": {"max_reroutes": 0},
            "webhooks": [{"url": hooks.url("/hook")}],
            "fallback_job": {
                "url": target.url("delay2"),
                "trigger": {"type": "on_error", "codes": [500, 502, 503]},
                "fallback_job": {"url": target.url("ok200"), "trigger": {"type": "on_timeout", "timeout_ms": 500}}
            }
        }))
        .await;
    let v = s.wait_final(&id, 30).await;
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let links: Vec<u64> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["link"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        links,
        vec![0, 2],
        "the primary, then the race won by the last link: {v:#}"
    );
    let b = body(&hooks.next(T).await);
    assert_eq!(
        (b["job_id"].as_str(), b["status"].as_str()),
        (Some(id.as_str()), Some("success"))
    );
    target.wait_aborted("delay2", T).await;
}

/// kill -9 right after the parent's success (the child's call in flight): after the restart
/// there is still exactly one child job, and it finishes.
#[tokio::test]
async fn kill_9_never_loses_or_doubles_a_child() {
    let target = Target::start().await;
    target.script(
        "slowchild",
        vec![Reply {
            status: 200,
            headers: vec![],
            delay_ms: 5000,
        }],
    );
    let mut server = TestServer::start();
    let (dir, key) = (server.dir.clone(), server.key.clone());
    let id = server
        .submit(
            json!({"url": target.url("parent"), "on_success": {"url": target.url("slowchild")}}),
        )
        .await;
    target.wait_for("slowchild", 1, T).await;
    server.kill9();
    let s = TestServer::spawn(&dir, "", Some(key));
    let v = s.wait_final(&id, 30).await;
    assert_eq!(v["state"], "succeeded");
    let child = v["children"][0].as_str().unwrap().to_string();
    let c = s.wait_final(&child, 30).await;
    assert_eq!(c["state"], "succeeded", "{c:#}");
    assert_eq!(c["parent_id"], id.as_str());
    let (_, page) = s.get("/api/v1/jobs?limit=100").await;
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "the parent and one child: {page:#}");
    assert_eq!(
        target.arrivals("parent").len(),
        1,
        "the parent is not called again"
    );
    assert_eq!(
        target.arrivals("slowchild").len(),
        2,
        "the child's cut-off call is sent again"
    );
}

/// Children read their parent's answer with `{{parent.response…}}`, encoded per slot; a path
/// without a value ends the child `template_unresolved` before anything is sent (its own
/// `on_failure` then runs); a template outside `parent.response` is refused at submit.
#[tokio::test]
async fn children_template_from_their_parents_answer() {
    let target = Target::start().await;
    target.default_reply("charge", Reply::status(201).header("X-Charge", "ch 1"));
    target.default_reply("declined", Reply::status(402));
    let s = TestServer::start();
    let ok = s
        .submit(json!({
            "url": target.url("charge"),
            "on_success": {
                "url": format!("{}?from={{{{parent.response.body.path}}}}&s={{{{parent.response.status}}}}", target.url("fulfil")),
                "method": "POST",
                "headers": {"X-Charge": "{{parent.response.headers.x-charge}}"},
                "body": "{\"charge\": \"{{parent.response.body.path}}\", \"status\": {{parent.response.status}}}"
            }
        }))
        .await;
    let v = s.wait_final(&ok, 30).await;
    let child = v["children"][0].as_str().expect("a child id").to_string();
    let c = s.wait_final(&child, 30).await;
    assert_eq!(c["state"], "succeeded", "{c:#}");
    let got = &target.arrivals("fulfil")[0];
    assert_eq!(got.headers["x-charge"], "ch 1");
    let body: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(body, json!({"charge": "/charge", "status": 201}));
    assert_eq!(
        c["spec"]["url"],
        format!("{}?from=%2Fcharge&s=201", target.url("fulfil")),
        "the child keeps its rendered spec: {c:#}"
    );

    // The parent's 402 has no `id`: the on_failure child ends unsent, and its own
    // on_failure (reading the child's missing answer) is unsent too.
    let bad = s
        .submit(json!({
            "url": target.url("declined"),
            "on_failure": {
                "url": format!("{}?id={{{{parent.response.body.id}}}}", target.url("refund")),
                "on_failure": {"url": target.url("alert")}
            }
        }))
        .await;
    let v = s.wait_final(&bad, 30).await;
    assert_eq!(v["state"], "failed");
    let child = v["children"][0].as_str().expect("a child id").to_string();
    let c = s.wait_final(&child, 30).await;
    assert_eq!(c["state"], "failed", "{c:#}");
    assert_eq!(c["error"]["code"], "template_unresolved", "{c:#}");
    assert_eq!(c["attempts"][0]["decision"], "fail", "{c:#}");
    let grandchild = c["children"][0]
        .as_str()
        .expect("its on_failure")
        .to_string();
    let g = s.wait_final(&grandchild, 30).await;
    assert_eq!(g["state"], "succeeded", "{g:#}");
    assert_eq!(target.arrivals("alert").len(), 1);
    assert!(target.arrivals("refund").is_empty(), "nothing sent");

    for (job, field) in [
        (
            json!({"url": target.url("a"), "on_success": {"url": format!("{}/{{{{input.x}}}}", target.url("b"))}}),
            "on_success.url",
        ),
        (
            json!({"url": target.url("a"), "on_failure": {"url": target.url("b"),
                   "headers": {"Authorization": "Bearer {{parent.response.body.t}}"}}}),
            "on_failure.headers.Authorization",
        ),
    ] {
        let (st, b) = s.post("/api/v1/jobs", job.clone()).await;
        assert_eq!(st, 400, "{job}: {b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
}
