"""Verifying (and, for tests of your own receiver, producing) webhook signatures.

Two schemes sign every delivery, so a receiver may use either:
- ``X-EZThrottle-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`` with one
  ``v1=`` per active secret (the hosted SDK's helpers, same names and return values);
- Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``).

Every verifier returns ``(ok, reason)``. ``reason`` is a ``VerifyReason``: a ``str`` equal to the
hosted SDK's text (``valid``, ``no_signature_header``, ``missing_v1_signature``,
``timestamp_expired (diff=<n>s, tolerance=<n>s)``, ``signature_mismatch``,
``verification_error: <details>``; ``try_verify_with_secrets``: ``valid_primary``,
``valid_secondary``, ``both_secrets_failed (primary: <reason>)``), so receivers written for the
hosted SDK keep working, carrying the structured cause as ``reason.code``, a ``ReasonCode``
(``valid``, ``no_signature``, ``malformed``, ``too_old``, ``too_new``, ``mismatch``: the shared test
vectors' codes), for code that branches on it.

Unlike the hosted 1.3.0 package, a header with several ``v1=`` (the server sends one per active
secret during a rotation) verifies when any of them matches, not only the last one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from enum import Enum

from .errors import WebhookVerificationError

__all__ = [
    "ReasonCode",
    "VerifyReason",
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


class ReasonCode(str, Enum):
    """Why a signature verified or not, for code that branches on it."""

    VALID = "valid"
    #: No signature header, or no ``v1`` signature in it.
    NO_SIGNATURE = "no_signature"
    #: The header (or the timestamp in it) cannot be read.
    MALFORMED = "malformed"
    #: The timestamp is older than the tolerance (a replay, or a clock far behind).
    TOO_OLD = "too_old"
    #: The timestamp is further ahead than the tolerance.
    TOO_NEW = "too_new"
    #: No signature matches the secret and the body.
    MISMATCH = "mismatch"

    def __str__(self) -> str:
        return self.value


class VerifyReason(str):
    """A verifier's reason: the hosted SDK's text (it compares and prints as that text), with
    the structured cause in ``code``."""

    code: ReasonCode

    def __new__(cls, text: str, code: ReasonCode) -> VerifyReason:
        obj = super().__new__(cls, text)
        obj.code = code
        return obj

    def __repr__(self) -> str:
        return f"VerifyReason({str(self)!r}, code={self.code.value!r})"


_VALID = VerifyReason("valid", ReasonCode.VALID)


def _raw(payload: bytes | str) -> bytes:
    # Signatures cover the exact bytes sent: re-serialising parsed JSON would break them.
    return payload.encode() if isinstance(payload, str) else payload


def _hex(secret: str, timestamp: str, payload: bytes) -> str:
    msg = timestamp.encode() + b"." + payload
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _age(ts: int, tolerance: int, now: float | None) -> VerifyReason | None:
    # Whole seconds, as the hosted SDK counts them (its text shows the difference).
    t = int(time.time() if now is None else now)
    diff = abs(t - ts)
    if diff <= tolerance:
        return None
    code = ReasonCode.TOO_OLD if t > ts else ReasonCode.TOO_NEW
    return VerifyReason(f"timestamp_expired (diff={diff}s, tolerance={tolerance}s)", code)


def _error(details: str) -> VerifyReason:
    return VerifyReason(f"verification_error: {details}", ReasonCode.MALFORMED)


def _verdict(reason: VerifyReason | None) -> tuple[bool, VerifyReason]:
    """A ``_check_*`` result as the public ``(ok, reason)`` pair."""
    return (True, _VALID) if reason is None else (False, reason)


def _raise_unless_valid(reason: VerifyReason | None) -> None:
    """A ``_check_*`` result as the strict variants report it (the hosted message)."""
    if reason is not None:
        raise WebhookVerificationError(f"Webhook signature verification failed: {reason}", reason)


def _parse_ezthrottle(header: str) -> tuple[str | None, list[str]]:
    ts: str | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key == "t":
            ts = value.strip()
        elif key == "v1":
            sigs.append(value.strip())
    return ts, sigs


def _check_ezthrottle(
    payload: bytes, header: str, secret: str, tolerance: int, now: float | None
) -> VerifyReason | None:
    """``None`` when valid, else the reason; checked in the hosted SDK's order (header, v1,
    timestamp, signature), so the same input gets the same text."""
    if not header:
        return VerifyReason("no_signature_header", ReasonCode.NO_SIGNATURE)
    ts, sigs = _parse_ezthrottle(header)
    if not any(sigs):
        # An empty ``v1=`` never matches (no "zip" bypass); the hosted text calls it missing.
        code = ReasonCode.MISMATCH if sigs else ReasonCode.NO_SIGNATURE
        return VerifyReason("missing_v1_signature", code)
    if ts is None:
        # The hosted SDK reads a missing timestamp as 0, which is always expired.
        expired = _age(0, tolerance, now)
        if expired is not None:
            return VerifyReason(expired, ReasonCode.MALFORMED)
        return _error("missing timestamp")
    if not (ts.isascii() and ts.isdigit()):
        return _error(f"invalid literal for int() with base 10: {ts!r}")
    age = _age(int(ts), tolerance, now)
    if age:
        return age
    want = _hex(secret, ts, payload)
    # Every v1 is compared (no early exit on the first) and an empty one never matches. Bytes,
    # not str: compare_digest raises on non-ASCII str, and the header is attacker-controlled.
    ok = False
    for sig in sigs:
        ok |= bool(sig) and hmac.compare_digest(want.encode(), sig.encode("utf-8", "replace"))
    return None if ok else VerifyReason("signature_mismatch", ReasonCode.MISMATCH)


def verify_webhook_signature(
    payload: bytes | str,
    signature_header: str,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> tuple[bool, VerifyReason]:
    """Checks ``X-EZThrottle-Signature`` against the raw body: ``(True, "valid")`` or
    ``(False, reason)`` with the hosted SDK's reason text (``reason.code`` is the
    ``ReasonCode``). Any one ``v1=`` matching is enough, so a receiver holding only the old
    secret keeps accepting deliveries during a rotation. ``now`` (unix seconds) is for tests."""
    return _verdict(_check_ezthrottle(_raw(payload), signature_header, secret, tolerance, now))


def verify_webhook_signature_strict(
    payload: bytes | str,
    signature_header: str,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Like ``verify_webhook_signature``; raises ``WebhookVerificationError`` instead (its
    ``reason`` is the reason, its ``code`` the ``ReasonCode``)."""
    _raise_unless_valid(_check_ezthrottle(_raw(payload), signature_header, secret, tolerance, now))


