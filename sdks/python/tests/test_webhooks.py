"""Signatures: every case of the shared vectors file, both schemes, plus the secret lifecycle end
to end (create, rotate, finish, delete) with a real receiver verifying each delivery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import REPO, Receiver, Target
from standardwebhooks.webhooks import Webhook as ReferenceWebhook

from ezthrottle import (
    EZThrottle,
    NotFoundError,
    ReasonCode,
    VerifyReason,
    WebhookVerificationError,
    sign_standard_webhook,
    sign_webhook,
    try_verify_with_secrets,
    verify_standard_webhook,
    verify_standard_webhook_strict,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)
from ezthrottle.webhook_utils import verify_webhook_signature as hosted_path_verify

VECTORS: dict[str, Any] = json.loads(
    (Path(REPO) / "testdata" / "webhook-signatures.json").read_text(encoding="utf-8")
)


def _std_headers(msg_id: str, ts: int, sig: str) -> dict[str, str]:
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": sig}


@pytest.mark.parametrize("case", VECTORS["sign"], ids=lambda c: c["name"])
def test_sign_vectors(case: dict[str, Any]) -> None:
    body, ts, secrets = case["body"], case["timestamp"], case["secrets"]
    assert sign_webhook(body.encode(), secrets, ts) == case["ezthrottle_signature"]
    assert sign_standard_webhook(body, secrets, case["msg_id"], ts) == case["webhook_signature"]
    headers = _std_headers(case["msg_id"], ts, case["webhook_signature"])
    for s in secrets:  # each active secret verifies alone, in both schemes
        assert verify_webhook_signature(
            body.encode(), case["ezthrottle_signature"], s, now=ts
        ) == (True, "valid")
        assert verify_standard_webhook(body.encode(), headers, s, now=ts) == (True, "valid")
    primary = secrets[0]
    assert try_verify_with_secrets(body, case["ezthrottle_signature"], primary, now=ts) == (
        True,
        "valid_primary",
    )
    # A receiver whose primary is some other secret still accepts through its secondary.
    other = "not-the-secret-000000"
    got = try_verify_with_secrets(body, case["ezthrottle_signature"], other, secrets[-1], now=ts)
    assert got == (True, "valid_secondary")


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: f"{c['scheme']}: {c['name']}")
def test_verify_vectors(case: dict[str, Any]) -> None:
    body = case["body"].encode()
    # The vectors hold the structured codes; the text is the hosted one (verify-vectors.json).
    want = (True, "valid") if case["valid"] else (False, case["reason"])
    tolerance = VECTORS["tolerance_s"]
    for secret in case["secrets"]:
        if case["scheme"] == "ezthrottle":
            got = verify_webhook_signature(body, case["header"], secret, tolerance, now=case["now"])
            assert hosted_path_verify(body, case["header"], secret, now=case["now"]) == got
        else:
            headers = _std_headers(case["msg_id"], case["timestamp"], case["header"])
            got = verify_standard_webhook(body, headers, secret, tolerance, now=case["now"])
        assert (got[0], got[1].code) == want


@pytest.mark.parametrize(
    "case", [c for c in VECTORS["verify"] if c["scheme"] == "standard"], ids=lambda c: c["name"]
)
def test_standard_vectors_agree_with_the_reference_library(
    case: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The standardwebhooks package reads the clock itself; pin it to the case's "now".
    import standardwebhooks.webhooks as ref
    from datetime import datetime, timezone

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> "Frozen":
            return cls.fromtimestamp(case["now"], tz or timezone.utc)

    monkeypatch.setattr(ref, "datetime", Frozen)
    secret = case["secrets"][0]
    headers = {
        "webhook-id": case["msg_id"],
        "webhook-timestamp": str(case["timestamp"]),
        "webhook-signature": case["header"],
    }
    key = secret if secret.startswith("whsec_") else secret.encode()
    try:
        ReferenceWebhook(key).verify(case["body"], headers)
        reference_ok = True
    except Exception:
        reference_ok = False
    ours, _ = verify_standard_webhook(case["body"], headers, secret, now=case["now"])
    assert ours == reference_ok == case["valid"]


def test_hostile_signature_headers_are_refused_not_raised() -> None:
    # Headers are attacker-controlled: a non-ASCII or junk v1 is a mismatch, never an exception.
    case = next(c for c in VECTORS["verify"] if c["scheme"] == "ezthrottle" and c["valid"])
    t = case["header"].split(",")[0]
    for junk in ("v1=caf\u00e9", "v1=\udcff", "v1=" + "\u6771" * 64):
        ok, reason = verify_webhook_signature(
            case["body"], f"{t},{junk}", case["secrets"][0], now=case["now"]
        )
        assert (ok, reason, reason.code) == (False, "signature_mismatch", "mismatch"), junk


def test_strict_variants_raise_with_the_reason() -> None:
    case = next(c for c in VECTORS["verify"] if c["reason"] == "too_old")
    with pytest.raises(WebhookVerificationError) as e:
        verify_webhook_signature_strict(
            case["body"], case["header"], case["secrets"][0], now=case["now"]
        )
    assert e.value.code == ReasonCode.TOO_OLD == "too_old"
    assert e.value.reason == "timestamp_expired (diff=301s, tolerance=300s)"
    assert str(e.value) == (
        "Webhook signature verification failed: timestamp_expired (diff=301s, tolerance=300s)"
    )
    std = next(c for c in VECTORS["verify"] if c["scheme"] == "standard" and c["valid"])
    verify_standard_webhook_strict(
        std["body"],
        _std_headers(std["msg_id"], std["timestamp"], std["header"]),
        std["secrets"][0],
        now=std["now"],
    )
    with pytest.raises(WebhookVerificationError) as e2:
        verify_standard_webhook_strict(std["body"], {}, std["secrets"][0], now=std["now"])
    assert (e2.value.reason, e2.value.code) == ("no_signature_header", "no_signature")


def test_secret_rotation_end_to_end(
    server: Any,
    target: Target,
    receiver: Callable[[list[tuple[str, str | None]]], Receiver],
) -> None:
    old, new = "old-secret-0123456789", "new-secret-9876543210"
    # The receiver checks each delivery as two deployments would: one not yet switched (old
    # secret only), one switched (new primary, old kept as secondary).
    r = receiver([(old, None), (new, old)])
    with EZThrottle(api_key=server.new_tenant_key(), base_url=server.url) as c:
        with pytest.raises(NotFoundError):
            c.get_webhook_secret()
        created = c.create_webhook_secret(old)
        assert created["primary_secret"] == "****6789" and not created["has_secondary"]

        def deliver() -> tuple[list[str], Any]:
            job_id = c.submit_job(target.unique(), webhooks=[{"url": r.url}])["job_id"]
            d = r.next()
            assert d.json()["job_id"] == job_id
            sig = d.headers.get("x-ezthrottle-signature", "")
            v1s = [p for p in sig.split(",") if p.startswith("v1=")]
            return v1s, d

        v1s, d = deliver()
        assert len(v1s) == 1
        assert d.verdicts == [(True, "valid_primary"), (True, "valid_secondary")]

        rotated = c.rotate_webhook_secret(new)
        assert rotated["has_secondary"] and rotated["primary_secret"] == "****3210"
        assert rotated["secondary_secret"] == "****6789"
        assert c.get_webhook_secret() == rotated

        v1s, d = deliver()
        assert len(v1s) == 2  # primary then secondary
        assert d.verdicts == [(True, "valid_primary"), (True, "valid_primary")]
        sig = d.headers["x-ezthrottle-signature"]
        assert verify_webhook_signature(d.body, sig, new)[0]
        assert verify_webhook_signature(d.body, sig, old)[0]
        std_sigs = d.headers["webhook-signature"].split(" ")
        assert len(std_sigs) == 2
        for s in (new, old):
            assert verify_standard_webhook(d.body, d.headers, s) == (True, "valid")

        # Finishing the rotation drops the old secret: not-yet-switched receivers now refuse.
        c.create_webhook_secret(new)
        v1s, d = deliver()
        assert len(v1s) == 1
        assert d.verdicts == [
            (False, "both_secrets_failed (primary: signature_mismatch)"),
            (True, "valid_primary"),
        ]
        assert d.verdicts[0][1].code == ReasonCode.MISMATCH

        assert c.delete_webhook_secret() == {"deleted": True}
        v1s, d = deliver()
        assert "x-ezthrottle-signature" not in d.headers
        unsigned = (False, "both_secrets_failed (primary: no_signature_header)")
        assert d.verdicts == [unsigned, unsigned]


VERIFY_VECTORS: dict[str, Any] = json.loads(
    (Path(REPO) / "testdata" / "sdk-cases" / "verify-vectors.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("v", VERIFY_VECTORS["vectors"], ids=lambda v: f"{v['fn']}: {v['name']}")
def test_hosted_reason_vectors(v: dict[str, Any]) -> None:
    """The shared vectors of the hosted-named verifiers: the hosted text exactly, and the code."""
    if v["fn"] == "verify_webhook_signature":
        tolerance = v.get("tolerance", VERIFY_VECTORS["default_tolerance_s"])
        ok, reason = verify_webhook_signature(
            v["body"].encode(), v["header"], v["secret"], tolerance, now=v["now"]
        )
        # The hosted module path gives the same answer.
        assert hosted_path_verify(v["body"], v["header"], v["secret"], tolerance, now=v["now"]) == (
            ok,
            reason,
        )
    else:
        assert v["fn"] == "try_verify_with_secrets", v["fn"]
        ok, reason = try_verify_with_secrets(
            v["body"], v["header"], v["primary_secret"], v["secondary_secret"], now=v["now"]
        )
    assert isinstance(reason, VerifyReason)
    assert ok is v["valid"]
    if "reason" in v:
        assert reason == v["reason"]
    else:
        assert reason.startswith(v["reason_prefix"]) and len(reason) > len(v["reason_prefix"])
    assert reason.code == v["code"]


def test_reasons_are_plain_strings_to_hosted_code() -> None:
    ok, reason = verify_webhook_signature(b"{}", "", "secret-000000000000")
    assert (ok, reason) == (False, "no_signature_header")
    assert f"Invalid signature: {reason}" == "Invalid signature: no_signature_header"
    assert json.dumps({"reason": reason}) == '{"reason": "no_signature_header"}'
    assert reason.code is ReasonCode.NO_SIGNATURE
