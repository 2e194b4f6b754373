// First-load budget: the gzip size of everything each entry page loads before any user
// action (its HTML, the scripts and styles it references, and their static imports) must
// stay within 300 KB. Prints the sizes; exits 1 over budget.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const BUDGET = 300 * 1024;
const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../dist");
const gz = (file) => zlib.gzipSync(fs.readFileSync(file), { level: 9 }).length;
let failed = false;
for (const page of ["index.html", "admin/index.html"]) {
  const html = fs.readFileSync(path.join(dist, page), "utf8");
  const seen = new Set();
  const queue = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  while (queue.length) {
    const url = queue.shift();
    if (seen.has(url)) continue;
    seen.add(url);
    if (!url.endsWith(".js")) continue;
    const text = fs.readFileSync(path.join(dist, url), "utf8");
    // Static imports only (dynamic import() chunks load later, on demand).
    for (const m of text.matchAll(/(?:^|[;\n}])\s*import\s*(?:[\w{}*,\s$]+from\s*)?["']\.\/([^"']+)["']/g))
      queue.push("/assets/" + m[1]);
  }
  let total = gz(path.join(dist, page));
  for (const url of seen) total += gz(path.join(dist, url));
  const kb = (total / 1024).toFixed(1);
  console.log(`first load of /${page.replace("index.html", "")}: ${kb} KB gzip (${seen.size + 1} files, budget 300 KB)`);
  if (total > BUDGET) failed = true;
}
if (failed) {
  console.error("over the first-load budget");
  process.exit(1);
}
