import { useState } from "preact/hooks";
import { api, usage } from "../api";
import { t } from "../i18n";
import { ChartBox, ErrorBox, Field, fmtMicros, formValues, useData } from "../ui";
import { getUsageKey, setUsageKey } from "./session";

type Point = { start: string; start_unix: number; requests: number; input_tokens: number; output_tokens: number; cost_micros: number };

function label(p: Point, hourly: boolean) {
  const d = new Date(p.start_unix * 1000);
  return hourly
    ? `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, "0")}:00`
    : `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

export function UsagePage() {
  const me = useData(() => api("get", "/api/me"));
  const sub = useData(() => api("get", "/api/me/subscription"));
  const [key, setKey] = useState(getUsageKey());
  const [by, setBy] = useState<"day" | "hour">("day");
  const u = useData(() => (key ? usage(key) : Promise.resolve(null)), [key]);
  const points: Point[] = (by === "day" ? u.data?.daily : u.data?.hourly) ?? [];
  const labels = points.map((p) => label(p, by === "hour"));
  const allowance = u.data?.allowance;
  const wallet = u.data?.wallet;
  const subscription = sub.data?.subscription ?? sub.data;
  return (
    <section>
      <h1>{t("usage.title")}</h1>
      <ErrorBox error={me.error || sub.error} />
      <div class="stats">
        <div class="stat">
          <span>{t("usage.plan")}</span>
          <strong data-testid="plan-name">{subscription?.plan_id ?? t("usage.noplan")}</strong>
          {subscription?.expires_at ? <small>{t("usage.until", { date: new Date(subscription.expires_at * 1000).toLocaleDateString() })}</small> : null}
        </div>
        {u.data && (
          <>
            <div class="stat">
              <span>{t("usage.allowance")}</span>
              <strong data-testid="allowance">
                {allowance
                  ? allowance.unit === "money"
                    ? fmtMicros(allowance.remaining)
                    : `${allowance.remaining} / ${allowance.amount}`
                  : "—"}
              </strong>
              <small>{allowance ? t(`unit.${allowance.unit}` as any) : ""}</small>
            </div>
            <div class="stat">
              <span>{t("usage.wallet")}</span>
              <strong data-testid="wallet">{fmtMicros(wallet?.available_micros ?? wallet?.balance_micros ?? 0)}</strong>
            </div>
            <div class="stat">
              <span>{t("usage.period")}</span>
              <strong>{u.data.period?.requests ?? 0}</strong>
              <small>{t("usage.requests")}</small>
            </div>
          </>
        )}
      </div>
      {!key ? (
        <form
          class="card"
          onSubmit={(e) => {
            const v = formValues(e);
            setUsageKey(v.key.trim());
            setKey(v.key.trim());
          }}
        >
          <p class="muted">{t("usage.needkey")}</p>
          <Field label={t("usage.key")} name="key" type="password" autocomplete="off" required />
          <button type="submit">{t("usage.show")}</button>
        </form>
      ) : (
        <>
          <ErrorBox error={u.error} />
          <div class="row">
            <div class="seg" role="group" aria-label={t("usage.granularity")}>
              <button aria-pressed={by === "day"} onClick={() => setBy("day")}>
                {t("usage.byday")}
              </button>
              <button aria-pressed={by === "hour"} onClick={() => setBy("hour")}>
                {t("usage.byhour")}
              </button>
            </div>
            <button class="link" onClick={() => u.reload()}>
              {t("common.refresh")}
            </button>
            <button
              class="link"
              onClick={() => {
                setUsageKey(null);
                setKey(null);
              }}
            >
              {t("usage.forgetkey")}
            </button>
          </div>
          <div class="charts">
            <ChartBox
              testid="chart-requests"
              title={t("usage.requests")}
              labels={labels}
              series={[{ label: t("usage.requests"), data: points.map((p) => p.requests) }]}
            />
            <ChartBox
              testid="chart-tokens"
              title={t("usage.tokens")}
              labels={labels}
              series={[
                { label: t("usage.input"), data: points.map((p) => p.input_tokens) },
                { label: t("usage.output"), data: points.map((p) => p.output_tokens) },
              ]}
            />
            <ChartBox
              testid="chart-cost"
              title={t("usage.cost")}
              labels={labels}
              series={[{ label: t("usage.cost"), data: points.map((p) => p.cost_micros), kind: "line" }]}
              yFormat={(v) => fmtMicros(v, 6)}
            />
          </div>
        </>
      )}
    </section>
  );
}
