"""Fixtures: the real ``ezthrottle`` binary (``EZTHROTTLE_BIN``, default
``<repo>/target/debug/ezthrottle``), a local mock target and webhook receivers, all on
127.0.0.1. Nothing is mocked inside the SDK and no outside host is contacted."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import tempfile
import time
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ezthrottle import EZThrottle

REPO = Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"listening on http://([0-9.]+:[0-9]+)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------------------- the server


@dataclass
class Server:
    url: str
    key: str
    data_dir: Path
    bin: Path
    log: Path

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.bin), *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            timeout=60,
        )
        assert out.returncode == 0, f"ezthrottle {args} failed: {out.stderr}"
        return out.stdout

    def new_tenant_key(self) -> str:
        """A key of a fresh tenant: tests that count jobs or own the (per-tenant) webhook secret
        see nothing of the others."""
        name = f"t{uuid.uuid4().hex[:12]}"
        self.cli("tenants", "create", name)
        return self.cli("keys", "create", "--tenant", name).strip()


def _binary() -> Path:
    path = Path(os.environ.get("EZTHROTTLE_BIN", REPO / "target" / "debug" / "ezthrottle"))
    if not path.is_file():
        pytest.exit(
            f"ezthrottle binary not found at {path}: build it (cargo build -p ezthrottle) "
            "or set EZTHROTTLE_BIN",
            returncode=2,
        )
    return path


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = _binary()
    with tempfile.TemporaryDirectory(prefix="ezt-py-") as tmp:
        data = Path(tmp)
        log = data / "server.log"
        out_path = data / "server.out"
        with open(out_path, "w") as out:
            proc = subprocess.Popen(
                [str(binary), "serve", "--listen", "127.0.0.1:0",
                 "--allow-cidr", "127.0.0.1/32", "--data-dir", str(data)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
        assert proc.stderr is not None
        stderr = proc.stderr
        found: queue.Queue[str | None] = queue.Queue()

        def drain() -> None:
            # Reads stderr line by line: the address is an event, not a sleep; the rest of the
            # log keeps flowing to a file so the pipe never fills.
            with open(log, "w") as f:
                announced = False
                for line in stderr:
                    f.write(line)
                    f.flush()
                    m = LISTENING.search(line)
                    if m and not announced:
                        announced = True
                        found.put(m.group(1))
            found.put(None)

        threading.Thread(target=drain, daemon=True).start()
        try:
            addr = found.get(timeout=30)
        except queue.Empty:
            addr = None
        if addr is None:
            proc.kill()
            pytest.exit(f"server did not start; log:\n{log.read_text()}", returncode=2)
        key = out_path.read_text().strip()
        try:
            yield Server(f"http://{addr}", key, data, binary, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def client(server: Server) -> Iterator[EZThrottle]:
    with EZThrottle(api_key=server.key, base_url=server.url) as c:
        yield c


@pytest.fixture
def tenant_client(server: Server) -> Iterator[EZThrottle]:
    """A client of a tenant of its own."""
    with EZThrottle(api_key=server.new_tenant_key(), base_url=server.url) as c:
        yield c


# ---------------------------------------------------------------------------- local HTTP servers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Target:
    """A mock upstream. Paths (after any ``/<test-id>`` prefix the tests use to stay apart):
    ``/ok`` 200 echo; ``/status/<code>`` that status (429/503 with ``Retry-After: 1``);
    ``/flaky/<n>/...`` 429 for the first n calls of that path, then 200;
    ``/capture`` 202 with a fake submit answer (to see the exact bytes a client sends)."""

    url: str
    seen: dict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    cond: threading.Condition = field(default_factory=threading.Condition)

    def unique(self, kind: str = "ok") -> str:
        return f"{self.url}/{uuid.uuid4().hex}/{kind}"

    def requests(self, url: str) -> list[Seen]:
        path = url.removeprefix(self.url)
        with self.cond:
            return list(self.seen[path])

    def await_requests(self, url: str, n: int, timeout: float = 30) -> list[Seen]:
        path = url.removeprefix(self.url)
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.seen[path]) >= n, timeout), (
                f"{path}: {len(self.seen[path])} requests, wanted {n}"
            )
            return list(self.seen[path])


class _Handler(BaseHTTPRequestHandler):
    """What the local servers share: keep-alive, no console noise, the request read once."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def read_request(self) -> tuple[dict[str, str], bytes]:
        """Lower-cased headers and the body."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return {k.lower(): v for k, v in self.headers.items()}, body


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    state: dict[str, Target] = {}

    class Handler(_Handler):
        def handle_any(self) -> None:
            headers_in, body = self.read_request()
            t = state["t"]
            seen = Seen(self.command, self.path, headers_in, body)
            with t.cond:
                t.seen[self.path].append(seen)
                count = len(t.seen[self.path])
                t.cond.notify_all()
            status, headers, out = 200, {"Content-Type": "application/json"}, b""
            m = re.search(r"/status/(\d{3})", self.path)
            f = re.search(r"/flaky/(\d+)(?:/|$)", self.path)
            if m:
                status = int(m.group(1))
                if status in (429, 503):
                    headers["Retry-After"] = "1"
                out = json.dumps({"status": status}).encode()
            elif f and count <= int(f.group(1)):
                status, headers["Retry-After"] = 429, "1"
                out = b'{"error":"slow down"}'
            elif self.path.endswith("/capture/api/v1/jobs"):
                status = 202
                out = b'{"job_id":"job_captured","status":"queued","idempotent_key":"k"}'
            else:
                out = json.dumps({
                    "method": self.command,
                    "path": self.path,
                    "body": body.decode(),
                    "x_test": headers_in.get("x-test"),
                }).encode()  # fmt: skip
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

    httpd, url = _serve(Handler)
    state["t"] = Target(url)
    yield state["t"]
    httpd.shutdown()


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    #: What the receiver's verifier said, per configured secret pair.
    verdicts: Sequence[tuple[bool, str]]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    deliveries: queue.Queue[Delivery]
    #: (primary, secondary) pairs the receiver verifies every delivery with.
    secrets: list[tuple[str, str | None]]

    def next(self, timeout: float = 30) -> Delivery:
        try:
            return self.deliveries.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no webhook delivery within {timeout}s") from None


@pytest.fixture
def receiver() -> Iterator[Callable[[list[tuple[str, str | None]]], Receiver]]:
    """Starts webhook receivers that verify with the SDK's ``try_verify_with_secrets`` and answer
    200 (so the server does not retry; the verdicts are what the tests look at)."""
    from ezthrottle import try_verify_with_secrets

    servers: list[ThreadingHTTPServer] = []

    def start(secrets: list[tuple[str, str | None]]) -> Receiver:
        box: dict[str, Receiver] = {}

        class Handler(_Handler):
            def do_POST(self) -> None:
                headers, body = self.read_request()
                r = box["r"]
                sig = headers.get("x-ezthrottle-signature", "")
                verdicts = [try_verify_with_secrets(body, sig, p, s) for p, s in r.secrets]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                r.deliveries.put(Delivery(headers, body, verdicts))

        httpd, url = _serve(Handler)
        servers.append(httpd)
        box["r"] = Receiver(url + "/hook", queue.Queue(), secrets)
        return box["r"]

    yield start
    for s in servers:
        s.shutdown()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


#: A week from now, in ms: a delayed job that will not run during the tests.
FAR_FUTURE_MS = int(time.time() * 1000) + 7 * 86_400_000
