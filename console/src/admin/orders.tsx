import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, Notice, Select, Table, fmtMinor, fmtTime, formValues, useAction, useData } from "../ui";
import { canWrite } from "./role";

const STATES = ["pending", "paid", "fulfilled", "expired", "refunded", "flagged"];

export function OrdersPage() {
  const [state, setState] = useState("");
  const [member, setMember] = useState("");
  const list = useData(() => api("get", "/api/admin/orders", { query: { state, member_id: member, limit: 200 } }), [state, member]);
  const act = useAction();
  const [msg, setMsg] = useState<string | null>(null);
  const w = canWrite();
  return (
    <section>
      <h1>{t("admin.nav.orders")}</h1>
      <form
        class="row"
        onSubmit={(e) => {
          const v = formValues(e);
          setMember(v.member.trim());
        }}
      >
        <Select
          label={t("orders.state")}
          name="state"
          value={state}
          options={[["", t("common.all")], ...STATES.map((s) => [s, t(`order.state.${s}` as any)] as [string, string])]}
          onChange={setState}
        />
        <Field label={t("orders.member")} name="member" />
        <button type="submit">{t("common.search")}</button>
      </form>
      <p class="muted">{t("orders.refund.how")}</p>
      <ErrorBox error={list.error || act.error} />
      {msg && <Notice>{msg}</Notice>}
      <Table
        testid="admin-orders"
        rows={list.data?.data ?? []}
        cols={[
          { key: "orders.created", cell: (o: any) => fmtTime(o.created_at) },
          { key: "orders.member", cell: (o: any) => <a href={`#/members/${encodeURIComponent(o.member_id)}`}>{o.member_id}</a> },
          { key: "orders.description", cell: (o: any) => o.description },
          { key: "orders.amount", cell: (o: any) => fmtMinor(o.amount_minor, o.currency) },
          { key: "orders.provider", cell: (o: any) => o.provider },
          { key: "orders.state", cell: (o: any) => t(`order.state.${o.state}` as any) },
          {
            key: "common.actions",
            cell: (o: any) =>
              w && o.state === "paid" ? (
                <button
                  onClick={() =>
                    act.run(async () => {
                      await api("post", "/api/admin/orders/{id}/fulfil", { params: { id: o.id } });
                      setMsg(t("common.saved"));
                      list.reload();
                    })
                  }
                >
                  {t("orders.fulfil")}
                </button>
              ) : null,
          },
        ]}
      />
    </section>
  );
}
