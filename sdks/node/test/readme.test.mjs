// The README's quick start, executed as written: the first ```js block under "## Quick start" runs
// as a module inside the package (so `import "ezthrottle"` is this package) against the real
// binary, with EZTHROTTLE_URL / EZTHROTTLE_API_KEY / TARGET_URL set as the README says.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SDK_DIR, startAll, token } from "./support.mjs";

let env;
before(async () => {
  env = await startAll();
});
after(() => env?.stop());

function quickStart() {
  const readme = readFileSync(join(SDK_DIR, "README.md"), "utf8");
  const section = readme.split(/^## Quick start$/m)[1];
  assert.ok(section, "README.md has no '## Quick start' section");
  const block = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(block, "no ```js block in the quick start");
  return block[1];
}

test("README quick start runs: job succeeded, webhook verified", async () => {
  const file = join(SDK_DIR, "test", `.quickstart-${process.pid}-${token()}.mjs`);
  writeFileSync(file, quickStart());
  try {
    const { code, stdout, stderr } = await new Promise((resolve) => {
      const p = spawn(process.execPath, [file], {
        env: {
          ...process.env,
          EZTHROTTLE_URL: env.server.url,
          EZTHROTTLE_API_KEY: env.server.key,
          TARGET_URL: `${env.target.url}/anything?run=${token()}`,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      p.stdout.on("data", (d) => (out += d));
      p.stderr.on("data", (d) => (err += d));
      p.once("exit", (c) => resolve({ code: c, stdout: out, stderr: err }));
    });
    assert.equal(code, 0, `exit ${code}\n${stdout}\n${stderr}`);
    assert.match(stdout, /^Job ID: job_\w+$/m);
    assert.match(stdout, /^webhook for job_\w+: valid$/m);
    assert.match(stdout, /^succeeded 200$/m);
  } finally {
    rmSync(file, { force: true });
  }
});
