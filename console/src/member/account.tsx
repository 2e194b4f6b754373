import { useState } from "preact/hooks";
import { api, setToken } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, Notice, formValues, useAction, useData } from "../ui";

export function AccountPage() {
  const me = useData(() => api("get", "/api/me"));
  const name = useAction();
  const pw = useAction();
  const [done, setDone] = useState<string | null>(null);
  return (
    <section>
      <h1>{t("account.title")}</h1>
      <ErrorBox error={me.error} />
      {me.data && (
        <dl class="facts">
          <dt>{t("auth.email")}</dt>
          <dd data-testid="me-email">{me.data.email}</dd>
          <dt>{t("account.status")}</dt>
          <dd>{me.data.status}</dd>
        </dl>
      )}
      <div class="grid2">
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            name.run(async () => {
              await api("patch", "/api/me", { body: { username: v.username } });
              setDone(t("account.saved"));
              me.reload();
            });
          }}
        >
          <h2>{t("account.username")}</h2>
          <Field label={t("account.username")} name="username" defaultValue={me.data?.username ?? ""} required />
          <ErrorBox error={name.error} />
          <button type="submit" disabled={name.busy}>
            {t("common.save")}
          </button>
        </form>
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            pw.run(async () => {
              const r = await api("post", "/api/me/password", {
                body: { current_password: v.current, new_password: v.next },
              });
              if (r?.token) setToken(r.token);
              setDone(t("account.password.changed"));
              (e.target as HTMLFormElement).reset();
            });
          }}
        >
          <h2>{t("account.password")}</h2>
          <Field label={t("account.password.current")} name="current" type="password" autocomplete="current-password" required />
          <Field label={t("account.password.new")} name="next" type="password" autocomplete="new-password" required />
          <ErrorBox error={pw.error} />
          <button type="submit" disabled={pw.busy}>
            {t("account.password.change")}
          </button>
        </form>
      </div>
      {done && <Notice>{done}</Notice>}
    </section>
  );
}
