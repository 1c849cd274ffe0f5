"""The workflow builder and views, sync and async, against the real server."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Server, Target

from ezthrottle import (
    AsyncEZThrottle,
    ConflictError,
    EZThrottle,
    Step,
    ValidationError,
    WorkflowBuilder,
)


def _builder(target: Target) -> tuple[WorkflowBuilder, dict[str, str]]:
    urls = {k: target.unique(k) for k in ("reserve", "charge", "survey", "refund")}
    urls["survey"] = target.unique("status/500")
    wf = (
        WorkflowBuilder("order", input={"sku": "A 1", "qty": 2})
        .step(
            "reserve",
            Step().url(urls["reserve"]).method("POST").body('{"qty": {{input.qty}}}'),
            compensate=Step().url(urls["refund"]).method("POST"),
        )
        .step(
            "charge",
            Step().url(urls["charge"]).method("POST").headers({"X-Sku": "{{input.sku}}"}),
            depends_on=["reserve"],
            retry="10m",
        )
        .step(
            "survey",
            Step().url(urls["survey"]).retry_policy({"max_retries": 0, "max_reroutes": 0}),
            depends_on=["charge"],
            non_blocking=True,
        )
    )
    return wf, urls


def test_the_builder_compiles_to_the_api_body(target: Target) -> None:
    wf, urls = _builder(target)
    p = wf.to_payload()
    assert p["name"] == "order" and p["input"] == {"sku": "A 1", "qty": 2}
    names = [s["name"] for s in p["steps"]]
    assert names == ["reserve", "charge", "survey"]
    charge = p["steps"][1]
    assert charge["depends_on"] == ["reserve"] and charge["retry"] == "10m"
    assert "idempotent_key" not in charge, "the run keys its steps"
    assert p["steps"][0]["compensate"]["url"] == urls["refund"]
    assert p["steps"][2]["non_blocking"] is True
    with pytest.raises(ValueError):
        wf.step("charge", Step().url(urls["charge"]))
    with pytest.raises(ValueError):
        WorkflowBuilder().to_payload()


def test_a_run_passes_data_and_reports_every_step(client: EZThrottle, target: Target) -> None:
    wf, urls = _builder(target)
    out = client.submit_workflow(wf)
    assert out["status"] == "running" and out["workflow_id"].startswith("wf_")
    run = client.wait_workflow(out["workflow_id"], timeout=30)
    assert run["status"] == "succeeded", run
    assert len(run["warnings"]) == 1
    by = {s["name"]: s for s in run["steps"]}
    assert by["survey"]["status"] == "failed"
    job = by["charge"]["job"]
    assert by["charge"]["status"] == "succeeded" and job is not None
    assert job["state"] == "succeeded"
    [seen] = target.requests(urls["charge"])
    assert seen.headers["x-sku"] == "A 1"
    assert seen.headers["idempotency-key"] == f"{out['workflow_id']}:charge"
    [reserve] = target.requests(urls["reserve"])
    assert json.loads(reserve.body) == {"qty": 2}
    assert target.requests(urls["refund"]) == [], "nothing to compensate"


def test_bad_workflows_name_the_step(client: EZThrottle, target: Target) -> None:
    bad = WorkflowBuilder().step(
        "a", Step().url(target.unique()), depends_on=["nope"]
    )
    with pytest.raises(ValidationError) as e:
        client.submit_workflow(bad)
    assert (e.value.status, e.value.field) == (400, "steps[0].depends_on[0]")
    with pytest.raises(ValueError):
        client.get_workflow("job_01JD3X0000000000000000000A")


def test_when_skips_a_step_and_its_dependents_proceed(
    client: EZThrottle, target: Target
) -> None:
    urls = {k: target.unique(k) for k in ("first", "gift", "last")}
    wf = (
        WorkflowBuilder(input={"vip": False})
        .step("first", Step().url(urls["first"]))
        .step("gift", Step().url(urls["gift"]), depends_on=["first"], when="input.vip == true")
        .step(
            "last",
            Step().url(urls["last"]),
            depends_on=["gift"],
            when="steps.first.response.status == 200 && !exists(steps.gift.response.status)",
        )
    )
    assert wf.to_payload()["steps"][1]["when"] == "input.vip == true"
    run = client.wait_workflow(client.submit_workflow(wf)["workflow_id"], timeout=30)
    assert run["status"] == "succeeded", run
    by = {s["name"]: s for s in run["steps"]}
    assert (by["gift"]["status"], by["gift"].get("condition")) == ("skipped", False)
    assert (by["last"]["status"], by["last"].get("condition")) == ("succeeded", True)
    assert target.requests(urls["gift"]) == []
    assert len(target.requests(urls["last"])) == 1
    bad = WorkflowBuilder().step("a", Step().url(urls["first"]), when="input.x ==")
    with pytest.raises(ValidationError) as e:
        client.submit_workflow(bad)
    assert (e.value.status, e.value.field) == (400, "steps[0].when")


@pytest.mark.anyio
async def test_async_submit_and_wait(server: Server, target: Target) -> None:
    async with AsyncEZThrottle(server.new_tenant_key(), server.url) as c:
        url = target.unique()
        out = await c.submit_workflow(WorkflowBuilder().step("only", Step().url(url)))
        run = await c.wait_workflow(out["workflow_id"], timeout=30)
        assert run["status"] == "succeeded"
        assert (await c.get_workflow(out["workflow_id"]))["steps"][0]["job_id"]


def test_a_key_makes_one_run_and_webhooks_are_sent(client: EZThrottle, target: Target) -> None:
    url = target.unique()
    hook = target.unique("hook")
    key = f"order-{url[-40:-3]}"
    wf = WorkflowBuilder("keyed", webhooks=[{"url": hook}], idempotent_key=key).step(
        "only", Step().url(url)
    )
    p = wf.to_payload()
    assert p["idempotent_key"] == key and p["webhooks"] == [{"url": hook}]
    first = client.submit_workflow(wf)
    again = client.submit_workflow(wf)
    assert again == {"workflow_id": first["workflow_id"], "status": "duplicate"}
    run = client.wait_workflow(first["workflow_id"], timeout=30)
    assert run["status"] == "succeeded" and run["idempotent_key"] == key
    assert len(target.requests(url)) == 1, "one run, one call"
    [seen] = target.await_requests(hook, 1)
    body = seen.json()
    assert body["type"] == "workflow.completed" and body["workflow_id"] == first["workflow_id"]
    with pytest.raises(ValueError):
        WorkflowBuilder(idempotent_key="")


def test_events_cancel_resume_and_restart(client: EZThrottle, target: Target) -> None:
    flaky = target.unique("flaky/1/x")
    first = target.unique()
    wf = (
        WorkflowBuilder()
        .step("first", Step().url(first))
        .step(
            "flaky",
            Step().url(flaky).retry_policy({"max_retries": 0, "max_reroutes": 0}),
            depends_on=["first"],
        )
    )
    wid = client.submit_workflow(wf)["workflow_id"]
    events = list(client.workflow_events(wid))
    names = [e.event for e in events]
    assert names[0] == "step.started" and names[-1] == "workflow.failed", names
    assert events[-1].json()["status"] == "failed"
    with pytest.raises(ConflictError):
        client.cancel_workflow(wid)
    resumed = client.resume_workflow(wid)
    assert resumed["status"] == "running" and resumed["resumes"] == 1
    run = client.wait_workflow(wid, timeout=30)
    assert run["status"] == "succeeded", run
    assert len(target.requests(first)) == 1, "the finished step kept its result"
    assert len(target.requests(flaky)) == 2
    new = client.restart_workflow(wid)
    assert new["workflow_id"] != wid and new["status"] == "running"
    assert client.wait_workflow(new["workflow_id"], timeout=30)["status"] == "succeeded"
    assert len(target.requests(first)) == 2

    later = client.submit_workflow(
        WorkflowBuilder().step("later", Step().url(target.unique()).retry_at(int(time.time() * 1000) + 30 * 86_400_000))
    )["workflow_id"]
    cancelled = client.cancel_workflow(later)
    assert cancelled["status"] == "cancelled"
    assert client.wait_workflow(later, timeout=10)["status"] == "cancelled"


@pytest.mark.anyio
async def test_async_control(server: Server, target: Target) -> None:
    async with AsyncEZThrottle(server.new_tenant_key(), server.url) as c:
        url = target.unique()
        wid = (await c.submit_workflow(WorkflowBuilder().step("only", Step().url(url))))[
            "workflow_id"
        ]
        names = [e.event async for e in c.workflow_events(wid)]
        assert names == ["step.started", "step.ended", "workflow.completed"], names
        with pytest.raises(ConflictError):
            await c.resume_workflow(wid)
        with pytest.raises(ConflictError):
            await c.cancel_workflow(wid)
        new = await c.restart_workflow(wid)
        run = await c.wait_workflow(new["workflow_id"], timeout=30)
        assert run["status"] == "succeeded" and len(target.requests(url)) == 2
