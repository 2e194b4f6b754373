// Both message tables have the same keys, no empty message, and every key the sources
// use (t("...")) exists. tsc checks the same at compile time; this check also catches
// keys built at run time from a prefix (unit.*, period.*, stream.*, order.state.*).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const keysOf = (file) => {
  const text = fs.readFileSync(path.join(root, "src/messages", file), "utf8");
  const out = new Map();
  for (const m of text.matchAll(/^\s*"([^"]+)":\s*"(.*)",?\s*$/gm)) out.set(m[1], m[2]);
  return out;
};
const en = keysOf("en.ts");
const zh = keysOf("zh.ts");
const problems = [];
for (const k of en.keys()) if (!zh.has(k)) problems.push(`zh.ts lacks ${k}`);
for (const k of zh.keys()) if (!en.has(k)) problems.push(`en.ts lacks ${k}`);
for (const [name, table] of [["en", en], ["zh", zh]])
  for (const [k, v] of table) if (!v.trim()) problems.push(`${name}: empty message ${k}`);
// Placeholders must match between languages.
for (const [k, v] of en) {
  const ph = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort().join(",");
  if (zh.has(k) && ph(v) !== ph(zh.get(k))) problems.push(`placeholders differ for ${k}`);
}
// Dynamic families: every value the code can produce.
const families = {
  "unit.": ["tokens", "characters", "requests", "money"],
  "period.": ["day", "week", "month", "year", "none"],
  "stream.": ["auto", "force_stream", "force_non_stream"],
  "order.state.": ["pending", "paid", "fulfilled", "expired", "refunded", "flagged"],
};
for (const [p, vs] of Object.entries(families))
  for (const v of vs) if (!en.has(p + v)) problems.push(`missing ${p + v}`);
const walk = (d) =>
  fs.readdirSync(d, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)],
  );
for (const f of walk(path.join(root, "src")).filter((f) => /\.tsx?$/.test(f) && !f.includes("messages"))) {
  const text = fs.readFileSync(f, "utf8");
  for (const m of text.matchAll(/\bt\("([^"]+)"/g))
    if (!en.has(m[1])) problems.push(`${path.relative(root, f)} uses unknown key ${m[1]}`);
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`i18n: ${en.size} keys in en and zh-CN, all used keys present`);
