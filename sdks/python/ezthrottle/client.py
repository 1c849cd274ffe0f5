"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
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


class EZThrottle:
    """Talks to an EZThrottle server. ``api_key`` and ``base_url`` default to the environment
    variables ``EZTHROTTLE_API_KEY`` and ``EZTHROTTLE_URL`` (else ``http://127.0.0.1:8080``).

    ``timeout`` bounds plain API calls; long-polls extend it by the time the server holds them.

    Idempotent calls (reads, long-polls, submits and batches, which the server deduplicates by
    key or by the call's hash) are retried up to ``max_retries`` times (default 2; 0 turns
    retries off) on connection errors, 408, 429 and 5xx, after an exponential backoff with full
    jitter from ``retry_backoff`` seconds up to ``max_retry_delay``, or after ``Retry-After``.
    Cancel, retry (replay), rotate and delete are never sent twice.

    ``tracktags_url`` (the hosted SDK's name) sends every API call, as the hosted SDKs do, as an
    envelope to ``POST {tracktags_url}/api/v1/proxy`` naming ``ezthrottle_url``; answers and
    errors are the same as when calling directly. Event streams cannot be enveloped and go to
    ``base_url`` (which then defaults to ``tracktags_url``).
    """

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
        http_client: httpx.Client | None = None,
    ) -> None:
        self.api_key, self.base_url = _t.settings(api_key, base_url or tracktags_url)
        self.timeout = timeout
        self.retries = _t.Retries(max_retries, retry_backoff, max_retry_delay)
        self.tracktags_url = tracktags_url.rstrip("/") if tracktags_url else None
        self.ezthrottle_url = ezthrottle_url or _t.HOSTED_API_URL
        self._http = http_client or httpx.Client()
        self._owns_http = http_client is None
        #: How retries wait (replaceable in tests).
        self._sleep: Callable[[float], None] = time.sleep
        #: STREAM as one call: ``client.stream.post(url, json=..., timeout="1h")``.
        self.stream = Stream(self)

    @property
    def max_retries(self) -> int:
        return self.retries.max_retries

    # -- plumbing

    def _send(self, call: _t.Call, *, stream: bool = False) -> httpx.Response:
        """Sends ``call`` (enveloped in hosted mode), retrying it as ``self.retries`` allows."""
        sent, base = call, self.base_url
        if self.tracktags_url and not call.external and not stream:
            sent, base = _t.enveloped(call, self.ezthrottle_url), self.tracktags_url
        attempt = 0
        while True:
            req = _t.build(self._http, sent, base, self.api_key, self.timeout)
            try:
                resp = self._http.send(req, stream=stream)
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
                resp.close()
                why = f"HTTP {resp.status_code}"
            _t.log_retry(call, attempt, delay, why)
            self._sleep(delay)
            attempt += 1

    def _run(self, plan: _t.Plan[T]) -> T:
        try:
            call = next(plan)
            while True:
                try:
                    resp = self._send(call)
                except (httpx.TransportError, UnreachableError) as exc:
                    call = plan.throw(exc)
                else:
                    call = plan.send(resp)
        except StopIteration as stop:
            return cast(T, stop.value)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> EZThrottle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs

    @overload
    def submit_job(
        self,
        url: str,
        method: str = "GET",
        *,
        wait: None = None,
        **options: Unpack[JobOptions],
    ) -> SubmitResult: ...

    @overload
    def submit_job(
        self,
        url: str,
        method: str = "GET",
        *,
        wait: Duration,
        **options: Unpack[JobOptions],
    ) -> SubmitResult | Job: ...

    def submit_job(
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
            return self._run(_t.submit(payload))
        return self._run(_t.submit_wait(payload, wait))

    def submit_batch(self, jobs: Iterable[JobPayload]) -> list[BatchItem]:
        """Up to 1,000 jobs in one transaction; results in request order, each a submit result
        or ``{"error": {...}}`` (one bad job does not sink the others)."""
        return self._run(_t.submit_batch(jobs))

    def queue_request(
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
        return self.submit_job(
            url, method, **_t.legacy_options(webhook_url, headers, body, metadata, retry_at)
        )

    def submit_workflow(self, workflow: WorkflowBuilder | dict[str, Any]) -> WorkflowSubmitted:
        """Submits a workflow run (``WorkflowBuilder`` or the raw body); answers its id."""
        payload = workflow.to_payload() if isinstance(workflow, WorkflowBuilder) else workflow
        return self._run(_t.submit_workflow(payload))

    def lanes(self) -> list[Lane]:
        """The caller's lanes: limits in force, where each came from, budget left, pause,
        queue depth, in flight (and the owner node and epoch in cluster mode)."""
        return self._run(_t.list_lanes())

    def pin_lane_limits(self, host: str, **pin: Unpack[LanePin]) -> list[Lane]:
        """Pins the limits of the caller's lanes to ``host`` (or ``host:port``): ``rate``,
        ``burst``, ``max_in_flight``, ``adaptive``, ``adaptive_ceiling``; no arguments unpin.
        Answers the lanes as now pinned (``NotFoundError`` before the first job there)."""
        return self._run(_t.pin_lane_limits(host, pin))

    def get_workflow(self, workflow_id: str) -> Workflow:
        """The run with every step (and each step's job: attempts, state, timings)."""
        return self._run(_t.get_workflow(workflow_id))

    def wait_workflow(
        self, workflow_id: str, timeout: Duration = 60.0, interval: float = 0.2
    ) -> Workflow:
        """The run once over (``succeeded``, ``failed``, ``compensation_failed`` or
        ``cancelled``), awaited on its event stream (no polling); a dropped stream is opened
        again after ``interval`` seconds. Raises ``WaitTimeoutError`` after ``timeout``
        (checked on every event and keep-alive, so at least every 15 seconds)."""
        deadline = time.monotonic() + _t.seconds(timeout)
        while True:
            try:
                for ev in self._workflow_stream(workflow_id, deadline):
                    if ev.event in WORKFLOW_FINAL_EVENTS:
                        return cast(Workflow, ev.json())
            except UnreachableError:
                pass
            run = self.get_workflow(workflow_id)
            if run["status"] in WORKFLOW_FINAL:
                return run
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"workflow {workflow_id} not over within {timeout}")
            self._sleep(interval)

    def workflow_events(self, workflow_id: str) -> Iterator[ServerEvent]:
        """The run's Server-Sent Events: ``step.started``, ``workflow.page``, ``step.ended``,
        then one final ``workflow.completed``, ``workflow.failed`` or ``workflow.cancelled``
        whose data is the run's view; ends after it. A late caller first gets what it missed."""
        return self._workflow_stream(workflow_id, None)

    def _workflow_stream(self, workflow_id: str, deadline: float | None) -> Iterator[ServerEvent]:
        call = _t.workflow_events_call(workflow_id)
        resp = self._send(call, stream=True)
        try:
            if not resp.is_success:
                resp.read()
                _t.check(resp)
            decoder = _t.SSEDecoder()
            for line in resp.iter_lines():
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
            resp.close()

    def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancels a run that is not over: its unfinished step jobs end ``cancelled``, nothing
        more is sent, no compensation runs; ``ConflictError`` if it is over."""
        return self._run(_t.workflow_action(workflow_id, "cancel"))

    def resume_workflow(self, workflow_id: str) -> Workflow:
        """Continues a ``failed`` or ``cancelled`` run: steps that succeeded keep their results,
        the others run again (new job ids and keys); ``ConflictError`` otherwise."""
        return self._run(_t.workflow_action(workflow_id, "resume"))

    def torrent(
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
        """``POST /api/v1/torrent``: races the call from every listed live region now and answers
        the first 2xx (or the last answer). No queue, no retries; every leg takes a permit of the
        call's lane (``RateLimitedError``-style 429 ``lane_paused`` / ``lane_busy`` otherwise)."""
        return self._run(_t.torrent(_t.torrent_payload(url, method, headers, body, regions, timeout, idempotent_key)))

    def restart_workflow(self, workflow_id: str) -> WorkflowSubmitted:
        """Starts a new run of a finished run's definition and input; answers the new id
        (``ConflictError`` while the run is not over)."""
        return self._run(_t.restart_workflow(workflow_id))

    def get_job(self, job_id: str) -> Job:
        return self._run(_t.get_job(job_id))

    def list_jobs(
        self,
        *,
        state: str | None = None,
        lane: str | None = None,
        created_after: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[Job]:
        """Newest first, following ``next_cursor`` page by page as the iterator is consumed."""
        cursor: str | None = None
        while True:
            page = self._run(_t.list_page(state, lane, created_after, page_size, cursor))
            yield from page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def wait(self, job_id: str, timeout: Duration = 30.0) -> Job:
        """The job once final (any final state). Raises ``TimeoutError`` (carrying the last
        view) if it is not final within ``timeout``."""
        return self._run(_t.wait(job_id, timeout))

    def events(self, job_id: str) -> Iterator[ServerEvent]:
        """The job's Server-Sent Events (``queued``, ``position``, ``dispatching``,
        ``attempt``, then the final state, whose data is the job view); ends after the final."""
        call = _t.events_call(job_id)
        resp = self._send(call, stream=True)
        try:
            if not resp.is_success:
                resp.read()
                _t.check(resp)
            decoder = _t.SSEDecoder()
            for line in resp.iter_lines():
                ev = decoder.feed(line)
                if ev is not None:
                    yield ev
                    if ev.event in FINAL_STATES:
                        return
        except httpx.TransportError as exc:
            raise _t.transport_error(call, exc)  # noqa: B904 (it sets the cause)
        finally:
            resp.close()

    def cancel(self, job_id: str) -> Job:
        """Ends a job that is not final ``cancelled``; ``ConflictError`` if it already is."""
        return self._run(_t.job_action(job_id, "cancel"))

    def retry(self, job_id: str) -> Job:
        """Replays a ``failed``/``expired`` job as a new attempt series."""
        return self._run(_t.job_action(job_id, "retry"))

    def redeliver_webhooks(self, job_id: str) -> Redelivery:
        return self._run(_t.redeliver(job_id))

    # -- webhook secrets

    def create_webhook_secret(
        self, primary_secret: str, secondary_secret: str | None = None
    ) -> WebhookSecrets:
        """Sets (or replaces) the secrets that sign deliveries; answers them masked."""
        return self._run(_t.secrets_create(primary_secret, secondary_secret))

    def get_webhook_secret(self) -> WebhookSecrets:
        """The secrets, masked; ``NotFoundError`` when none is set (webhooks go unsigned)."""
        return self._run(_t.secrets_get())

    def rotate_webhook_secret(self, new_secret: str) -> WebhookSecrets:
        """``new_secret`` becomes primary and the old primary secondary, so deliveries carry both
        signatures until receivers switch. Done by the server: the SDK never sees the old one."""
        return self._run(_t.secrets_rotate(new_secret))

    def delete_webhook_secret(self) -> dict[str, bool]:
        return self._run(_t.secrets_delete())

    # -- resilience

    def forward_or_fallback(
        self,
        fallback: Callable[[], R],
        url: str,
        method: str = "GET",
        **options: Unpack[JobOptions],
    ) -> SubmitResult | R:
        """Submits the call; if EZThrottle cannot take it (unreachable, or 503 with nothing
        stored) runs ``fallback()`` instead, so EZThrottle never becomes a single point of
        failure. Other errors (bad request, 429) propagate: the server is working. The submit is
        retried first as every submit is (``max_retries``); pass a client with
        ``max_retries=0`` to fall back at the first failure."""
        try:
            return self.submit_job(url, method, **options)
        except _t.SERVER_DOWN:
            return fallback()

    def request(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> httpx.Response:
        """A direct call to the target, bypassing EZThrottle (the hosted SDK's escape hatch)."""
        return self._send(_t.direct_call(url, method, headers, body))


class Stream:
    """STREAM's promise as one call: returns the target's final response, or raises
    ``JobFailedError`` when the job ends failed/expired/cancelled."""

    def __init__(self, client: EZThrottle) -> None:
        self._client = client

    def request(self, method: str, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self._client._run(_t.stream(method, url, options))

    def get(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("PATCH", url, **options)

    def delete(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("DELETE", url, **options)

    def head(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("HEAD", url, **options)

    def options(self, url: str, **options: Unpack[StreamOptions]) -> StreamResponse:
        return self.request("OPTIONS", url, **options)
