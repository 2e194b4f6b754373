import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Table, fmtMinor, fmtTime, useData } from "../ui";

export function OrdersPage() {
  const orders = useData(() => api("get", "/api/me/orders"));
  return (
    <section>
      <h1>{t("orders.title")}</h1>
      <ErrorBox error={orders.error} />
      <Table
        testid="orders"
        rows={orders.data?.data ?? []}
        cols={[
          { key: "orders.created", cell: (o: any) => fmtTime(o.created_at) },
          { key: "orders.description", cell: (o: any) => o.description },
          { key: "orders.amount", cell: (o: any) => fmtMinor(o.amount_minor, o.currency) },
          { key: "orders.provider", cell: (o: any) => o.provider },
          { key: "orders.state", cell: (o: any) => <span class={`state ${o.state}`}>{t(`order.state.${o.state}` as any)}</span> },
        ]}
      />
    </section>
  );
}
