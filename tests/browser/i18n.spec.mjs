// Both languages: the switch is remembered across a reload; every page of both apps
// renders in English and in Simplified Chinese without a missing string (a missing one
// would show its key); a screenshot of each page in each language. Also: the console is
// served with a CSP without 'unsafe-inline', and the API keeps working beside it.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { base, call, dev, launch, messageKeys, newPage, shot } from "./lib.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(() => browser?.close());

const MEMBER = ["/", "/plans", "/pay", "/keys", "/orders", "/account"];
const ADMIN = ["/", "/providers", "/models", "/plans", "/members", "/orders", "/codes", "/apps", "/settings", "/audit", "/logs", "/conversations"];

async function noKeys(page, where) {
  const text = await page.locator("body").innerText();
  const words = new Set(text.split(/[\s:：,，()（）]+/));
  const leaked = messageKeys.filter((k) => words.has(k));
  assert.deepEqual(leaked, [], `${where}: untranslated message keys`);
}

test("language switch is remembered across a reload", async () => {
  const { page, done } = await newPage(browser, { locale: "en-US" });
  await page.goto(base + "/");
  await page.getByRole("heading", { name: "Log in to your account" }).waitFor();
  await page.getByTestId("lang").selectOption("zh-CN");
  await page.getByRole("heading", { name: "登录您的账户" }).waitFor();
  await page.reload();
  await page.getByRole("heading", { name: "登录您的账户" }).waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.lang), "zh-CN");
  // The admin console shares the choice (same origin).
  await page.goto(base + "/admin/");
  await page.getByRole("heading", { name: "管理员登录" }).waitFor();
  await page.getByTestId("lang").selectOption("en");
  await page.reload();
  await page.getByRole("heading", { name: "Admin sign-in" }).waitFor();
  await done();
});

test("the default language follows the browser", async () => {
  const { page, done } = await newPage(browser, { locale: "zh-CN" });
  await page.goto(base + "/");
  await page.getByRole("heading", { name: "登录您的账户" }).waitFor();
  await done();
});

test("every page in both languages, no missing string", async () => {
  // A member with a session, and the admin.
  const email = `i18n-${Date.now()}@example.com`;
  for (const lang of ["en", "zh-CN"]) {
    const { page, done } = await newPage(browser, { locale: lang === "en" ? "en-US" : "zh-CN" });
    await page.goto(base + "/");
    if (lang === "en") {
      await page.getByRole("tab", { name: "Sign up" }).click();
    } else {
      await page.getByRole("tab", { name: "登录" }).click();
    }
    await page.locator("input[name=email]").fill(email);
    await page.locator("input[name=password]").fill("i18n-pass-4242");
    await page.locator("form button[type=submit]").click();
    await page.getByTestId("logout").waitFor();
    for (const route of MEMBER) {
      await page.goto(`${base}/#${route}`);
      await page.locator("main h1").waitFor();
      await page.waitForLoadState("networkidle");
      await noKeys(page, `member ${route} (${lang})`);
      await shot(page, `i18n-member${route.replace(/\//g, "_") || "_"}-${lang}`);
    }
    await page.goto(base + "/admin/");
    await page.locator("input[name=email]").fill(dev.admin_email);
    await page.locator("input[name=password]").fill(dev.admin_password);
    await page.locator("form button[type=submit]").click();
    await page.getByTestId("logout").waitFor();
    for (const route of ADMIN) {
      await page.goto(`${base}/admin/#${route}`);
      await page.locator("main h1").waitFor();
      await page.waitForLoadState("networkidle");
      await noKeys(page, `admin ${route} (${lang})`);
      await shot(page, `i18n-admin${route.replace(/\//g, "_")}-${lang}`);
    }
    // Phone width: the menu collapses behind a button.
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(`${base}/admin/#/members`);
    await page.locator("button.menu").click();
    await page.locator("nav.open").waitFor();
    await shot(page, `phone-admin-members-${lang}`);
    await done();
  }
});

test("served with a strict CSP, beside a working API", async () => {
  for (const p of ["/", "/admin/"]) {
    const r = await fetch(base + p);
    assert.equal(r.status, 200);
    const csp = r.headers.get("content-security-policy") ?? "";
    assert.match(csp, /script-src 'self'/, `${p}: CSP`);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const html = await r.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)/, `${p}: no inline script`);
    assert.doesNotMatch(html, /https?:\/\//, `${p}: nothing from another origin`);
  }
  const admin = await fetch(base + "/admin", { redirect: "manual" });
  assert.ok([200, 307, 308].includes(admin.status));
  assert.equal((await call("GET", "/health")).status, 200);
  const models = await call("GET", "/v1/models", dev.demo_key);
  assert.equal(models.status, 200);
  assert.equal((await call("GET", "/api/plans")).status, 200);
});
