"""Shapes of what the SDK sends and receives.

The server's JSON is described with TypedDicts rather than classes so that a job view is still
the plain dict users of the hosted SDK index into (``job["state"]``), while mypy checks the keys.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, NotRequired, TypedDict, Union, final

import httpx

#: A duration: seconds as a number, a ``timedelta``, or a humantime string (``"250ms"``, ``"1h"``).
Duration = Union[float, int, str, timedelta]

JobState = Literal["queued", "scheduled", "running", "succeeded", "failed", "expired", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "expired", "cancelled"})


class Webhook(TypedDict):
    url: str
    regions: NotRequired[list[str]]
    has_quorum_vote: NotRequired[bool]


class RetryPolicy(TypedDict, total=False):
    max_retries: int
    max_reroutes: int
    retry_codes: list[int]
    reroute_codes: list[int]


class Trigger(TypedDict, total=False):
    type: Literal["on_error", "on_timeout"]
    codes: list[int]
    timeout_ms: int


class JobPayload(TypedDict, total=False):
    """The body of ``POST /api/v1/jobs`` (API.md); nested workflow jobs use the same shape."""

    url: str
    method: str
    headers: dict[str, str]
    body: str
    metadata: dict[str, str]
    webhooks: list[Webhook]
    webhook_quorum: int
    regions: list[str]
    region_policy: Literal["fallback", "strict"]
    execution_mode: Literal["race", "fanout"]
    retry_policy: RetryPolicy
    timeout: str | int
    retry_at: int
    idempotent_key: str
    fallback_job: JobPayload
    trigger: Trigger
    on_success: JobPayload
    on_failure: JobPayload
    on_failure_timeout_ms: int


class CallOptions(TypedDict, total=False):
    """Job options shared by ``submit_job`` and the ``stream`` calls (see API.md)."""

    headers: dict[str, str]
    metadata: dict[str, str]
    webhooks: list[Webhook]
    webhook_quorum: int
    regions: list[str]
    region_policy: Literal["fallback", "strict"]
    execution_mode: Literal["race", "fanout"]
    retry_policy: RetryPolicy
    retry_at: int
    idempotent_key: str
    #: How long the server keeps trying (job ``timeout``); for ``stream`` also how long to wait.
    timeout: Duration


class JobOptions(CallOptions, total=False):
    """``submit_job``'s keyword arguments: the hosted SDK's names."""

    body: str
    fallback_job: JobPayload
    on_success: JobPayload
    on_failure: JobPayload
    on_failure_timeout_ms: int


class StreamOptions(CallOptions, total=False):
    """``client.stream.<method>``'s keyword arguments: the body as httpx takes it."""

    json: object
    content: str | bytes


@final
class SubmitResult(TypedDict):
    """Answer to a submission: ``status`` is ``"queued"``, ``"racing"`` (the job lists regions
    in race mode) or ``"duplicate"``."""

    job_id: str
    status: str
    idempotent_key: str


class ErrorBody(TypedDict):
    code: str
    message: str
    field: NotRequired[str]


class BatchItemError(TypedDict):
    error: ErrorBody


#: One entry of ``submit_batch``'s answer, in request order.
BatchItem = Union[SubmitResult, BatchItemError]


class AttemptLeg(TypedDict):
    """One region's leg of a raced (``execution_mode: race``) or fanout attempt."""

    region: str
    #: The node that made the call (absent: the region had no live node).
    node: NotRequired[str]
    status_code: int | None
    error: NotRequired[str]
    latency_ms: int
    decision: Literal["success", "retry", "reroute", "fail", "interrupted"]
    #: A raced leg's outcome (absent for a fanout leg): ``refused`` was not sent (no lane
    #: permit or hedge budget); ``cancelled`` was cut when another region won.
    outcome: NotRequired[Literal["won", "lost", "cancelled", "error", "refused"]]


