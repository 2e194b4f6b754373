import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { Check, ErrorBox, Field, Notice, Select, Table, formValues, useAction, useData } from "../ui";
import { canWrite } from "./role";

export function ProvidersPage() {
  const list = useData(() => api("get", "/api/admin/providers"));
  const act = useAction();
  const [kind, setKind] = useState("openai");
  const [prefix, setPrefix] = useState(false);
  const [msg, setMsg] = useState<string | null>(null);
  const w = canWrite();
  return (
    <section>
      <h1>{t("admin.nav.providers")}</h1>
      {w && (
        <form
          class="card"
          data-testid="provider-form"
          onSubmit={(e) => {
            const v = formValues(e);
            act.run(async () => {
              await api("post", "/api/admin/providers", {
                body: {
                  id: v.id,
                  kind: kind as any,
                  base_url: v.base_url,
                  credentials: [{ secret: v.secret }],
                  prefix_routing: prefix,
                  enabled: true,
                },
              });
              setMsg(t("common.saved"));
              (e.target as HTMLFormElement).reset();
              list.reload();
            });
          }}
        >
          <h2>{t("providers.new")}</h2>
          <div class="grid3">
            <Field label={t("providers.id")} name="id" required pattern="[a-z0-9][a-z0-9_\-]*" />
            <Select
              label={t("providers.kind")}
              name="kind"
              value={kind}
              options={["openai", "azure", "anthropic", "gemini"].map((k) => [k, k])}
              onChange={setKind}
            />
            <Field label={t("providers.base_url")} name="base_url" type="url" required />
            <Field label={t("providers.secret")} name="secret" type="password" autocomplete="off" required />
          </div>
          <Check label={t("providers.prefix_routing")} name="prefix_routing" checked={prefix} onChange={setPrefix} />
          <button type="submit" class="primary" disabled={act.busy}>
            {t("common.create")}
          </button>
        </form>
      )}
      <ErrorBox error={list.error || act.error} />
      {msg && <Notice>{msg}</Notice>}
      <Table
        testid="providers"
        rows={list.data?.data ?? []}
        cols={[
          { key: "providers.id", cell: (p: any) => p.id },
          { key: "providers.kind", cell: (p: any) => p.kind },
          { key: "providers.base_url", cell: (p: any) => p.base_url },
          { key: "providers.credentials", cell: (p: any) => (p.credentials ?? []).map((c: any) => c.secret).join(", ") },
          { key: "common.enabled", cell: (p: any) => (p.enabled ? t("common.yes") : t("common.no")) },
          {
            key: "common.actions",
            cell: (p: any) =>
              w ? (
                <span class="actions">
                  <button
                    onClick={() =>
                      act.run(async () => {
                        const r = await api("post", "/api/admin/providers/{id}/pull", { params: { id: p.id } });
                        setMsg(t("providers.pulled", { n: (r.added ?? []).length, listed: r.listed ?? 0 }));
                      })
                    }
                  >
                    {t("providers.pull")}
                  </button>
                  <button
                    class="danger"
                    onClick={() =>
                      confirm(t("common.confirm.delete", { name: p.id })) &&
                      act.run(async () => {
                        await api("delete", "/api/admin/providers/{id}", { params: { id: p.id } });
                        list.reload();
                      })
                    }
                  >
                    {t("common.delete")}
                  </button>
                </span>
              ) : null,
          },
        ]}
      />
    </section>
  );
}
