// Generates src/api.gen.ts from lambda-admin/openapi.json with openapi-typescript (pinned in
// package.json). `--check` regenerates in memory and fails when the committed file differs,
// so the API types are never written by hand and never go stale.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const here = path.dirname(fileURLToPath(import.meta.url));
const spec = path.resolve(here, "../../lambda-admin/openapi.json");
const out = path.resolve(here, "../src/api.gen.ts");
const header =
  "// Generated from lambda-admin/openapi.json by console/scripts/gen-api.mjs. Do not edit.\n";
const ast = await openapiTS(new URL(`file://${spec}`));
const text = header + astToString(ast);
if (process.argv.includes("--check")) {
  const current = fs.existsSync(out) ? fs.readFileSync(out, "utf8") : "";
  if (current !== text) {
    console.error("console/src/api.gen.ts is stale: run `npm run gen:api` in console/");
    process.exit(1);
  }
  console.log("api.gen.ts is up to date with lambda-admin/openapi.json");
} else {
  fs.writeFileSync(out, text);
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}
