import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, getToken, onTokenChange, raw, setToken } from "../api";
import { t, useLang } from "../i18n";
import { ErrorBox, Field, Shell, formValues, go, useAction, useRoute } from "../ui";
import { setRole } from "./role";
import { DashboardPage } from "./dashboard";
import { ProvidersPage } from "./providers";
import { ModelsPage } from "./models";
import { PlansPage } from "./plans";
import { MemberPage, MembersPage } from "./members";
import { OrdersPage } from "./orders";
import { CodesPage } from "./codes";
import { AppsPage } from "./apps";
import { SettingsPage } from "./settings";
import { AuditPage } from "./audit";
import { NotYetPage } from "./notyet";
import "../style.css";

const NAV: [string, any][] = [
  ["/", "admin.nav.dashboard"],
  ["/providers", "admin.nav.providers"],
  ["/models", "admin.nav.models"],
  ["/plans", "admin.nav.plans"],
  ["/members", "admin.nav.members"],
  ["/orders", "admin.nav.orders"],
  ["/codes", "admin.nav.codes"],
  ["/apps", "admin.nav.apps"],
  ["/settings", "admin.nav.settings"],
  ["/audit", "admin.nav.audit"],
  ["/logs", "admin.nav.logs"],
  ["/conversations", "admin.nav.conversations"],
];

type Pending = { token: string; password: string; role: string; email: string };

/** The first login of a new account: its initial password must be replaced first. */
function FirstPassword({ pending, onIn }: { pending: Pending; onIn: (who: string) => void }) {
  const { run, busy, error } = useAction();
  return (
    <section class="card narrow">
      <h1>{t("admin.firstpw.title")}</h1>
      <p>{t("admin.firstpw.why")}</p>
      <form
        onSubmit={(e) => {
          const v = formValues(e);
          run(async () => {
            await raw(
              "POST",
              "/api/admin/password",
              { current_password: pending.password, new_password: v.new_password },
              pending.token,
            );
            setRole(pending.role);
            setToken(pending.token);
            onIn(`${pending.email} (${pending.role})`);
          });
        }}
      >
        <Field label={t("account.password.new")} name="new_password" type="password" autocomplete="new-password" required />
        <ErrorBox error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {t("account.password.change")}
        </button>
      </form>
    </section>
  );
}

function Login({ onIn }: { onIn: (who: string) => void }) {
  const { run, busy, error } = useAction();
  const [pending, setPending] = useState<Pending | null>(null);
  if (pending) return <FirstPassword pending={pending} onIn={onIn} />;
  return (
    <section class="card narrow">
      <h1>{t("admin.login.title")}</h1>
      <form
        onSubmit={(e) => {
          const v = formValues(e);
          run(async () => {
            const r = await api("post", "/api/admin/login", { body: { email: v.email, password: v.password } });
            if (r.must_change_password) {
              setPending({ token: r.token, password: v.password, role: r.role, email: v.email });
              return;
            }
            setRole(r.role);
            setToken(r.token);
            onIn(`${v.email} (${r.role})`);
          });
        }}
      >
        <Field label={t("auth.email")} name="email" type="email" autocomplete="username" required />
        <Field label={t("auth.password")} name="password" type="password" autocomplete="current-password" required />
        <ErrorBox error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {t("auth.login")}
        </button>
      </form>
    </section>
  );
}

function App() {
  useLang();
  const route = useRoute();
  const [authed, setAuthed] = useState(!!getToken());
  const [who, setWho] = useState("");
  useEffect(() => onTokenChange(() => setAuthed(!!getToken())) as any, []);
  useEffect(() => {
    document.title = t("admin.title");
  });
  if (!authed)
    return (
      <Shell brand={t("admin.brand")} nav={[]} route={route}>
        <Login onIn={setWho} />
      </Shell>
    );
  const logout = () => {
    setRole(null);
    setToken(null);
    go("/");
  };
  let page;
  if (route.startsWith("/members/")) page = <MemberPage id={decodeURIComponent(route.slice(9))} />;
  else
    switch (route) {
      case "/providers":
        page = <ProvidersPage />;
        break;
      case "/models":
        page = <ModelsPage />;
        break;
      case "/plans":
        page = <PlansPage />;
        break;
      case "/members":
        page = <MembersPage />;
        break;
      case "/orders":
        page = <OrdersPage />;
        break;
      case "/codes":
        page = <CodesPage />;
        break;
      case "/apps":
        page = <AppsPage />;
        break;
      case "/settings":
        page = <SettingsPage />;
        break;
      case "/audit":
        page = <AuditPage />;
        break;
      case "/logs":
        page = <NotYetPage title="admin.nav.logs" waits="notyet.logs" />;
        break;
      case "/conversations":
        page = <NotYetPage title="admin.nav.conversations" waits="notyet.conversations" />;
        break;
      default:
        page = <DashboardPage />;
    }
  return (
    <Shell brand={t("admin.brand")} nav={NAV} route={route} onLogout={logout} who={who}>
      {page}
    </Shell>
  );
}

render(<App />, document.getElementById("app")!);