def try_verify_with_secrets(
    payload: bytes | str,
    signature_header: str,
    primary_secret: str,
    secondary_secret: str | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> tuple[bool, VerifyReason]:
    """For a receiver mid-rotation: ``(True, "valid_primary")``, ``(True, "valid_secondary")``,
    or ``(False, "both_secrets_failed (primary: <reason>)")`` (also when no secondary was
    given, as the hosted SDK answers), ``code`` being the primary secret's."""
    ok, reason = verify_webhook_signature(
        payload, signature_header, primary_secret, tolerance, now=now
    )
    if ok:
        return True, VerifyReason("valid_primary", ReasonCode.VALID)
    if secondary_secret:
        ok2, _ = verify_webhook_signature(
            payload, signature_header, secondary_secret, tolerance, now=now
        )
        if ok2:
            return True, VerifyReason("valid_secondary", ReasonCode.VALID)
    return False, VerifyReason(f"both_secrets_failed (primary: {reason})", reason.code)


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
) -> VerifyReason | None:
    msg_id = _header(headers, "webhook-id")
    ts = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    if not sig_header:
        return VerifyReason("no_signature_header", ReasonCode.NO_SIGNATURE)
    if not msg_id:
        return _error("missing webhook-id header")
    if ts is None or not (ts.strip().isascii() and ts.strip().isdigit()):
        return _error(f"webhook-timestamp is not unix seconds: {ts!r}")
    ts = ts.strip()
    sigs = [
        value
        for version, sep, value in (p.partition(",") for p in sig_header.split(" ") if p)
        if sep and version == "v1"
    ]
    if not sigs:
        return VerifyReason("missing_v1_signature", ReasonCode.NO_SIGNATURE)
    age = _age(int(ts), tolerance, now)
    if age:
        return age
    try:
        want = _standard_sig(secret, msg_id, ts, payload)
    except (binascii.Error, ValueError) as exc:
        return _error(f"the whsec_ secret is not base64 ({exc})")
    ok = False
    for sig in sigs:
        try:
            got = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        ok |= bool(got) and hmac.compare_digest(want, got)
    return None if ok else VerifyReason("signature_mismatch", ReasonCode.MISMATCH)


def verify_standard_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> tuple[bool, VerifyReason]:
    """Checks the Standard Webhooks headers (names case-insensitive): ``(True, "valid")`` or
    ``(False, reason)``, reasons as ``verify_webhook_signature``'s."""
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
