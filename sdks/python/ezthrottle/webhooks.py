"""Verifying (and, for tests of your own receiver, producing) webhook signatures.

Two schemes sign every delivery, so a receiver may use either:
- ``X-EZThrottle-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`` with one
  ``v1=`` per active secret (the hosted SDK's helpers, same names and return values);
- Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``).

Failure reasons are the shared test vectors' codes: ``mismatch``, ``too_old``, ``too_new``,
``no_signature``, ``malformed``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

from .errors import WebhookVerificationError

__all__ = [
    "WebhookVerificationError",
    "sign_standard_webhook",
    "sign_webhook",
    "try_verify_with_secrets",
    "verify_standard_webhook",
    "verify_standard_webhook_strict",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
]

DEFAULT_TOLERANCE = 300


def _raw(payload: bytes | str) -> bytes:
    # Signatures cover the exact bytes sent: re-serialising parsed JSON would break them.
    return payload.encode() if isinstance(payload, str) else payload


def _hex(secret: str, timestamp: str, payload: bytes) -> str:
    msg = timestamp.encode() + b"." + payload
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _age_reason(ts: int, tolerance: int, now: float | None) -> str | None:
    t = time.time() if now is None else now
    if t - ts > tolerance:
        return "too_old"
    if ts - t > tolerance:
        return "too_new"
    return None


def _verdict(reason: str | None) -> tuple[bool, str]:
    """A ``_check_*`` result as the public ``(ok, reason)`` pair."""
    return (True, "valid") if reason is None else (False, reason)


def _raise_unless_valid(reason: str | None) -> None:
    """A ``_check_*`` result as the strict variants report it."""
    if reason is not None:
        raise WebhookVerificationError(f"webhook signature verification failed: {reason}", reason)


def _parse_ezthrottle(header: str) -> tuple[str | None, list[str]]:
    ts: str | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            ts = value
        elif key == "v1":
            sigs.append(value)
    return ts, sigs


def _check_ezthrottle(
    payload: bytes, header: str, secret: str, tolerance: int, now: float | None
) -> str | None:
    """``None`` when valid, else the reason."""
    if not header:
        return "no_signature"
    ts, sigs = _parse_ezthrottle(header)
    if ts is None or not ts.isdigit():
        return "malformed"
    if not sigs:
        return "no_signature"
    age = _age_reason(int(ts), tolerance, now)
    if age:
        return age
    want = _hex(secret, ts, payload)
    # Every v1 is compared (no early exit on the first) and an empty one never matches. Bytes,
    # not str: compare_digest raises on non-ASCII str, and the header is attacker-controlled.
    ok = False
    for sig in sigs:
        ok |= bool(sig) and hmac.compare_digest(want.encode(), sig.encode("utf-8", "replace"))
    return None if ok else "mismatch"


def verify_webhook_signature(
    payload: bytes | str,
    signature_header: str,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> tuple[bool, str]:
    """Checks ``X-EZThrottle-Signature`` against the raw body: ``(True, "valid")`` or
    ``(False, reason)``. Any one ``v1=`` matching is enough, so a receiver holding only the old
    secret keeps accepting deliveries during a rotation. ``now`` is for tests."""
    return _verdict(_check_ezthrottle(_raw(payload), signature_header, secret, tolerance, now))


def verify_webhook_signature_strict(
    payload: bytes | str,
    signature_header: str,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Like ``verify_webhook_signature``; raises ``WebhookVerificationError`` instead."""
    _raise_unless_valid(_check_ezthrottle(_raw(payload), signature_header, secret, tolerance, now))


def try_verify_with_secrets(
    payload: bytes | str,
    signature_header: str,
    primary_secret: str,
    secondary_secret: str | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> tuple[bool, str]:
    """For a receiver mid-rotation: ``(True, "valid_primary")``, ``(True, "valid_secondary")``,
    or ``(False, reason)`` with the primary secret's reason."""
    ok, reason = verify_webhook_signature(
        payload, signature_header, primary_secret, tolerance, now=now
    )
    if ok:
        return True, "valid_primary"
    if secondary_secret:
        ok2, _ = verify_webhook_signature(
            payload, signature_header, secondary_secret, tolerance, now=now
        )
        if ok2:
            return True, "valid_secondary"
    return False, reason


def sign_webhook(payload: bytes | str, secrets: Iterable[str], timestamp: int) -> str:
    """The ``X-EZThrottle-Signature`` the server would send (to test your receiver)."""
    ts = str(timestamp)
    raw = _raw(payload)
    return ",".join([f"t={ts}"] + [f"v1={_hex(s, ts, raw)}" for s in secrets])


# ---------------------------------------------------------------------------- Standard Webhooks


def _standard_key(secret: str) -> bytes:
    """A ``whsec_`` secret is base64 (the Standard Webhooks convention); any other secret is
    used as its UTF-8 bytes, which is how the server signs with it."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def _standard_sig(secret: str, msg_id: str, timestamp: str, payload: bytes) -> bytes:
    msg = f"{msg_id}.{timestamp}.".encode() + payload
    return hmac.new(_standard_key(secret), msg, hashlib.sha256).digest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _check_standard(
    payload: bytes, headers: Mapping[str, str], secret: str, tolerance: int, now: float | None
) -> str | None:
    msg_id = _header(headers, "webhook-id")
    ts = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    if not sig_header:
        return "no_signature"
    if not msg_id or ts is None or not ts.strip().isdigit():
        return "malformed"
    ts = ts.strip()
    sigs = [
        value
        for version, sep, value in (p.partition(",") for p in sig_header.split(" ") if p)
        if sep and version == "v1"
    ]
    if not sigs:
        return "no_signature"
    age = _age_reason(int(ts), tolerance, now)
    if age:
        return age
    try:
        want = _standard_sig(secret, msg_id, ts, payload)
    except (binascii.Error, ValueError):
        return "malformed"
    ok = False
    for sig in sigs:
        try:
            got = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        ok |= bool(got) and hmac.compare_digest(want, got)
    return None if ok else "mismatch"


def verify_standard_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> tuple[bool, str]:
    """Checks the Standard Webhooks headers (names case-insensitive): ``(True, "valid")`` or
    ``(False, reason)``."""
    return _verdict(_check_standard(_raw(payload), headers, secret, tolerance, now))


def verify_standard_webhook_strict(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Like ``verify_standard_webhook``; raises ``WebhookVerificationError`` instead."""
    _raise_unless_valid(_check_standard(_raw(payload), headers, secret, tolerance, now))


def sign_standard_webhook(
    payload: bytes | str, secrets: Iterable[str], msg_id: str, timestamp: int
) -> str:
    """The ``webhook-signature`` value the server would send."""
    raw = _raw(payload)
    return " ".join(
        "v1," + base64.b64encode(_standard_sig(s, msg_id, str(timestamp), raw)).decode()
        for s in secrets
    )
