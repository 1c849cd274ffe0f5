//! `POST /api/v1/proxy`, the hosted SDKs' envelope: raw envelopes shaped the way those SDKs build
//! them, then the hosted Python package itself (PyPI `ezthrottle==1.3.0`, unmodified) pointed at
//! this server.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{cli, Reply, Target, TestServer};

/// An envelope as the hosted SDKs send it: the call's JSON body travels as a string.
fn envelope(target: &str, method: &str, body: &Value) -> Value {
    json!({
        "scope": "customer",
        "metric_name": "",
        "target_url": format!("https://ezthrottle.fly.dev{target}"),
        "method": method,
        "headers": {"Content-Type": "application/json"},
        "body": if body.is_null() { String::new() } else { body.to_string() },
    })
}

/// The forwarded answer: its status code and its body, parsed.
fn forwarded(answer: &Value) -> (u64, Value) {
    assert_eq!(answer["status"], "allowed", "{answer}");
    let f = &answer["forwarded_response"];
    let body = f["body"].as_str().expect("body is a string");
    (
        f["status_code"].as_u64().expect("status_code"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn envelope_reaches_the_api_as_the_caller() {
    let s = TestServer::start();
    let t = Target::start().await;
    let job = json!({"url": t.url("ok"), "method": "POST", "body": "{\"a\":1}",
                     "metadata": {"order": "7"}, "idempotent_key": "env-7"});
    // An older SDK also sends `customer_id`; it must not choose the tenant.
    let mut env = envelope("/api/v1/jobs", "POST", &job);
    env["customer_id"] = json!("cust_someone_else");
    let (st, answer) = s.post("/api/v1/proxy", env.clone()).await;
    assert_eq!(st, 200, "{answer}");
    let (code, body) = forwarded(&answer);
    assert_eq!(code, 201, "a new job is 201 inside the envelope: {body}");
    let id = body["job_id"].as_str().unwrap().to_string();
    let view = s.wait_final(&id, 20).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(view["spec"]["metadata"]["order"], "7");
    assert_eq!(t.arrivals("ok")[0].body, "{\"a\":1}");
    // Same envelope again: the API's duplicate answer, forwarded.
    let (_, answer) = s.post("/api/v1/proxy", env).await;
    assert_eq!(
        forwarded(&answer),
        (
            200,
            json!({"job_id": id, "status": "duplicate", "idempotent_key": "env-7"})
        )
    );
    // GET with a query, through the envelope.
    let (_, answer) = s
        .post(
            "/api/v1/proxy",
            envelope(
                &format!("/api/v1/jobs/{id}/wait?timeout=1s"),
                "GET",
                &Value::Null,
            ),
        )
        .await;
    let (code, view) = forwarded(&answer);
    assert_eq!((code, view["job_id"].as_str()), (200, Some(id.as_str())));
    // Another tenant's key sees a 404 for this job through the envelope too.
    cli(&s.dir, &["tenants", "create", "other"]);
    let other = cli(&s.dir, &["keys", "create", "--tenant", "other"]);
    let (_, answer) = s
        .post_as(
            other.trim(),
            "/api/v1/proxy",
            envelope(&format!("/api/v1/jobs/{id}"), "GET", &Value::Null),
        )
        .await;
    assert_eq!(forwarded(&answer).0, 404);
}

#[tokio::test]
async fn envelope_answers_a_new_job_201_and_a_duplicate_200() {
    let s = TestServer::start();
    let t = Target::start().await;
    let job = json!({"url": t.url("ok"), "idempotent_key": "env-201"});
    let env = envelope("/api/v1/jobs", "POST", &job);
    let (_, first) = s.post("/api/v1/proxy", env.clone()).await;
    let (code, a) = forwarded(&first);
    assert_eq!((code, a["status"].as_str()), (201, Some("queued")), "{a}");
    let (_, again) = s.post("/api/v1/proxy", env).await;
    let (code, b) = forwarded(&again);
    assert_eq!(
        (code, b["status"].as_str()),
        (200, Some("duplicate")),
        "{b}"
    );
    assert_eq!(a["job_id"], b["job_id"]);
    // The native API keeps 202 for a new job.
    let (st, native) = s
        .post("/api/v1/jobs", json!({"url": t.url("native")}))
        .await;
    assert_eq!((st, native["status"].as_str()), (202, Some("queued")));
    // Regions in race mode (the default): racing, 201, as the hosted service answered.
    let racing = json!({"url": t.url("race"), "regions": ["us-east-1", "eu-west-1"]});
    let (_, answer) = s
        .post("/api/v1/proxy", envelope("/api/v1/jobs", "POST", &racing))
        .await;
    let (code, r) = forwarded(&answer);
    assert_eq!((code, r["status"].as_str()), (201, Some("racing")), "{r}");
    // With ?wait, a job final in time is its view, 200 as natively.
    let waited = json!({"url": t.url("waited")});
    let (_, answer) = s
        .post(
            "/api/v1/proxy",
            envelope("/api/v1/jobs?wait=20s", "POST", &waited),
        )
        .await;
    let (code, v) = forwarded(&answer);
    assert_eq!((code, v["state"].as_str()), (200, Some("succeeded")), "{v}");
    // Only submissions change: other calls keep their status (a batch stays 202).
    let (_, answer) = s
        .post(
            "/api/v1/proxy",
            envelope(
                "/api/v1/jobs/batch",
                "POST",
                &json!({"jobs": [{"url": t.url("batch")}]}),
            ),
        )
        .await;
    assert_eq!(forwarded(&answer).0, 202);
}

#[tokio::test]
async fn envelope_errors_name_the_field() {
    let s = TestServer::start();
    // The API's own validation error comes back inside the envelope, unchanged.
    let bad = json!({"url": "http://127.0.0.1:1/", "retry_policy": {"max_retries": 1000}});
    let (st, answer) = s
        .post("/api/v1/proxy", envelope("/api/v1/jobs", "POST", &bad))
        .await;
    assert_eq!(st, 200);
    let (code, body) = forwarded(&answer);
    assert_eq!(code, 400);
    assert_eq!(body["error"]["field"], "retry_policy.max_retries", "{body}");
    // Envelope errors are the proxy's own.
    let cases = [
        (json!({"target_url": "/metrics"}), 400, "target_url"),
        (
            json!({"target_url": "/api/v1/../admin/v1/tenants"}),
            400,
            "target_url",
        ),
        (json!({"target_url": "/api/v1/proxy"}), 400, "target_url"),
        (
            json!({"target_url": "/api/v1/jobs/job_x/events", "method": "GET"}),
            422,
            "target_url",
        ),
        (
            json!({"target_url": "/api/v1/jobs", "method": "TRACE"}),
            400,
            "method",
        ),
        (
            json!({"target_url": "/api/v1/jobs", "headers": {"bad name": "x"}}),
            400,
            "headers.bad name",
        ),
        (
            json!({"target_url": "/api/v1/jobs", "webhook_url": "x"}),
            400,
            "webhook_url",
        ),
        (json!({"method": "GET"}), 400, "target_url"),
    ];
    for (env, status, field) in cases {
        let (st, body) = s.post("/api/v1/proxy", env.clone()).await;
        assert_eq!(
            (st, body["error"]["field"].as_str()),
            (status, Some(field)),
            "{env}: {body}"
        );
    }
    // No key, or a wrong one: refused before anything is forwarded.
    let (st, _) = s
        .post_as(
            "ezt_live_0000000000000000000000000000000000",
            "/api/v1/proxy",
            envelope("/api/v1/jobs", "POST", &bad),
        )
        .await;
    assert_eq!(st, 401);
    let r = s
        .http
        .post(s.url("/api/v1/proxy"))
        .json(&envelope("/api/v1/jobs", "POST", &bad))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// Where scripts/test-deps.sh put the hosted package.
fn hosted_sdk_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hosted-sdk");
    assert!(
        dir.join("ezthrottle").is_dir(),
        "the hosted Python package is missing from {}: run `bash scripts/test-deps.sh`",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn hosted_python_package_works_unchanged() {
    let s = TestServer::start();
    let t = Target::start().await;
    t.default_reply("busy", Reply::status(429));
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/hosted_sdk_driver.py");
    let (url, key, ok, busy) = (s.url(""), s.key.clone(), t.url("ok"), t.url("busy"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(driver)
            .env("PYTHONPATH", hosted_sdk_dir())
            .env("PYTHONNOUSERSITE", "1")
            .env("EZT_URL", url.trim_end_matches('/'))
            .env("EZT_KEY", key)
            .env("TARGET", ok)
            .env("TARGET_429", busy)
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
    assert!(r["module"].as_str().unwrap().contains("hosted-sdk"), "{r}");

    // Secrets: created, shown masked, replaced by the package's rotate, deleted.
    assert_eq!(r["create_secret"]["has_secondary"], false, "{r}");
    assert_eq!(r["get_secret"]["primary_secret"], "****0001");
    assert_eq!(r["delete_secret"], json!({"deleted": true}));
    assert!(
        r["get_after_delete"]
            .as_str()
            .unwrap()
            .contains("No webhook secrets configured"),
        "{r}"
    );

    // Jobs: accepted, deduplicated, stored with every field the package sent.
    let id = r["submit"]["job_id"].as_str().unwrap();
    assert_eq!(r["submit"]["status"], "queued");
    assert_eq!(r["duplicate"]["job_id"], id);
    assert_eq!(r["duplicate"]["status"], "duplicate");
    assert_eq!(r["racing"]["status"], "racing", "{r}");
    let racing = s
        .wait_final(r["racing"]["job_id"].as_str().unwrap(), 20)
        .await;
    assert_eq!(
        racing["spec"]["regions"],
        json!(["us-east-1", "eu-west-1"]),
        "{racing}"
    );
    let view = s.wait_final(id, 20).await;
    let spec = &view["spec"];
    assert_eq!(spec["method"], "POST");
    assert_eq!(spec["body"], "{\"amount\": 1000}");
    assert_eq!(spec["metadata"], json!({"order": "42"}));
    assert_eq!(spec["retry_policy"]["max_retries"], 5);
    assert_eq!(view["idempotent_key"], "hosted-order-42");
    assert!(
        r["bad_field"]
            .as_str()
            .unwrap()
            .contains("retry_policy.max_retries"),
        "{r}"
    );

    // Its own verifiers accept our signatures, and refuse the wrong secret.
    assert_eq!(r["verify_s1"], json!([true, "valid"]));
    assert_eq!(r["verify_wrong"][0], false);
    assert_eq!(r["after_rotate_s2"], json!([true, "valid"]));
    assert_eq!(r["after_rotate_s1"][0], false);
    assert_eq!(r["two_secrets_header_v1s"], 2);
    // With two secrets the package reads only the *last* `v1=` of the header (it parses the
    // header into a dict), which is the secondary's: it still verifies, as "valid_secondary".
    assert_eq!(
        r["two_secrets_try"],
        json!([true, "valid_secondary"]),
        "{r}"
    );

    // Deprecated queue_request, the Step builder and auto_forward all land as jobs.
    let q = s
        .wait_final(r["queue_request"]["job_id"].as_str().unwrap(), 20)
        .await;
    assert_eq!(q["spec"]["metadata"], json!({"order": "43"}));
    let step = s
        .wait_final(r["step"]["job_id"].as_str().unwrap(), 20)
        .await;
    assert_eq!(
        (&step["spec"]["method"], &step["spec"]["body"]),
        (&json!("PUT"), &json!("step-body"))
    );
    // FRUGAL: the package called the target itself, got a 429, and forwarded the job to us.
    assert_eq!(r["frugal"]["status"], "queued", "{r}");
    let frugal = r["frugal"]["job_id"].as_str().unwrap();
    let (_, fv) = s.get(&format!("/api/v1/jobs/{frugal}")).await;
    assert!(
        fv["spec"]["url"].as_str().unwrap().ends_with("/busy"),
        "{fv}"
    );
    let af = s
        .wait_final(r["auto_forward"]["job_id"].as_str().unwrap(), 20)
        .await;
    assert_eq!(af["spec"]["body"], "45");
    let seen = t.wait_for("ok", 5, Duration::from_secs(20)).await;
    assert!(seen.len() >= 5);
}