class Attempt(TypedDict):
    n: int
    series: int
    at: int
    region: str
    status_code: int | None
    error: str | None
    latency_ms: int
    #: ``interrupted``: the server stopped during the call (crash); the job ran again.
    decision: Literal["success", "retry", "reroute", "fail", "interrupted"]
    wait_ms: int | None
    #: Which link of a ``fallback_job`` chain made the call (absent: the job itself, 0).
    link: NotRequired[int]
    #: The chain link the job moved to after this attempt, if it moved.
    next_link: NotRequired[int]
    #: Cluster mode: the node that made the call (a raced attempt: the winner's).
    node: NotRequired[str]
    #: Why the attempt ran where it did, when it moved (``reroute: 502 from r1``).
    reason: NotRequired[str]
    #: A raced or fanout attempt: each region's leg.
    legs: NotRequired[list[AttemptLeg]]


class StoredResponse(TypedDict):
    """The target's answer as the server stored it (headers as ``[name, value]`` pairs)."""

    status_code: int
    headers: list[list[str]]
    body: str
    body_truncated: NotRequired[bool]


class JobError(TypedDict):
    code: str
    message: str


class StoredSpec(TypedDict):
    """The normalised spec the server keeps (credential headers redacted)."""

    url: str
    method: str
    headers: list[list[str]]
    body: str | None
    metadata: dict[str, str]
    regions: list[str]
    retry_policy: RetryPolicy
    timeout_ms: int
    retry_at: int | None
    webhooks: NotRequired[list[Webhook]]
    webhook_quorum: int
    region_policy: Literal["fallback", "strict"]
    execution_mode: Literal["race", "fanout"]


class DeliveryAttempt(TypedDict):
    n: int
    at: int
    status_code: int | None
    error: str | None
    latency_ms: int
    outcome: str
    wait_ms: int | None


class Delivery(TypedDict):
    delivery_id: str
    url: str
    has_quorum_vote: bool
    state: Literal["pending", "delivered", "failed"]
    series: int
    created_at: int
    next_attempt_at: int | None
    acknowledged_at: int | None
    attempts: list[DeliveryAttempt]


class Quorum(TypedDict):
    required: int
    acknowledged: int
    state: Literal["pending", "met", "failed"]


class Job(TypedDict):
    """``GET /api/v1/jobs/{id}``."""

    job_id: str
    state: JobState
    lane: str
    idempotent_key: str
    spec: StoredSpec
    metadata: dict[str, str]
    created_at: int
    updated_at: int
    run_at: int
    deadline_at: int
    finished_at: int | None
    attempt_count: int
    series: int
    attempts: list[Attempt]
    response: StoredResponse | None
    error: JobError | None
    webhooks: list[Delivery]
    webhook_quorum: Quorum | None
    parent_id: str | None
    children: list[str]


class JobPage(TypedDict):
    jobs: list[Job]
    next_cursor: str | None


class WebhookSecrets(TypedDict):
    """Masked secrets (``"****wxyz"``, at most 4 characters): never shown again in full."""

    primary_secret: str
    secondary_secret: str | None
    has_secondary: bool
    updated_at: int


class Redelivery(TypedDict):
    job_id: str
    deliveries: list[str]


@final
class FrugalResult(TypedDict):
    """What a FRUGAL step returns when it did not forward (the hosted SDK's shape)."""

    status: Literal["success", "failed"]
    executed_locally: Literal[True]
    status_code: int
    response: NotRequired[str]
    error: NotRequired[str]
    #: The result of the ``on_success`` step, run after a local success.
    on_success: NotRequired[SubmitResult | FrugalResult]


@dataclass(frozen=True)
class ServerEvent:
    """One Server-Sent Event from ``/jobs/{id}/events``."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return _json.loads(self.data)


@dataclass(frozen=True)
class StreamResponse:
    """The target's final answer to a STREAM call, shaped like an HTTP response."""

    status_code: int
    headers: httpx.Headers
    text: str
    job: Job = field(repr=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return _json.loads(self.text)


WorkflowStatus = Literal[
    "running", "compensating", "succeeded", "failed", "compensation_failed", "cancelled"
]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]


