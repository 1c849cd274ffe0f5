"""FRUGAL: the call is tried from this process; only the listed statuses or a network error
hand it to the server. Each test uses a tenant of its own, so "the server never saw a job" is
an empty job list, not a guess."""

from __future__ import annotations

import socket
import time

from conftest import FAR_FUTURE_MS, Target

from ezthrottle import EZThrottle, Step, StepType


def test_local_success_never_reaches_the_server(tenant_client: EZThrottle, target: Target) -> None:
    url = target.unique()
    out = (
        Step(tenant_client).url(url).method("POST").body("hi").headers({"X-Test": "f"})
        .type(StepType.FRUGAL).execute()
    )  # fmt: skip
    assert out["status"] == "success"
    assert out.get("executed_locally") is True and out.get("status_code") == 200
    assert '"x_test": "f"' in out.get("response", "")
    [seen] = target.requests(url)
    assert (seen.method, seen.body) == ("POST", b"hi")
    # The EZThrottle key never goes to the target.
    assert "authorization" not in seen.headers
    assert list(tenant_client.list_jobs()) == []


def test_forwards_on_429_with_the_full_spec(tenant_client: EZThrottle, target: Target) -> None:
    url = target.unique("flaky/1")  # 429 once (to us), then 200 (to the server)
    out = (
        Step(tenant_client)
        .url(url)
        .method("PUT")
        .body("b")
        .metadata({"via": "frugal"})
        .retry_policy({"max_retries": 2})
        .type(StepType.FRUGAL)
        .fallback_on_error([429])
        .execute()
    )
    assert out["status"] == "queued" and "job_id" in out
    job = tenant_client.wait(out["job_id"])
    assert job["state"] == "succeeded"
    spec = job["spec"]
    assert (spec["url"], spec["method"], spec["body"]) == (url, "PUT", "b")
    assert spec["metadata"] == {"via": "frugal"} and spec["retry_policy"]["max_retries"] == 2
    assert [s.method for s in target.requests(url)] == ["PUT", "PUT"]
    assert [j["job_id"] for j in tenant_client.list_jobs()] == [out["job_id"]]


def test_unlisted_error_fails_locally_without_forwarding(
    tenant_client: EZThrottle, target: Target
) -> None:
    url = target.unique("status/429")
    out = Step(tenant_client).url(url).type(StepType.FRUGAL).fallback_on_error([503]).execute()
    assert out == {
        "status": "failed",
        "executed_locally": True,
        "status_code": 429,
        "error": "Request failed: 429",
    }
    assert list(tenant_client.list_jobs()) == []


def test_forwards_on_connection_refused(
    tenant_client: EZThrottle, target: Target, closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}/nothing-here"
    out = (
        Step(tenant_client).url(url).method("DELETE").idempotent_key("refused-1")
        .retry_at(FAR_FUTURE_MS).type(StepType.FRUGAL).execute()
    )  # fmt: skip
    assert out["status"] == "queued" and out["idempotent_key"] == "refused-1"
    job = tenant_client.get_job(out["job_id"])
    assert (job["spec"]["url"], job["spec"]["method"]) == (url, "DELETE")
    tenant_client.cancel(out["job_id"])


def test_forwards_on_local_timeout(tenant_client: EZThrottle) -> None:
    # A listener that accepts but never answers: the local try times out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/silent"
        t0 = time.monotonic()
        out = (
            Step(tenant_client).url(url).local_timeout(0.3).retry_at(FAR_FUTURE_MS)
            .type(StepType.FRUGAL).execute()
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    assert out["status"] == "queued"
    # local_timeout, not the 30 s default, ended the local try.
    assert elapsed < 10, elapsed
    tenant_client.cancel(out["job_id"])


def test_local_success_runs_on_success(tenant_client: EZThrottle, target: Target) -> None:
    follow = target.unique()
    out = (
        Step(tenant_client)
        .url(target.unique())
        .type(StepType.FRUGAL)
        .on_success(Step().url(follow).type(StepType.FRUGAL))
        .execute()
    )
    assert out["status"] == "success"
    nested = out.get("on_success")
    assert nested is not None and nested["status"] == "success"
    assert len(target.requests(follow)) == 1
