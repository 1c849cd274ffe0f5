"""The hosted SDK's module path (``from ezthrottle.webhook_utils import ...``), kept for
migration."""

from .webhooks import (
    WebhookVerificationError,
    try_verify_with_secrets,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)

__all__ = [
    "WebhookVerificationError",
    "try_verify_with_secrets",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
]
