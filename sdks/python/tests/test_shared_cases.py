"""The shared SDK case suite (``testdata/sdk-cases/cases.json``, format in its README), run with
both the sync and the async client against the real binary and ``scripts/demo/target.py``.

Every op maps to this SDK's own public call; only ``raw`` uses the clients' transport directly
(``_send``), as the format asks. An unknown op, placeholder or ``expect`` key fails the case.
At the end one line per case is printed (``shared case ok|FAIL <client> <name>``).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from conftest import REPO, Server

from ezthrottle import (
    AsyncEZThrottle,
    EZThrottle,
    EZThrottleError,
    IdempotentStrategy,
    JobPayload,
    Step,
    StepType,
)
from ezthrottle import _transport as _t

CASES_FILE = Path(REPO) / "testdata" / "sdk-cases" / "cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text(encoding="utf-8"))["cases"]
KINDS = ("sync", "async")
EXPECT_KEYS = {"ok", "error", "json", "status"}
STEP_KEYS = {"op", "args", "expect", "save", "client"}
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")

#: (client kind, case name, "ok" or the failure), printed when the module ends.
REPORT: list[tuple[str, str, str]] = []


class CaseFailure(AssertionError):
    pass


# ---------------------------------------------------------------------------- the demo target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def demo_target() -> Iterator[str]:
    """``scripts/demo/target.py`` on a free port, as every SDK's runner starts it."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(REPO) / "scripts" / "demo" / "target.py"), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:  # polling the port: the script announces nothing
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"demo target did not start on port {port}")
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def suite_key(server: Server) -> str:
    """A tenant of the suite's own, so the other tests' jobs never share its lanes."""
    return server.new_tenant_key()


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        tr.write_line("")
        for kind, name, outcome in REPORT:
            line = "ok" if outcome == "ok" else f"FAIL: {outcome.splitlines()[0]}"
            tr.write_line(f"shared case {kind} {name}: {line}")


# ---------------------------------------------------------------------------- placeholders


