import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { ChartBox, ErrorBox, Select, Table, fmtMicros, fmtMinor, useData } from "../ui";

function fmtMs(v?: number | null) {
  return v == null ? "—" : String(Math.round(v));
}

/** New members per day over the last 30 days (from the newest 1000 members). */
function signupsByDay(list: any[]): [string, number][] {
  const day = (unix: number) => new Date(unix * 1000).toISOString().slice(0, 10);
  const now = Math.floor(Date.now() / 1000);
  const out = new Map<string, number>();
  for (let i = 29; i >= 0; i--) out.set(day(now - i * 86400), 0);
  for (const m of list) {
    const d = day(m.created_at ?? 0);
    if (out.has(d)) out.set(d, (out.get(d) ?? 0) + 1);
  }
  return [...out.entries()];
}

function hourLabel(h: number) {
  const d = new Date(h * 1000);
  return `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, "0")}:00`;
}

export function DashboardPage() {
  const [hours, setHours] = useState("24");
  const s = useData(() => api("get", "/api/admin/summary", { query: { hours } }), [hours]);
  const rev = useData(() => api("get", "/api/admin/analytics/revenue"));
  const members = useData(() => api("get", "/api/admin/members", { query: { limit: 1000 } }));
  const growth = signupsByDay(members.data?.data ?? []);
  const d = s.data;
  const byHour: any[] = d?.by_hour ?? [];
  const labels = byHour.map((b) => hourLabel(b.hour));
  const byModel: any[] = Object.entries(d?.by_model ?? {}).map(([model, v]: [string, any]) => ({ model, ...v }));
  byModel.sort((a, b) => (b.requests ?? 0) - (a.requests ?? 0));
  const days: any[] = rev.data?.by_day ?? [];
  return (
    <section>
      <h1>{t("dash.title")}</h1>
      <Select
        label={t("dash.window")}
        name="hours"
        value={hours}
        options={[
          ["24", t("dash.24h")],
          ["168", t("dash.7d")],
          ["720", t("dash.30d")],
        ]}
        onChange={setHours}
      />
      <ErrorBox error={s.error} />
      {d && (
        <div class="stats">
          <div class="stat">
            <span>{t("usage.requests")}</span>
            <strong data-testid="dash-requests">{d.requests ?? 0}</strong>
          </div>
          <div class="stat">
            <span>{t("dash.errorrate")}</span>
            <strong>{((d.error_rate ?? 0) * 100).toFixed(2)}%</strong>
          </div>
          <div class="stat">
            <span>{t("usage.tokens")}</span>
            <strong>{d.tokens?.total ?? 0}</strong>
          </div>
          <div class="stat">
            <span>{t("usage.cost")}</span>
            <strong>{fmtMicros(d.cost_micros ?? 0)}</strong>
          </div>
          <div class="stat">
            <span>{t("dash.latency")}</span>
            <strong>
              {fmtMs(d.latency_ms_percentiles?.p50)} / {fmtMs(d.latency_ms_percentiles?.p95)} ms
            </strong>
          </div>
          <div class="stat">
            <span>{t("dash.ttft")}</span>
            <strong>{d.ttft_ms_mean != null ? Math.round(d.ttft_ms_mean) : "—"} ms</strong>
          </div>
          <div class="stat">
            <span>{t("dash.members")}</span>
            <strong>{d.active_members ?? 0}</strong>
          </div>
        </div>
      )}
      <div class="charts">
        <ChartBox
          testid="dash-chart-requests"
          title={t("dash.requests.hour")}
          labels={labels}
          series={[
            { label: t("usage.requests"), data: byHour.map((b) => b.requests ?? 0) },
            { label: t("dash.errors"), data: byHour.map((b) => b.errors ?? 0) },
          ]}
        />
        <ChartBox
          title={t("dash.tokens.hour")}
          labels={labels}
          series={[{ label: t("usage.tokens"), data: byHour.map((b) => b.tokens?.total ?? 0) }]}
        />
        <ChartBox
          title={t("dash.latency.hour")}
          labels={labels}
          series={[{ label: t("dash.latency"), data: byHour.map((b) => Math.round(b.latency_ms_mean ?? 0)), kind: "line" }]}
        />
        <ChartBox
          title={t("dash.revenue.day")}
          labels={days.map((x) => `${x.day} ${x.currency}`)}
          series={[{ label: t("dash.revenue"), data: days.map((x) => x.net_minor / 100) }]}
        />
      </div>
      <div class="charts">
        <ChartBox
          testid="dash-chart-growth"
          title={t("dash.growth")}
          labels={growth.map(([d]) => d)}
          series={[{ label: t("dash.signups"), data: growth.map(([, n]) => n) }]}
        />
      </div>
      <p class="muted">{t("dash.growth.note")}</p>
      <h2>{t("dash.topmodels")}</h2>
      <Table
        rows={byModel.slice(0, 10)}
        cols={[
          { key: "models.name", cell: (r: any) => r.model },
          { key: "usage.requests", cell: (r: any) => r.requests },
          { key: "usage.tokens", cell: (r: any) => r.tokens?.total ?? 0 },
          { key: "usage.cost", cell: (r: any) => fmtMicros(r.cost_micros ?? 0) },
        ]}
      />
      <h2>{t("dash.revenue")}</h2>
      <ErrorBox error={rev.error} />
      <Table
        rows={days}
        cols={[
          { key: "common.time", cell: (r: any) => r.day },
          {
            key: "dash.revenue",
            cell: (r: any) => fmtMinor(r.net_minor, r.currency),
          },
        ]}
      />
    </section>
  );
}
