#!/usr/bin/env python3
"""Side-by-side scenarios (protocol B1-B5, B7) for EZThrottle and its peers.

usage: sides.py --work DIR --out DIR --ezt BIN --lg BIN [--quick] [--systems ezt,bullmq,pgboss,river]
                [--scenarios b1,b2,b3,b4,b5,b7]

Called by bench/run.sh. Starts and stops everything it uses: one shared target
(`ezt-loadgen target`, arrival log with CLOCK_MONOTONIC ns), a private redis-server
(appendonly yes, appendfsync always), a private PostgreSQL 15 cluster (initdb in the work dir,
synchronous_commit=on), EZThrottle servers (SQLite WAL FULL, its default group commit), and the
peers' worker/producer processes (bench/peers). EZThrottle's B1, B4 and B5 come from run.sh's
scenarios 1, 3 and 4; here EZThrottle runs B2 (drain), B3 (steady state) and B7 (crash).
Writes one JSON per (system, scenario) into --out as p_<system>_<scenario>.json.
All traffic goes to 127.0.0.1.
"""
import argparse, json, os, random, shutil, signal, socket, subprocess, sys, threading, time, urllib.request
from collections import Counter, defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / "peers"
TGT_MAIN, TGT_LIM, TGT_FAIR = 18487, [18493, 18494, 18495], 18496
NOWHERE = 18481
REDIS_PORT, PG_PORT, EZT_PORT = 18491, 18492, 18489
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def log(*a):
    print(f"== {time.strftime('%H:%M:%S', time.gmtime())} sides:", *a, file=sys.stderr, flush=True)


