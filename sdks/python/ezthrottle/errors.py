"""Exceptions. Every error the server answers becomes one of these, carrying the API's ``code``
and ``field`` so callers can branch on them without parsing messages.

The hosted SDK's names (``TimeoutError``, ``AuthenticationError``, ``QuotaExceededError``,
``ForwardToEZThrottle``) stay importable so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import builtins
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import Job, Webhook


class EZThrottleError(Exception):
    """Base class. ``status`` is the HTTP status (``None`` when no answer came back);
    ``retry_after`` is in seconds, from the ``Retry-After`` header of a 429/503."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.retry_after = retry_after
        # The hosted SDK exposed the earliest retry time as ms since the epoch.
        self.retry_at: int | None = (
            int((time.time() + retry_after) * 1000) if retry_after is not None else None
        )

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code={self.code}")
        if self.field:
            parts.append(f"field={self.field}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class AuthenticationError(EZThrottleError):
    """401: missing or unknown API key."""


class NotFoundError(EZThrottleError):
    """404: no such job (or another tenant's), or no webhook secret."""


class ValidationError(EZThrottleError):
    """400/413/422: the request was refused as written; ``field`` names the culprit.
    ``code == "not_supported"`` means this server does not offer the feature yet."""


class ConflictError(EZThrottleError):
    """409: e.g. cancelling a job that is already final."""


class RateLimitedError(EZThrottleError):
    """429 ``quota_exceeded``: retry after ``retry_after`` seconds."""


#: The hosted SDK's name for a 429.
QuotaExceededError = RateLimitedError


class UnavailableError(EZThrottleError):
    """503: the server could not store anything (disk full, store down); safe to retry later."""


class UnreachableError(EZThrottleError):
    """No answer from the EZThrottle server (connection refused, timeout): the cue for
    ``forward_or_fallback`` to use the caller's own path."""


class WaitTimeoutError(EZThrottleError, builtins.TimeoutError):
    """The job was not final within the caller's timeout; ``job`` is its last view."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message, code="timeout")
        self.job = job


#: The hosted SDK's name; also an ``builtins.TimeoutError`` so generic handlers catch it.
TimeoutError = WaitTimeoutError


class JobFailedError(EZThrottleError):
    """A STREAM call ended ``failed``, ``expired`` or ``cancelled``; ``job`` is the final view."""

    def __init__(self, job: Job) -> None:
        err = job.get("error") or {"code": job["state"], "message": f"job {job['state']}"}
        resp = job.get("response")
        super().__init__(
            f"job {job['job_id']} ended {job['state']}: {err['message']}",
            status=resp["status_code"] if resp else None,
            code=err["code"],
        )
        self.job = job


class ForwardToEZThrottle(EZThrottleError):
    """Raise inside a function decorated with ``auto_forward(client)`` to hand the call to
    EZThrottle instead of failing (e.g. on a 429 from the upstream)."""

    def __init__(
        self,
        message: str = "Forwarding to EZThrottle",
        url: str | None = None,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
        idempotent_key: str | None = None,
        metadata: dict[str, str] | None = None,
        webhooks: list[Webhook] | None = None,
        regions: list[str] | None = None,
        fallback_on_error: list[int] | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.method = method
        self.headers = headers or {}
        self.body = body
        self.idempotent_key = idempotent_key
        self.metadata = metadata or {}
        self.webhooks = webhooks or []
        self.regions = regions
        self.fallback_on_error = fallback_on_error or [429, 500, 502, 503, 504]


class WebhookVerificationError(Exception):
    """A webhook's signature did not verify. ``reason`` is the verifier's reason (the hosted
    SDK's text, e.g. ``signature_mismatch``); ``code`` its machine-readable cause (``mismatch``,
    ``too_old``, ``too_new``, ``no_signature``, ``malformed``)."""

    def __init__(self, message: str, reason: str = "signature_mismatch") -> None:
        super().__init__(message)
        self.reason = reason
        code = getattr(reason, "code", None)
        self.code: str = str(code) if code is not None else reason
