"""Every ``Step`` option reaches the server as API.md says: asserted on the stored job, on the
exact bytes sent, and for the workflow options on the chain the server runs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import cast

import pytest
from conftest import FAR_FUTURE_MS, Receiver, Target

from ezthrottle import EZThrottle, IdempotentStrategy, Step, StepType, ValidationError

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_every_job_option_is_stored(client: EZThrottle, target: Target) -> None:
    url, hook, hook2 = target.unique(), target.unique("hook"), target.unique("hook2")
    key = f"builder-{uuid.uuid4()}"
    out = (
        Step(client)
        .url(url)
        .method("patch")
        .headers({"X-Test": "1", "Authorization": "Bearer upstream"})
        .body("payload")
        .metadata({"tenant": "acme", "run": "7"})
        .webhooks(
            [
                {"url": hook, "has_quorum_vote": True},
                {"url": hook2, "regions": ["local"], "has_quorum_vote": False},
            ]
        )
        .webhook_quorum(1)
        .regions(["local"])
        .region_policy("strict")
        .execution_mode("race")
        .retry_policy(
            {"max_retries": 7, "max_reroutes": 1, "retry_codes": [429, 503, 408],
             "reroute_codes": [502]}
        )  # fmt: skip
        .retry_at(FAR_FUTURE_MS)
        .timeout("90m")
        .idempotent_key(key)
        .type(StepType.PERFORMANCE)
        .execute()
    )
    # It lists regions in race mode: "racing", as the hosted service answered.
    assert out["status"] == "racing" and out["idempotent_key"] == key
    job = client.get_job(out["job_id"])
    spec = job["spec"]
    assert spec["url"] == url and spec["method"] == "PATCH" and spec["body"] == "payload"
    assert spec["headers"] == [["Authorization", "[redacted]"], ["X-Test", "1"]]
    assert spec["metadata"] == {"tenant": "acme", "run": "7"} == job["metadata"]
    assert spec.get("webhooks") == [
        {"url": hook, "has_quorum_vote": True},
        {"url": hook2, "regions": ["local"], "has_quorum_vote": False},
    ]
    assert spec["webhook_quorum"] == 1
    assert job["webhook_quorum"] is not None and job["webhook_quorum"]["required"] == 1
    assert spec["regions"] == ["local"]
    assert (spec["region_policy"], spec["execution_mode"]) == ("strict", "race")
    assert spec["retry_policy"] == {
        "max_retries": 7,
        "max_reroutes": 1,
        "retry_codes": [429, 503, 408],
        "reroute_codes": [502],
    }
    assert spec["retry_at"] == FAR_FUTURE_MS and job["run_at"] == FAR_FUTURE_MS
    assert spec["timeout_ms"] == 90 * 60_000
    assert job["idempotent_key"] == key
    assert job["state"] == "scheduled"
    client.cancel(out["job_id"])


def test_region_policy_and_execution_mode_are_spelled_as_the_server_reads_them(
    client: EZThrottle, target: Target
) -> None:
    # Besides being stored (above), the spelling shows in the server's answers: a strict
    # policy naming a region this node is not in is refused *because* of region_policy...
    with pytest.raises(ValidationError) as e:
        Step(client).url(target.unique()).regions(["fra"]).region_policy("strict").execute()
    assert (e.value.status, e.value.code, e.value.field) == (422, "region_unavailable", "regions")
    # ...while the same regions under the default policy are accepted,
    ok = Step(client).url(target.unique()).regions(["fra"]).retry_at(FAR_FUTURE_MS).execute()
    assert "job_id" in ok
    client.cancel(ok["job_id"])
    # and a value the server does not know is pinned on the field by name.
    bad = Step(client).url(target.unique()).region_policy(cast("str", "nearest"))  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as e2:
        bad.execute()
    assert (e2.value.code, e2.value.field) == ("invalid_field", "region_policy")
    with pytest.raises(ValidationError) as e3:
        Step(client).url(target.unique()).execution_mode("fanout").execute()
    assert (e3.value.code, e3.value.field) == ("not_supported", "execution_mode")


def test_idempotent_strategies(client: EZThrottle, target: Target) -> None:
    url = target.unique()
    hashed = Step(client).url(url).retry_at(FAR_FUTURE_MS)
    a, b = hashed.execute(), hashed.execute()
    assert a["status"] == "queued" and b["status"] == "duplicate"
    assert a["job_id"] == b["job_id"] and re.fullmatch(r"[0-9a-f]{64}", a["idempotent_key"])
    unique = Step(client).url(url).retry_at(FAR_FUTURE_MS)
    unique.idempotent_strategy(IdempotentStrategy.UNIQUE)
    c, d = unique.execute(), unique.execute()
    assert c["status"] == d["status"] == "queued" and c["job_id"] != d["job_id"]
    assert UUID.match(c["idempotent_key"]) and UUID.match(d["idempotent_key"])
    assert client.get_job(c["job_id"])["idempotent_key"] == c["idempotent_key"]
    for r in (a, c, d):
        client.cancel(r["job_id"])


def _workflow_step(client: EZThrottle | None, target: Target) -> Step:
    primary = target.unique("primary")
    return (
        Step(client)
        .url(primary)
        .method("POST")
        .body("p")
        .fallback(
            Step().url(target.unique("fb1")).headers({"X-Fb": "1"}), trigger_on_error=[500, 502]
        )
        .fallback(Step().url(target.unique("fb2")), trigger_on_timeout=5000)
        .on_success(Step().url(target.unique("ok")).method("POST").metadata({"k": "v"}))
        .on_failure(Step().url(target.unique("alert")), timeout_ms=60000)
    )


def test_workflow_options_compile_to_the_api_payload(target: Target) -> None:
    step = _workflow_step(None, target)
    p = step.to_payload()
    fb1 = p["fallback_job"]
    assert fb1["trigger"] == {"type": "on_error", "codes": [500, 502]}
    assert fb1["headers"] == {"X-Fb": "1"} and fb1["url"].endswith("/fb1")
    fb2 = fb1["fallback_job"]
    assert fb2["trigger"] == {"type": "on_timeout", "timeout_ms": 5000}
    assert fb2["url"].endswith("/fb2") and "fallback_job" not in fb2
    assert p["on_success"] == {
        "url": p["on_success"]["url"],
        "method": "POST",
        "metadata": {"k": "v"},
    }
    assert p["on_failure"]["url"].endswith("/alert")
    assert p["on_failure_timeout_ms"] == 60000
    with pytest.raises(ValueError):
        Step().url("http://x").fallback(Step().url("http://y"))


def test_workflow_options_are_sent_exactly(target: Target) -> None:
    # A local capture server stands in for EZThrottle to record the bytes on the wire.
    capture = f"{target.url}/{uuid.uuid4().hex}/capture"
    with EZThrottle(api_key="ezt_live_capture", base_url=capture) as c:
        step = _workflow_step(c, target)
        assert step.execute()["job_id"] == "job_captured"
    [seen] = target.requests(capture + "/api/v1/jobs")
    assert seen.headers["authorization"] == "Bearer ezt_live_capture"
    assert seen.json() == json.loads(json.dumps(step.to_payload()))
    sent = seen.json()
    assert set(sent) == {
        "url", "method", "body", "fallback_job", "on_success", "on_failure",
        "on_failure_timeout_ms",
    }  # fmt: skip


def test_server_runs_a_fallback_and_on_success_chain(client: EZThrottle, target: Target) -> None:
    primary, rescue, after = target.unique("status/500"), target.unique("rescue"), target.unique()
    out = (
        Step(client)
        .url(primary)
        .retry_policy({"max_reroutes": 0})
        .fallback(Step().url(rescue).method("POST"), trigger_on_error=[500])
        .on_success(Step().url(after).method("POST").body("next"))
        .execute()
    )
    job = client.wait(out["job_id"])
    assert job["state"] == "succeeded"
    assert [a.get("link", 0) for a in job["attempts"]] == [0, 1]
    assert len(target.requests(rescue)) == 1
    [child_id] = job["children"]
    child = client.wait(child_id)
    assert child["state"] == "succeeded" and child["parent_id"] == out["job_id"]
    assert [r.body for r in target.await_requests(after, 1)] == [b"next"]


def test_on_failure_timeout_needs_on_failure(client: EZThrottle, target: Target) -> None:
    with pytest.raises(ValidationError) as e:
        client.submit_job(target.unique(), on_failure_timeout_ms=1000)
    assert (e.value.status, e.value.code, e.value.field) == (
        400,
        "invalid_field",
        "on_failure_timeout_ms",
    )


def test_webhook_quorum_reaches_the_server(client: EZThrottle, target: Target) -> None:
    hooks = [target.unique("h1"), target.unique("h2")]
    step = Step(client).url(target.unique()).retry_at(FAR_FUTURE_MS)
    step.webhooks([{"url": h} for h in hooks]).webhook_quorum(2)
    job = client.get_job(step.execute()["job_id"])
    assert job["spec"]["webhook_quorum"] == 2
    # and a quorum larger than the voters is refused on that field
    with pytest.raises(ValidationError) as e:
        Step(client).url(target.unique()).webhooks([{"url": hooks[0]}]).webhook_quorum(2).execute()
    assert e.value.field == "webhook_quorum"
    client.cancel(job["job_id"])


def test_performance_step_runs_and_delivers(
    client: EZThrottle, target: Target, receiver: Callable[[list[tuple[str, str | None]]], Receiver]
) -> None:
    r = receiver([])
    url = target.unique()
    out = Step(client).url(url).webhooks([{"url": r.url}]).metadata({"m": "1"}).execute()
    d = r.next()
    body = d.json()
    assert body["job_id"] == out["job_id"] and body["status"] == "success"
    assert body["metadata"] == {"m": "1"} and body["response"]["status_code"] == 200
    assert d.headers["x-ezthrottle-job-id"] == out["job_id"]
