"""AsyncEZThrottle: the same plans driven by httpx.AsyncClient, against the real server."""

from __future__ import annotations

import pytest
from conftest import FAR_FUTURE_MS, Server, Target

from ezthrottle import (
    AsyncEZThrottle,
    ForwardToEZThrottle,
    JobFailedError,
    NotFoundError,
    Step,
    StepType,
    auto_forward,
)

pytestmark = pytest.mark.anyio


async def test_submit_wait_events_and_list(server: Server, target: Target) -> None:
    async with AsyncEZThrottle(server.new_tenant_key(), server.url) as c:
        url = target.unique("flaky/1")
        out = await c.submit_job(url, "POST", body="a", metadata={"x": "y"})
        job = await c.wait(out["job_id"], timeout="30s")
        assert job["state"] == "succeeded" and job["metadata"] == {"x": "y"}
        names = [e.event async for e in c.events(out["job_id"])]
        assert names[0] == "queued" and names[-1] == "succeeded" and "attempt" in names
        ids = [j["job_id"] async for j in c.list_jobs(page_size=1)]
        assert ids == [out["job_id"]]
        with pytest.raises(NotFoundError):
            await c.get_job("job_01JD3X0000000000000000000A")


async def test_cancel_retry_and_batch(client_key: str, server: Server, target: Target) -> None:
    async with AsyncEZThrottle(client_key, server.url) as c:
        res = await c.submit_batch([{"url": target.unique(), "retry_at": FAR_FUTURE_MS}])
        first = res[0]
        assert "job_id" in first
        assert (await c.cancel(first["job_id"]))["state"] == "cancelled"
        failed = await c.submit_job(target.unique("status/404"))
        assert (await c.wait(failed["job_id"]))["state"] == "failed"
        assert (await c.retry(failed["job_id"]))["series"] == 2


async def test_stream(client_key: str, server: Server, target: Target) -> None:
    async with AsyncEZThrottle(client_key, server.url) as c:
        resp = await c.stream.post(target.unique(), json={"k": 1}, timeout="1h")
        assert resp.status_code == 200 and resp.json()["body"] == '{"k": 1}'
        with pytest.raises(JobFailedError) as e:
            await c.stream.get(target.unique("status/404"))
        assert e.value.job["state"] == "failed"


async def test_frugal_and_auto_forward(server: Server, target: Target) -> None:
    async with AsyncEZThrottle(server.new_tenant_key(), server.url) as c:
        local = await Step(c).url(target.unique()).type(StepType.FRUGAL).execute_async()
        assert local["status"] == "success"
        assert [j async for j in c.list_jobs()] == []
        fwd = await (
            Step(c).url(target.unique("flaky/1")).type(StepType.FRUGAL).execute_async()
        )
        assert fwd["status"] == "queued"

        @auto_forward(c)
        async def call(url: str) -> str:
            raise ForwardToEZThrottle(url=url, idempotent_key="async-fwd")

        out = await call(target.unique())
        assert isinstance(out, dict) and out["idempotent_key"] == "async-fwd"
        assert len([j async for j in c.list_jobs()]) == 2


async def test_secrets(server: Server) -> None:
    async with AsyncEZThrottle(server.new_tenant_key(), server.url) as c:
        await c.create_webhook_secret("first-secret-0123456")
        rotated = await c.rotate_webhook_secret("second-secret-654321")
        assert rotated["has_secondary"] and (await c.get_webhook_secret()) == rotated
        assert await c.delete_webhook_secret() == {"deleted": True}


@pytest.fixture
def client_key(server: Server) -> str:
    return server.key
