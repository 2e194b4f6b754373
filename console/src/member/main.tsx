import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, getToken, onTokenChange, setToken } from "../api";
import { t, useLang } from "../i18n";
import { Shell, go, useRoute } from "../ui";
import { AuthPage } from "./auth";
import { AccountPage } from "./account";
import { KeysPage } from "./keys";
import { OrdersPage } from "./orders";
import { PayPage } from "./pay";
import { PlansPage } from "./plans";
import { UsagePage } from "./usage";
import "../style.css";

const NAV: [string, any][] = [
  ["/", "member.nav.usage"],
  ["/plans", "member.nav.plans"],
  ["/pay", "member.nav.pay"],
  ["/keys", "member.nav.keys"],
  ["/orders", "member.nav.orders"],
  ["/account", "member.nav.account"],
];

function App() {
  useLang();
  const route = useRoute();
  const [authed, setAuthed] = useState(!!getToken());
  const [email, setEmail] = useState("");
  useEffect(() => onTokenChange(() => setAuthed(!!getToken())) as any, []);
  useEffect(() => {
    document.title = t("member.title");
  });
  if (!authed) {
    return (
      <Shell brand={t("member.brand")} nav={[]} route={route}>
        <AuthPage
          onIn={(e) => {
            setEmail(e);
            go("/");
          }}
        />
      </Shell>
    );
  }
  const logout = async () => {
    try {
      await api("post", "/api/auth/logout");
    } catch {
      /* the session ends here either way */
    }
    setToken(null);
    go("/");
  };
  let page;
  switch (route) {
    case "/plans":
      page = <PlansPage />;
      break;
    case "/pay":
      page = <PayPage />;
      break;
    case "/keys":
      page = <KeysPage />;
      break;
    case "/orders":
      page = <OrdersPage />;
      break;
    case "/account":
      page = <AccountPage />;
      break;
    default:
      page = <UsagePage />;
  }
  return (
    <Shell brand={t("member.brand")} nav={NAV} route={route} onLogout={logout} who={email}>
      {page}
    </Shell>
  );
}

render(<App />, document.getElementById("app")!);
