import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, Notice, Select, ShownOnce, Table, fmtMicros, fmtTime, formValues, go, useAction, useData } from "../ui";
import { toMicros } from "./models";
import { canWrite } from "./role";

export function MembersPage() {
  const [q, setQ] = useState("");
  const [status, setStatus] = useState("");
  const list = useData(() => api("get", "/api/admin/members", { query: { q, status, limit: 100 } }), [q, status]);
  return (
    <section>
      <h1>{t("admin.nav.members")}</h1>
      <form
        class="row"
        role="search"
        onSubmit={(e) => {
          const v = formValues(e);
          setQ(v.q.trim());
        }}
      >
        <Field label={t("members.search")} name="q" type="search" />
        <Select
          label={t("members.status")}
          name="status"
          value={status}
          options={[
            ["", t("common.all")],
            ["active", t("members.active")],
            ["suspended", t("members.suspended")],
          ]}
          onChange={setStatus}
        />
        <button type="submit">{t("common.search")}</button>
      </form>
      <ErrorBox error={list.error} />
      <Table
        testid="members"
        rows={list.data?.data ?? []}
        cols={[
          { key: "auth.email", cell: (m: any) => <a href={`#/members/${encodeURIComponent(m.id)}`}>{m.email}</a> },
          { key: "account.username", cell: (m: any) => m.username ?? "" },
          { key: "members.status", cell: (m: any) => t(m.status === "suspended" ? "members.suspended" : "members.active") },
          { key: "keys.created", cell: (m: any) => fmtTime(m.created_at) },
        ]}
      />
    </section>
  );
}

