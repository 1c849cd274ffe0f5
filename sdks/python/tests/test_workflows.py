"""The workflow builder and views, sync and async, against the real server."""

from __future__ import annotations

import json

import pytest
from conftest import Server, Target

from ezthrottle import AsyncEZThrottle, EZThrottle, Step, ValidationError, WorkflowBuilder


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