class TorrentLeg(TypedDict, total=False):
    """One leg of a TORRENT race: its region and node, ``won``/``lost``/``cancelled``/``error``."""

    region: str
    node: str
    outcome: Literal["won", "lost", "cancelled", "error"]
    status_code: int
    error: dict[str, str]
    latency_ms: float


class TorrentResult(TypedDict, total=False):
    """``POST /api/v1/torrent``: the first 2xx of the race (or the last answer), with every leg."""

    region: str
    node: str
    status_code: int
    headers: list[list[str]]
    body: str
    body_truncated: bool
    latency_ms: float
    idempotent_key: str
    attempts: list[TorrentLeg]
    error: dict[str, str]


class WorkflowSubmitted(TypedDict):
    """``POST /api/v1/workflows`` (202 ``running``; 200 ``duplicate`` when the tenant has a run
    with the same ``idempotent_key``, whose id it is) and ``/restart`` (202, the new run)."""

    workflow_id: str
    status: Literal["running", "duplicate"]


class StepResponse(TypedDict):
    """The part of a step's answer later steps may read."""

    status: int
    headers: list[list[str]]
    body: str


class WorkflowStep(TypedDict):
    """One step of a run."""

    name: str
    status: StepStatus
    depends_on: list[str]
    critical: bool
    non_blocking: bool
    job_id: str | None
    #: The step's job (attempts, state, timings), once released.
    job: Job | None
    response: StepResponse | None
    #: Why it failed (``template_unresolved: …`` when a template had no value).
    error: str | None
    compensation_job_id: str | None
    compensation: StepStatus | None
    #: Its condition, if it has one.
    when: NotRequired[str]
    #: What ``when`` decided once its dependencies were done (false: the step was skipped).
    condition: NotRequired[bool]


class Workflow(TypedDict):
    """``GET /api/v1/workflows/{id}``."""

    workflow_id: str
    name: str
    status: WorkflowStatus
    #: The run's dedup key, if it was given one.
    idempotent_key: str | None
    #: Times it was resumed.
    resumes: int
    steps: list[WorkflowStep]
    warnings: list[str]
    #: Deliveries of the run's webhook events (``series`` 1 + resumes: its end; from
    #: 10,000,000: a page), oldest first.
    webhooks: list[Delivery]
    created_at: int
    updated_at: int


WORKFLOW_FINAL: frozenset[str] = frozenset(
    {"succeeded", "failed", "compensation_failed", "cancelled"}
)
#: The last event of a run's ``/events`` stream (its data is the run's view).
WORKFLOW_FINAL_EVENTS: frozenset[str] = frozenset(
    {"workflow.completed", "workflow.failed", "workflow.cancelled"}
)


class LaneSource(TypedDict, total=False):
    """Where a lane's value came from: ``kind`` is ``default``, ``config``, ``header``,
    ``adaptive``, ``tenant`` or ``derived``; header and window when a header announced it."""

    kind: str
    header: str | None
    window_s: int | None
    learned_at: int | None


class LanePin(TypedDict, total=False):
    """A tenant's pin of its own lane's limits; ``{}`` unpins."""

    rate: float | None
    burst: int | None
    max_in_flight: int | None
    adaptive: bool | None
    adaptive_ceiling: float | None


class LaneKey(TypedDict):
    host: str
    credential_fingerprint: str | None


class LaneSources(TypedDict):
    rate: LaneSource | None
    burst: LaneSource | None
    max_in_flight: LaneSource | None
    pause: LaneSource | None


class Lane(TypedDict):
    """``GET /api/v1/lanes``: one of the caller's lanes (owner node and epoch in cluster mode)."""

    lane: str
    key: LaneKey
    rate: float
    burst: int
    max_in_flight: int
    remaining: int | None
    paused_until: int | None
    sources: LaneSources
    adaptive: bool
    pin: dict[str, Any] | None
    queue_depth: int
    in_flight: int
    owner_node: str | None
    epoch: int | None
