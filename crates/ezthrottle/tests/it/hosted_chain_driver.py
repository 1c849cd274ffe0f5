#!/usr/bin/env python3
"""Builds a fallback + on-success chain with the hosted service's own Python package, unmodified
(PyPI `ezthrottle==1.3.0`, put on PYTHONPATH by the test), and submits it to our server through
that package's envelope (`POST /api/v1/proxy`):

    EZT_URL=http://127.0.0.1:PORT EZT_KEY=ezt_live_… PRIMARY=…/boom RESCUE=…/rescue \
    AFTER=…/after hosted_chain_driver.py

Prints one JSON object: what `execute()` returned, the payload the package built, and the webhook
the chain's root job delivered to a receiver started here.
"""
import json
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ezthrottle
from ezthrottle import EZThrottle, Step, StepType

assert "hosted-sdk" in ezthrottle.__file__, ezthrottle.__file__

deliveries: "queue.Queue[bytes]" = queue.Queue()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        deliveries.put(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    client = EZThrottle(api_key=os.environ["EZT_KEY"], tracktags_url=os.environ["EZT_URL"])
    step = (
        Step(client)
        .url(os.environ["PRIMARY"])
        .method("POST")
        .body('{"order": 42}')
        .type(StepType.PERFORMANCE)
        .webhooks([{"url": hook, "has_quorum_vote": True}])
        .idempotent_key("hosted-chain-42")
        .fallback(Step().url(os.environ["RESCUE"]).method("POST"), trigger_on_error=[500, 502, 503])
        .on_success(Step().url(os.environ["AFTER"]).method("POST").body('{"next": true}'))
    )
    out = {"payload": step._build_job_payload(), "result": step.execute()}
    out["webhook"] = json.loads(deliveries.get(timeout=30))
    print(json.dumps(out))


main()
