// The admin journey in Chromium: log in, add a provider, pull its models, create a model
// and publish, create a plan, suspend and resume a member, generate redemption codes;
// then a viewer sees the same pages without any mutating control.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { adminToken, base, call, dev, launch, newPage, shot, until } from "./lib.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(() => browser?.close());

async function login(page, email, password) {
  await page.goto(base + "/admin/");
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
}

test("admin journey: provider, pull, model, plan, suspend, codes", async () => {
  const { page, done } = await newPage(browser);
  await login(page, dev.admin_email, dev.admin_password);
  // Member growth: today's column counts the members created today (the demo member at least).
  const today = new Date().toISOString().slice(0, 10);
  const growthRow = page.getByTestId("dash-chart-growth-data").getByRole("row").filter({ hasText: today });
  await until("today's signups in the growth chart", async () => Number(await growthRow.locator("td").nth(1).textContent()) >= 1, 5000);
  await shot(page, "admin-dashboard-en");

  // Provider (the mock upstream), then pull its models.
  await page.getByRole("link", { name: "Providers" }).click();
  const form = page.getByTestId("provider-form");
  await form.getByLabel("Id", { exact: true }).fill("browser");
  await form.getByLabel("Kind", { exact: true }).selectOption("openai");
  await form.getByLabel("Base URL", { exact: true }).fill(`${dev.mock_url}/v1`);
  await form.getByLabel("API key", { exact: true }).fill("sk-mock-browser-1234");
  await form.getByRole("button", { name: "Create" }).click();
  const row = page.getByTestId("providers").getByRole("row").filter({ hasText: "browser" });
  await row.waitFor();
  assert.match(await row.textContent(), /1234/);
  assert.doesNotMatch(await row.textContent(), /sk-mock-browser/, "the secret is masked");
  await row.getByRole("button", { name: "Pull models" }).click();
  await page.getByText(/new models added/).waitFor();
  await shot(page, "admin-providers-en");

  // A model on it, published to the edge, then served with the demo key.
  await page.getByRole("link", { name: "Models" }).click();
  const mf = page.getByTestId("model-form");
  await mf.getByLabel("Model name", { exact: true }).fill("browser-model");
  await mf.getByLabel("Provider", { exact: true }).selectOption("browser");
  await mf.getByLabel("Upstream model", { exact: true }).fill("gpt-4o-mini");
  await mf.getByRole("button", { name: "Create" }).click();
  await page.getByTestId("models").getByRole("cell", { name: "browser-model", exact: true }).waitFor();
  await page.getByTestId("publish").click();
  await page.getByText(/Catalogue v\d+ published/).waitFor();
  await until("the new model to be served", async () => {
    const r = await call("POST", "/v1/chat/completions", dev.demo_key, {
      model: "browser-model",
      messages: [{ role: "user", content: "hi" }],
    });
    return r.status === 200;
  });
  await shot(page, "admin-models-en");

  // A plan.
  await page.getByRole("link", { name: "Plans" }).click();
  const pf = page.getByTestId("plan-form");
  await pf.getByLabel("Plan id", { exact: true }).fill("browser-basic");
  await pf.getByLabel("Name", { exact: true }).fill("Browser Basic");
  await pf.getByLabel("Allowance per period", { exact: true }).fill("50000");
  await pf.getByRole("button", { name: "Create" }).click();
  await page.getByTestId("plans").getByRole("cell", { name: "browser-basic", exact: true }).waitFor();
  const plans = await call("GET", "/api/plans");
  assert.ok(plans.body.data.some((p) => p.id === "browser-basic"));
  await shot(page, "admin-plans-en");

  // Suspend the demo member: its key is refused at the edge; resume restores it.
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByLabel("Email, name or id", { exact: true }).fill(dev.demo_email);
  await page.getByRole("button", { name: "Search" }).click();
  await page.getByRole("link", { name: dev.demo_email }).click();
  await page.getByTestId("member-status").waitFor();
  await page.getByRole("button", { name: "Suspend" }).click();
  await until("the member to show suspended", async () => (await page.getByTestId("member-status").textContent()) === "Suspended");
  await until("the edge to refuse the suspended member", async () => (await call("GET", "/v1/models", dev.demo_key)).status === 403);
  await shot(page, "admin-member-en");
  await page.getByRole("button", { name: "Resume" }).click();
  await until("the member to show active", async () => (await page.getByTestId("member-status").textContent()) === "Active");
  await until("the edge to serve the member again", async () => (await call("GET", "/v1/models", dev.demo_key)).status === 200);

  // Credit the wallet once: the adjustment is listed with its amount and reason.
  await page.getByLabel("Amount (negative to debit)", { exact: true }).fill("2.5");
  await page.getByLabel("Reason", { exact: true }).fill("browser goodwill");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.getByText("Saved.").waitFor();
  const credited = page.getByRole("row").filter({ hasText: "browser goodwill" });
  await credited.waitFor();
  assert.equal(await credited.count(), 1);
  assert.match(await credited.textContent(), /2\.5/);

  // Redemption codes: a batch, shown once, downloadable as CSV.
  await page.getByRole("link", { name: "Redemption codes" }).click();
  await page.getByLabel("How many", { exact: true }).fill("3");
  await page.getByLabel("Value", { exact: true }).fill("1.5");
  await page.getByRole("button", { name: "Generate" }).click();
  const codes = (await page.getByTestId("codes").textContent()).split("\n");
  assert.equal(codes.length, 3);
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("codes-csv").click()]);
  const csv = await (await import("node:fs")).promises.readFile(await download.path(), "utf8");
  assert.equal(csv, "code\n" + codes.join("\n") + "\n");
  await shot(page, "admin-codes-en");

  // The audit log has what this journey did.
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByTestId("audit").getByText("member.suspended").first().waitFor();
  await shot(page, "admin-audit-en");
  await done();
});

