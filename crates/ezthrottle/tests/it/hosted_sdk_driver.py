#!/usr/bin/env python3
"""Drives the hosted service's own Python package, unmodified (PyPI `ezthrottle==1.3.0`, installed
by scripts/test-deps.sh into target/hosted-sdk and put on PYTHONPATH by the test), against our
server: its proxy URL (`tracktags_url`) points at us and everything else is left at its defaults,
so every call travels as the envelope that package builds to `POST /api/v1/proxy`.

    EZT_URL=http://127.0.0.1:PORT EZT_KEY=ezt_live_… TARGET=http://127.0.0.1:T/ok \
    TARGET_429=http://127.0.0.1:T/busy hosted_sdk_driver.py

Webhook deliveries go to a receiver started here, which checks them with the hosted package's
own verifiers. Prints one JSON object with what each call returned; the Rust test asserts on it
and on the jobs the server stored.
"""
import json
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ezthrottle
from ezthrottle import (
    EZThrottle,
    EZThrottleError,
    ForwardToEZThrottle,
    Step,
    StepType,
    auto_forward,
    try_verify_with_secrets,
    verify_webhook_signature,
)

assert "site-packages" not in ezthrottle.__file__ or "hosted-sdk" in ezthrottle.__file__, (
    f"expected the hosted package from target/hosted-sdk, got {ezthrottle.__file__}"
)

S1 = "hosted-primary-secret-0001"
S2 = "hosted-rotated-secret-0002"
S3 = "hosted-third-secret-000003"
deliveries: "queue.Queue[tuple[bytes, str]]" = queue.Queue()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        deliveries.put((body, self.headers.get("X-EZThrottle-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    url, key = os.environ["EZT_URL"], os.environ["EZT_KEY"]
    target, busy = os.environ["TARGET"], os.environ["TARGET_429"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    client = EZThrottle(api_key=key, tracktags_url=url)
    out: dict[str, object] = {"module": ezthrottle.__file__}

    def delivered(job_id: str) -> tuple[bytes, str]:
        body, sig = deliveries.get(timeout=20)
        assert json.loads(body)["job_id"] == job_id, body
        return body, sig

    out["create_secret"] = client.create_webhook_secret(S1)
    out["get_secret"] = client.get_webhook_secret()

    job = dict(
        url=target,
        method="POST",
        headers={"Content-Type": "application/json", "X-Trace": "abc"},
        body='{"amount": 1000}',
        metadata={"order": "42"},
        webhooks=[{"url": hook, "has_quorum_vote": True}],
        retry_policy={"max_retries": 5, "retry_codes": [429, 503]},
        idempotent_key="hosted-order-42",
    )
    first = client.submit_job(**job)
    out["submit"] = first
    out["duplicate"] = client.submit_job(**job)
    # Regions in race mode (the package's default mode): the hosted test-app asserts "racing".
    out["racing"] = client.submit_job(
        url=target, method="POST", body="racing", regions=["us-east-1", "eu-west-1"]
    )
    body, sig = delivered(first["job_id"])
    out["verify_s1"] = verify_webhook_signature(body, sig, S1)
    out["verify_wrong"] = verify_webhook_signature(body, sig, S2)

    # The package's rotate reads the (masked) secret back, cannot reuse it, and so replaces it.
    out["rotate"] = client.rotate_webhook_secret(S2)
    second = client.queue_request(url=target, webhook_url=hook, metadata={"order": "43"})
    out["queue_request"] = second
    body, sig = delivered(second["job_id"])
    out["after_rotate_s2"] = verify_webhook_signature(body, sig, S2)
    out["after_rotate_s1"] = verify_webhook_signature(body, sig, S1)

    # Two active secrets: the header carries two v1= entries.
    client.create_webhook_secret(S3, secondary_secret=S2)
    # (A distinct body: with the default HASH strategy the same GET would be a duplicate.)
    third = client.submit_job(
        url=target, method="POST", body="44", metadata={"order": "44"}, webhooks=[{"url": hook}]
    )
    body, sig = delivered(third["job_id"])
    out["two_secrets_header_v1s"] = sig.count("v1=")
    out["two_secrets_try"] = try_verify_with_secrets(body, sig, S3, S2)

    out["delete_secret"] = client.delete_webhook_secret()
    try:
        client.get_webhook_secret()
        out["get_after_delete"] = "no error"
    except EZThrottleError as e:
        out["get_after_delete"] = str(e)

    try:
        client.submit_job(url=target, retry_policy={"max_retries": 1000})
        out["bad_field"] = "no error"
    except EZThrottleError as e:
        out["bad_field"] = str(e)

    out["step"] = (
        Step(client)
        .url(target)
        .method("PUT")
        .body("step-body")
        .metadata({"via": "step"})
        .type(StepType.PERFORMANCE)
        .execute()
    )
    # FRUGAL: the package calls the target itself first and forwards the 429 to us.
    out["frugal"] = (
        Step(client).url(busy).type(StepType.FRUGAL).fallback_on_error([429]).execute()
    )

    @auto_forward(client)
    def charge(order: str) -> object:
        raise ForwardToEZThrottle(url=target, method="POST", body=order, metadata={"order": order})

    out["auto_forward"] = charge("45")
    print(json.dumps(out))
    server.shutdown()


if __name__ == "__main__":
    main()