@dataclass
class Vars:
    target: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    saved: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        if name == "target":
            return self.target
        if name == "run":
            return self.run
        m = re.fullmatch(r"now_ms(?:\+(\d+))?", name)
        if m:
            return int(time.time() * 1000) + int(m.group(1) or 0)
        if name in self.saved:
            return self.saved[name]
        raise CaseFailure(f"unknown placeholder ${{{name}}}")

    def subst(self, v: Any) -> Any:
        if isinstance(v, str):
            whole = PLACEHOLDER.fullmatch(v)
            if whole:
                val = self.value(whole.group(1))
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    return val
            return PLACEHOLDER.sub(lambda m: str(self.value(m.group(1))), v)
        if isinstance(v, dict):
            return {k: self.subst(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.subst(x) for x in v]
        return v


def dig(result: Any, path: str) -> Any:
    cur = result
    for seg in path.split("."):
        if isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        elif isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
        else:
            raise CaseFailure(f"save: no {path!r} in {json.dumps(result)[:300]}")
    return cur


# ---------------------------------------------------------------------------- matching


def mismatches(exp: Any, act: Any, path: str = "$") -> list[str]:
    """Subset match: listed keys recursively, arrays element-wise with equal length."""
    if isinstance(exp, str) and exp.startswith("<") and exp.endswith(">"):
        if exp == "<any>":
            return []
        if exp == "<string>":
            return [] if isinstance(act, str) else [f"{path}: want a string, got {act!r}"]
        if exp == "<number>":
            ok = isinstance(act, (int, float)) and not isinstance(act, bool)
            return [] if ok else [f"{path}: want a number, got {act!r}"]
        if exp.startswith("<prefix:"):
            prefix = exp[len("<prefix:") : -1]
            ok = isinstance(act, str) and act.startswith(prefix)
            return [] if ok else [f"{path}: want a string starting {prefix!r}, got {act!r}"]
    if isinstance(exp, dict):
        if not isinstance(act, dict):
            return [f"{path}: want an object, got {act!r}"]
        out: list[str] = []
        for k, v in exp.items():
            if k not in act:
                out.append(f"{path}.{k}: missing")
            else:
                out += mismatches(v, act[k], f"{path}.{k}")
        return out
    if isinstance(exp, list):
        if not isinstance(act, list) or len(act) != len(exp):
            return [f"{path}: want {len(exp)} elements, got {act!r}"]
        out = []
        for i, (e, a) in enumerate(zip(exp, act)):
            out += mismatches(e, a, f"{path}[{i}]")
        return out
    if isinstance(exp, bool) or isinstance(act, bool) or exp is None:
        return [] if exp is act else [f"{path}: want {exp!r}, got {act!r}"]
    return [] if exp == act else [f"{path}: want {exp!r}, got {act!r}"]


# ---------------------------------------------------------------------------- ops

Outcome = tuple[Any, int | None]  # (result, HTTP status where the op has one)

JOB_ARGS = set(JobPayload.__annotations__) | {"wait"}
HOSTED_ARGS = {"url", "method", "headers", "body", "metadata", "type", "idempotent_strategy",
               "idempotent_key", "webhooks", "regions", "fallback_on_error"}  # fmt: skip


def _only(op: str, args: dict[str, Any], allowed: set[str]) -> None:
    extra = set(args) - allowed
    if extra:
        raise CaseFailure(f"{op}: unknown args {sorted(extra)}")


def _job(args: dict[str, Any]) -> tuple[str, str, Any, dict[str, Any]]:
    _only("submit", args, JOB_ARGS)
    opts = dict(args)
    url = opts.pop("url")
    method = opts.pop("method", "GET")
    wait = opts.pop("wait", None)
    return url, method, wait, opts


def _step(args: dict[str, Any], client: EZThrottle | AsyncEZThrottle) -> Step:
    _only("hosted_step", args, HOSTED_ARGS)
    s = Step(client).url(args["url"]).type(StepType(args["type"]))
    if "method" in args:
        s.method(args["method"])
    if "headers" in args:
        s.headers(args["headers"])
    if "body" in args:
        s.body(args["body"])
    if "metadata" in args:
        s.metadata(args["metadata"])
    if "idempotent_strategy" in args:
        s.idempotent_strategy(IdempotentStrategy(args["idempotent_strategy"]))
    if "idempotent_key" in args:
        s.idempotent_key(args["idempotent_key"])
    if "webhooks" in args:
        s.webhooks(args["webhooks"])
    if "regions" in args:
        s.regions(args["regions"])
    if "fallback_on_error" in args:
        s.fallback_on_error(args["fallback_on_error"])
    return s


def _raw_call(args: dict[str, Any]) -> _t.Call:
    _only("raw", args, {"method", "path", "headers", "body"})
    body = args.get("body")
    return _t.Call(
        args["method"].upper(),
        args["path"],
        json=body if isinstance(body, (dict, list)) else None,
        content=body if isinstance(body, str) else None,
        headers=args.get("headers") or {},
    )


def _raw_result(resp: httpx.Response) -> Outcome:
    try:
        body: Any = resp.json()
    except ValueError:
        body = None
    return {"status": resp.status_code, "json": body}, resp.status_code


class ForwardedStatus:
    """Records the status inside each envelope answer (the hosted-mode client's http hook)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    def sync_hook(self, resp: httpx.Response) -> None:
        if resp.request.url.path == "/api/v1/proxy":
            resp.read()
            self._record(resp)

    async def async_hook(self, resp: httpx.Response) -> None:
        if resp.request.url.path == "/api/v1/proxy":
            await resp.aread()
            self._record(resp)

    def _record(self, resp: httpx.Response) -> None:
        if resp.is_success:
            self.statuses.append(int(resp.json()["forwarded_response"]["status_code"]))

    def last(self) -> int | None:
        return self.statuses[-1] if self.statuses else None


def _events(names: list[str]) -> dict[str, list[str]]:
    return {"events": [n for n in names if n != "position"]}


def run_sync(op: str, args: dict[str, Any], c: EZThrottle, server: Server, key: str) -> Outcome:
    if op == "submit":
        url, method, wait, opts = _job(args)
        if wait is None:
            return c.submit_job(url, method, **opts), None
        return c.submit_job(url, method, wait=wait, **opts), None
    if op == "get":
        _only(op, args, {"job_id"})
        return c.get_job(args["job_id"]), None
    if op == "wait":
        _only(op, args, {"job_id", "timeout_s"})
        return c.wait(args["job_id"], timeout=args["timeout_s"]), None
    if op == "cancel":
        _only(op, args, {"job_id"})
        return c.cancel(args["job_id"]), None
    if op == "retry":
        _only(op, args, {"job_id"})
        return c.retry(args["job_id"]), None
    if op == "batch":
        _only(op, args, {"jobs"})
        return {"results": c.submit_batch(args["jobs"])}, None
    if op == "events":
        _only(op, args, {"job_id"})
        return _events([e.event for e in c.events(args["job_id"])]), None
    if op == "hosted_step":
        seen = ForwardedStatus()
        http = httpx.Client(event_hooks={"response": [seen.sync_hook]})
        with EZThrottle(api_key=key, tracktags_url=server.url, http_client=http) as hosted:
            try:
                return _step(args, hosted).execute(), seen.last()
            finally:
                http.close()
    if op == "raw":
        return _raw_result(c._send(_raw_call(args)))
    raise CaseFailure(f"unknown op {op!r}")


async def run_async(
    op: str, args: dict[str, Any], c: AsyncEZThrottle, server: Server, key: str
) -> Outcome:
    if op == "submit":
        url, method, wait, opts = _job(args)
        if wait is None:
            return await c.submit_job(url, method, **opts), None
        return await c.submit_job(url, method, wait=wait, **opts), None
    if op == "get":
        _only(op, args, {"job_id"})
        return await c.get_job(args["job_id"]), None
    if op == "wait":
        _only(op, args, {"job_id", "timeout_s"})
        return await c.wait(args["job_id"], timeout=args["timeout_s"]), None
    if op == "cancel":
        _only(op, args, {"job_id"})
        return await c.cancel(args["job_id"]), None
    if op == "retry":
        _only(op, args, {"job_id"})
        return await c.retry(args["job_id"]), None
    if op == "batch":
        _only(op, args, {"jobs"})
        return {"results": await c.submit_batch(args["jobs"])}, None
    if op == "events":
        _only(op, args, {"job_id"})
        return _events([e.event async for e in c.events(args["job_id"])]), None
    if op == "hosted_step":
        seen = ForwardedStatus()
        http = httpx.AsyncClient(event_hooks={"response": [seen.async_hook]})
        async with AsyncEZThrottle(api_key=key, tracktags_url=server.url, http_client=http) as h:
            try:
                return await _step(args, h).execute_async(), seen.last()
            finally:
                await http.aclose()
    if op == "raw":
        return _raw_result(await c._send(_raw_call(args)))
    raise CaseFailure(f"unknown op {op!r}")


# ---------------------------------------------------------------------------- steps


def check(step: dict[str, Any], v: Vars, outcome: Outcome | None, err: EZThrottleError | None) -> None:
    exp = v.subst(step.get("expect", {}))
    unknown = set(exp) - EXPECT_KEYS
    if unknown:
        raise CaseFailure(f"unknown expect keys {sorted(unknown)}")
    if err is not None:
        if exp.get("ok") is not False:
            raise CaseFailure(f"unexpected error: {err!r} {err}")
        want = exp.get("error", {})
        got = {"status": err.status, "code": err.code, "field": err.field}
        bad = mismatches({k: want[k] for k in want}, got)
        if set(want) - {"status", "code", "field"}:
            raise CaseFailure(f"unknown error keys {sorted(set(want) - set(got))}")
        if bad:
            raise CaseFailure(f"error {got} does not match {want}: {bad}")
        return
    assert outcome is not None
    result, status = outcome
    if exp.get("ok") is False:
        raise CaseFailure(f"expected an error {exp.get('error')}, got {json.dumps(result)[:300]}")
    if "status" in exp and status != exp["status"]:
        raise CaseFailure(f"status: want {exp['status']}, got {status}: {json.dumps(result)[:300]}")
    if "json" in exp:
        actual = result["json"] if step["op"] == "raw" else result
        bad = mismatches(exp["json"], actual)
        if bad:
            raise CaseFailure(f"{bad} in {json.dumps(actual)[:600]}")


def prepare(step: dict[str, Any], v: Vars) -> tuple[str, dict[str, Any]]:
    unknown = set(step) - STEP_KEYS
    if unknown:
        raise CaseFailure(f"unknown step keys {sorted(unknown)}")
    if set(step.get("client", {})) - {"api_key"}:
        raise CaseFailure(f"unknown client settings {sorted(step['client'])}")
    return step["op"], v.subst(step.get("args", {}))


def save(step: dict[str, Any], v: Vars, outcome: Outcome | None) -> None:
    for name, path in step.get("save", {}).items():
        if outcome is None:
            raise CaseFailure(f"save {name}: the step raised")
        v.saved[name] = dig(outcome[0], path)


def run_case_sync(case: dict[str, Any], server: Server, key: str, target: str) -> None:
    v = Vars(target)
    with EZThrottle(api_key=key, base_url=server.url) as main:
        for i, step in enumerate(case["steps"]):
            try:
                op, args = prepare(step, v)
                other = step.get("client", {}).get("api_key")
                c = EZThrottle(api_key=other, base_url=server.url) if other else main
                outcome: Outcome | None = None
                err: EZThrottleError | None = None
                try:
                    outcome = run_sync(op, args, c, server, key)
                except EZThrottleError as e:
                    err = e
                finally:
                    if c is not main:
                        c.close()
                check(step, v, outcome, err)
                save(step, v, outcome)
            except CaseFailure as f:
                raise CaseFailure(f"step {i} ({step.get('op')}): {f}") from None


async def run_case_async(case: dict[str, Any], server: Server, key: str, target: str) -> None:
    v = Vars(target)
    async with AsyncEZThrottle(api_key=key, base_url=server.url) as main:
        for i, step in enumerate(case["steps"]):
            try:
                op, args = prepare(step, v)
                other = step.get("client", {}).get("api_key")
                c = AsyncEZThrottle(api_key=other, base_url=server.url) if other else main
                outcome: Outcome | None = None
                err: EZThrottleError | None = None
                try:
                    outcome = await run_async(op, args, c, server, key)
                except EZThrottleError as e:
                    err = e
                finally:
                    if c is not main:
                        await c.aclose()
                check(step, v, outcome, err)
                save(step, v, outcome)
            except CaseFailure as f:
                raise CaseFailure(f"step {i} ({step.get('op')}): {f}") from None


def _record(kind: str, name: str, run: Callable[[], None]) -> None:
    try:
        run()
    except BaseException as e:
        REPORT.append((kind, name, f"{type(e).__name__}: {e}"))
        raise
    REPORT.append((kind, name, "ok"))


def test_case_names_are_unique_and_described() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), names
    for c in CASES:
        assert set(c) == {"name", "about", "steps"}, c["name"]
        assert c["about"] and c["steps"], c["name"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: cast(str, c["name"]))
def test_sync(case: dict[str, Any], server: Server, suite_key: str, demo_target: str) -> None:
    _record("sync", case["name"], lambda: run_case_sync(case, server, suite_key, demo_target))


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=lambda c: cast(str, c["name"]))
async def test_async(
    case: dict[str, Any], server: Server, suite_key: str, demo_target: str
) -> None:
    name = case["name"]
    try:
        await run_case_async(case, server, suite_key, demo_target)
    except BaseException as e:
        REPORT.append(("async", name, f"{type(e).__name__}: {e}"))
        raise
    REPORT.append(("async", name, "ok"))


def test_the_runner_fails_on_what_it_does_not_know() -> None:
    """Never a silent skip: unknown ops, placeholders and expectations fail, and so does a
    mismatch."""
    v = Vars("http://127.0.0.1:1")
    with pytest.raises(CaseFailure, match="unknown placeholder"):
        v.subst("${nope}")
    with pytest.raises(CaseFailure, match="unknown expect keys"):
        check({"op": "get", "expect": {"okay": True}}, v, ({}, None), None)
    with pytest.raises(CaseFailure, match="unknown step keys"):
        prepare({"op": "get", "args": {}, "expcet": {}}, v)
    with pytest.raises(CaseFailure, match="unknown op"):
        run_sync("teleport", {}, cast(EZThrottle, None), cast(Server, None), "")
    with pytest.raises(CaseFailure, match="unknown args"):
        _job({"url": "x", "webhook_url": "y"})
    assert mismatches({"a": [1, {"b": "<prefix:jo>"}]}, {"a": [1, {"b": "job_1"}], "c": 2}) == []
    assert mismatches({"a": [1]}, {"a": [1, 2]}) != []
    assert mismatches({"a": "<number>"}, {"a": True}) != []
    assert mismatches({"a": 1}, {"a": True}) != []
    assert mismatches({"a": "<any>"}, {}) != []
    assert v.subst("${now_ms+5}") > int(time.time() * 1000)
    assert v.subst({"k": "${target}/x"}) == {"k": "http://127.0.0.1:1/x"}
