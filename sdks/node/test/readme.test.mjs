// The README's quick start, executed as written: the first ```js block under "## Quick start" runs
// as a module inside the package (so `import "ezthrottle"` is this package) against the real
// binary, with EZTHROTTLE_URL / EZTHROTTLE_API_KEY / TARGET_URL set as the README says.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
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

// The "done when": `npm install ./sdks/node` into an app, then code written for the hosted
// 1.4.0 package (CommonJS, its README's quick start and webhook verification) runs with only the
// URL added: Step → server → succeeded, webhook verified.
const HOSTED_APP = `
const http = require("node:http");
const { EZThrottle, Step, StepType, verifyWebhookSignature } = require("ezthrottle");

async function main() {
  const client = new EZThrottle({ apiKey: process.env.KEY, tracktagsUrl: process.env.URL });
  const WEBHOOK_SECRET = "your_secret_min_16_chars";
  await client.createWebhookSecret(WEBHOOK_SECRET);
  let done;
  const delivered = new Promise((r) => (done = r));
  const app = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const { verified, reason } = verifyWebhookSignature(body, req.headers["x-ezthrottle-signature"], WEBHOOK_SECRET);
      res.writeHead(verified ? 200 : 401).end();
      done({ reason, status: JSON.parse(body).status, job_id: JSON.parse(body).job_id });
    });
  }).listen(0, "127.0.0.1");
  await new Promise((r) => app.once("listening", r));

  const result = await new Step(client)
    .url(process.env.TARGET)
    .method("POST")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: "http://127.0.0.1:" + app.address().port + "/webhook" }])
    .execute();
  console.log("Job ID: " + result.job_id);
  const hook = await delivered;
  console.log("webhook " + hook.job_id + " " + hook.status + " " + hook.reason);
  app.close();
}
main().catch((e) => { console.error(e); process.exit(1); });
`;

test("npm install ./sdks/node into an app; hosted-style CommonJS code runs unchanged but the URL", async () => {
  const app = mkdtempSync(join(tmpdir(), "ezt-node-app-"));
  try {
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true }));
    writeFileSync(join(app, "main.cjs"), HOSTED_APP);
    await run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", SDK_DIR], { cwd: app });
    const { stdout } = await run(process.execPath, ["main.cjs"], {
      cwd: app,
      env: { ...process.env, KEY: env.server.key, URL: env.server.url, TARGET: `${env.target.url}/app?run=${token()}` },
    });
    const id = /^Job ID: (job_\w+)$/m.exec(stdout)?.[1];
    assert.ok(id, stdout);
    assert.match(stdout, new RegExp(`^webhook ${id} success valid$`, "m"));
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});

function run(cmd, args, options) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.once("exit", (code) =>
      code === 0 ? resolve({ stdout, stderr }) : reject(new Error(`${cmd} ${args.join(" ")}: exit ${code}\n${stdout}\n${stderr}`)),
    );
  });
}
