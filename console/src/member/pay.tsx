import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Field, Notice, Select, formValues, useAction } from "../ui";
import { payAndWait } from "./checkout";

export function PayPage() {
  const top = useAction();
  const red = useAction();
  const [provider, setProvider] = useState("epay");
  const [status, setStatus] = useState<string | null>(null);
  const [redeemed, setRedeemed] = useState<string | null>(null);
  return (
    <section>
      <h1>{t("pay.title")}</h1>
      <div class="grid2">
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            top.run(async () => {
              const [whole, frac = ""] = v.amount.trim().split(".");
              if (!/^\d+$/.test(whole) || !/^\d{0,2}$/.test(frac)) throw new Error("amount");
              const minor = Number(whole) * 100 + Number((frac + "00").slice(0, 2));
              const currency = provider === "epay" ? "CNY" : "USD";
              const win = window.open("about:blank", "_blank");
              const r = await api("post", "/api/me/orders", {
                body: { kind: "topup", amount_minor: minor, currency, provider },
              });
              setStatus(t("plans.waiting"));
              const s = await payAndWait(r.order, r.checkout_url, (x) => setStatus(t(`order.state.${x}` as any)), win);
              setStatus(t(`order.state.${s}` as any));
            });
          }}
        >
          <h2>{t("pay.topup")}</h2>
          <Select
            label={t("pay.provider")}
            name="provider"
            value={provider}
            options={[
              ["epay", t("pay.epay")],
              ["stripe", t("pay.stripe")],
            ]}
            onChange={setProvider}
          />
          <Field
            label={t("pay.amount", { currency: provider === "epay" ? "CNY" : "USD" })}
            name="amount"
            inputMode="decimal"
            pattern="\d+(\.\d{1,2})?"
            required
          />
          <ErrorBox error={top.error} />
          <button type="submit" class="primary" disabled={top.busy}>
            {t("pay.topup.go")}
          </button>
          {status && <Notice>{status}</Notice>}
        </form>
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            red.run(async () => {
              setRedeemed(null);
              await api("post", "/api/me/redeem", { body: { code: v.code.trim() } });
              setRedeemed(t("pay.redeemed"));
              (e.target as HTMLFormElement).reset();
            });
          }}
        >
          <h2>{t("pay.redeem")}</h2>
          <Field label={t("pay.code")} name="code" autocomplete="off" required />
          <ErrorBox error={red.error} />
          <button type="submit" disabled={red.busy}>
            {t("pay.redeem.go")}
          </button>
          {redeemed && <Notice>{redeemed}</Notice>}
        </form>
      </div>
    </section>
  );
}
