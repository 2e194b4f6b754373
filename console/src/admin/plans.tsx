import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { Check, ErrorBox, Field, Notice, Select, Table, formValues, useAction, useData } from "../ui";
import { allowanceText, planPrice } from "../member/plans";
import { toMicros } from "./models";
import { canWrite } from "./role";

export function PlansPage() {
  const list = useData(() => api("get", "/api/admin/plans"));
  const act = useAction();
  const [period, setPeriod] = useState("month");
  const [unit, setUnit] = useState("tokens");
  const [visible, setVisible] = useState(true);
  const [msg, setMsg] = useState<string | null>(null);
  const w = canWrite();
  return (
    <section>
      <h1>{t("admin.nav.plans")}</h1>
      {w && (
        <form
          class="card"
          data-testid="plan-form"
          onSubmit={(e) => {
            const v = formValues(e);
            act.run(async () => {
              await api("post", "/api/admin/plans", {
                body: {
                  id: v.id,
                  name: v.name,
                  price_micros: toMicros(v.price || "0"),
                  currency: v.currency.toUpperCase(),
                  period: period as any,
                  allowance_amount: unit === "money" ? toMicros(v.amount) : Number(v.amount),
                  allowance_unit: unit as any,
                  allowed_models: ["*"],
                  rpm: v.rpm ? Number(v.rpm) : null,
                  visible,
                },
              });
              setMsg(t("common.saved"));
              (e.target as HTMLFormElement).reset();
              list.reload();
            });
          }}
        >
          <h2>{t("plans.new")}</h2>
          <div class="grid3">
            <Field label={t("plans.id")} name="id" required pattern="[a-z0-9][a-z0-9_\-]*" />
            <Field label={t("plans.name")} name="name" required />
            <Field label={t("plans.price")} name="price" inputMode="decimal" defaultValue="0" />
            <Field label={t("plans.currency")} name="currency" defaultValue="CNY" required maxLength={3} />
            <Select
              label={t("plans.period")}
              name="period"
              value={period}
              options={["day", "week", "month", "year", "none"].map((p) => [p, t(`period.${p}` as any)])}
              onChange={setPeriod}
            />
            <Select
              label={t("plans.unit")}
              name="unit"
              value={unit}
              options={["tokens", "characters", "requests", "money"].map((u) => [u, t(`unit.${u}` as any)])}
              onChange={setUnit}
            />
            <Field label={t("plans.amount")} name="amount" required inputMode="numeric" />
            <Field label={t("plans.rpm.label")} name="rpm" inputMode="numeric" />
          </div>
          <Check label={t("plans.visible")} name="visible" checked={visible} onChange={setVisible} />
          <button type="submit" class="primary" disabled={act.busy}>
            {t("common.create")}
          </button>
        </form>
      )}
      <ErrorBox error={list.error || act.error} />
      {msg && <Notice>{msg}</Notice>}
      <Table
        testid="plans"
        rows={list.data?.data ?? []}
        cols={[
          { key: "plans.id", cell: (p: any) => p.id },
          { key: "plans.name", cell: (p: any) => p.name },
          { key: "plans.price", cell: (p: any) => planPrice(p) },
          { key: "plans.allowance", cell: (p: any) => allowanceText(p) },
          { key: "plans.visible", cell: (p: any) => (p.visible ? t("common.yes") : t("common.no")) },
          {
            key: "common.actions",
            cell: (p: any) =>
              w ? (
                <button
                  class="danger"
                  onClick={() =>
                    confirm(t("common.confirm.delete", { name: p.id })) &&
                    act.run(async () => {
                      await api("delete", "/api/admin/plans/{id}", { params: { id: p.id } });
                      list.reload();
                    })
                  }
                >
                  {t("common.delete")}
                </button>
              ) : null,
          },
        ]}
      />
    </section>
  );
}
