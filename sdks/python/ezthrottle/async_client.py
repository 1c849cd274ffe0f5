"""The asyncio client: ``EZThrottle``'s methods as coroutines, driving the same plans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar, Unpack, cast, overload

import httpx

from . import _transport as _t
from .workflow import WorkflowBuilder
from .errors import UnreachableError, WaitTimeoutError
from .types import (
    TorrentResult,
    WORKFLOW_FINAL,
    WORKFLOW_FINAL_EVENTS,
    Workflow,
    WorkflowSubmitted,
    FINAL_STATES,
    BatchItem,
    Duration,
    Job,
    JobOptions,
    JobPayload,
    Lane,
    LanePin,
    Redelivery,
    ServerEvent,
    StreamOptions,
    StreamResponse,
    SubmitResult,
    WebhookSecrets,
)

T = TypeVar("T")
R = TypeVar("R")


class AsyncEZThrottle:
    """Like ``EZThrottle``, for asyncio (``async with AsyncEZThrottle() as client``), with the
    same retries and hosted-envelope mode."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = _t.DEFAULT_TIMEOUT,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        max_retry_delay: float = 8.0,
        tracktags_url: str | None = None,
        ezthrottle_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_key, self.base_url = _t.settings(api_key, base_url or tracktags_url)
        self.timeout = timeout
        self.retries = _t.Retries(max_retries, retry_backoff, max_retry_delay)
        self.tracktags_url = tracktags_url.rstrip("/") if tracktags_url else None
        self.ezthrottle_url = ezthrottle_url or _t.HOSTED_API_URL
        self._http = http_client or httpx.AsyncClient()
        self._owns_http = http_client is None
        #: How retries wait (replaceable in tests).
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.stream = AsyncStream(self)

    @property
    def max_retries(self) -> int:
        return self.retries.max_retries

    # -- plumbing

    async def _send(self, call: _t.Call, *, stream: bool = False) -> httpx.Response:
        sent, base = call, self.base_url
        if self.tracktags_url and not call.external and not stream:
            sent, base = _t.enveloped(call, self.ezthrottle_url), self.tracktags_url
        attempt = 0
        while True:
            req = _t.build(self._http, sent, base, self.api_key, self.timeout)
            try:
                resp = await self._http.send(req, stream=stream)
            except httpx.TransportError as exc:
                delay = self.retries.delay(sent, attempt, None, exc)
                if delay is None:
                    raise _t.transport_error(call, exc)  # noqa: B904 (it sets the cause)
                why = repr(exc)
            else:
                if sent is not call:
                    resp = _t.unwrapped(resp)
                delay = self.retries.delay(sent, attempt, resp)
                if delay is None:
                    return resp
                await resp.aclose()
                why = f"HTTP {resp.status_code}"
            _t.log_retry(call, attempt, delay, why)
            await self._sleep(delay)
            attempt += 1

    async def _run(self, plan: _t.Plan[T]) -> T:
        try:
            call = next(plan)
            while True:
                try:
                    resp = await self._send(call)
                except (httpx.TransportError, UnreachableError) as exc:
                    call = plan.throw(exc)
                else:
                    call = plan.send(resp)
        except StopIteration as stop:
            return cast(T, stop.value)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncEZThrottle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- jobs

    @overload
    async def submit_job(
        self,
        url: str,
        method: str = "GET",
        *,
        wait: None = None,
        **options: Unpack[JobOptions],
    ) -> SubmitResult: ...

    @overload
    async def submit_job(
        self,
        url: str,
        method: str = "GET",
        *,
        wait: Duration,
        **options: Unpack[JobOptions],
    ) -> SubmitResult | Job: ...

    async def submit_job(
        self,
        url: str,
        method: str = "GET",
        *,
        wait: Duration | None = None,
        **options: Unpack[JobOptions],
    ) -> SubmitResult | Job:
        """Stores the call durably and queues it: ``{"job_id", "status":
        "queued"|"racing"|"duplicate", "idempotent_key"}``. Options are API.md's job fields.
        With ``wait`` (a duration), the server holds the answer until the job is final, then
        answers its final view (which has ``state``), or the submit answer when the wait ends
        first."""
        payload = _t.job_payload(url, method, **options)
        if wait is None:
            return await self._run(_t.submit(payload))
        return await self._run(_t.submit_wait(payload, wait))

    async def submit_batch(self, jobs: Iterable[JobPayload]) -> list[BatchItem]:
        return await self._run(_t.submit_batch(jobs))

    async def queue_request(
        self,
        url: str,
        webhook_url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_at: int | None = None,
    ) -> SubmitResult:
        """Deprecated: use ``submit_job(url, webhooks=[{"url": ...}])``."""
        return await self.submit_job(
            url, method, **_t.legacy_options(webhook_url, headers, body, metadata, retry_at)
        )

    async def submit_workflow(self, workflow: WorkflowBuilder | dict[str, Any]) -> WorkflowSubmitted:
        """Submits a workflow run (``WorkflowBuilder`` or the raw body); answers its id."""
        payload = workflow.to_payload() if isinstance(workflow, WorkflowBuilder) else workflow
        return await self._run(_t.submit_workflow(payload))

    async def lanes(self) -> list[Lane]:
        """The caller's lanes: limits in force, where each came from, budget left, pause,
        queue depth, in flight (and the owner node and epoch in cluster mode)."""
        return await self._run(_t.list_lanes())

    async def pin_lane_limits(self, host: str, **pin: Unpack[LanePin]) -> list[Lane]:
        """Pins the limits of the caller's lanes to ``host`` (or ``host:port``): ``rate``,
        ``burst``, ``max_in_flight``, ``adaptive``, ``adaptive_ceiling``; no arguments unpin.
        Answers the lanes as now pinned (``NotFoundError`` before the first job there)."""
        return await self._run(_t.pin_lane_limits(host, pin))

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """The run with every step (and each step's job: attempts, state, timings)."""
        return await self._run(_t.get_workflow(workflow_id))

    async def wait_workflow(
        self, workflow_id: str, timeout: Duration = 60.0, interval: float = 0.2
    ) -> Workflow:
        """The run once over, awaited on its event stream (see ``EZThrottle.wait_workflow``)."""
        deadline = time.monotonic() + _t.seconds(timeout)
        while True:
            try:
                async for ev in self._workflow_stream(workflow_id, deadline):
                    if ev.event in WORKFLOW_FINAL_EVENTS:
                        return cast(Workflow, ev.json())
            except UnreachableError:
                pass
            run = await self.get_workflow(workflow_id)
            if run["status"] in WORKFLOW_FINAL:
                return run
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"workflow {workflow_id} not over within {timeout}")
            await self._sleep(interval)

    def workflow_events(self, workflow_id: str) -> AsyncIterator[ServerEvent]:
        """The run's Server-Sent Events (see ``EZThrottle.workflow_events``)."""
        return self._workflow_stream(workflow_id, None)

    async def _workflow_stream(
        self, workflow_id: str, deadline: float | None
    ) -> AsyncIterator[ServerEvent]:
        call = _t.workflow_events_call(workflow_id)
        resp = await self._send(call, stream=True)
        try:
            if not resp.is_success:
                await resp.aread()
                _t.check(resp)
            decoder = _t.SSEDecoder()
            async for line in resp.aiter_lines():
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(f"workflow {workflow_id} not over in time")
                ev = decoder.feed(line)
                if ev is not None:
                    yield ev
                    if ev.event in WORKFLOW_FINAL_EVENTS:
                        return
        except httpx.TransportError as exc:
            raise _t.transport_error(call, exc)  # noqa: B904 (it sets the cause)
        finally:
            await resp.aclose()

    async def cancel_workflow(self, workflow_id: str) -> Workflow:
        """See ``EZThrottle.cancel_workflow``."""
        return await self._run(_t.workflow_action(workflow_id, "cancel"))

    async def resume_workflow(self, workflow_id: str) -> Workflow:
        """See ``EZThrottle.resume_workflow``."""
        return await self._run(_t.workflow_action(workflow_id, "resume"))

    async def torrent(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
        regions: list[str] | None = None,
        timeout: Duration | None = None,
        idempotent_key: str | None = None,
    ) -> TorrentResult:
        """See ``EZThrottle.torrent``."""
        return await self._run(_t.torrent(_t.torrent_payload(url, method, headers, body, regions, timeout, idempotent_key)))

    async def restart_workflow(self, workflow_id: str) -> WorkflowSubmitted:
        """See ``EZThrottle.restart_workflow``."""
        return await self._run(_t.restart_workflow(workflow_id))

    async def get_job(self, job_id: str) -> Job:
        return await self._run(_t.get_job(job_id))

    async def list_jobs(
        self,
        *,
        state: str | None = None,
        lane: str | None = None,
        created_after: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            page = await self._run(_t.list_page(state, lane, created_after, page_size, cursor))
            for job in page["jobs"]:
                yield job
            cursor = page["next_cursor"]
            if not cursor:
                return

    async def wait(self, job_id: str, timeout: Duration = 30.0) -> Job:
        return await self._run(_t.wait(job_id, timeout))

    async def events(self, job_id: str) -> AsyncIterator[ServerEvent]:
        call = _t.events_call(job_id)
        resp = await self._send(call, stream=True)
        try:
            if not resp.is_success:
                await resp.aread()
                _t.check(resp)
            decoder = _t.SSEDecoder()
            async for line in resp.aiter_lines():
                ev = decoder.feed(line)
                if ev is not None:
                    yield ev
                    if ev.event in FINAL_STATES:
                        return
        except httpx.TransportError as exc:
            raise _t.transport_error(call, exc)  # noqa: B904 (it sets the cause)
        finally:
            await resp.aclose()

    async def cancel(self, job_id: str) -> Job:
        return await self._run(_t.job_action(job_id, "cancel"))

    async def retry(self, job_id: str) -> Job:
        return await self._run(_t.job_action(job_id, "retry"))

    async def redeliver_webhooks(self, job_id: str) -> Redelivery:
        return await self._run(_t.redeliver(job_id))

    # -- webhook secrets

    async def create_webhook_secret(
        self, primary_secret: str, secondary_secret: str | None = None
    ) -> WebhookSecrets:
        return await self._run(_t.secrets_create(primary_secret, secondary_secret))

    async def get_webhook_secret(self) -> WebhookSecrets:
        return await self._run(_t.secrets_get())

    async def rotate_webhook_secret(self, new_secret: str) -> WebhookSecrets:
        return await self._run(_t.secrets_rotate(new_secret))

    async def delete_webhook_secret(self) -> dict[str, bool]:
        return await self._run(_t.secrets_delete())

    # -- resilience

    async def forward_or_fallback(
        self,
        fallback: Callable[[], Awaitable[R]],
        url: str,
        method: str = "GET",
        **options: Unpack[JobOptions],
    ) -> SubmitResult | R:
        try:
            return await self.submit_job(url, method, **options)
        except _t.SERVER_DOWN:
            return await fallback()

    async def request(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> httpx.Response:
        return await self._send(_t.direct_call(url, method, headers, body))


class AsyncStream:
    """``client.stream`` of ``AsyncEZThrottle``."""

    def __init__(self, client: AsyncEZThrottle) -> None:
        self._client = client

    async def request(
        self, method: str, url: str, **options: Unpack[StreamOptions]
    ) -> StreamResponse:
        return await self._client._run(_t.stream(method, url, options))

    async def get(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("GET", url, **options)

    async def post(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("POST", url, **options)

    async def put(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("PUT", url, **options)

    async def patch(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("PATCH", url, **options)

    async def delete(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("DELETE", url, **options)

    async def head(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("HEAD", url, **options)

    async def options(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return await self.request("OPTIONS", url, **options)
