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
    r = Step(client).url("https://x.example").type(StepType.FRUGAL).execute()
    print(r["status"])
    for e in client.events(out["job_id"]):
        print(e.event, e.data)
