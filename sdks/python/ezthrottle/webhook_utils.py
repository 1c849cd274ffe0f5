"""The hosted SDK's module path (``from ezthrottle.webhook_utils import ...``), kept for
migration."""

from .webhooks import (
    ReasonCode,
    VerifyReason,
    WebhookVerificationError,
    try_verify_with_secrets,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)

__all__ = [
    "ReasonCode",
    "VerifyReason",
    "WebhookVerificationError",
    "try_verify_with_secrets",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
]
