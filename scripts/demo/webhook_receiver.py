#!/usr/bin/env python3
"""A webhook receiver that verifies EZThrottle's Standard Webhooks signature and prints each
delivery (the README's tour uses it).

    python3 scripts/demo/webhook_receiver.py PORT SECRET [--once]     # SECRET: whsec_…

With --once it exits after the first verified delivery.

It verifies with the `standardwebhooks` package when it is installed (pip install
standardwebhooks), else with the same scheme in a few lines of hmac: the signed content is
"<webhook-id>.<webhook-timestamp>.<body>", keyed with the base64-decoded part after `whsec_`.
Answers 204 to a valid delivery and 401 to anything else (EZThrottle then retries).
"""
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(secret: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
    try:
        from standardwebhooks import Webhook  # type: ignore[import-not-found]
    except ImportError:
        msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
        if abs(time.time() - int(ts)) > 300:
            return False, "hmac (timestamp too old)"
        key = base64.b64decode(secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        ok = any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())
        return ok, "hmac"
    try:
        Webhook(secret).verify(body, headers)
        return True, "standardwebhooks"
    except Exception as e:  # noqa: BLE001 - any verification failure is a 401
        return False, f"standardwebhooks ({e})"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    secret = ""
    once = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        ok, how = verify(self.secret, body, headers)
        self.send_response(204 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        word = "verified" if ok else "REJECTED"
        print(f"webhook {word} by {how}: job {payload.get('job_id')} "
              f"status {payload.get('status')}", flush=True)
        if ok and Handler.once:
            threading.Thread(target=self.server.shutdown, daemon=True).start()

    def log_message(self, fmt: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--once"]
    if len(args) != 2:
        sys.exit("usage: webhook_receiver.py PORT SECRET [--once]")
    Handler.secret = args[1]
    Handler.once = "--once" in sys.argv[1:]
    ThreadingHTTPServer(("127.0.0.1", int(args[0])), Handler).serve_forever()
