"""TORRENT (``POST /api/v1/torrent``) against the real server: a race answered now."""

from __future__ import annotations

import asyncio

from conftest import Target

from ezthrottle import AsyncEZThrottle, EZThrottle


def test_torrent_answers_the_targets_response_with_its_legs(tenant_client: EZThrottle, target: Target) -> None:
    got = tenant_client.torrent(target.unique(), method="post", body="now", timeout="5s", idempotent_key="race-py")
    assert got.get("status_code") == 200, got
    assert got.get("idempotent_key") == "race-py"
    legs = got.get("attempts", [])
    assert len(legs) == 1 and legs[0].get("outcome") == "won", got


def test_async_torrent_answers_too(tenant_client: EZThrottle, target: Target) -> None:
    async def race() -> int | None:
        async with AsyncEZThrottle(api_key=tenant_client.api_key, base_url=tenant_client.base_url) as c:
            got = await c.torrent(target.unique())
            return got.get("status_code")

    assert asyncio.run(race()) == 200
