#!/usr/bin/env python3
"""A tiny HTTP API to try EZThrottle against, on loopback (the README's tour uses it).

    python3 scripts/demo/target.py [PORT]        # default 9000

Every path answers 200 with a small JSON echo of the request, except:
  /flaky    answers 429 with `Retry-After: 2` to the first call of each distinct query string,
            then 200, so you can watch a job retry after the provider's pause;
  /fail     answers 500 (not retryable unless you list it in retry_codes).
Standard library only.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_seen: set[str] = set()
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        path, _, query = self.path.partition("?")
        status, extra = 200, {}
        if path == "/flaky":
            with _lock:
                first = query not in _seen
                _seen.add(query)
            if first:
                status, extra = 429, {"Retry-After": "2"}
        elif path == "/fail":
            status = 500
        out = json.dumps({"method": self.command, "path": self.path, "body": body}).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("demo target: " + (fmt % args) + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
