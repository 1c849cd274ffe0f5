#!/usr/bin/env bash
# Runs the README's tour exactly as written (the ```sh block between the tour markers), as a
# newcomer would paste it at the repository root, then checks what it printed. Only the data dir
# is redirected (EZTHROTTLE_DATA_DIR), so a developer's own ./ezthrottle-data is never touched.
# Needs ports 8080, 9000 and 9001 free. Part of scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
for port in 8080 9000 9001; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "test-readme-tour: port $port is busy; the tour needs it free" >&2
    exit 1
  fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - README.md >"$work/tour.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
tour = text.split("<!-- tour:begin -->", 1)[1].split("<!-- tour:end -->", 1)[0]
blocks = re.findall(r"```sh\n(.*?)```", tour, re.S)
assert blocks, "no sh block between the tour markers"
print("\n".join(blocks))
PY
echo "test-readme-tour: running $(grep -cv '^\s*\(#\|$\)' "$work/tour.sh") lines of the README tour"
EZTHROTTLE_DATA_DIR="$work/data" timeout 300 bash -e "$work/tour.sh" >"$work/out.txt" 2>&1 || {
  echo "test-readme-tour: the tour failed (exit $?); it printed:" >&2
  cat "$work/out.txt" >&2
  exit 1
}
# The tour's last line stops the server; it must exit cleanly and release the port.
timeout 30 sh -c 'while (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; do sleep 0.1; done' || {
  echo "test-readme-tour: the server still listens after the tour's kill" >&2
  exit 1
}
python3 - "$work/out.txt" <<'PY'
import json, re, sys
out = open(sys.argv[1]).read()
def fail(msg):
    sys.exit(f"test-readme-tour: {msg}\n--- the tour printed ---\n{out}")
docs = []
for line in out.splitlines():
    if line.startswith("{"):
        try:
            docs.append(json.loads(line))
        except ValueError as e:
            fail(f"a JSON line does not parse ({e}): {line[:200]}")
job_ids = re.findall(r"^(job_\w+)$", out, re.M)
if len(job_ids) != 1:
    fail("step 4 should print one job id")
views = [d for d in docs if "state" in d]
if len(views) != 4:
    fail(f"expected 4 job views (steps 5, 5, 6, 7), got {len(views)}")
waited, viewed, step6, step7 = views
for name, v in [("step 5 /wait", waited), ("step 5 view", viewed), ("step 6", step6), ("step 7", step7)]:
    if v["state"] != "succeeded":
        fail(f"{name}: job is {v['state']}, expected succeeded")
if waited["job_id"] != job_ids[0] or waited["metadata"] != {"order": "42"}:
    fail("step 5 shows another job or lost its metadata")
if "step 6" not in step6["response"]["body"]:
    fail("step 6's response does not echo its body")
first = step7["attempts"][0]
if first.get("status_code") != 429 or first.get("decision") != "retry" or not first.get("wait_ms"):
    fail(f"step 7's first attempt should be a 429 retried after a wait: {first}")
if "event: succeeded" not in out:
    fail("step 5's event stream did not end with the final event")
if not re.search(r"^webhook verified by standardwebhooks: job job_\w+ status success$", out, re.M):
    fail("the webhook receiver did not print a delivery verified by the standardwebhooks package")
secret = [d for d in docs if "primary_secret" in d or "secret" in json.dumps(d)]
if not secret:
    fail("step 8 did not answer the secret creation")
print("test-readme-tour: ok (every step printed what the README says)")
PY
