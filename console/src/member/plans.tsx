import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ErrorBox, Notice, Select, fmtMicros, useAction, useData } from "../ui";
import { payAndWait } from "./checkout";

export function planPrice(p: any) {
  return p.price_micros ? `${fmtMicros(p.price_micros)} ${p.currency ?? ""}` : t("plans.free");
}
export function allowanceText(p: any) {
  const amount = p.allowance_unit === "money" ? fmtMicros(p.allowance_amount) : String(p.allowance_amount);
  return `${amount} ${t(`unit.${p.allowance_unit}` as any)} / ${t(`period.${p.period}` as any)}`;
}

export function PlansPage() {
  const plans = useData(() => api("get", "/api/plans"));
  const sub = useData(() => api("get", "/api/me/subscription"));
  const [provider, setProvider] = useState("epay");
  const [status, setStatus] = useState<string | null>(null);
  const act = useAction();
  const current = (sub.data?.subscription ?? null)?.plan_id;
  const choose = (p: any) =>
    act.run(async () => {
      setStatus(null);
      if (!p.price_micros) {
        await api("post", "/api/me/subscription", { body: { plan_id: p.id } });
        setStatus(t("plans.subscribed", { plan: p.name }));
        sub.reload();
        return;
      }
      const win = window.open("about:blank", "_blank");
      const r = await api("post", "/api/me/orders", {
        body: { kind: "plan", plan_id: p.id, provider },
      });
      setStatus(t("plans.waiting"));
      const state = await payAndWait(r.order, r.checkout_url, (s) => setStatus(t(`order.state.${s}` as any)), win);
      setStatus(t(`order.state.${state}` as any));
      sub.reload();
    });
  return (
    <section>
      <h1>{t("plans.title")}</h1>
      <ErrorBox error={plans.error || act.error} />
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
      <div class="cards">
        {(plans.data?.data ?? []).map((p: any) => (
          <article class={`card plan ${current === p.id ? "current" : ""}`} data-testid={`plan-${p.id}`}>
            <h2>{p.name}</h2>
            <p class="price">{planPrice(p)}</p>
            <p>{allowanceText(p)}</p>
            {p.rpm ? <p class="muted">{t("plans.rpm", { n: p.rpm })}</p> : null}
            {current === p.id ? (
              <p class="badge">{t("plans.current")}</p>
            ) : (
              <button class="primary" disabled={act.busy} onClick={() => choose(p)}>
                {current ? t("plans.switch") : t("plans.choose")}
              </button>
            )}
          </article>
        ))}
      </div>
      {status && <Notice>{status}</Notice>}
    </section>
  );
}