def mono_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def pctl(sorted_v, p):
    if not sorted_v:
        return None
    i = max(0, min(len(sorted_v) - 1, -(-int(p * len(sorted_v) * 1000) // 100000) - 1))
    return sorted_v[i]


def lat_ms(ns):
    v = sorted(ns)
    f = lambda x: None if x is None else round(x / 1e6, 3)
    return {"n": len(v), "p50_ms": f(pctl(v, 50)), "p90_ms": f(pctl(v, 90)), "p95_ms": f(pctl(v, 95)),
            "p99_ms": f(pctl(v, 99)), "p999_ms": f(pctl(v, 99.9)), "max_ms": f(v[-1] if v else None),
            "mean_ms": f(sum(v) / len(v) if v else None)}


# ---------------------------------------------------------------------------------------------
# processes

def proc_cpu(pid):
    """utime+stime (+ reaped children's) of pid, seconds."""
    try:
        st = open(f"/proc/{pid}/stat").read()
        f = st[st.rfind(")") + 2:].split()
        return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def pids_where(stat_field, value):
    """Processes whose /proc/<pid>/stat field (after the command name: 1 = ppid, 2 = pgrp) is value."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open(f"/proc/{d}/stat").read()
                if int(st[st.rfind(")") + 2:].split()[stat_field]) == value:
                    out.append(int(d))
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                pass
    return out


def group_pids(pgid):
    return pids_where(2, pgid)


def alive(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return False


def children(ppid):
    return pids_where(1, ppid)


def status_kb(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


class Sampler:
    """Samples a process group's summed PSS (peak) while running."""

    def __init__(self, pids_fn):
        self.pids_fn, self.peak_kb, self._stop = pids_fn, 0, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(pss_kb(p) for p in self.pids_fn()))
            self._stop.wait(0.25)

    def stop(self):
        self._stop.set()
        self.t.join()
        return round(self.peak_kb / 1024, 1)


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over `interval` s (from /proc/stat)."""
    def snap():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = f[3] + f[4]
        return sum(f), idle
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


GATE_BUDGET = [480.0]  # seconds of waiting for the whole run, so a long foreign build cannot stall it
GATE_SAMPLE = [1.0]  # seconds of /proc/stat sampling per gate (quick runs: 0.25)


def quiet_gate(limit=0.35, max_wait=60):
    """Waits (up to max_wait s, within the run's budget) until other work on the shared box uses
    < limit of the CPUs while this suite is idle between phases; returns what it saw."""
    t0 = time.time()
    busy = cpu_busy(GATE_SAMPLE[0])
    while busy > limit and time.time() - t0 < min(max_wait, GATE_BUDGET[0]):
        time.sleep(2)
        busy = cpu_busy(GATE_SAMPLE[0])
    waited = time.time() - t0 - GATE_SAMPLE[0]
    GATE_BUDGET[0] = max(0.0, GATE_BUDGET[0] - waited)
    return {"busy_fraction_before": round(busy, 2), "waited_s": round(waited, 1)}


def run_json(cmd, env=None, timeout=None, cwd=None):
    """Runs a producer command; returns (its JSON, CPU seconds of the child, its max RSS MB)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, env=env, cwd=cwd, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    lines = [l for l in out.strip().splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON (exit {p.returncode}) from {' '.join(map(str, cmd))[:200]}: {out[-300:]}")
    return json.loads(lines[-1]), round(ru.ru_utime + ru.ru_stime, 3), round(ru.ru_maxrss / 1024, 1)


def popen_wait(cmd, env=None):
    """Popen + wait4 in one: returns (returncode, cpu_s, maxrss_mb, stdout)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, env=env, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out


def http_get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_port(port, timeout=30):
    t = time.time() + timeout
    while time.time() < t:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


# ---------------------------------------------------------------------------------------------
# the shared target

class Target:
    def __init__(self, lg, work):
        ports = [TGT_MAIN, *TGT_LIM, TGT_FAIR]
        self.p = subprocess.Popen([lg, "target", "--ports", ",".join(map(str, ports))],
                                  stdout=subprocess.DEVNULL, stderr=open(work / "sides-target.log", "w"))
        for port in ports:
            wait_port(port)

    def reset(self):
        http_get(f"http://127.0.0.1:{TGT_MAIN}/_dump?reset=1")

    def count(self, port=None):
        st = json.loads(http_get(f"http://127.0.0.1:{TGT_MAIN}/_stats"))
        if port is None:
            return sum(v["count"] for v in st["ports"].values())
        return st["ports"].get(str(port), {}).get("count", 0)

    def dump(self):
        """[(t_ns, port, inflight, key, tenant)]"""
        out = []
        for line in http_get(f"http://127.0.0.1:{TGT_MAIN}/_dump", timeout=120).decode().splitlines():
            f = line.split("\t")
            if len(f) >= 5:
                out.append((int(f[0]), int(f[1]), int(f[2]), f[3], f[4]))
        return out

    def wait_count(self, n, timeout, port=None, idle=None):
        """Waits until `n` arrivals (or timeout, or no progress for `idle` s); returns the count."""
        t_end, last, last_change = time.time() + timeout, -1, time.time()
        while True:
            c = self.count(port)
            if c >= n:
                return c
            if c != last:
                last, last_change = c, time.time()
            if time.time() > t_end or (idle and time.time() - last_change > idle):
                return c
            time.sleep(0.1)

    def stop(self):
        self.p.terminate()
        self.p.wait()


def key_ns(key):
    try:
        return int(key.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# stores

class Redis:
    name = "redis-server"

    def __init__(self, work):
        self.dir = work / "redis"
        self.p = None

    def start(self, fresh=True):
        if fresh:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.p = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                   "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
                                   "--logfile", str(self.dir / "redis.log")], stdout=subprocess.DEVNULL, start_new_session=True)
        t = time.time() + 60
        while time.time() < t:
            try:
                s = socket.create_connection(("127.0.0.1", REDIS_PORT), 0.2)
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    s.close()
                    return
                s.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def pids(self):
        return [self.p.pid] if self.p and self.p.poll() is None else []

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids())

    def hwm_mb(self):
        return round(status_kb(self.p.pid, "VmHWM:") / 1024, 1)

    def kill9(self):
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            self.p.wait()


class Postgres:
    name = "postgres"

    def __init__(self, work):
        self.dir = work / "pg"
        self.p = None

    def _as_pg(self, cmd, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=True, **kw)

    def init(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir.parent, os.stat(self.dir.parent).st_mode | 0o711)  # mktemp -d is 0700; postgres must traverse
        self._as_pg([PG_BIN / "initdb", "-D", self.dir / "data", "--auth=trust", "-U", "postgres", "-E", "UTF8"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        self.p = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(self.dir / "data"),
                                   "-p", str(PG_PORT), "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                                   "-c", "synchronous_commit=on", "-c", "fsync=on", "-c", "full_page_writes=on",
                                   "-c", "max_connections=400", "-c", "shared_buffers=256MB", "-c", "logging_collector=off",
                                   # EZT_BENCH_PG_STATS=1: per-statement database time (pg_stat_statements), for
                                   # profiling runs only (it costs a little on every statement)
                                   *(["-c", "shared_preload_libraries=pg_stat_statements"]
                                     if os.environ.get("EZT_BENCH_PG_STATS") else [])],
                                  stdout=subprocess.DEVNULL, stderr=open(self.dir / "pg.log", "a"), start_new_session=True)
        t = time.time() + 120
        while time.time() < t:
            if subprocess.run([PG_BIN / "pg_isready", "-h", "127.0.0.1", "-p", str(PG_PORT), "-q"]).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start")

    def psql(self, sql, db="postgres"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-q", "-c", sql],
                       check=True, stdout=subprocess.DEVNULL)

    def recreate_db(self, db):
        self.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        self.psql(f"CREATE DATABASE {db}")

    def postmaster(self):
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def pids(self):
        """The postmaster and its children (each backend is its own session, so no process group)."""
        pm = self.postmaster()
        if not pm or not alive(pm):
            return []
        return [pm] + children(pm)

    def cpu(self):
        # live processes' own + reaped children's time (exited backends are charged to the postmaster)
        return sum(proc_cpu(p) for p in self.pids())

    def hwm_mb(self):
        return None  # summed VmHWM would count shared_buffers once per backend; PSS is sampled instead

    def kill9(self):
        ps = self.pids()
        for p in ps:  # all at once, like a power cut for the database
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t = time.time() + 10
        while time.time() < t and any(alive(p) for p in ps):
            time.sleep(0.02)
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        pm = self.postmaster()
        if pm and alive(pm):
            os.kill(pm, signal.SIGINT)  # fast shutdown
            t = time.time() + 30
            while time.time() < t and alive(pm):
                time.sleep(0.05)
        if self.p:
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()


# ---------------------------------------------------------------------------------------------
# systems: producers and workers

class Peer:
    """BullMQ, pg-boss or River: a store plus producer/worker processes."""

    def __init__(self, name, ctx):
        self.name, self.ctx = name, ctx
        self.store = ctx.redis if name == "bullmq" else ctx.pg
        self.env = dict(os.environ, REDIS_PORT=str(REDIS_PORT), PG_URL=f"postgres://postgres@127.0.0.1:{PG_PORT}/{name}")
        self.worker = None

    def cmd(self, sub, **kw):
        if self.name == "river":
            base = [str(PEERS / "river" / "river-peer"), sub]
            return base + [x for k, v in kw.items() for x in (f"-{k}", str(v))]
        base = ["node", str(PEERS / "node" / "peer.js"), self.name, sub]
        return base + [x for k, v in kw.items() for x in (f"--{k}", str(v))]

    def fresh(self, queues="calls"):
        """Empty store + queues."""
        if self.name == "bullmq":
            self.store.stop()
            self.store.start(fresh=True)
        else:
            self.ctx.pg.recreate_db(self.name)
        run_json(self.cmd("setup", queues=queues), env=self.env)

    def produce(self, sub, **kw):
        return run_json(self.cmd(sub, **kw), env=self.env)

    def start_worker(self, queues="calls", concurrency=100, limits=None):
        kw = {"queues": queues, "concurrency": concurrency}
        if limits:
            kw["limits"] = limits
        self.worker = subprocess.Popen(self.cmd("work", **kw), stdout=subprocess.PIPE, stderr=sys.stderr, env=self.env, text=True)
        line = self.worker.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"{self.name} worker did not start: {line!r}")
        return self.worker

    def worker_alive(self):
        return self.worker is not None and self.worker.poll() is None

    def stop_worker(self):
        if self.worker is None:
            return None
        cpu = None
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                _, status, ru = os.wait4(self.worker.pid, 0)
                cpu = ru.ru_utime + ru.ru_stime
            except ChildProcessError:
                pass
        self.worker = None
        return cpu


class Ezt:
    """EZThrottle: the server is store, scheduler and worker in one process."""

    name = "ezt"

    def __init__(self, ctx):
        self.ctx, self.p, self.key = ctx, None, None
        self.base = f"http://127.0.0.1:{EZT_PORT}"

    def config(self, port):
        f = self.ctx.work / f"sides-ezt-{port}.toml"
        f.write_text('[lanes.default]\nrate = 2.0\nburst = 1\nmax_in_flight = 2\n'
                     f'[lanes.hosts."127.0.0.1:{port}"]\nrate = 1000000.0\nburst = 1000\nmax_in_flight = 100\n')
        return f

    def start(self, name, port, fresh=True):
        data = self.ctx.work / f"sides-data-{name}"
        if fresh:
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
        logf = self.ctx.work / f"sides-{name}.log"
        skip = logf.stat().st_size if logf.exists() else 0  # a restart appends: look only at new lines
        self.p = subprocess.Popen([self.ctx.ezt, "serve", "--listen", f"127.0.0.1:{EZT_PORT}", "--data-dir", str(data),
                                   "--allow-cidr", "127.0.0.1/32", "--config", str(self.config(port))],
                                  stdout=subprocess.PIPE, stderr=open(logf, "a"), text=True)
        if fresh:
            self.key = self.p.stdout.readline().strip()
        t = time.time() + 120
        while time.time() < t:
            if "listening on http://" in logf.read_text(errors="replace")[skip:]:
                return
            if self.p.poll() is not None:
                raise RuntimeError(f"ezthrottle {name} died: {logf.read_text()[-500:]}")
            time.sleep(0.02)
        raise RuntimeError("ezthrottle did not start")

    def cpu(self):
        return proc_cpu(self.p.pid)

    def hwm_mb(self):
        return round(status_kb(self.p.pid, "VmHWM:") / 1024, 1)

    def kill9(self):
        self.p.kill()
        self.p.wait()

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def lg(self, sub, **kw):
        return [self.ctx.lg, sub, "--server", self.base, "--key", self.key] + \
            [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]


# ---------------------------------------------------------------------------------------------
# scenarios

class Ctx:
    pass


def save(ctx, system, scen, obj):
    # 1-min load average at the end: the box is shared with other engineers' builds (2 cores)
    obj = {"system": system, "scenario": scen, "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
           "quiet_gate": getattr(ctx, "gate", None), **obj}
    (ctx.out / f"p_{system}_{scen}.json").write_text(json.dumps(obj))
    log(system, scen, "done")


def b1_ezt(ctx, e):
    """EZThrottle's B1 again, next to the peers' in time (scenario 1 ran minutes earlier): jobs
    scheduled 1 h ahead, so nothing dispatches."""
    url = f"http://127.0.0.1:{NOWHERE}/admission"
    e.start("b1", NOWHERE)
    serial, _, _ = run_json(e.lg("admit", n=ctx.serial_n, c=1, target_url=url, prefix="serial"))
    c0 = e.cpu()
    c64, cli_cpu, cli_rss = run_json(e.lg("admit", n=ctx.admit_n, c=64, target_url=url, prefix="c64"))
    cpu = e.cpu() - c0
    hwm = e.hwm_mb()
    e.stop()
    bulks = []
    for c in (1, 2):
        e.start(f"b1bulk{c}", NOWHERE)
        r, _, _ = run_json(e.lg("batch", n=ctx.batch_n, batch=1000, c=c, target_url=url, prefix=f"bulk{c}"))
        bulks.append(r)
        e.stop()
    k = c64["accepted_202"] / 1000
    save(ctx, "ezt", "b1", {
        "serial": serial, "c64": c64, "bulk_c1": bulks[0], "bulk_c2": bulks[1],
        "bulk_best_jobs_per_s": max(b["jobs_per_s"] for b in bulks),
        "store_cpu_s_per_1k": round(cpu / k, 4), "client_cpu_s_per_1k": round(cli_cpu / k, 4),
        "store_hwm_mb": hwm, "client_max_rss_mb": cli_rss})


def b1(ctx, peer):
    """Admission: serial ack latency, 64-concurrent jobs/s, bulk; CPU and memory."""
    if peer.name == "ezt":
        return b1_ezt(ctx, peer)
    url = f"http://127.0.0.1:{NOWHERE}/admission"
    peer.fresh()
    sampler = Sampler(peer.store.pids)
    serial, _, _ = peer.produce("admit", n=ctx.serial_n, c=1, queue="calls", url=url, prefix="serial")
    c0 = peer.store.cpu()
    c64, cli_cpu, cli_rss = peer.produce("admit", n=ctx.admit_n, c=64, queue="calls", url=url, prefix="c64")
    store_cpu = peer.store.cpu() - c0
    hwm = peer.store.hwm_mb()
    peak_pss = sampler.stop()
    bulks = []
    for c in (1, 2):
        peer.fresh()
        r, _, _ = peer.produce("bulk", n=ctx.batch_n, batch=1000, c=c, queue="calls", url=url, prefix=f"bulk{c}")
        bulks.append(r)
    k = c64["acked"] / 1000
    save(ctx, peer.name, "b1", {
        "serial": serial, "c64": c64, "bulk_c1": bulks[0], "bulk_c2": bulks[1],
        "bulk_best_jobs_per_s": max(b["jobs_per_s"] for b in bulks),
        "store_cpu_s_per_1k": round(store_cpu / k, 4), "client_cpu_s_per_1k": round(cli_cpu / k, 4) if cli_cpu else None,
        "store_hwm_mb": hwm, "store_peak_pss_mb": peak_pss, "client_max_rss_mb": cli_rss,
    })


def b2(ctx, sysobj):
    """Drain: preload N, start workers at concurrency 100 (EZThrottle: lane pinned 1e6/s, 1000
    burst, 100 in flight; jobs preloaded with one retry_at), time until the last arrival."""
    n = ctx.drain_n
    ctx.target.reset()
    url = f"http://127.0.0.1:{TGT_MAIN}/drain"
    if sysobj.name == "ezt":
        e = sysobj
        e.start("b2", TGT_MAIN)
        margin_s = 3 + n / 25000
        release_epoch_ms = int(time.time() * 1000 + margin_s * 1000)
        offset_ns = mono_ns() - time.time_ns()  # mono = epoch + offset
        load, _, _ = run_json(e.lg("batch", n=n, batch=1000, c=2, target_url=url, prefix="drain", retry_at_ms=release_epoch_ms))
        release_mono = release_epoch_ms * 1_000_000 + offset_ns
        while mono_ns() < release_mono:
            time.sleep(0.001)
        c0, t0 = e.cpu(), release_mono
        got = ctx.target.wait_count(n, timeout=600, idle=30)
        cpu = e.cpu() - c0
        hwm = e.hwm_mb()
        e.stop()
        worker_cpu, store_cpu = cpu, None
    else:
        peer = sysobj
        peer.fresh()
        load, _, _ = peer.produce("bulk", n=n, batch=1000, c=2, queue="calls", url=url, prefix="drain")
        s0 = peer.store.cpu()
        t0 = mono_ns()
        peer.start_worker("calls", 100)
        got = ctx.target.wait_count(n, timeout=600, idle=30)
        store_cpu = peer.store.cpu() - s0
        worker_cpu = peer.stop_worker()
        cpu = store_cpu + (worker_cpu or 0)
        hwm = peer.store.hwm_mb()
    ts = sorted(a[0] for a in ctx.target.dump() if a[1] == TGT_MAIN)
    last = ts[-1] if ts else t0
    secs = (last - t0) / 1e9
    save(ctx, sysobj.name, "b2", {
        "n": n, "arrived": got, "load": load, "secs_to_last_arrival": round(secs, 3),
        "secs_first_to_last": round((ts[-1] - ts[0]) / 1e9, 3) if ts else None,
        "first_arrival_after_start_ms": round((ts[0] - t0) / 1e6, 1) if ts else None,
        "jobs_per_s": round(len(ts) / secs) if secs > 0 else None,
        "cpu_s_per_1k": round(cpu / (n / 1000), 4), "worker_cpu_s": worker_cpu, "store_cpu_s": store_cpu, "hwm_mb": hwm,
    })


def b3(ctx, sysobj):
    """Steady state, open loop: offer R jobs/s for D s with workers running; enqueue -> arrival."""
    url = f"http://127.0.0.1:{TGT_MAIN}/steady"
    res = []
    for rate in ctx.rates:
        ctx.target.reset()
        prefix = f"st{rate}"
        if sysobj.name == "ezt":
            sysobj.start(f"b3-{rate}", TGT_MAIN)
            prod, _, _ = run_json(sysobj.lg("steady", rate=rate, duration=ctx.steady_d, target_url=url, prefix=prefix))
        else:
            sysobj.fresh()
            sysobj.start_worker("calls", 100)
            prod, _, _ = sysobj.produce("steady", rate=rate, duration=ctx.steady_d, queue="calls", url=url, prefix=prefix)
        got = ctx.target.wait_count(prod["acked"], timeout=ctx.steady_d + 60, idle=20)
        arr = {}
        for t, _, _, k, _ in ctx.target.dump():
            if k.startswith(prefix + ".") and k not in arr:
                arr[k] = t
        lats = [t - key_ns(k) for k, t in arr.items() if key_ns(k)]
        if sysobj.name == "ezt":
            sysobj.stop()
        else:
            sysobj.stop_worker()
        missing = max(0, prod["acked"] - len(arr))
        l = lat_ms(lats)
        sustained = prod["achieved_rate"] >= 0.95 * rate and missing <= 0.001 * max(1, prod["acked"])
        res.append({"rate": rate, "loadavg_1m": round(os.getloadavg()[0], 2), "producer": prod, "arrived": len(arr), "missing_after_wait": missing,
                    "latency": l, "sustained": sustained,
                    "p99_under_100ms": bool(sustained and l["p99_ms"] is not None and l["p99_ms"] < 100)})
        log(sysobj.name, f"b3 {rate}/s: achieved {prod['achieved_rate']}/s, p50 {l['p50_ms']} p99 {l['p99_ms']} ms, missing {missing}")
    ok = [r["rate"] for r in res if r["p99_under_100ms"]]
    save(ctx, sysobj.name, "b3", {"duration_s": ctx.steady_d, "rates": res, "best_rate_p99_under_100ms": max(ok) if ok else None})


def sliding(ts, win, limit):
    j, mx, over = 0, 0, 0
    for i in range(len(ts)):
        while j < len(ts) and ts[j] < ts[i] + win:
            j += 1
        c = j - i
        mx = max(mx, c)
        over += c > limit
    return mx, over


def b4(ctx, peer):
    """Rate accuracy: three queues limited to 10/100/1000 per s (BullMQ `limiter`, fixed window of
    max jobs per 1000 ms), 64 concurrent each, backlogged."""
    rates = [10, 100, 1000]
    d = ctx.lim_d
    qs = [f"lim{r}" for r in rates]
    peer.fresh(",".join(qs))
    ctx.target.reset()
    for r, q, port in zip(rates, qs, TGT_LIM):
        peer.produce("bulk", n=int(r * (d + 5)) + 5, batch=1000, c=1, queue=q, url=f"http://127.0.0.1:{port}/limit", prefix=q)
    peer.start_worker(",".join(qs), 64, ",".join(map(str, rates)))
    t_end = time.time() + d * 3 + 30
    while time.time() < t_end:
        st = json.loads(http_get(f"http://127.0.0.1:{TGT_MAIN}/_stats"))
        firsts = [st["ports"].get(str(p), {}).get("first") for p in TGT_LIM]
        if all(firsts) and all(st["now"] > f + d * 1e9 + 3e8 for f in firsts):
            break
        time.sleep(0.5)
    peer.stop_worker()
    log_ = ctx.target.dump()
    lanes = []
    for r, port in zip(rates, TGT_LIM):
        ts = sorted(a[0] for a in log_ if a[1] == port)
        if not ts:
            lanes.append({"rate": r, "error": "no arrivals"})
            continue
        win = [t for t in ts if t < ts[0] + d * 1e9]
        mx, over = sliding(win, 1_000_000_000, r + 1)
        gaps = [b - a for a, b in zip(win, win[1:])]
        mean = sum(gaps) / max(1, len(gaps))
        cv = (sum((g - mean) ** 2 for g in gaps) / max(1, len(gaps))) ** 0.5 / max(mean, 1)
        lanes.append({"rate": r, "limit_per_window": r + 1, "arrivals_in_window": len(win), "max_in_1s_window": mx,
                      "windows_over_limit": over, "achieved_rate": round(len(win) / d, 3),
                      "achieved_ratio": round(len(win) / d / r, 3), "interarrival_cv": round(cv, 3),
                      "peak_inflight_at_target": max(a[2] for a in log_ if a[1] == port)})
    save(ctx, peer.name, "b4", {"duration_s": d, "lanes": lanes,
                                "limiter": "BullMQ Worker limiter {max: rate, duration: 1000} (fixed window)"})


def jain(x):
    s, s2 = sum(x), sum(v * v for v in x)
    return 1.0 if s2 == 0 else s * s / (len(x) * s2)


def b5(ctx, peer):
    """Fairness, FIFO baseline: 10 tenants, t0 offers 90%. BullMQ: one queue limited to 200/s
    (like EZThrottle's lane); pg-boss/River: no limiter, workers at concurrency 100."""
    d = ctx.fair_d
    limited = peer.name == "bullmq"
    q = int(-(-200 / 10 * (d + 4) // 1))
    n = 90 * q
    url = f"http://127.0.0.1:{TGT_FAIR}/fair"
    peer.fresh("fair")
    ctx.target.reset()
    peer.produce("bulk", n=n, batch=1000, c=1, queue="fair", url=url, prefix="fb", mix="fair")
    peer.start_worker("fair", 64 if limited else 100, "200" if limited else None)
    t0 = mono_ns()
    if limited:
        time.sleep(d + 1.5)
    else:
        ctx.target.wait_count(n, timeout=d * 4 + 60, port=TGT_FAIR, idle=20)
    peer.stop_worker()
    arr = sorted((a[0], a[4]) for a in ctx.target.dump() if a[1] == TGT_FAIR)
    res = {"limited": limited, "n": n, "arrived": len(arr)}
    if arr:
        first = arr[0][0]
        span = (arr[-1][0] - first) / 1e9
        nwin = max(1, min(d, int(span))) if not limited else d
        counts = [[0] * 10 for _ in range(nwin)]
        for t, ten in arr:
            w = int((t - first - 1e9) // 1e9) if limited else int((t - first) // 1e9)
            if 0 <= w < nwin and ten.startswith("t"):
                counts[w][int(ten[1:])] += 1
        js = sorted(jain(c) for c in counts)
        tot = [sum(c[i] for c in counts) for i in range(10)]
        res.update({"windows": nwin, "jain_mean": round(sum(js) / len(js), 3), "jain_min": round(js[0], 3),
                    "counts_per_window": counts, "completions_per_tenant": tot,
                    "noisy_share": round(tot[0] / max(1, sum(tot)), 3),
                    "achieved_rate": round(sum(tot) / nwin, 1), "first_arrival_after_worker_start_ms": round((first - t0) / 1e6, 1)})
    if limited and not ctx.quick:
        # quiet wait with a noisy backlog (90% of jobs) vs solo (full runs only: ~1 min)
        for mode in ("wait", "solo"):
            peer.fresh("fair")
            ctx.target.reset()
            if mode == "wait":
                peer.produce("bulk", n=int(200 * (d + 10)), batch=1000, c=1, queue="fair", url=url, prefix="fwn", tenant="t0")
            peer.start_worker("fair", 64, "200")
            qrate = 200 * (d + 10) / 9 / d
            tenants = ",".join(f"t{i}" for i in range(1, 10)) if mode == "wait" else "t1"
            prod, _, _ = peer.produce("steady", rate=round(qrate if mode == "wait" else qrate / 9, 3), duration=d,
                                      queue="fair", url=url, prefix=f"fq{mode}", tenants=tenants)
            t_end = time.time() + d + 30 if mode == "wait" else time.time() + 10
            arr = {}
            while time.time() < t_end:
                arr = {a[3]: a[0] for a in ctx.target.dump() if a[3].startswith(f"fq{mode}.")}
                if len(arr) >= prod["acked"]:
                    break
                time.sleep(1)
            peer.stop_worker()
            lats = [t - key_ns(k) for k, t in arr.items()]
            res[f"quiet_{mode}"] = {"submitted": prod["acked"], "arrived": len(arr), "wait": lat_ms(lats),
                                    "not_arrived_by_deadline": prod["acked"] - len(arr)}
    save(ctx, peer.name, "b5", res)


def crash_check(ctx, acked_file, prefix, acked_n, timeout, idle):
    acked = set(l for l in Path(acked_file).read_text().split("\n") if l)
    t0 = time.time()
    t_end, last, last_change = t0 + timeout, None, t0
    while True:
        seen = set(a[3] for a in ctx.target.dump() if a[3].startswith(prefix + "."))
        missing = len(acked - seen)
        if missing == 0 or time.time() > t_end or time.time() - last_change > idle:
            break
        if missing != last:
            last, last_change = missing, time.time()
        time.sleep(1.0)
    waited = time.time() - t0
    time.sleep(1.0)  # let late duplicates land
    counts = Counter(a[3] for a in ctx.target.dump() if a[3].startswith(prefix + "."))
    lost = len(acked - set(counts))
    dups = sum(c - 1 for c in counts.values() if c > 1)
    return {"acked": len(acked), "arrived_distinct": len(counts), "lost_acked": lost, "duplicates": dups,
            "secs_until_all_acked_arrived": round(waited, 1) if not lost else None,
            "arrived_unacked": len(set(counts) - acked)}


def b7(ctx, sysobj, trials):
    """kill -9 of the SUT (EZThrottle server; the peers' store: redis-server / every postgres
    process) at a random point of a 64-client admission run with workers dispatching."""
    url = f"http://127.0.0.1:{TGT_MAIN}/crash"
    rng = random.Random(42)
    out = []
    for tr in range(trials):
        ctx.target.reset()
        prefix = f"crash{tr}"
        acked_file = ctx.work / f"sides-acked-{sysobj.name}-{tr}.txt"
        kill_after = round(rng.uniform(0.5, 2.5), 3)
        if sysobj.name == "ezt":
            sysobj.start("b7", TGT_MAIN, fresh=True)
            prod = subprocess.Popen(sysobj.lg("crash-admit", c=64, target_url=url, prefix=prefix, acked=acked_file),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(kill_after)
            sysobj.kill9()
            pr = json.loads(prod.communicate(timeout=60)[0].strip().splitlines()[-1])
            t_restart = time.time()
            sysobj.start("b7", TGT_MAIN, fresh=False)
            restart_s = time.time() - t_restart
        else:
            peer = sysobj
            peer.env["BENCH_CRASH"] = "1"
            peer.fresh()
            peer.start_worker("calls", 100)
            prod = subprocess.Popen(peer.cmd("admit", n=10_000_000, c=64, queue="calls", url=url, prefix=prefix, acked=acked_file),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=peer.env)
            time.sleep(kill_after)
            peer.store.kill9()
            prod.send_signal(signal.SIGTERM)
            t_restart = time.time()
            if peer.name == "bullmq":
                peer.store.start(fresh=False)
            else:
                peer.store.start()
            restart_s = time.time() - t_restart
            try:
                outp = prod.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                prod.kill()
                outp = prod.communicate()[0]
            lines = [l for l in outp.strip().splitlines() if l.startswith("{")]
            pr = json.loads(lines[-1]) if lines else {"error": "producer gave no output"}
            if not peer.worker_alive():
                log(peer.name, "worker died with the store; restarting it")
                peer.start_worker("calls", 100)
                pr["worker_restarted"] = True
        if not Path(acked_file).exists():
            out.append({"trial": tr, "kill_after_s": kill_after, "producer": pr, "error": "no acked file"})
            continue
        # Peers recover jobs that were running at the crash only after their stall/expiry timeouts
        # (set short for B7: BullMQ lock 10 s + stalled check 5 s, pg-boss expiry 10 s + maintenance
        # 2 s, River rescue after 10 s, rescuer every 30 s), so they get a longer idle wait.
        chk = crash_check(ctx, acked_file, prefix, pr.get("acked"), timeout=240, idle=20 if sysobj.name == "ezt" else 50)
        if sysobj.name == "ezt":
            sysobj.stop()
        else:
            sysobj.stop_worker()
        out.append({"trial": tr, "kill_after_s": kill_after, "restart_s": round(restart_s, 3), "producer": pr, **chk})
        log(sysobj.name, f"b7 trial {tr}: acked {chk['acked']} lost {chk['lost_acked']} dups {chk['duplicates']}")
    if sysobj.name != "ezt":
        sysobj.env.pop("BENCH_CRASH", None)
    save(ctx, sysobj.name, "b7", {
        "trials": len(out), "total_acked": sum(t.get("acked", 0) for t in out),
        "total_lost_acked": sum(t.get("lost_acked", 0) for t in out),
        "total_duplicates": sum(t.get("duplicates", 0) for t in out),
        "trials_with_loss": sum(1 for t in out if t.get("lost_acked")),
        "trials_failed": sum(1 for t in out if "error" in t), "per_trial": out})


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ezt", required=True)
    ap.add_argument("--lg", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--systems", default="ezt,bullmq,pgboss,river")
    ap.add_argument("--scenarios", default="b1,b2,b3,b4,b5,b7")
    a = ap.parse_args()
    ctx = Ctx()
    ctx.work, ctx.out, ctx.ezt, ctx.lg = Path(a.work), Path(a.out), a.ezt, a.lg
    ctx.out.mkdir(parents=True, exist_ok=True)
    q = ctx.quick = a.quick
    if q:
        GATE_SAMPLE[0] = 0.25
    # quick = smoke test (~1.5 min for this part): small N, short phases
    ctx.serial_n, ctx.admit_n, ctx.batch_n = (300, 5000, 10000) if q else (2000, 100000, 200000)
    ctx.drain_n = 5000 if q else 100000
    # protocol: 60 s per rate; the smoke run skips 10k/s, which every system misses here
    ctx.rates, ctx.steady_d = ([1000, 5000], 1) if q else ([1000, 5000, 10000], 60)
    ctx.lim_d, ctx.fair_d = (3, 2) if q else (60, 30)
    crash_trials = {"ezt": 2 if q else 20}
    peer_trials = 1 if q else 5
    systems = a.systems.split(",")
    scen = a.scenarios.split(",")
    ctx.redis, ctx.pg = Redis(ctx.work), Postgres(ctx.work)
    ctx.target = Target(ctx.lg, ctx.work)
    try:
        if any(s in systems for s in ("pgboss", "river")):
            ctx.pg.init()
            ctx.pg.start()
        objs = {s: (Ezt(ctx) if s == "ezt" else Peer(s, ctx)) for s in systems}
        plan = [("b1", lambda o: b1(ctx, o), ("ezt", "bullmq", "pgboss", "river")),
                ("b2", lambda o: b2(ctx, o), ("ezt", "bullmq", "pgboss", "river")),
                ("b3", lambda o: b3(ctx, o), ("ezt", "bullmq", "pgboss", "river")),
                ("b4", lambda o: b4(ctx, o), ("bullmq",)),
                ("b5", lambda o: b5(ctx, o), ("bullmq", "pgboss", "river")),
                ("b7", lambda o: b7(ctx, o, crash_trials.get(o.name, peer_trials)), ("ezt", "bullmq", "pgboss", "river"))]
        for name, fn, who in plan:
            if name not in scen:
                continue
            for s in systems:
                if s not in who:
                    continue
                if s != "bullmq":
                    ctx.redis.stop()  # an idle redis-server with 100k+ keys still costs CPU
                ctx.gate = quiet_gate()
                log(f"{name} {s} (other load before: {ctx.gate['busy_fraction_before']:.0%} CPU, waited {ctx.gate['waited_s']} s)")
                try:
                    fn(objs[s])
                except Exception as e:  # one peer failing must not lose the others' results
                    log(f"{name} {s} FAILED: {e!r}")
                    save(ctx, s, name, {"error": repr(e)[:500]})
                    o = objs[s]
                    if isinstance(o, Peer):
                        o.stop_worker()
                    else:
                        o.stop()
    finally:
        for o in locals().get("objs", {}).values():
            try:
                o.stop_worker() if isinstance(o, Peer) else o.stop()
            except Exception:
                pass
        ctx.redis.stop()
        ctx.pg.stop()
        ctx.target.stop()


if __name__ == "__main__":
    main()
