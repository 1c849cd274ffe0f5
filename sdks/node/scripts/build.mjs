// Builds <out>/esm (ES modules) and <out>/cjs (CommonJS), each with its .d.ts files, from src/.
// <out> is the first argument, default dist/. A package.json in each output folder tells Node
// which module system its .js files use. dist/ is committed, so `npm install ./sdks/node` works
// from a plain checkout; test/dist.test.mjs fails when it no longer matches src/.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(root, process.argv[2] ?? "dist");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

rmSync(out, { recursive: true, force: true });
for (const [config, dir, type] of [
  ["tsconfig.json", "esm", "module"],
  ["tsconfig.cjs.json", "cjs", "commonjs"],
]) {
  const target = join(out, dir);
  execFileSync(process.execPath, [tsc, "-p", join(root, config), "--outDir", target], {
    stdio: "inherit",
  });
  mkdirSync(target, { recursive: true });
  writeFileSync(join(target, "package.json"), JSON.stringify({ type }) + "\n");
}
