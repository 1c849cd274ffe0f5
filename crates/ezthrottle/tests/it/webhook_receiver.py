#!/usr/bin/env python3
"""A webhook receiver for the system tests, verifying with implementations independent of ours:
Python's hmac for X-EZThrottle-Signature and the `standardwebhooks` package for the Standard
Webhooks headers.

    webhook_receiver.py --secret S [--secret S2] [--port P] [--delay-from IP=MS ...]

Prints `PORT <n>` once listening, then one JSON line per request, as it arrives:
{"path", "delivery_id", "webhook_id", "job_id", "ezt_ok", "std_ok", "status", "signature",
"body", "from"} (`from`: the sender's address). Answers 200 when both schemes verify with one of
its secrets (or when it has no secret and the request is unsigned), else 401; a request from
an address given with --delay-from is answered that many milliseconds later.
"""
import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOLERANCE = 300


def verify_ezthrottle(header, body, secrets):
    try:
        parts = [p.split("=", 1) for p in header.split(",")]
        t = [v for k, v in parts if k == "t"][0]
        sigs = [v for k, v in parts if k == "v1"]
    except (ValueError, IndexError):
        return False
    if abs(time.time() - int(t)) > TOLERANCE:
        return False
    for s in secrets:
        want = hmac.new(s.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(want, sig) for sig in sigs):
            return True
    return False


def verify_standard(headers, body, secrets):
    for s in secrets:
        key = s if s.startswith("whsec_") else s.encode()
        try:
            Webhook(key).verify(body, headers)
            return True
        except WebhookVerificationError:
            pass
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-from", action="append", default=[])
    args = ap.parse_args()
    delays = {ip: int(ms) for ip, ms in (d.split("=", 1) for d in args.delay_from)}
    # Requests are handled on several threads; one line per request must stay whole (print()
    # writes the text and the newline separately, so concurrent lines could interleave).
    out_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            sig = headers.get("x-ezthrottle-signature")
            if args.secret:
                ezt_ok = sig is not None and verify_ezthrottle(sig, body, args.secret)
                std_ok = verify_standard(headers, body, args.secret)
                status = 200 if ezt_ok and std_ok else 401
            else:
                ezt_ok = std_ok = False
                status = 200 if sig is None and "webhook-signature" not in headers else 401
            line = {
                "path": self.path,
                "delivery_id": headers.get("x-ezthrottle-delivery-id"),
                "webhook_id": headers.get("webhook-id"),
                "job_id": headers.get("x-ezthrottle-job-id"),
                "ezt_ok": ezt_ok,
                "std_ok": std_ok,
                "status": status,
                "signature": sig,
                "body": body.decode(),
                "from": self.client_address[0],
            }
            with out_lock:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            delay = delays.get(self.client_address[0], 0)
            if delay:
                time.sleep(delay / 1000)
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender went away (a raced leg that lost)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"PORT {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
