"""What the sync and async clients share: every endpoint is a *plan*, a generator that yields the
HTTP calls it needs and receives their responses. The clients only drive plans (one with
``httpx.Client``, one with ``httpx.AsyncClient``), so request building, error mapping and the
multi-call logic (long-polling, STREAM, FRUGAL) exist once and cannot drift apart.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
import warnings
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, Unpack, cast
from urllib.parse import quote, urlencode

import httpx

from .errors import (
    AuthenticationError,
    ConflictError,
    EZThrottleError,
    JobFailedError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    UnreachableError,
    ValidationError,
    WaitTimeoutError,
)
from .types import (
    TorrentResult,
    FINAL_STATES,
    BatchItem,
    Duration,
    Job,
    JobOptions,
    JobPage,
    JobPayload,
    Lane,
    LanePin,
    Redelivery,
    ServerEvent,
    StreamOptions,
    StreamResponse,
    SubmitResult,
    WebhookSecrets,
    Workflow,
    WorkflowSubmitted,
)

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
#: The server caps one long-poll at 5 minutes; longer waits are several polls.
MAX_POLL_S = 300.0
#: Extra time the HTTP read may take beyond the server-side hold.
POLL_SLACK_S = 30.0
#: Time after a STREAM job's own timeout for the server to record it ``expired``.
STREAM_GRACE_S = 30.0
#: A blocking call's default patience: one server-side hold.
DEFAULT_STREAM_TIMEOUT: Duration = "5m"


@dataclass(frozen=True)
class Call:
    """One HTTP request. ``external`` calls go to the caller's own target (FRUGAL's local try)
    and must never carry the EZThrottle key. ``idempotent`` calls may be sent again when no
    usable answer came back (see ``Retries``); it defaults to true for GET."""

    method: str
    url: str
    params: Mapping[str, str | int] | None = None
    json: object = None
    content: str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    external: bool = False
    idempotent: bool | None = None

    @property
    def retryable(self) -> bool:
        if self.external:
            return False
        return self.method == "GET" if self.idempotent is None else self.idempotent


Plan = Generator[Call, httpx.Response, T]


def transport_error(call: Call, exc: httpx.TransportError) -> BaseException:
    """The exception to raise (or throw into a plan) when a call got no answer: external calls
    see httpx's own error (FRUGAL catches it), calls to EZThrottle see ``UnreachableError``
    chained to it, so callers raise the result as is."""
    if call.external:
        return exc
    err = UnreachableError(f"EZThrottle server unreachable: {exc!r}")
    err.__cause__ = exc
    return err


#: The package version (also ``ezthrottle.__version__`` and pyproject's, which read it here).
VERSION = "2.0.0"
USER_AGENT = f"ezthrottle-python/{VERSION}"

#: What ``forward_or_fallback`` treats as "EZThrottle cannot take the call": no answer, or a 503
#: with nothing stored. Other errors mean the server is working and propagate.
SERVER_DOWN: tuple[type[EZThrottleError], ...] = (UnreachableError, UnavailableError)


# ---------------------------------------------------------------------------- retries

log = logging.getLogger("ezthrottle")

#: Answers worth sending an idempotent call again for: the server could not take it just now.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: No answer, or a broken one: the network, not the request, is at fault.
RETRY_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class Retries:
    """How idempotent calls are retried: at most ``max_retries`` more times (0 turns retries
    off), after an exponential backoff with full jitter (a uniform draw in
    ``[0, min(max_delay, initial_delay * 2**n)]`` before the n-th retry), or after exactly
    ``Retry-After`` when the answer carries one no longer than ``max_retry_after`` (a longer
    one is raised at once: the server asked for more patience than a retry loop should have)."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("retry delays must be >= 0")

    def delay(
        self,
        call: Call,
        attempt: int,
        resp: httpx.Response | None,
        exc: httpx.TransportError | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before sending ``call`` again after its ``attempt``-th retry (0 for
        the first send) got ``resp`` or failed with ``exc``; ``None``: do not retry."""
        if attempt >= self.max_retries or not call.retryable:
            return None
        if resp is not None:
            if resp.status_code not in RETRY_STATUSES:
                return None
            after = retry_after(resp.headers.get("retry-after"))
            if after is not None:
                return after if after <= self.max_retry_after else None
        elif not isinstance(exc, RETRY_ERRORS):
            return None
        cap = min(self.max_delay, self.initial_delay * (2**attempt))
        return (rng or random).uniform(0.0, cap)


def log_retry(call: Call, attempt: int, delay: float, why: str) -> None:
    log.info("retrying %s %s in %.2fs (retry %d): %s", call.method, call.url, delay, attempt + 1,
             why)  # fmt: skip


# ---------------------------------------------------------------------------- the hosted envelope

#: Where the hosted SDKs' envelopes say the API is; this server uses only the path.
HOSTED_API_URL = "https://ezthrottle.fly.dev"


def enveloped(call: Call, api_url: str) -> Call:
    """``call`` wrapped as the hosted SDKs send it through their proxy: ``POST /api/v1/proxy``
    with ``{"scope", "metric_name", "target_url", "method", "headers", "body"}``."""
    target = api_url.rstrip("/") + call.url
    if call.params:
        target += "?" + urlencode({k: str(v) for k, v in call.params.items()})
    if call.json is not None:
        text = json.dumps(call.json)
    elif isinstance(call.content, bytes):
        text = call.content.decode()
    else:
        text = call.content or ""
    envelope = {
        "scope": "customer",
        "metric_name": "",
        "target_url": target,
        "method": call.method,
        "headers": {"Content-Type": "application/json", **call.headers},
        "body": text,
    }
    return Call("POST", "/api/v1/proxy", json=envelope, timeout=call.timeout,
                idempotent=call.retryable)  # fmt: skip


def unwrapped(resp: httpx.Response) -> httpx.Response:
    """The API's answer inside an envelope's answer, as if it had been called directly. The
    proxy's own refusals (401, a bad envelope) are returned as they are."""
    if not resp.is_success:
        return resp
    try:
        fwd = resp.json()["forwarded_response"]
        status, text = int(fwd["status_code"]), str(fwd.get("body") or "")
        headers = {str(k): str(v) for k, v in (fwd.get("headers") or {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise EZThrottleError(f"not an envelope answer: {resp.text[:200]!r}",
                              status=resp.status_code) from exc  # fmt: skip
    headers.pop("content-length", None)
    headers.pop("transfer-encoding", None)
    return httpx.Response(status, headers=headers, content=text.encode(), request=resp.request)


def direct_call(url: str, method: str, headers: dict[str, str] | None, body: str | None) -> Call:
    """The escape hatch's call: straight to the target, never carrying the EZThrottle key."""
    return Call(method.upper(), url, content=body, headers=headers or {}, external=True)


def settings(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key = api_key or os.environ.get("EZTHROTTLE_API_KEY")
    if not key:
        raise ValueError("no API key: pass api_key= or set EZTHROTTLE_API_KEY")
    url = base_url or os.environ.get("EZTHROTTLE_URL") or DEFAULT_BASE_URL
    return key, url.rstrip("/")


def build(
    http: httpx.Client | httpx.AsyncClient, call: Call, base_url: str, key: str, timeout: float
) -> httpx.Request:
    """The request for a call; only calls to EZThrottle carry the key."""
    headers = {"User-Agent": USER_AGENT, **call.headers}
    if not call.external:
        headers["Authorization"] = f"Bearer {key}"
    return http.build_request(
        call.method,
        call.url if call.external else base_url + call.url,
        params=call.params,
        json=call.json,
        content=call.content,
        headers=headers,
        timeout=http_timeout(call, timeout),
    )


# ---------------------------------------------------------------------------- durations

_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zµ]+)\s*")


def seconds(d: Duration) -> float:
    """Seconds in a duration; strings use the server's humantime spelling (``"1h30m"``)."""
    if isinstance(d, timedelta):
        return d.total_seconds()
    if isinstance(d, (int, float)):
        return float(d)
    s = d.strip().lower()
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m or m.group(2) not in _UNITS:
            raise ValueError(f"not a duration: {d!r} (use e.g. '250ms', '90s', '1h')")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"not a duration: {d!r}")
    return total


def wire_duration(d: Duration) -> str:
    """A duration as the server reads it; strings pass through so the server judges them."""
    if isinstance(d, str):
        return d
    return f"{max(0, round(seconds(d) * 1000))}ms"


# ---------------------------------------------------------------------------- errors

_BY_STATUS: dict[int, type[EZThrottleError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    422: ValidationError,
    429: RateLimitedError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check(resp: httpx.Response) -> httpx.Response:
    """Raises the API's error as an exception; returns 2xx responses."""
    if resp.is_success:
        return resp
    code: str | None = None
    fld: str | None = None
    message = resp.text or resp.reason_phrase
    try:
        err = resp.json().get("error")
        if isinstance(err, dict):
            code = err.get("code")
            fld = err.get("field") or None
            message = err.get("message") or message
    except (ValueError, AttributeError):
        pass
    cls = _BY_STATUS.get(resp.status_code, EZThrottleError)
    raise cls(
        message,
        status=resp.status_code,
        code=code,
        field=fld,
        retry_after=retry_after(resp.headers.get("retry-after")),
    )


def body(resp: httpx.Response) -> Any:
    return check(resp).json()


# ---------------------------------------------------------------------------- payloads


def job_payload(url: str, method: str = "GET", **options: Unpack[JobOptions]) -> JobPayload:
    """The job body with only the fields the caller set: what is absent takes the server's
    default, so the SDK never has to mirror (and drift from) those defaults."""
    unknown = set(options) - set(JobOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown job option(s): {', '.join(sorted(unknown))}")
    p: dict[str, object] = {"url": url, "method": method.upper()}
    for k, v in options.items():
        if v is None:
            continue
        if k == "timeout":
            v = wire_duration(cast(Duration, v))
        elif isinstance(v, Mapping):
            v = dict(v)
        elif isinstance(v, (list, tuple)):
            v = [dict(x) if isinstance(x, Mapping) else x for x in v]
        p[k] = v
    return cast(JobPayload, p)


# ---------------------------------------------------------------------------- plans


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/api/v1/jobs/{quote(job_id, safe='')}{suffix}"


def single(call: Call) -> Plan[Any]:
    return body((yield call))


def submit(payload: JobPayload) -> Plan[SubmitResult]:
    # Safe to send again: the server deduplicates by the job's key, or (none set) by the hash of
    # the call, so a retry whose first answer was lost is answered with the same job.
    call = Call("POST", "/api/v1/jobs", json=payload, idempotent=True)
    return cast(SubmitResult, (yield from single(call)))


def submit_wait(payload: JobPayload, wait: Duration) -> Plan[SubmitResult | Job]:
    """Submits holding the answer (``?wait=``): the final job view if the job ends in time (it
    has ``state``), else the submit answer. The server caps one hold at 5 minutes."""
    hold = seconds(wait)
    call = Call("POST", "/api/v1/jobs", params={"wait": wire_duration(wait)}, json=payload,
                timeout=min(hold, MAX_POLL_S) + POLL_SLACK_S, idempotent=True)  # fmt: skip
    return cast("SubmitResult | Job", (yield from single(call)))


def submit_batch(payloads: Iterable[JobPayload]) -> Plan[list[BatchItem]]:
    call = Call("POST", "/api/v1/jobs/batch", json={"jobs": list(payloads)}, idempotent=True)
    out = yield from single(call)
    return cast(list[BatchItem], out["results"])


def torrent_payload(
    url: str,
    method: str,
    headers: dict[str, str] | None,
    body: str | None,
    regions: list[str] | None,
    timeout: Duration | None,
    idempotent_key: str | None,
) -> dict[str, Any]:
    """The body of ``POST /api/v1/torrent`` (absent fields take the server's defaults)."""
    out: dict[str, Any] = {"url": url, "method": method.upper()}
    for k, v in (("headers", headers), ("body", body), ("regions", regions),
                 ("idempotent_key", idempotent_key)):  # fmt: skip
        if v is not None:
            out[k] = v
    if timeout is not None:
        out["timeout"] = wire_duration(timeout)
    return out


def torrent(payload: dict[str, Any]) -> Plan[TorrentResult]:
    # Never resent: a race is sent from every region at once, the caller decides to repeat it.
    call = Call("POST", "/api/v1/torrent", json=payload, idempotent=False)
    return cast(TorrentResult, (yield from single(call)))


def submit_workflow(payload: dict[str, Any]) -> Plan[WorkflowSubmitted]:
    # Resent on a lost answer only with a key: the server answers the same run. Without one a
    # second POST would start a second run.
    keyed = bool(payload.get("idempotent_key"))
    call = Call("POST", "/api/v1/workflows", json=payload, idempotent=keyed)
    return cast(WorkflowSubmitted, (yield from single(call)))


def _workflow_path(workflow_id: str, suffix: str = "") -> str:
    if not workflow_id.startswith("wf_") or "/" in workflow_id:
        raise ValueError(f"not a workflow id: {workflow_id!r}")
    return f"/api/v1/workflows/{quote(workflow_id, safe='')}{suffix}"


def get_workflow(workflow_id: str) -> Plan[Workflow]:
    return cast(Workflow, (yield from single(Call("GET", _workflow_path(workflow_id)))))


def workflow_action(workflow_id: str, action: str) -> Plan[Workflow]:
    """``cancel`` or ``resume``: both answer the run's view (``ConflictError`` when the run's
    status does not allow it)."""
    call = Call("POST", _workflow_path(workflow_id, f"/{action}"))
    return cast(Workflow, (yield from single(call)))


def restart_workflow(workflow_id: str) -> Plan[WorkflowSubmitted]:
    # Not resent on a lost answer: a second POST would start a second new run.
    call = Call("POST", _workflow_path(workflow_id, "/restart"), idempotent=False)
    return cast(WorkflowSubmitted, (yield from single(call)))


def workflow_events_call(workflow_id: str) -> Call:
    # Keep-alive comments arrive every 15 s, so a minute of silence means a dead connection.
    return Call("GET", _workflow_path(workflow_id, "/events"),
                headers={"Accept": "text/event-stream"}, timeout=60.0)  # fmt: skip


def list_lanes() -> Plan[list[Lane]]:
    out = yield from single(Call("GET", "/api/v1/lanes"))
    return cast(list[Lane], cast(dict[str, object], out)["lanes"])


def pin_lane_limits(host: str, pin: LanePin) -> Plan[list[Lane]]:
    if not host or "/" in host:
        raise ValueError(f"not a host: {host!r}")
    call = Call("PUT", f"/api/v1/lanes/{quote(host, safe=':[]')}/limits", json=dict(pin), idempotent=True)
    out = yield from single(call)
    return cast(list[Lane], cast(dict[str, object], out)["lanes"])


def get_job(job_id: str) -> Plan[Job]:
    return cast(Job, (yield from single(Call("GET", _job_path(job_id)))))


def job_action(job_id: str, action: str) -> Plan[Job]:
    """``cancel`` or ``retry``: both answer the job view."""
    return cast(Job, (yield from single(Call("POST", _job_path(job_id, f"/{action}")))))


def redeliver(job_id: str) -> Plan[Redelivery]:
    call = Call("POST", _job_path(job_id, "/webhooks/redeliver"))
    return cast(Redelivery, (yield from single(call)))


def list_page(
    state: str | None,
    lane: str | None,
    created_after: int | None,
    page_size: int | None,
    cursor: str | None,
) -> Plan[JobPage]:
    given = {
        "state": state,
        "lane": lane,
        "created_after": created_after,
        "limit": page_size,
        "cursor": cursor,
    }
    params = {k: v for k, v in given.items() if v is not None}
    return cast(JobPage, (yield from single(Call("GET", "/api/v1/jobs", params=params))))


def wait(job_id: str, timeout: Duration) -> Plan[Job]:
    """Long-polls ``/wait`` until the job is final; each poll is held by the server (up to its
    5-minute cap), so there is no client-side sleeping and no busy loop."""
    deadline = time.monotonic() + seconds(timeout)
    while True:
        hold = min(max(deadline - time.monotonic(), 0.0), MAX_POLL_S)
        resp = yield Call(
            "GET",
            _job_path(job_id, "/wait"),
            params={"timeout": wire_duration(hold)},
            timeout=hold + POLL_SLACK_S,
        )
        job = cast(Job, body(resp))
        if job["state"] in FINAL_STATES:
            return job
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"job {job_id} is still {job['state']} after {seconds(timeout):g}s", job
            )


def stream(method: str, url: str, options: StreamOptions) -> Plan[StreamResponse]:
    """STREAM's promise: submit holding the answer (``?wait=``), then long-poll, until the job
    is final. The job's own ``timeout`` is the caller's, so the server gives up when we do."""
    timeout = options.get("timeout", DEFAULT_STREAM_TIMEOUT)
    payload = stream_payload(method, url, {**options, "timeout": timeout})
    total = seconds(timeout)
    deadline = time.monotonic() + total + STREAM_GRACE_S
    hold = min(total, MAX_POLL_S)
    resp = yield Call(
        "POST",
        "/api/v1/jobs",
        params={"wait": wire_duration(hold)},
        json=payload,
        timeout=hold + POLL_SLACK_S,
        idempotent=True,
    )
    out = body(resp)
    if "state" in out:  # the server answered with the final job view
        job = cast(Job, out)
    else:  # still going, or a duplicate of a job that may still be going
        job = yield from wait(out["job_id"], max(deadline - time.monotonic(), 0.0))
    if job["state"] != "succeeded" or job["response"] is None:
        raise JobFailedError(job)
    r = job["response"]
    return StreamResponse(
        status_code=r["status_code"],
        headers=httpx.Headers([(k, v) for k, v in r["headers"]]),
        text=r["body"],
        job=job,
    )


def legacy_options(
    webhook_url: str,
    headers: dict[str, str] | None,
    body: str | None,
    metadata: dict[str, str] | None,
    retry_at: int | None,
) -> JobOptions:
    """``queue_request``'s arguments as job options (its single webhook votes); warns, on the
    caller's line, that ``queue_request`` is deprecated."""
    warnings.warn("queue_request is deprecated; use submit_job", DeprecationWarning, stacklevel=3)
    opts: JobOptions = {"webhooks": [{"url": webhook_url, "has_quorum_vote": True}]}
    if headers is not None:
        opts["headers"] = headers
    if body is not None:
        opts["body"] = body
    if metadata is not None:
        opts["metadata"] = metadata
    if retry_at is not None:
        opts["retry_at"] = retry_at
    return opts


def stream_payload(method: str, url: str, options: StreamOptions) -> JobPayload:
    """A STREAM call's job, taking the body the way httpx does (``json=`` or ``content=``)."""
    opts = dict(options)
    json_body = opts.pop("json", None)
    content = cast("str | bytes | None", opts.pop("content", None))
    hdrs = dict(cast("Mapping[str, str]", opts.pop("headers", None) or {}))
    text: str | None = None
    if json_body is not None:
        text = json.dumps(json_body)
        if not any(k.lower() == "content-type" for k in hdrs):
            hdrs["Content-Type"] = "application/json"
    elif content is not None:
        text = content.decode() if isinstance(content, bytes) else content
    if hdrs:
        opts["headers"] = hdrs
    if text is not None:
        opts["body"] = text
    return job_payload(url, method, **cast(JobOptions, opts))


def secrets_create(primary: str, secondary: str | None) -> Plan[WebhookSecrets]:
    req: dict[str, str] = {"primary_secret": primary}
    if secondary is not None:
        req["secondary_secret"] = secondary
    call = Call("POST", "/api/v1/webhook-secrets", json=req, idempotent=True)
    return cast(WebhookSecrets, (yield from single(call)))


def secrets_get() -> Plan[WebhookSecrets]:
    return cast(WebhookSecrets, (yield from single(Call("GET", "/api/v1/webhook-secrets"))))


def secrets_rotate(new_secret: str) -> Plan[WebhookSecrets]:
    call = Call("POST", "/api/v1/webhook-secrets/rotate", json={"new_secret": new_secret})
    return cast(WebhookSecrets, (yield from single(call)))


def secrets_delete() -> Plan[dict[str, bool]]:
    out = yield from single(Call("DELETE", "/api/v1/webhook-secrets"))
    return cast(dict[str, bool], out)


# ---------------------------------------------------------------------------- SSE


class SSEDecoder:
    """Server-Sent Events per the WHATWG spec, fed one line at a time (without its newline):
    multi-line ``data`` joined by ``\\n``, comments (keep-alives) skipped, ``id`` remembered."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            ev = ServerEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None


def events_call(job_id: str) -> Call:
    # Keep-alive comments arrive every 15 s, so a minute of silence means a dead connection.
    return Call("GET", _job_path(job_id, "/events"), headers={"Accept": "text/event-stream"},
                timeout=60.0)  # fmt: skip


def http_timeout(call: Call, default: float) -> httpx.Timeout:
    t = call.timeout if call.timeout is not None else default
    return httpx.Timeout(t, connect=min(t, 10.0))
