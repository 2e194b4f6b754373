import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, Select, Table, fmtMicros, fmtTime, formValues, useAction, useData } from "../ui";
import { toMicros } from "./models";
import { canWrite } from "./role";

function csv(codes: string[]) {
  return "code\n" + codes.join("\n") + "\n";
}

export function CodesPage() {
  const list = useData(() => api("get", "/api/admin/redemption-codes"));
  const plans = useData(() => api("get", "/api/admin/plans"));
  const act = useAction();
  const [kind, setKind] = useState("wallet");
  const [plan, setPlan] = useState("");
  const [batch, setBatch] = useState<{ id: string; codes: string[] } | null>(null);
  const w = canWrite();
  const planIds: string[] = (plans.data?.data ?? []).map((p: any) => p.id);
  const download = () => {
    if (!batch) return;
    const url = URL.createObjectURL(new Blob([csv(batch.codes)], { type: "text/csv" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `codes-${batch.id}.csv`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };
  return (
    <section>
      <h1>{t("admin.nav.codes")}</h1>
      {w && (
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            act.run(async () => {
              const body: any = { count: Number(v.count), note: v.note || undefined };
              if (kind === "wallet") body.wallet_micros = toMicros(v.value);
              else body.plan_id = plan || planIds[0];
              const r = await api("post", "/api/admin/redemption-codes", { body });
              setBatch({ id: r.batch?.id ?? "batch", codes: r.codes ?? [] });
              list.reload();
            });
          }}
        >
          <h2>{t("codes.new")}</h2>
          <div class="grid3">
            <Field label={t("codes.count")} name="count" inputMode="numeric" defaultValue="10" required />
            <Select
              label={t("codes.kind")}
              name="kind"
              value={kind}
              options={[
                ["wallet", t("codes.wallet")],
                ["plan", t("codes.plan")],
              ]}
              onChange={setKind}
            />
            {kind === "wallet" ? (
              <Field label={t("codes.value")} name="value" inputMode="decimal" required />
            ) : (
              <Select label={t("members.plan")} name="plan" value={plan || planIds[0] || ""} options={planIds.map((p) => [p, p])} onChange={setPlan} />
            )}
            <Field label={t("codes.note")} name="note" />
          </div>
          <button type="submit" class="primary" disabled={act.busy}>
            {t("codes.generate")}
          </button>
        </form>
      )}
      {batch && (
        <div class="once" role="status">
          <p>{t("codes.once", { n: batch.codes.length })}</p>
          <button onClick={download} data-testid="codes-csv">
            {t("codes.csv")}
          </button>
          <pre data-testid="codes">{batch.codes.join("\n")}</pre>
        </div>
      )}
      <ErrorBox error={list.error || act.error} />
      <Table
        testid="batches"
        rows={list.data?.data ?? []}
        cols={[
          { key: "keys.created", cell: (b: any) => fmtTime(b.created_at) },
          { key: "codes.count", cell: (b: any) => b.count },
          { key: "codes.redeemed", cell: (b: any) => b.redeemed ?? 0 },
          {
            key: "codes.value",
            cell: (b: any) => (b.value?.wallet_micros ? fmtMicros(b.value.wallet_micros) : (b.value?.plan_id ?? "")),
          },
          { key: "codes.expires", cell: (b: any) => fmtTime(b.expires_at) },
          { key: "codes.note", cell: (b: any) => b.note ?? "" },
        ]}
      />
    </section>
  );
}
