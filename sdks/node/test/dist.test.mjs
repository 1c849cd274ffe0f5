// dist/ is committed (so `npm install ./sdks/node` needs no build step): it must be exactly what
// the build makes from src/ now.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { SDK_DIR } from "./support.mjs";

function files(dir, root = dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(join(dir, e.name), root) : [relative(root, join(dir, e.name))]))
    .sort();
}

test("the committed dist/ is the build of src/ (else: npm run build, commit dist/)", () => {
  const tmp = mkdtempSync(join(tmpdir(), "ezt-node-dist-"));
  try {
    execFileSync(process.execPath, [join(SDK_DIR, "scripts", "build.mjs"), tmp], { stdio: "inherit" });
    const committed = join(SDK_DIR, "dist");
    assert.deepEqual(files(committed), files(tmp));
    for (const f of files(tmp)) {
      assert.equal(readFileSync(join(committed, f), "utf8"), readFileSync(join(tmp, f), "utf8"), f);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
