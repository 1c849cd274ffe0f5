"""Jobs against the real server: submit, batch, views, listing, waiting, events, cancel, retry,
STREAM, and the error mapping."""

from __future__ import annotations

import time
import uuid
import warnings

import httpx
import pytest
from conftest import FAR_FUTURE_MS, Server, Target

import ezthrottle
from ezthrottle import (
    AuthenticationError,
    ConflictError,
    EZThrottle,
    JobFailedError,
    NotFoundError,
    ValidationError,
)



def test_submit_job_kwargs_reach_the_stored_job(client: EZThrottle, target: Target) -> None:
    url = target.unique()
    key = f"k-{uuid.uuid4()}"
    out = client.submit_job(
        url,
        "post",
        headers={"X-Test": "yes", "Authorization": "Bearer upstream-secret"},
        body='{"n": 1}',
        metadata={"order": "42"},
        retry_policy={"max_retries": 5, "retry_codes": [429]},
        timeout="2h",
        retry_at=FAR_FUTURE_MS,
        idempotent_key=key,
    )
    assert out["status"] == "queued" and out["idempotent_key"] == key
    job = client.get_job(out["job_id"])
    spec = job["spec"]
    assert job["state"] == "scheduled"
    assert (spec["url"], spec["method"], spec["body"]) == (url, "POST", '{"n": 1}')
    assert ["X-Test", "yes"] in spec["headers"]
    assert ["Authorization", "[redacted]"] in spec["headers"]
    assert job["metadata"] == {"order": "42"}
    assert spec["retry_policy"]["max_retries"] == 5 and spec["retry_policy"]["retry_codes"] == [429]
    assert spec["timeout_ms"] == 7_200_000 and spec["retry_at"] == FAR_FUTURE_MS
    assert client.cancel(out["job_id"])["state"] == "cancelled"


def test_duplicate_submission_returns_the_existing_job(client: EZThrottle, target: Target) -> None:
    url = target.unique()
    first = client.submit_job(url, retry_at=FAR_FUTURE_MS)
    again = client.submit_job(url, retry_at=FAR_FUTURE_MS)
    assert (again["status"], again["job_id"]) == ("duplicate", first["job_id"])
    client.cancel(first["job_id"])


def test_submit_batch_keeps_order_and_reports_bad_jobs(client: EZThrottle, target: Target) -> None:
    good = target.unique()
    res = client.submit_batch(
        [
            {"url": good, "retry_at": FAR_FUTURE_MS},
            {"url": good, "retry_policy": {"max_retries": 1000}},
            {"url": target.unique(), "retry_at": FAR_FUTURE_MS},
        ]
    )
    assert len(res) == 3
    assert "job_id" in res[0] and "job_id" in res[2]
    assert "error" in res[1] and res[1]["error"]["field"] == "retry_policy.max_retries"
    for r in (res[0], res[2]):
        if "job_id" in r:
            client.cancel(r["job_id"])


def test_errors_carry_code_and_field(client: EZThrottle, server: Server, target: Target) -> None:
    with pytest.raises(ValidationError) as e:
        client.submit_job(target.unique(), retry_policy={"max_retries": 1000})
    assert (e.value.status, e.value.code, e.value.field) == (
        400,
        "invalid_field",
        "retry_policy.max_retries",
    )
    with pytest.raises(NotFoundError) as nf:
        client.get_job("job_01JD3X0000000000000000000A")
    assert (nf.value.status, nf.value.code) == (404, "not_found")
    with EZThrottle(api_key="ezt_live_wrong", base_url=server.url) as bad:
        with pytest.raises(AuthenticationError) as au:
            bad.get_job("job_x")
    assert au.value.code == "unauthorized"
    # The hosted SDK's base class still catches everything.
    assert isinstance(au.value, ezthrottle.EZThrottleError)


def test_api_key_and_url_come_from_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EZTHROTTLE_API_KEY", server.key)
    monkeypatch.setenv("EZTHROTTLE_URL", server.url)
    with EZThrottle() as c:
        assert (c.api_key, c.base_url) == (server.key, server.url)
        assert isinstance(list(c.list_jobs(page_size=1)), list)
    monkeypatch.delenv("EZTHROTTLE_API_KEY")
    with pytest.raises(ValueError, match="EZTHROTTLE_API_KEY"):
        EZThrottle()


def test_list_jobs_follows_cursors(tenant_client: EZThrottle, target: Target) -> None:
    ids = [
        tenant_client.submit_job(target.unique(), retry_at=FAR_FUTURE_MS)["job_id"]
        for _ in range(5)
    ]
    listed = [j["job_id"] for j in tenant_client.list_jobs(page_size=2)]
    assert listed == list(reversed(ids))  # newest first, across three pages
    assert [j["job_id"] for j in tenant_client.list_jobs(state="succeeded")] == []
    for i in ids:
        tenant_client.cancel(i)
    assert len(list(tenant_client.list_jobs(state="cancelled", page_size=100))) == 5


