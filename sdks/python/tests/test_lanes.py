"""The caller's lanes and pins, against the real server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from conftest import Target

from ezthrottle import EZThrottle, NotFoundError


def test_lanes_list_the_callers_lane_and_pins_apply(tenant_client: EZThrottle, target: Target) -> None:
    job = tenant_client.submit_job(target.unique(), wait=30)
    assert "state" in job and job["state"] == "succeeded", job
    host = urlsplit(target.url).netloc
    [lane] = tenant_client.lanes()
    assert lane["key"]["host"] == host and lane["owner_node"] is None
    [pinned] = tenant_client.pin_lane_limits(host, rate=5.0, burst=2)
    assert pinned["rate"] == 5.0 and pinned["burst"] == 2
    assert pinned["sources"]["rate"] is not None and pinned["sources"]["rate"]["kind"] == "tenant"
    [unpinned] = tenant_client.pin_lane_limits(host)
    assert unpinned["pin"] is None
    with pytest.raises(NotFoundError) as e:
        tenant_client.pin_lane_limits("no-such-host.example", rate=1.0)
    assert e.value.field == "host"