export function MemberPage({ id }: { id: string }) {
  const m = useData(() => api("get", "/api/admin/members/{id}", { params: { id } }), [id]);
  const plans = useData(() => api("get", "/api/admin/plans"));
  const act = useAction();
  const [plan, setPlan] = useState("");
  const [msg, setMsg] = useState<string | null>(null);
  const [shown, setShown] = useState<string | null>(null);
  const w = canWrite();
  const d = m.data;
  const bal = d?.edge_balance;
  const planIds: string[] = (plans.data?.data ?? []).map((p: any) => p.id);
  const chosen = plan || planIds[0] || "";
  return (
    <section>
      <p>
        <a href="#/members" onClick={() => go("/members")}>
          ← {t("admin.nav.members")}
        </a>
      </p>
      <h1>{d?.email ?? id}</h1>
      <ErrorBox error={m.error || act.error} />
      {msg && <Notice>{msg}</Notice>}
      {d && (
        <>
          <dl class="facts">
            <dt>{t("members.status")}</dt>
            <dd data-testid="member-status">{t(d.status === "suspended" ? "members.suspended" : "members.active")}</dd>
            <dt>{t("usage.plan")}</dt>
            <dd>{d.subscription?.plan_id ?? t("usage.noplan")}</dd>
            <dt>{t("usage.wallet")}</dt>
            <dd>{bal?.wallet ? fmtMicros(bal.wallet.available_micros ?? bal.wallet.balance_micros) : "—"}</dd>
            <dt>{t("usage.allowance")}</dt>
            <dd>{bal?.allowance ? `${bal.allowance.remaining} / ${bal.allowance.amount} ${t(`unit.${bal.allowance.unit}` as any)}` : "—"}</dd>
            <dt>{t("usage.period")}</dt>
            <dd>
              {bal?.usage ? `${bal.usage.requests ?? 0} ${t("usage.requests")}, ${fmtMicros(bal.usage.cost_micros ?? 0)}` : "—"}
            </dd>
          </dl>
          {w && (
            <div class="grid3">
              <div class="card">
                <h2>{t("members.status")}</h2>
                {d.status === "suspended" ? (
                  <button
                    onClick={() =>
                      act.run(async () => {
                        await api("post", "/api/admin/members/{id}/resume", { params: { id } });
                        m.reload();
                      })
                    }
                  >
                    {t("members.resume")}
                  </button>
                ) : (
                  <button
                    class="danger"
                    onClick={() =>
                      act.run(async () => {
                        await api("post", "/api/admin/members/{id}/suspend", { params: { id } });
                        m.reload();
                      })
                    }
                  >
                    {t("members.suspend")}
                  </button>
                )}
              </div>
              <form
                class="card"
                onSubmit={(e) => {
                  const v = formValues(e);
                  // One idempotency key per filled form: a resubmission after a lost
                  // answer is applied once; a new key only after success.
                  const form = e.target as HTMLFormElement;
                  form.dataset.idem ||= crypto.randomUUID();
                  act.run(async () => {
                    const neg = v.amount.trim().startsWith("-");
                    const micros = toMicros(v.amount.trim().replace(/^-/, ""));
                    await api("post", "/api/admin/members/{id}/credits", {
                      params: { id },
                      body: {
                        amount_micros: neg ? -micros : micros,
                        reason: v.reason,
                        idempotency_key: form.dataset.idem,
                      },
                    });
                    setMsg(t("common.saved"));
                    delete form.dataset.idem;
                    form.reset();
                    m.reload();
                  });
                }}
              >
                <h2>{t("members.credit")}</h2>
                <Field label={t("members.credit.amount")} name="amount" required pattern="-?\d+(\.\d{1,6})?" />
                <Field label={t("members.credit.reason")} name="reason" required />
                <button type="submit">{t("members.credit.go")}</button>
              </form>
              <div class="card">
                <h2>{t("members.plan")}</h2>
                <Select label={t("members.plan")} name="plan" value={chosen} options={planIds.map((p) => [p, p])} onChange={setPlan} />
                <div class="actions">
                  <button
                    onClick={() =>
                      act.run(async () => {
                        await api("post", "/api/admin/members/{id}/subscription", { params: { id }, body: { plan_id: chosen, action: "start" } });
                        m.reload();
                      })
                    }
                  >
                    {t("members.plan.start")}
                  </button>
                  {d.subscription && (
                    <button
                      class="danger"
                      onClick={() =>
                        act.run(async () => {
                          await api("post", "/api/admin/members/{id}/subscription", {
                            params: { id },
                            body: { plan_id: d.subscription.plan_id, action: "expire" },
                          });
                          m.reload();
                        })
                      }
                    >
                      {t("members.plan.expire")}
                    </button>
                  )}
                </div>
              </div>
            </div>
          )}
          <h2>{t("keys.title")}</h2>
          {w && (
            <form
              class="row"
              onSubmit={(e) => {
                const v = formValues(e);
                act.run(async () => {
                  const r = await api("post", "/api/admin/members/{id}/keys", { params: { id }, body: { name: v.name } });
                  setShown(r.key);
                  m.reload();
                });
              }}
            >
              <Field label={t("keys.name")} name="name" required />
              <button type="submit">{t("keys.create")}</button>
            </form>
          )}
          {shown && <ShownOnce label={t("keys.once")} value={shown} />}
          <Table
            rows={d.keys ?? []}
            cols={[
              { key: "keys.name", cell: (k: any) => k.name },
              { key: "keys.prefix", cell: (k: any) => <code>{k.prefix}…</code> },
              { key: "keys.created", cell: (k: any) => fmtTime(k.created_at) },
              {
                key: "common.actions",
                cell: (k: any) =>
                  w ? (
                    <button
                      class="danger"
                      onClick={() =>
                        confirm(t("keys.revoke.confirm", { name: k.name })) &&
                        act.run(async () => {
                          await api("delete", "/api/admin/keys/{public_id}", { params: { public_id: k.public_id } });
                          m.reload();
                        })
                      }
                    >
                      {t("keys.revoke")}
                    </button>
                  ) : null,
              },
            ]}
          />
          <h2>{t("members.credits")}</h2>
          <Table
            rows={d.credits ?? []}
            cols={[
              { key: "common.time", cell: (c: any) => fmtTime(c.at ?? c.created_at) },
              { key: "members.credit.amount", cell: (c: any) => fmtMicros(c.amount_micros) },
              { key: "members.credit.reason", cell: (c: any) => c.reason },
            ]}
          />
        </>
      )}
    </section>
  );
}
