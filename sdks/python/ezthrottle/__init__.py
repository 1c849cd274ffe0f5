"""EZThrottle: hand HTTP calls to your own EZThrottle server as durable, rate-limited, retried
jobs, with outcomes delivered to signed webhooks."""

from . import _transport
from .async_client import AsyncEZThrottle, AsyncStream
from .client import EZThrottle, Stream
from .errors import (
    AuthenticationError,
    ConflictError,
    EZThrottleError,
    ForwardToEZThrottle,
    JobFailedError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    TimeoutError,
    UnavailableError,
    UnreachableError,
    ValidationError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from .forwarding import auto_forward
from .step import IdempotentStrategy, Step, StepResult, StepType
from .types import (
    Attempt,
    BatchItem,
    Job,
    JobOptions,
    JobPage,
    JobPayload,
    RetryPolicy,
    ServerEvent,
    StreamOptions,
    StreamResponse,
    SubmitResult,
    Webhook,
    WebhookSecrets,
)
from .webhooks import (
    sign_standard_webhook,
    sign_webhook,
    try_verify_with_secrets,
    verify_standard_webhook,
    verify_standard_webhook_strict,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)

__version__ = _transport.VERSION

__all__ = [
    "AsyncEZThrottle",
    "AsyncStream",
    "Attempt",
    "AuthenticationError",
    "BatchItem",
    "ConflictError",
    "EZThrottle",
    "EZThrottleError",
    "ForwardToEZThrottle",
    "IdempotentStrategy",
    "Job",
    "JobFailedError",
    "JobOptions",
    "JobPage",
    "JobPayload",
    "NotFoundError",
    "QuotaExceededError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerEvent",
    "Step",
    "StepResult",
    "StepType",
    "Stream",
    "StreamOptions",
    "StreamResponse",
    "SubmitResult",
    "TimeoutError",
    "UnavailableError",
    "UnreachableError",
    "ValidationError",
    "WaitTimeoutError",
    "Webhook",
    "WebhookSecrets",
    "WebhookVerificationError",
    "auto_forward",
    "sign_standard_webhook",
    "sign_webhook",
    "try_verify_with_secrets",
    "verify_standard_webhook",
    "verify_standard_webhook_strict",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
]