test("viewer: every page, no mutating control", async () => {
  const admin = await adminToken();
  const email = `viewer-${Date.now()}@tollbooth.local`;
  const r = await call("POST", "/api/admin/admins", admin, { email, password: "viewer-pass-42", role: "viewer" });
  assert.equal(r.status, 201, r.text);
  // An invited account changes its initial password before anything else.
  const first = await adminToken(email, "viewer-pass-42");
  const early = await call("GET", "/api/admin/plans", first);
  assert.equal(early.status, 403, early.text);
  const ch = await call("POST", "/api/admin/password", first, { current_password: "viewer-pass-42", new_password: "viewer-pass-43" });
  assert.equal(ch.status, 200, ch.text);
  const { page, done } = await newPage(browser);
  await login(page, email, "viewer-pass-43");
  for (const [link, testid] of [
    ["Providers", "provider-form"],
    ["Models", "model-form"],
    ["Plans", "plan-form"],
  ]) {
    await page.getByRole("link", { name: link }).click();
    await page.getByRole("heading", { name: link }).waitFor();
    await page.waitForLoadState("networkidle");
    assert.equal(await page.getByTestId(testid).count(), 0, `${link}: no create form for a viewer`);
    assert.equal(await page.getByRole("button", { name: "Delete" }).count(), 0);
  }
  assert.equal(await page.getByTestId("publish").count(), 0);
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByRole("link", { name: dev.demo_email }).click();
  await page.getByTestId("member-status").waitFor();
  assert.equal(await page.getByRole("button", { name: "Suspend" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Revoke" }).count(), 0);
  await shot(page, "admin-member-viewer");
  // The API refuses the viewer as well.
  const vt = await adminToken(email, "viewer-pass-43");
  const refused = await call("POST", "/api/admin/plans", vt, { name: "x", period: "month", allowance_amount: 1, allowance_unit: "tokens" });
  assert.equal(refused.status, 403);
  await done();
});
