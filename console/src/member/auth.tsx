import { useState } from "preact/hooks";
import { api, setToken } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, formValues, useAction } from "../ui";

export function AuthPage({ onIn }: { onIn: (email: string) => void }) {
  const [mode, setMode] = useState<"login" | "signup">("login");
  const { run, busy, error } = useAction();
  const submit = (e: Event) => {
    const v = formValues(e);
    run(async () => {
      const r =
        mode === "login"
          ? await api("post", "/api/auth/login", { body: { email: v.email, password: v.password } })
          : await api("post", "/api/auth/signup", { body: { email: v.email, password: v.password } });
      setToken(r.token);
      onIn(r.member?.email ?? v.email);
    });
  };
  return (
    <section class="card narrow">
      <div class="tabs" role="tablist">
        <button role="tab" aria-selected={mode === "login"} onClick={() => setMode("login")}>
          {t("auth.login")}
        </button>
        <button role="tab" aria-selected={mode === "signup"} onClick={() => setMode("signup")}>
          {t("auth.signup")}
        </button>
      </div>
      <h1>{mode === "login" ? t("auth.login.title") : t("auth.signup.title")}</h1>
      <form onSubmit={submit}>
        <Field label={t("auth.email")} name="email" type="email" autocomplete="email" required />
        <Field
          label={t("auth.password")}
          name="password"
          type="password"
          autocomplete={mode === "login" ? "current-password" : "new-password"}
          required
        />
        {mode === "signup" && <p class="muted">{t("auth.password.rules")}</p>}
        <ErrorBox error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {mode === "login" ? t("auth.login") : t("auth.signup")}
        </button>
      </form>
    </section>
  );
}
