import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, ShownOnce, Table, fmtTime, formValues, useAction, useData } from "../ui";
import { setUsageKey } from "./session";

export function KeysPage() {
  const keys = useData(() => api("get", "/api/me/keys"));
  const act = useAction();
  const [shown, setShown] = useState<string | null>(null);
  return (
    <section>
      <h1>{t("keys.title")}</h1>
      <form
        class="card row"
        onSubmit={(e) => {
          const v = formValues(e);
          act.run(async () => {
            const r = await api("post", "/api/me/keys", { body: { name: v.name } });
            const full = r.key ?? r.api_key ?? r.secret;
            setShown(full);
            setUsageKey(full);
            (e.target as HTMLFormElement).reset();
            keys.reload();
          });
        }}
      >
        <Field label={t("keys.name")} name="name" required maxLength={64} />
        <button type="submit" class="primary" disabled={act.busy}>
          {t("keys.create")}
        </button>
      </form>
      {shown && <ShownOnce label={t("keys.once")} value={shown} />}
      <ErrorBox error={keys.error || act.error} />
      <Table
        testid="keys"
        rows={keys.data?.data ?? []}
        cols={[
          { key: "keys.name", cell: (k: any) => k.name },
          { key: "keys.prefix", cell: (k: any) => <code>{k.prefix}…</code> },
          { key: "keys.created", cell: (k: any) => fmtTime(k.created_at) },
          { key: "keys.lastused", cell: (k: any) => fmtTime(k.last_used_at) },
          {
            key: "common.actions",
            cell: (k: any) => (
              <button
                class="danger"
                onClick={() => {
                  if (!confirm(t("keys.revoke.confirm", { name: k.name }))) return;
                  act.run(async () => {
                    await api("delete", "/api/me/keys/{public_id}", { params: { public_id: k.public_id } });
                    keys.reload();
                  });
                }}
              >
                {t("keys.revoke")}
              </button>
            ),
          },
        ]}
      />
    </section>
  );
}
