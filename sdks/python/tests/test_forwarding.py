"""``auto_forward`` and ``forward_or_fallback`` against the real server."""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import FAR_FUTURE_MS, Server, Target

from ezthrottle import (
    EZThrottle,
    ForwardToEZThrottle,
    RateLimitedError,
    ValidationError,
    auto_forward,
)
from ezthrottle.exceptions import ForwardToEZThrottle as HostedPathForward


def test_auto_forward_submits_the_described_call(tenant_client: EZThrottle, target: Target) -> None:
    url = target.unique("status/429")

    @auto_forward(tenant_client)
    def charge(order: str) -> dict[str, str]:
        r = httpx.post(url, content="amount=10")
        if r.status_code == 429:
            raise HostedPathForward(
                url=url,
                method="POST",
                headers={"X-Test": "fwd"},
                body="amount=10",
                idempotent_key=f"order-{order}",
                metadata={"order": order},
            )
        return {"paid": order}

    out = charge("77")
    assert isinstance(out, dict) and out["status"] == "queued"
    assert out["idempotent_key"] == "order-77"
    job = tenant_client.get_job(out["job_id"])
    spec = job["spec"]
    assert (spec["url"], spec["method"], spec["body"]) == (url, "POST", "amount=10")
    assert ["X-Test", "fwd"] in spec["headers"] and spec["metadata"] == {"order": "77"}
    assert charge.__name__ == "charge"  # wraps keeps the identity
    tenant_client.cancel(out["job_id"])


def test_auto_forward_leaves_successes_and_other_errors_alone(
    tenant_client: EZThrottle, target: Target
) -> None:
    @auto_forward(tenant_client)
    def ok() -> str:
        return "fine"

    @auto_forward(tenant_client)
    def boom() -> str:
        raise KeyError("not ours")

    assert ok() == "fine"
    with pytest.raises(KeyError):
        boom()
    assert list(tenant_client.list_jobs()) == []


def test_auto_forward_without_a_key_uses_a_fresh_one(
    tenant_client: EZThrottle, target: Target
) -> None:
    url = target.unique()

    @auto_forward(tenant_client)
    def call() -> None:
        raise ForwardToEZThrottle(url=url)

    a, b = call(), call()
    assert isinstance(a, dict) and isinstance(b, dict)
    assert a["job_id"] != b["job_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", a["idempotent_key"])


def test_forward_or_fallback_uses_the_server_when_up(client: EZThrottle, target: Target) -> None:
    called: list[int] = []
    out = client.forward_or_fallback(
        lambda: called.append(1), target.unique(), "POST", body="x", retry_at=FAR_FUTURE_MS
    )
    assert isinstance(out, dict) and out["status"] == "queued" and called == []
    client.cancel(out["job_id"])


def test_forward_or_fallback_falls_back_when_unreachable(closed_port: int, target: Target) -> None:
    with EZThrottle(api_key="k", base_url=f"http://127.0.0.1:{closed_port}") as down:
        out = down.forward_or_fallback(lambda: "direct", target.unique())
    assert out == "direct"


def test_forward_or_fallback_does_not_hide_real_errors(client: EZThrottle, target: Target) -> None:
    with pytest.raises(ValidationError):
        client.forward_or_fallback(lambda: "direct", target.unique(), webhook_quorum=11)


def test_rate_limited_error_carries_retry_after(server: Server, target: Target) -> None:
    # The capture path answers like a server that is over quota.
    with EZThrottle(api_key="k", base_url=target.url + "/x/status/429") as c:
        with pytest.raises(RateLimitedError) as e:
            c.get_job("job_1")
    assert e.value.status == 429 and e.value.retry_after == 1.0
    assert e.value.retry_at is not None
