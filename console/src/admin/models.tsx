import { useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { Check, ErrorBox, Field, Notice, Select, Table, fmtMicros, formValues, useAction, useData } from "../ui";
import { canWrite } from "./role";

/** Decimal currency units per 1M tokens → integer micro-units (exact, no floats). */
export function toMicros(s: string): number {
  const m = /^(\d+)(?:\.(\d{0,6}))?$/.exec(s.trim());
  if (!m) throw new Error("price");
  return Number(m[1]) * 1_000_000 + Number((m[2] ?? "").padEnd(6, "0"));
}

/** An optional whole token count: blank → unset; anything else must be digits. */
export function toTokens(s: string | undefined): number | undefined {
  const v = (s ?? "").trim();
  if (!v) return undefined;
  if (!/^\d+$/.test(v)) throw new Error("max_input_tokens");
  return Number(v);
}

/** The model as the API takes it back (the list adds read-only fields). */
function body(m: any) {
  const { pulled_from: _p, removed: _r, ...rest } = m;
  return rest;
}

export function ModelsPage() {
  const list = useData(() => api("get", "/api/admin/models"));
  const providers = useData(() => api("get", "/api/admin/providers"));
  const act = useAction();
  const [provider, setProvider] = useState("");
  const [stream, setStream] = useState("auto");
  const [enabled, setEnabled] = useState(true);
  const [msg, setMsg] = useState<string | null>(null);
  const w = canWrite();
  const provs: any[] = providers.data?.data ?? [];
  const chosen = provider || provs[0]?.id || "";
  const put = (m: any, patch: any) =>
    act.run(async () => {
      await api("put", "/api/admin/models/{name}", { params: { name: m.name }, body: { ...body(m), ...patch } });
      list.reload();
    });
  return (
    <section>
      <h1>{t("admin.nav.models")}</h1>
      {w && (
        <div class="row">
          <button
            class="primary"
            data-testid="publish"
            onClick={() =>
              act.run(async () => {
                const r = await api("post", "/api/admin/catalogue/publish");
                setMsg(t("models.published", { version: r.version ?? "" }));
              })
            }
          >
            {t("models.publish")}
          </button>
        </div>
      )}
      {w && (
        <form
          class="card"
          data-testid="model-form"
          onSubmit={(e) => {
            const v = formValues(e);
            act.run(async () => {
              const maxInput = toTokens(v.max_input_tokens);
              await api("post", "/api/admin/models", {
                body: {
                  name: v.name,
                  aliases: v.aliases ? v.aliases.split(",").map((a) => a.trim()).filter(Boolean) : [],
                  deployments: [{ provider: chosen, model: v.upstream, weight: 1 }],
                  stream_mode: stream as any,
                  price: { input_per_mtok: toMicros(v.input), output_per_mtok: toMicros(v.output) } as any,
                  enabled,
                  ...(maxInput === undefined ? {} : { max_input_tokens: maxInput }),
                },
              });
              setMsg(t("common.saved"));
              (e.target as HTMLFormElement).reset();
              list.reload();
            });
          }}
        >
          <h2>{t("models.new")}</h2>
          <div class="grid3">
            <Field label={t("models.name")} name="name" required />
            <Select label={t("models.provider")} name="provider" value={chosen} options={provs.map((p) => [p.id, p.id])} onChange={setProvider} />
            <Field label={t("models.upstream")} name="upstream" required />
            <Field label={t("models.input")} name="input" required inputMode="decimal" defaultValue="0.15" />
            <Field label={t("models.output")} name="output" required inputMode="decimal" defaultValue="0.60" />
            <Field label={t("models.aliases")} name="aliases" />
            <Field label={t("models.max_input")} name="max_input_tokens" inputMode="numeric" />
            <Select
              label={t("models.stream")}
              name="stream_mode"
              value={stream}
              options={["auto", "force_stream", "force_non_stream"].map((s) => [s, t(`stream.${s}` as any)])}
              onChange={setStream}
            />
          </div>
          <Check label={t("common.enabled")} name="enabled" checked={enabled} onChange={setEnabled} />
          <button type="submit" class="primary" disabled={act.busy}>
            {t("common.create")}
          </button>
        </form>
      )}
      <ErrorBox error={list.error || act.error} />
      {msg && <Notice>{msg}</Notice>}
      <Table
        testid="models"
        rows={list.data?.data ?? []}
        cols={[
          { key: "models.name", cell: (m: any) => m.name },
          { key: "models.aliases", cell: (m: any) => (m.aliases ?? []).join(", ") },
          {
            key: "models.deployments",
            cell: (m: any) => (m.deployments ?? []).map((d: any) => `${d.provider}:${d.model}${d.weight ? ` ×${d.weight}` : ""}`).join(", "),
          },
          {
            key: "models.price",
            cell: (m: any) => (m.price ? `${fmtMicros(m.price.input_per_mtok, 4)} / ${fmtMicros(m.price.output_per_mtok, 4)}` : "—"),
          },
          { key: "models.max_input", cell: (m: any) => m.max_input_tokens ?? "—" },
          { key: "models.stream", cell: (m: any) => t(`stream.${m.stream_mode ?? "auto"}` as any) },
          { key: "common.enabled", cell: (m: any) => (m.removed ? t("models.removed") : m.enabled ? t("common.yes") : t("common.no")) },
          {
            key: "common.actions",
            cell: (m: any) =>
              w ? (
                <span class="actions">
                  <button onClick={() => put(m, { enabled: !m.enabled })}>{m.enabled ? t("common.disable") : t("common.enable")}</button>
                  <button
                    class="danger"
                    onClick={() =>
                      confirm(t("common.confirm.delete", { name: m.name })) &&
                      act.run(async () => {
                        await api("delete", "/api/admin/models/{name}", { params: { name: m.name } });
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
