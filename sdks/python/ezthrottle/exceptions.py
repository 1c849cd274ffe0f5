"""The hosted SDK's module path (``from ezthrottle.exceptions import ...``) kept for migration."""

from .errors import (
    AuthenticationError,
    EZThrottleError,
    ForwardToEZThrottle,
    QuotaExceededError,
    TimeoutError,
)

__all__ = [
    "AuthenticationError",
    "EZThrottleError",
    "ForwardToEZThrottle",
    "QuotaExceededError",
    "TimeoutError",
]
