// Shared helpers of the console's browser specs (run by tests/browser/run.sh).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const { chromium } = await import(path.join(root, "console/node_modules/playwright-core/index.mjs"));

export const dev = JSON.parse(fs.readFileSync(process.env.TB_DEV_JSON, "utf8"));
export const base = dev.base_url;
const artifacts = process.env.TB_ARTIFACTS ?? path.join(root, ".data/browser/screenshots");
fs.mkdirSync(artifacts, { recursive: true });

/** Every message key of the console (a page showing one has a missing translation). */
export const messageKeys = [
  ...fs.readFileSync(path.join(root, "console/src/messages/en.ts"), "utf8").matchAll(/^\s*"([^"]+)":/gm),
].map((m) => m[1]);

export async function launch() {
  return chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
}

/**
 * A page that records browser console errors and uncaught exceptions; `done()` asserts
 * there were none. `allow` lists substrings ("<resource URL> <message>") of errors a test
 * provokes on purpose.
 */
export async function newPage(browser, { locale = "en-US", allow = [] } = {}) {
  const context = await browser.newContext({ locale, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  const watch = (p) => {
    p.on("console", (m) => {
      const where = `${m.location()?.url ?? ""} ${m.text()}`;
      if (m.type() === "error" && !allow.some((a) => where.includes(a))) errors.push(`${p.url()}: ${where}`);
    });
    p.on("pageerror", (e) => errors.push(`${p.url()}: ${e.message}`));
  };
  watch(page);
  context.on("page", watch);
  page.on("dialog", (d) => d.accept());
  return {
    context,
    page,
    errors,
    async done() {
      await context.close();
      assert.deepEqual(errors, [], "the browser console shows no errors");
    },
  };
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

/** A JSON call to the stack (for setup and for checks outside the browser). */
export async function call(method, p, token, body) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: json, text, headers: r.headers };
}

export async function adminToken(email = dev.admin_email, password = dev.admin_password) {
  const r = await call("POST", "/api/admin/login", null, { email, password });
  assert.equal(r.status, 200, r.text);
  return r.body.token;
}

/** A chat completion through the official OpenAI Python SDK (the venv's `openai`). */
export function openaiChat(key, model) {
  const code = `
import sys
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
r = c.chat.completions.create(model=sys.argv[3], messages=[{"role": "user", "content": "Hello from the browser test"}])
print(r.usage.total_tokens)
`;
  const python = process.env.TB_PYTHON ?? path.join(process.env.HOME, ".cache/tollbooth/venv/bin/python");
  const r = spawnSync(python, ["-c", code, base, key, model], { encoding: "utf8", timeout: 60000 });
  return { ok: r.status === 0, out: r.stdout.trim(), err: r.stderr.slice(-400) };
}

export async function until(what, f, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await f();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}
