import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, ShownOnce, Table, fmtTime, formValues, useAction, useData } from "../ui";
import { canWrite } from "./role";

export function AppsPage() {
  const list = useData(() => api("get", "/api/admin/apps"));
  const act = useAction();
  const [secret, setSecret] = useState<string | null>(null);
  const w = canWrite();
  return (
    <section>
      <h1>{t("admin.nav.apps")}</h1>
      {w && (
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            act.run(async () => {
              const r = await api("post", "/api/admin/apps", {
                body: { name: v.name, callback_urls: v.urls.split(/[\s,]+/).filter(Boolean) },
              });
              setSecret(`${r.id ?? r.app?.id ?? ""}: ${r.secret ?? r.app_secret ?? ""}`);
              (e.target as HTMLFormElement).reset();
              list.reload();
            });
          }}
        >
          <h2>{t("apps.new")}</h2>
          <Field label={t("apps.name")} name="name" required />
          <Field label={t("apps.urls")} name="urls" required />
          <button type="submit" class="primary" disabled={act.busy}>
            {t("common.create")}
          </button>
        </form>
      )}
      {secret && <ShownOnce label={t("apps.once")} value={secret} />}
      <ErrorBox error={list.error || act.error} />
      <Table
        rows={list.data?.data ?? []}
        cols={[
          { key: "apps.id", cell: (a: any) => <code>{a.id}</code> },
          { key: "apps.name", cell: (a: any) => a.name },
          { key: "apps.urls", cell: (a: any) => (a.callback_urls ?? []).join(" ") },
          { key: "keys.created", cell: (a: any) => fmtTime(a.created_at) },
          {
            key: "common.actions",
            cell: (a: any) =>
              w ? (
                <button
                  class="danger"
                  onClick={() =>
                    confirm(t("common.confirm.delete", { name: a.name })) &&
                    act.run(async () => {
                      await api("delete", "/api/admin/apps/{id}", { params: { id: a.id } });
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
