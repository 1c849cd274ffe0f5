// Test fixtures: the real ezthrottle binary (EZTHROTTLE_BIN, default <repo>/target/debug/ezthrottle)
// and the demo target (python3 scripts/demo/target.py), both on 127.0.0.1. Nothing in the SDK is
// mocked; the few tests that need a misbehaving server start a local one of their own.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(SDK_DIR, "..", "..");

export function binaryPath() {
  const bin = process.env.EZTHROTTLE_BIN
    ? resolve(process.env.EZTHROTTLE_BIN)
    : join(REPO, "target", "debug", "ezthrottle");
  if (!existsSync(bin)) {
    throw new Error(
      `ezthrottle binary not found at ${bin}: build it (cargo build -p ezthrottle) or set EZTHROTTLE_BIN`,
    );
  }
  return bin;
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function canConnect(port) {
  return new Promise((res) => {
    const sock = connect({ port, host: "127.0.0.1" });
    sock.once("connect", () => {
      sock.destroy();
      res(true);
    });
    sock.once("error", () => res(false));
  });
}

/** Starts `python3 scripts/demo/target.py <port>`; resolves once the port accepts connections
 * (no startup message to wait for, so the port is polled, with a deadline). */
export async function startTarget() {
  const port = await freePort();
  const proc = spawn("python3", [join(REPO, "scripts", "demo", "target.py"), String(port)], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  proc.stderr.on("data", (d) => {
    log = (log + d).slice(-4000);
  });
  let exited = false;
  proc.once("exit", () => {
    exited = true;
  });
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (exited || Date.now() > deadline) {
      proc.kill();
      throw new Error(`demo target did not start on ${port}: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => stop(proc),
  };
}

function stop(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    proc.once("exit", () => {
      clearTimeout(t);
      res();
    });
    proc.kill("SIGTERM");
  });
}

/** Starts `ezthrottle serve` on a fresh data dir and an OS-chosen port; resolves with its URL and
 * the key it prints on first start, once it logs "listening on http://…" (an event, not a sleep). */
export async function startServer(extraEnv = {}) {
  const bin = binaryPath();
  const dataDir = mkdtempSync(join(tmpdir(), "ezt-node-"));
  const proc = spawn(
    bin,
    ["serve", "--listen", "127.0.0.1:0", "--allow-cidr", "127.0.0.1/32", "--data-dir", dataDir],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1", ...extraEnv } },
  );
  let out = "";
  let log = "";
  const ready = new Promise((res, rej) => {
    let url = null;
    const check = () => {
      const key = out.split("\n").find((l) => l.trim() !== "");
      if (url && key && out.includes("\n")) res({ url, key: key.trim() });
    };
    proc.stdout.on("data", (d) => {
      out += d;
      check();
    });
    proc.stderr.on("data", (d) => {
      log = (log + d).slice(-20_000);
      const m = /listening on (http:\/\/[0-9.]+:[0-9]+)/.exec(log);
      if (m && !url) {
        url = m[1];
        check();
      }
    });
    proc.once("exit", (code) => rej(new Error(`ezthrottle serve exited (${code}):\n${log}`)));
  });
  const timer = setTimeout(() => proc.kill(), 30_000);
  let info;
  try {
    info = await ready;
  } finally {
    clearTimeout(timer);
  }
  return {
    ...info,
    bin,
    dataDir,
    log: () => log,
    cli: (...args) => runCli(bin, [...args, "--data-dir", dataDir]),
    stop: async () => {
      proc.removeAllListeners("exit");
      await stop(proc);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function runCli(bin, args) {
  return new Promise((res, rej) => {
    const p = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.once("exit", (code) =>
      code === 0 ? res(out) : rej(new Error(`ezthrottle ${args.join(" ")} failed (${code}): ${err}`)),
    );
  });
}

/** Server and target for one test file; `after` stops both. */
export async function startAll() {
  const [server, target] = await Promise.all([startServer(), startTarget()]);
  return {
    server,
    target,
    stop: () => Promise.all([server.stop(), target.stop()]),
  };
}

/** A unique token for paths and keys. */
export function token() {
  return Math.random().toString(16).slice(2, 14).padEnd(12, "0");
}
