// The member journey in Chromium: signup → choose a paid plan → pay in the local EPay
// simulator (the real signed notify path) → plan active → create a key (shown once, copy)
// → a chat completion with it through the OpenAI SDK → the call in the usage chart's
// data → orders → revoke (the key stops working).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { adminToken, base, call, dev, launch, newPage, openaiChat, shot, until } from "./lib.mjs";

let browser;
before(async () => {
  browser = await launch();
  // A paid plan priced in the EPay currency, 5 CNY a month for 200k tokens.
  const admin = await adminToken();
  const r = await call("POST", "/api/admin/plans", admin, {
    id: "browser-pro",
    name: "Browser Pro",
    price_micros: 5_000_000,
    currency: "CNY",
    period: "month",
    allowance_amount: 200000,
    allowance_unit: "tokens",
    allowed_models: ["*"],
    visible: true,
  });
  assert.ok([201, 409].includes(r.status), r.text);
});
after(() => browser?.close());

test("member journey: signup, pay a plan with EPay, key, call, usage, revoke", async () => {
  // The wrong current password below is refused with 401 on purpose.
  const { page, context, done } = await newPage(browser, {
    allow: ["/api/me/password Failed to load resource: the server responded with a status of 401"],
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const email = `journey-${Date.now()}@example.com`;

  await page.goto(base + "/");
  await shot(page, "member-login-en");
  await page.getByRole("tab", { name: "Sign up" }).click();
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill("journey-pass-42");
  await page.getByRole("button", { name: "Sign up", exact: true }).last().click();
  await page.getByRole("heading", { name: "Usage" }).waitFor();
  await assert.equal(await page.getByTestId("plan-name").textContent(), "No plan");

  // Choose the paid plan, pay in the simulator (a new tab), come back to a paid plan.
  await page.getByRole("link", { name: "Plans" }).click();
  await page.getByLabel("Payment method", { exact: true }).selectOption("epay");
  const card = page.getByTestId("plan-browser-pro");
  await card.waitFor();
  await shot(page, "member-plans-en");
  const [sim] = await Promise.all([context.waitForEvent("page"), card.getByRole("button", { name: "Choose" }).click()]);
  await sim.getByTestId("sim-pay").waitFor();
  assert.equal(await sim.getByTestId("money").textContent(), "5.00 CNY");
  await shot(sim, "epay-simulator");
  await sim.getByTestId("sim-pay").click();
  await sim.waitForURL(/\/webhooks\/epay\/return/);
  assert.match(await sim.content(), /Payment received/);
  await sim.close();
  await page.getByText("Paid and credited").waitFor({ timeout: 30000 });
  // The plan is active (the order's fulfilment started the subscription).
  await page.getByRole("link", { name: "Usage" }).click();
  await until("the plan to show as active", async () => {
    await page.getByRole("link", { name: "Orders" }).click();
    await page.getByRole("link", { name: "Usage" }).click();
    return page
      .getByTestId("plan-name")
      .filter({ hasText: /^browser-pro$/ })
      .waitFor({ timeout: 2000 })
      .then(() => true, () => false);
  });
  await page.getByRole("link", { name: "Orders" }).click();
  await page.getByTestId("orders").getByText("Paid and credited").waitFor();
  await shot(page, "member-orders-en");

  // A key, shown once with a copy button.
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Key name", { exact: true }).fill("journey");
  await page.getByRole("button", { name: "Create key" }).click();
  const key = (await page.getByTestId("secret").textContent()).trim();
  assert.match(key, /^sk-/);
  await page.getByRole("button", { name: "Copy" }).click();
  await page.getByRole("button", { name: "Copied" }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
  await page.getByTestId("keys").getByText("journey").waitFor();
  assert.equal(await page.getByTestId("keys").getByText(key).count(), 0, "the list never shows the full key");
  await shot(page, "member-keys-en");
  // Shown once: after leaving the page it is gone.
  await page.getByRole("link", { name: "Orders" }).click();
  await page.getByRole("link", { name: "API keys" }).click();
  assert.equal(await page.getByTestId("secret").count(), 0);

  // A chat completion with the key through the OpenAI SDK, then the usage chart has it.
  const chat = openaiChat(key, dev.demo_model);
  assert.ok(chat.ok, chat.err);
  const tokens = Number(chat.out);
  assert.ok(tokens > 0);
  await page.getByRole("link", { name: "Usage" }).click();
  await until("the call in the usage chart", async () => {
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.waitForTimeout(300);
    const cells = await page.getByTestId("chart-requests-data").locator("tbody td:nth-child(2)").allTextContents();
    return cells.map(Number).reduce((a, b) => a + b, 0) >= 1;
  }, 30000);
  await page.getByRole("button", { name: "By hour" }).click();
  const hourly = await page.getByTestId("chart-tokens-data").locator("tbody tr").count();
  assert.ok(hourly >= 1);
  const allowance = await page.getByTestId("allowance").textContent();
  assert.match(allowance, /^\d+ \/ 200000$/);
  assert.ok(Number(allowance.split(" / ")[0]) <= 200000 - tokens, `allowance ${allowance} after ${tokens} tokens`);
  await shot(page, "member-usage-en");

  // Revoke: the key stops working at the edge.
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByRole("button", { name: "Revoke" }).click();
  await page.getByText("Nothing here yet.").waitFor();
  await until("the revoked key to be refused", async () => (await call("GET", "/v1/models", key)).status === 401);

  // Account: password change keeps the member signed in; logout ends the session.
  await page.getByRole("link", { name: "Account" }).click();
  await page.getByLabel("Current password", { exact: true }).fill("not-the-password-1");
  await page.getByLabel("New password", { exact: true }).fill("journey-pass-43");
  await page.getByRole("button", { name: "Change password" }).click();
  await page.getByRole("alert").filter({ hasText: "current password is wrong" }).waitFor();
  assert.equal(await page.getByTestId("logout").count(), 1, "a wrong current password keeps the session");
  await page.getByLabel("Current password", { exact: true }).fill("journey-pass-42");
  await page.getByLabel("New password", { exact: true }).fill("journey-pass-43");
  await page.getByRole("button", { name: "Change password" }).click();
  await page.getByText("Password changed").waitFor();
  await shot(page, "member-account-en");
  await page.getByTestId("logout").click();
  await page.getByRole("heading", { name: "Log in to your account" }).waitFor();
  const relog = await call("POST", "/api/auth/login", null, { email, password: "journey-pass-43" });
  assert.equal(relog.status, 200);
  await done();
});
