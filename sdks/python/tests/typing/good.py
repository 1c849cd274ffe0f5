"""Typical use; must pass ``mypy --strict`` with no ignores."""

from ezthrottle import EZThrottle, Job, Step, StepType, StreamResponse, SubmitResult


def use(client: EZThrottle) -> None:
    out: SubmitResult = client.submit_job(
        "https://api.example.com/v1/things",
        "POST",
        headers={"Authorization": "Bearer x"},
        body="{}",
        webhooks=[{"url": "https://app.example.com/hook", "has_quorum_vote": True}],
        retry_policy={"max_retries": 5},
        timeout="1h",
    )
    job: Job = client.wait(out["job_id"], timeout=60)
    state: str = job["state"]
    code: int | None = job["response"]["status_code"] if job["response"] else None
    resp: StreamResponse = client.stream.post("https://api.example.com", json={"a": 1})
    print(state, code, resp.status_code, resp.headers.get("content-type"))
    for a in job["attempts"]:
        # Cluster mode: where each attempt ran, why it moved, and a race's legs.
        where: str = a["region"] + a.get("node", "") + a.get("reason", "")
        for leg in a.get("legs", []):
            outcome: str | None = leg.get("outcome")
            print(where, leg["region"], leg["status_code"], leg["latency_ms"], outcome)
    r = Step(client).url("https://x.example").type(StepType.FRUGAL).execute()
    print(r["status"])
    for e in client.events(out["job_id"]):
        print(e.event, e.data)


def retries_envelope_and_reasons(body: bytes, header: str) -> None:
    from ezthrottle import ReasonCode, VerifyReason, verify_webhook_signature

    hosted = EZThrottle("k", tracktags_url="http://127.0.0.1:8080", max_retries=0)
    patient = EZThrottle("k", max_retries=5, retry_backoff=0.25, max_retry_delay=4.0)
    held = patient.submit_job("https://x.example", wait="30s")
    if "state" in held:
        print(held["state"])
    plain: SubmitResult = hosted.submit_job("https://x.example")
    ok, reason = verify_webhook_signature(body, header, "secret")
    text: str = reason
    r: VerifyReason = reason
    if not ok and reason.code is ReasonCode.TOO_OLD:
        print(plain["status"], text, r.code.value)