def test_wait_returns_the_final_job(client: EZThrottle, target: Target) -> None:
    url = target.unique()
    job_id = client.submit_job(url, method="PUT", body="hello")["job_id"]
    job = client.wait(job_id, timeout=30)
    assert job["state"] == "succeeded"
    assert job["response"] is not None and job["response"]["status_code"] == 200
    assert target.requests(url)[0].body == b"hello"


def counting_client(server: Server) -> tuple[EZThrottle, list[str]]:
    """A client that records every request it makes (to prove there is no polling loop)."""
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(f"{r.method} {r.url}")]})
    return EZThrottle(server.key, server.url, http_client=http), sent


def test_wait_times_out_with_the_last_view(server: Server, target: Target) -> None:
    client, sent = counting_client(server)
    job_id = client.submit_job(target.unique(), retry_at=FAR_FUTURE_MS)["job_id"]
    t0 = time.monotonic()
    with pytest.raises(ezthrottle.TimeoutError) as e:
        client.wait(job_id, timeout=1.5)
    elapsed = time.monotonic() - t0
    assert 1.4 <= elapsed < 10, elapsed  # held by the server, not answered at once
    [poll] = sent[1:]  # one long-poll, no loop of short ones
    assert poll.endswith(f"/api/v1/jobs/{job_id}/wait?timeout=1500ms")
    assert e.value.job is not None and e.value.job["state"] == "scheduled"
    assert isinstance(e.value, TimeoutError)  # the builtin, too
    client.cancel(job_id)


def test_events_stream_until_final(client: EZThrottle, target: Target) -> None:
    url = target.unique("flaky/1")
    job_id = client.submit_job(url, retry_policy={"max_retries": 3})["job_id"]
    events = list(client.events(job_id))
    names = [e.event for e in events]
    assert names[0] == "queued" and names[-1] == "succeeded"
    attempts = [e.json() for e in events if e.event == "attempt"]
    assert [a["status_code"] for a in attempts] == [429, 200]
    assert "dispatching" in names
    final = events[-1].json()
    assert final["job_id"] == job_id and final["state"] == "succeeded"
    # A late subscriber gets the whole story again, then the end.
    assert [e.event for e in client.events(job_id)] == names[:1] + [
        n for n in names[1:] if n != "position"
    ]


def test_cancel_and_retry(client: EZThrottle, target: Target) -> None:
    job_id = client.submit_job(target.unique(), retry_at=FAR_FUTURE_MS)["job_id"]
    assert client.cancel(job_id)["state"] == "cancelled"
    with pytest.raises(ConflictError) as e:
        client.cancel(job_id)
    assert e.value.status == 409 and e.value.code == "conflict"

    failing = target.unique("status/404")
    failed_id = client.submit_job(failing)["job_id"]
    assert client.wait(failed_id)["state"] == "failed"
    replay = client.retry(failed_id)
    assert replay["series"] == 2
    assert client.wait(failed_id)["state"] == "failed"
    assert len(target.requests(failing)) == 2


def test_queue_request_is_a_deprecated_alias(client: EZThrottle, target: Target) -> None:
    hook = target.unique("hook")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = client.queue_request(target.unique(), webhook_url=hook, retry_at=FAR_FUTURE_MS)
    assert any(issubclass(x.category, DeprecationWarning) for x in w)
    spec = client.get_job(out["job_id"])["spec"]
    assert spec.get("webhooks") == [{"url": hook, "has_quorum_vote": True}]
    client.cancel(out["job_id"])


def test_stream_post_returns_the_final_response(client: EZThrottle, target: Target) -> None:
    url = target.unique()
    resp = client.stream.post(url, json={"prompt": "hi"}, headers={"X-Test": "s"}, timeout="1h")
    assert resp.status_code == 200 and resp.ok
    echoed = resp.json()
    assert echoed["method"] == "POST" and echoed["x_test"] == "s"
    assert echoed["body"] == '{"prompt": "hi"}'
    assert resp.headers["content-type"] == "application/json"
    seen = target.requests(url)[0]
    assert seen.headers["content-type"] == "application/json"
    assert resp.job["spec"]["timeout_ms"] == 3_600_000


def test_stream_waits_through_retries(server: Server, target: Target) -> None:
    client, sent = counting_client(server)
    url = target.unique("flaky/2")
    resp = client.stream.get(url, timeout="2m")
    assert resp.status_code == 200
    assert [a["status_code"] for a in resp.job["attempts"]] == [429, 429, 200]
    # The submission itself was held until the job was final: one request in all.
    assert sent == [f"POST {server.url}/api/v1/jobs?wait=120000ms"]


def test_stream_raises_when_the_job_fails(client: EZThrottle, target: Target) -> None:
    with pytest.raises(JobFailedError) as e:
        client.stream.delete(target.unique("status/404"))
    assert e.value.job["state"] == "failed"
    assert e.value.status == 404


def test_stream_raises_when_the_job_expires(client: EZThrottle, target: Target) -> None:
    t0 = time.monotonic()
    with pytest.raises(JobFailedError) as e:
        client.stream.get(target.unique(), retry_at=FAR_FUTURE_MS, timeout="2s")
    assert e.value.job["state"] == "expired"
    assert time.monotonic() - t0 < 30
