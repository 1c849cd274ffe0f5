"""Retries of idempotent calls: 5xx, 408/429 (honouring ``Retry-After``) and connection errors,
with exponential backoff and full jitter; never for calls that are not idempotent; off with
``max_retries=0``. A scripted local API stands in for a failing server (the real one does not
fail on demand); retry waits are recorded instead of slept."""

from __future__ import annotations

import json
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from ezthrottle import (
    AsyncEZThrottle,
    ConflictError,
    EZThrottle,
    RateLimitedError,
    UnavailableError,
    UnreachableError,
    ValidationError,
)
from ezthrottle._transport import Call, Retries

JOB: Any = {"job_id": "job_1", "state": "succeeded"}
SUBMITTED: Any = {"job_id": "job_1", "status": "queued", "idempotent_key": "k"}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Close the connection without answering (a reset, as a crashing proxy does).
    drop: bool = False


@dataclass
class Api:
    url: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    seen: dict[str, list[tuple[str, bytes]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, path: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.seen[path])


@pytest.fixture
def api() -> Iterator[Api]:
    box: dict[str, Api] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def handle_any(self) -> None:
            a = box["a"]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            with a.lock:
                a.seen[path].append((self.command, body))
                queue = a.script.get(path, [])
                reply = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else Reply(404))
            if reply.drop:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            out = json.dumps(reply.body if reply.body is not None else {}).encode()
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_DELETE = handle_any

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    box["a"] = Api(f"http://127.0.0.1:{httpd.server_address[1]}")
    yield box["a"]
    httpd.shutdown()


