"""Hosted-envelope mode (``tracktags_url``, the hosted SDK's constructor argument): every API call
travels as ``POST /api/v1/proxy`` to the real server, with the same answers and typed errors as
direct calls; event streams go direct."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import Server, Target

from ezthrottle import (
    AsyncEZThrottle,
    EZThrottle,
    NotFoundError,
    Step,
    ValidationError,
)


def test_every_call_is_enveloped_and_answers_as_directly(server: Server, target: Target) -> None:
    proxied: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    paths: list[str] = []

    def on_request(req: httpx.Request) -> None:
        paths.append(req.url.path)
        if req.url.path == "/api/v1/proxy":
            sent.append(json.loads(req.content))

    def on_response(resp: httpx.Response) -> None:
        if resp.request.url.path == "/api/v1/proxy":
            resp.read()
            proxied.append(resp.json())

    http = httpx.Client(event_hooks={"request": [on_request], "response": [on_response]})
    key = server.new_tenant_key()
    with EZThrottle(api_key=key, tracktags_url=server.url, http_client=http) as c:
        url = target.unique()
        first = c.submit_job(url, "POST", body="x", idempotent_key=f"env-{url}")
        assert first["status"] == "queued"
        # The call went to the proxy as the hosted SDKs send it, and the new job was 201 inside
        # it, as the hosted service answered.
        assert sent[-1]["target_url"] == "https://ezthrottle.fly.dev/api/v1/jobs"
        assert (sent[-1]["method"], json.loads(sent[-1]["body"])["body"]) == ("POST", "x")
        assert proxied[-1]["status"] == "allowed"
        assert proxied[-1]["forwarded_response"]["status_code"] == 201
        again = c.submit_job(url, "POST", body="x", idempotent_key=f"env-{url}")
        assert (again["job_id"], again["status"]) == (first["job_id"], "duplicate")
        assert proxied[-1]["forwarded_response"]["status_code"] == 200
        final = c.wait(first["job_id"], timeout=30)
        assert final["state"] == "succeeded" and final["spec"]["body"] == "x"
        assert sent[-1]["target_url"].startswith(
            f"https://ezthrottle.fly.dev/api/v1/jobs/{first['job_id']}/wait?timeout="
        )
        assert c.get_job(first["job_id"])["job_id"] == first["job_id"]
        # Errors inside the envelope are the same typed errors.
        with pytest.raises(NotFoundError) as nf:
            c.get_job("job_00000000000000000000000000")
        assert (nf.value.status, nf.value.code) == (404, "not_found")
        with pytest.raises(ValidationError) as bad:
            c.submit_job(url, retry_policy={"max_retries": 1000})
        assert bad.value.field == "retry_policy.max_retries"
        # Secrets CRUD, as the hosted SDK does it, through the envelope.
        assert c.create_webhook_secret("envelope-secret-0001")["primary_secret"] == "****0001"
        assert c.delete_webhook_secret() == {"deleted": True}
        assert set(paths) == {"/api/v1/proxy"}
        # Event streams cannot be enveloped: they go to base_url (the same server) directly.
        assert [e.event for e in c.events(first["job_id"])][-1] == "succeeded"
        assert paths[-1] == f"/api/v1/jobs/{first['job_id']}/events"
    http.close()


def test_a_step_through_the_envelope_lands_as_a_job(server: Server, target: Target) -> None:
    with EZThrottle(api_key=server.new_tenant_key(), tracktags_url=server.url) as c:
        out = Step(c).url(target.unique()).method("PUT").body("b").regions(["eu-west-1"]).execute()
        assert out["status"] == "racing" and "job_id" in out
        assert c.wait(out["job_id"], timeout=30)["spec"]["method"] == "PUT"


def test_a_bad_key_is_refused_by_the_proxy_itself(server: Server) -> None:
    with EZThrottle(api_key="ezt_live_0000000000000000000000000000", tracktags_url=server.url) as c:
        with pytest.raises(Exception) as e:
            c.get_job("job_00000000000000000000000000")
        assert getattr(e.value, "status", None) == 401


@pytest.mark.anyio
async def test_the_async_client_envelopes_too(server: Server, target: Target) -> None:
    async with AsyncEZThrottle(api_key=server.new_tenant_key(), tracktags_url=server.url) as c:
        job = await c.submit_job(target.unique(), regions=["us-east-1"])
        assert job["status"] == "racing"
        final = await c.wait(job["job_id"], timeout=30)
        assert final["state"] == "succeeded"
        with pytest.raises(NotFoundError):
            await c.get_job("job_00000000000000000000000000")
