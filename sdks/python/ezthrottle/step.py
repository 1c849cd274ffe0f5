"""The hosted SDK's fluent builder. A step compiles to API.md's job payload (``to_payload``);
``execute`` either submits it (PERFORMANCE) or tries the call locally first and forwards it only
when that fails in a way EZThrottle can fix (FRUGAL)."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import TYPE_CHECKING, Literal, cast

import httpx

from . import _transport as _t
from .types import (
    Duration,
    FrugalResult,
    JobOptions,
    JobPayload,
    RetryPolicy,
    SubmitResult,
    Trigger,
    Webhook,
)

if TYPE_CHECKING:
    from .async_client import AsyncEZThrottle
    from .client import EZThrottle

#: What ``execute`` returns: the submit answer when the job went to EZThrottle, else the
#: local outcome (``{"status": "success"|"failed", "executed_locally": True, ...}``).
StepResult = SubmitResult | FrugalResult


class StepType(Enum):
    #: Try the call from this process; forward to EZThrottle only on the listed errors.
    FRUGAL = "frugal"
    #: Submit to EZThrottle straight away.
    PERFORMANCE = "performance"


class IdempotentStrategy(Enum):
    #: The server derives the key from (method, url, body): the same call is never run twice.
    HASH = "hash"
    #: A fresh UUID per execution: repeats are intended (polling, notifications).
    UNIQUE = "unique"


class Step:
    """``Step(client).url(...).method("POST").body(...).execute()``."""

    def __init__(self, client: EZThrottle | AsyncEZThrottle | None = None) -> None:
        self.client = client
        self._type = StepType.PERFORMANCE
        self._url: str | None = None
        self._method = "GET"
        #: The job options set so far, as ``submit_job`` takes them; unset ones stay absent.
        self._options: JobOptions = {}
        self._idempotent_strategy = IdempotentStrategy.HASH
        self._fallback_on_error: list[int] = [429, 500, 502, 503, 504]
        self._local_timeout: float = 30.0
        self._fallbacks: list[tuple[Step, Trigger]] = []
        self._on_success: Step | None = None
        self._on_failure: Step | None = None

    # -- the call

    def url(self, url: str) -> Step:
        self._url = url
        return self

    def method(self, method: str) -> Step:
        self._method = method.upper()
        return self

    def headers(self, headers: dict[str, str]) -> Step:
        self._options["headers"] = dict(headers)
        return self

    def body(self, body: str) -> Step:
        self._options["body"] = body
        return self

    def metadata(self, metadata: dict[str, str]) -> Step:
        self._options["metadata"] = dict(metadata)
        return self

    # -- delivery and execution options

    def webhooks(self, webhooks: list[Webhook]) -> Step:
        self._options["webhooks"] = list(webhooks)
        return self

    def webhook_quorum(self, quorum: int) -> Step:
        self._options["webhook_quorum"] = quorum
        return self

    def regions(self, regions: list[str]) -> Step:
        self._options["regions"] = list(regions)
        return self

    def region_policy(self, policy: Literal["fallback", "strict"]) -> Step:
        self._options["region_policy"] = policy
        return self

    def execution_mode(self, mode: Literal["race", "fanout"]) -> Step:
        self._options["execution_mode"] = mode
        return self

    def retry_policy(self, policy: RetryPolicy) -> Step:
        self._options["retry_policy"] = policy
        return self

    def retry_at(self, timestamp_ms: int) -> Step:
        """Earliest first attempt, ms since the epoch (a delayed job)."""
        self._options["retry_at"] = timestamp_ms
        return self

    def timeout(self, timeout: Duration) -> Step:
        """How long the server keeps trying before the job ends ``expired`` (default 24h)."""
        self._options["timeout"] = timeout
        return self

    def idempotent_key(self, key: str) -> Step:
        self._options["idempotent_key"] = key
        return self

    def idempotent_strategy(self, strategy: IdempotentStrategy) -> Step:
        self._idempotent_strategy = strategy
        return self

    def type(self, step_type: StepType) -> Step:
        self._type = step_type
        return self

    # -- FRUGAL

    def fallback_on_error(self, codes: list[int]) -> Step:
        """(FRUGAL) Local answers that hand the call to EZThrottle (default 429 and 5xx)."""
        self._fallback_on_error = list(codes)
        return self

    def local_timeout(self, seconds: float) -> Step:
        """(FRUGAL) How long the local try may take before it counts as a network error."""
        self._local_timeout = seconds
        return self

    # -- workflows

    def fallback(
        self,
        step: Step,
        trigger_on_error: list[int] | None = None,
        trigger_on_timeout: int | None = None,
    ) -> Step:
        """Run ``step`` if this one fails with one of ``trigger_on_error``'s codes, or has no
        success after ``trigger_on_timeout`` ms. Several fallbacks chain in order."""
        if (trigger_on_error is None) == (trigger_on_timeout is None):
            raise ValueError("give exactly one of trigger_on_error or trigger_on_timeout")
        trigger: Trigger = (
            {"type": "on_error", "codes": list(trigger_on_error)}
            if trigger_on_error is not None
            else {"type": "on_timeout", "timeout_ms": cast(int, trigger_on_timeout)}
        )
        self._fallbacks.append((step, trigger))
        return self

    def on_success(self, step: Step) -> Step:
        self._on_success = step
        return self

    def on_failure(self, step: Step, timeout_ms: int | None = None) -> Step:
        """Run ``step`` when this job and its fallbacks fail (or, with ``timeout_ms``, when there
        is no success by then)."""
        self._on_failure = step
        if timeout_ms is None:
            self._options.pop("on_failure_timeout_ms", None)
        else:
            self._options["on_failure_timeout_ms"] = timeout_ms
        return self

    # -- compile

    def to_payload(self) -> JobPayload:
        """The job body this step sends. Only options that were set are included, so absent
        ones take the server's defaults."""
        if not self._url:
            raise ValueError("Step needs .url(...)")
        opts = self._options.copy()
        if "idempotent_key" not in opts and self._idempotent_strategy is IdempotentStrategy.UNIQUE:
            opts["idempotent_key"] = str(uuid.uuid4())
        chain = self._fallback_chain()
        if chain is not None:
            opts["fallback_job"] = chain
        if self._on_success is not None:
            opts["on_success"] = self._on_success.to_payload()
        if self._on_failure is not None:
            opts["on_failure"] = self._on_failure.to_payload()
        return _t.job_payload(self._url, self._method, **opts)

    def _fallback_chain(self) -> JobPayload | None:
        """Fallbacks nest: the first is this job's ``fallback_job``, the second that one's (after
        any fallbacks the first step declares itself), and so on."""
        head: JobPayload | None = None
        tail: JobPayload | None = None
        for step, trigger in self._fallbacks:
            job = step.to_payload()
            job["trigger"] = trigger
            if tail is None:
                head = job
            else:
                tail["fallback_job"] = job
            tail = job
            while "fallback_job" in tail:
                tail = tail["fallback_job"]
        return head

    # -- run

    def execute(self, client: EZThrottle | None = None) -> StepResult:
        from .client import EZThrottle

        c = client or self.client
        if not isinstance(c, EZThrottle):
            raise ValueError("execute() needs an EZThrottle client; use execute_async() for async")
        return c._run(self._plan())

    async def execute_async(self, client: AsyncEZThrottle | None = None) -> StepResult:
        from .async_client import AsyncEZThrottle

        c = client or self.client
        if not isinstance(c, AsyncEZThrottle):
            raise ValueError("execute_async() needs an AsyncEZThrottle client")
        return await c._run(self._plan())

    def _plan(self) -> _t.Plan[StepResult]:
        if self._type is StepType.PERFORMANCE:
            return (yield from _t.submit(self.to_payload()))
        return (yield from self._frugal())

    def _frugal(self) -> _t.Plan[StepResult]:
        if not self._url:
            raise ValueError("Step needs .url(...)")
        local = _t.Call(
            self._method,
            self._url,
            content=self._options.get("body"),
            headers=self._options.get("headers", {}),
            timeout=self._local_timeout,
            external=True,
        )
        try:
            resp = yield local
        except httpx.TransportError:  # refused, reset, timed out: EZThrottle will retry it
            return (yield from _t.submit(self.to_payload()))
        code = resp.status_code
        if resp.is_success:
            out: FrugalResult = {
                "status": "success",
                "executed_locally": True,
                "status_code": code,
                "response": resp.text,
            }
            if self._on_success is not None:
                out["on_success"] = yield from self._on_success._plan()
            return out
        if code in self._fallback_on_error:
            return (yield from _t.submit(self.to_payload()))
        return {
            "status": "failed",
            "executed_locally": True,
            "status_code": code,
            "error": f"Request failed: {code}",
        }
