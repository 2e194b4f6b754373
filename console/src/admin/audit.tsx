import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Table, fmtTime, useData } from "../ui";

export function AuditPage() {
  const list = useData(() => api("get", "/api/admin/audit"));
  return (
    <section>
      <h1>{t("admin.nav.audit")}</h1>
      <ErrorBox error={list.error} />
      <Table
        testid="audit"
        rows={list.data?.data ?? []}
        cols={[
          { key: "common.time", cell: (a: any) => fmtTime(a.at) },
          { key: "audit.admin", cell: (a: any) => a.admin },
          { key: "audit.action", cell: (a: any) => <code>{a.action}</code> },
          { key: "audit.target", cell: (a: any) => a.target },
        ]}
      />
    </section>
  );
}
