#!/usr/bin/env python3
"""Submit overhead of the Python SDK: N submits through ``EZThrottle.submit_job`` and N through a bare
``httpx.Client.post`` of the same request (one shared keep-alive connection each), interleaved
(SDK, raw, SDK, …) against one server in the same run, after a warm-up. Jobs (to a loopback URL, so
no DNS lookup) are delayed an hour (``retry_at``) and keyed uniquely, so the server stores them
without running them and neither side deduplicates. Prints one JSON object.

    python3 bench/sdk-overhead/python.py [N]        # default 1000

The server: EZTHROTTLE_URL + EZTHROTTLE_API_KEY if set, else it starts $EZTHROTTLE_BIN (default
target/debug/ezthrottle) on a temporary data dir and stops it after.
"""
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "sdks" / "python"))
from ezthrottle import EZThrottle  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WARMUP = 50


def start_server():
    binary = Path(os.environ.get("EZTHROTTLE_BIN", REPO / "target" / "debug" / "ezthrottle")).resolve()
    data = tempfile.mkdtemp(prefix="ezt-bench-py-")
    p = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", "--allow-cidr", "127.0.0.1/32",
                          "--data-dir", data], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NO_COLOR": "1"})
    key = p.stdout.readline().strip()
    deadline = time.time() + 60
    while time.time() < deadline:
        line = p.stderr.readline()
        m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", line)
        if m:
            break
        if not line and p.poll() is not None:
            raise SystemExit(f"server exited {p.returncode}")
    else:
        raise SystemExit("server did not start")

    def stop():
        p.terminate()
        p.wait(30)
        shutil.rmtree(data, ignore_errors=True)

    return m.group(1), key, str(binary), stop


def stats(samples):
    s = sorted(samples)
    return {"n": len(s), "median_ms": round(statistics.median(s), 3),
            "p99_ms": round(s[min(len(s) - 1, int(0.99 * len(s)))], 3), "mean_ms": round(statistics.fmean(s), 3)}


def main():
    if os.environ.get("EZTHROTTLE_URL") and os.environ.get("EZTHROTTLE_API_KEY"):
        url, key, binary, stop = os.environ["EZTHROTTLE_URL"].rstrip("/"), os.environ["EZTHROTTLE_API_KEY"], None, lambda: None
    else:
        url, key, binary, stop = start_server()
    try:
        client = EZThrottle(api_key=key, base_url=url)
        raw = httpx.Client()
        run = secrets.token_hex(4)
        retry_at = int(time.time() * 1000) + 3_600_000

        def target(side, i):
            return f"http://127.0.0.1:9/submit?side={side}&i={i}&run={run}"

        def via_sdk(i):
            t = time.perf_counter()
            a = client.submit_job(target("sdk", i), "POST", body='{"amount": 1000}', retry_at=retry_at,
                                  idempotent_key=f"{run}-sdk-{i}")
            dt = (time.perf_counter() - t) * 1000
            assert a["job_id"]
            return dt

        def via_raw(i):
            t = time.perf_counter()
            r = raw.post(f"{url}/api/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                         json={"url": target("raw", i), "method": "POST", "body": '{"amount": 1000}',
                               "retry_at": retry_at, "idempotent_key": f"{run}-raw-{i}"})
            a = r.json()
            dt = (time.perf_counter() - t) * 1000
            assert r.status_code == 202 and a["job_id"], r.text
            return dt

        for i in range(WARMUP):
            via_sdk(-1 - i)
            via_raw(-1 - i)
        sdk, rawt = [], []
        for i in range(N):
            sdk.append(via_sdk(i))
            rawt.append(via_raw(i))
        s, r = stats(sdk), stats(rawt)
        import ezthrottle
        print(json.dumps({
            "bench": "sdk-overhead", "sdk": "python", "python": sys.version.split()[0],
            "httpx": httpx.__version__, "sdk_file": ezthrottle.__file__, "server_binary": binary,
            "submits_per_side": N, "warmup_per_side": WARMUP, "sdk_submit": s, "raw_httpx_submit": r,
            "overhead_median_ms": round(s["median_ms"] - r["median_ms"], 3),
            "overhead_p99_ms": round(s["p99_ms"] - r["p99_ms"], 3),
        }, indent=2))
    finally:
        stop()


if __name__ == "__main__":
    main()