def err(status: int, code: str, **headers: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": code}}, headers)


def client(api: Api, **kw: Any) -> tuple[EZThrottle, list[float]]:
    c = EZThrottle(api_key="ezt_live_test", base_url=api.url, **kw)
    waits: list[float] = []
    c._sleep = waits.append
    return c, waits


def test_a_read_is_retried_on_5xx_with_jittered_backoff(api: Api) -> None:
    api.script["/api/v1/jobs/job_1"] = [err(503, "unavailable"), err(502, "bad_gateway"),
                                        Reply(200, JOB)]  # fmt: skip
    c, waits = client(api)
    assert c.get_job("job_1") == JOB
    assert len(api.calls("/api/v1/jobs/job_1")) == 3
    # Full jitter: the n-th wait is drawn from [0, 0.5 * 2**n].
    assert len(waits) == 2 and 0 <= waits[0] <= 0.5 and 0 <= waits[1] <= 1.0


def test_retries_run_out_and_the_last_error_is_raised(api: Api) -> None:
    api.script["/api/v1/jobs/job_1"] = [err(503, "unavailable", **{"Retry-After": "0"})]
    c, waits = client(api)
    with pytest.raises(UnavailableError) as e:
        c.get_job("job_1")
    assert (e.value.status, e.value.code) == (503, "unavailable")
    assert len(api.calls("/api/v1/jobs/job_1")) == 3  # the default: 2 retries
    assert waits == [0.0, 0.0]


def test_max_retries_zero_turns_retries_off(api: Api) -> None:
    api.script["/api/v1/jobs/job_1"] = [err(503, "unavailable"), Reply(200, JOB)]
    c, waits = client(api, max_retries=0)
    assert c.max_retries == 0
    with pytest.raises(UnavailableError):
        c.get_job("job_1")
    assert len(api.calls("/api/v1/jobs/job_1")) == 1 and waits == []


def test_retry_after_is_honoured_exactly(api: Api) -> None:
    api.script["/api/v1/jobs/job_1"] = [err(429, "too_many_waiters", **{"Retry-After": "3"}),
                                        Reply(200, JOB)]  # fmt: skip
    c, waits = client(api)
    assert c.get_job("job_1") == JOB
    assert waits == [3.0]


def test_a_long_retry_after_is_raised_at_once(api: Api) -> None:
    api.script["/api/v1/jobs"] = [err(429, "quota_exceeded", **{"Retry-After": "3600"}),
                                  Reply(202, SUBMITTED)]  # fmt: skip
    c, waits = client(api)
    with pytest.raises(RateLimitedError) as e:
        c.submit_job("https://api.example.com/x")
    assert e.value.retry_after == 3600.0
    assert len(api.calls("/api/v1/jobs")) == 1 and waits == []


def test_a_submit_is_retried_with_the_same_body(api: Api) -> None:
    """Submits are idempotent on the server (by key, or by the call's hash), so sending one again
    after a lost answer gets the same job back."""
    api.script["/api/v1/jobs"] = [err(500, "internal"), Reply(202, SUBMITTED)]
    c, _ = client(api)
    assert c.submit_job("https://api.example.com/x", "POST", body="b") == SUBMITTED
    (m1, b1), (m2, b2) = api.calls("/api/v1/jobs")
    assert (m1, m2) == ("POST", "POST") and b1 == b2
    assert "idempotent_key" not in json.loads(b1), "no key invented: the server's hash dedups"


def test_batches_are_retried(api: Api) -> None:
    api.script["/api/v1/jobs/batch"] = [err(503, "unavailable"), Reply(202, {"results": []})]
    c, _ = client(api)
    assert c.submit_batch([{"url": "https://api.example.com/x"}]) == []
    assert len(api.calls("/api/v1/jobs/batch")) == 2


def test_calls_that_are_not_idempotent_are_never_retried(api: Api) -> None:
    api.script["/api/v1/jobs/job_1/cancel"] = [err(503, "unavailable"), Reply(200, JOB)]
    api.script["/api/v1/jobs/job_1/retry"] = [err(502, "bad_gateway"), Reply(200, JOB)]
    api.script["/api/v1/webhook-secrets/rotate"] = [err(503, "unavailable"), Reply(200, {})]
    c, waits = client(api)
    with pytest.raises(UnavailableError):
        c.cancel("job_1")
    with pytest.raises(UnavailableError):
        c.retry("job_1")
    with pytest.raises(UnavailableError):
        c.rotate_webhook_secret("a-new-secret-0000000")
    for path in ("cancel", "retry"):
        assert len(api.calls(f"/api/v1/jobs/job_1/{path}")) == 1
    assert len(api.calls("/api/v1/webhook-secrets/rotate")) == 1 and waits == []


def test_client_errors_are_not_retried(api: Api) -> None:
    api.script["/api/v1/jobs"] = [err(400, "invalid_field"), Reply(202, SUBMITTED)]
    api.script["/api/v1/jobs/job_1/cancel"] = [err(409, "conflict")]
    c, waits = client(api)
    with pytest.raises(ValidationError):
        c.submit_job("https://api.example.com/x")
    with pytest.raises(ConflictError):
        c.cancel("job_1")
    assert len(api.calls("/api/v1/jobs")) == 1 and waits == []


def test_a_dropped_connection_is_retried(api: Api) -> None:
    api.script["/api/v1/jobs/job_1"] = [Reply(drop=True), Reply(200, JOB)]
    c, waits = client(api)
    assert c.get_job("job_1") == JOB
    assert len(api.calls("/api/v1/jobs/job_1")) == 2 and len(waits) == 1


def test_an_unreachable_server_is_retried_then_raised(closed_port: int) -> None:
    c = EZThrottle(api_key="ezt_live_test", base_url=f"http://127.0.0.1:{closed_port}",
                   max_retries=3)  # fmt: skip
    waits: list[float] = []
    c._sleep = waits.append
    with pytest.raises(UnreachableError):
        c.get_job("job_1")
    assert len(waits) == 3
    # Not idempotent: raised at once.
    waits.clear()
    with pytest.raises(UnreachableError):
        c.cancel("job_1")
    assert waits == []


def test_the_hosted_envelope_is_retried_on_the_forwarded_status(api: Api) -> None:
    def forwarded(status: int, body: Any) -> Reply:
        fwd = {"status_code": status, "headers": {}, "body": json.dumps(body)}
        return Reply(200, {"status": "allowed", "forwarded_response": fwd})

    api.script["/api/v1/proxy"] = [forwarded(503, {"error": {"code": "unavailable"}}),
                                   forwarded(201, SUBMITTED)]  # fmt: skip
    c = EZThrottle(api_key="ezt_live_test", tracktags_url=api.url)
    c._sleep = lambda s: None
    assert c.submit_job("https://api.example.com/x") == SUBMITTED
    calls = api.calls("/api/v1/proxy")
    assert len(calls) == 2
    env = json.loads(calls[0][1])
    assert env["target_url"] == "https://ezthrottle.fly.dev/api/v1/jobs"
    assert json.loads(env["body"]) == {"url": "https://api.example.com/x", "method": "GET"}


@pytest.mark.anyio
async def test_the_async_client_retries_the_same_way(api: Api) -> None:
    api.script["/api/v1/jobs/job_1"] = [err(503, "unavailable"), Reply(drop=True),
                                        Reply(200, JOB)]  # fmt: skip
    api.script["/api/v1/jobs/job_1/cancel"] = [err(503, "unavailable"), Reply(200, JOB)]
    waits: list[float] = []

    async def record(s: float) -> None:
        waits.append(s)

    async with AsyncEZThrottle(api_key="ezt_live_test", base_url=api.url) as c:
        c._sleep = record
        assert await c.get_job("job_1") == JOB
        with pytest.raises(UnavailableError):
            await c.cancel("job_1")
    assert len(api.calls("/api/v1/jobs/job_1")) == 3 and len(waits) == 2


def test_backoff_grows_and_is_capped() -> None:
    r = Retries(max_retries=10, initial_delay=0.5, max_delay=8.0)
    rng = random.Random(7)
    call = Call("GET", "/api/v1/jobs/job_1")
    for attempt in range(10):
        cap = min(8.0, 0.5 * 2**attempt)
        draws = [r.delay(call, attempt, None, _network_error(), rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= cap for d in draws)
        assert max(d for d in draws if d is not None) > cap * 0.8  # the whole range is used
    assert r.delay(call, 10, None, _network_error(), rng) is None


def test_bad_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        EZThrottle(api_key="k", max_retries=-1)
    with pytest.raises(ValueError, match="delays"):
        EZThrottle(api_key="k", retry_backoff=-1.0)


def _network_error() -> httpx.TransportError:
    return httpx.ConnectError("refused")
