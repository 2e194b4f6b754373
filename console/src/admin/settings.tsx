import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { t } from "../i18n";
import { Check, ErrorBox, Field, Notice, Select, Table, fmtTime, useAction, useData } from "../ui";
import { canWrite } from "./role";

export function SettingsPage() {
  const s = useData(() => api("get", "/api/admin/settings"));
  const admins = useData(() => api("get", "/api/admin/admins"));
  const versions = useData(() => api("get", "/api/admin/catalogue"));
  const act = useAction();
  const [cors, setCors] = useState("");
  const [capture, setCapture] = useState(false);
  const [stream, setStream] = useState("auto");
  const [msg, setMsg] = useState<string | null>(null);
  const w = canWrite();
  useEffect(() => {
    if (!s.data) return;
    setCors((s.data.cors_origins ?? []).join(", "));
    setCapture(!!s.data.capture_default);
    setStream(s.data.force_stream_default ?? "auto");
  }, [s.data]);
  return (
    <section>
      <h1>{t("admin.nav.settings")}</h1>
      <ErrorBox error={s.error || act.error} />
      {msg && <Notice>{msg}</Notice>}
      <form
        class="card"
        onSubmit={(e) => {
          e.preventDefault();
          act.run(async () => {
            await api("put", "/api/admin/settings", {
              body: {
                cors_origins: cors.split(/[\s,]+/).filter(Boolean),
                capture_default: capture,
                force_stream_default: stream as any,
              },
            });
            setMsg(t("common.saved"));
            s.reload();
          });
        }}
      >
        <fieldset disabled={!w}>
          <Field label={t("settings.cors")} name="cors" value={cors} onInput={(e) => setCors(e.currentTarget.value)} />
          <Check label={t("settings.capture")} name="capture" checked={capture} onChange={setCapture} />
          <Select
            label={t("settings.stream")}
            name="stream"
            value={stream}
            options={["auto", "force_stream", "force_non_stream"].map((x) => [x, t(`stream.${x}` as any)])}
            onChange={setStream}
          />
          {w && (
            <button type="submit" class="primary">
              {t("common.save")}
            </button>
          )}
        </fieldset>
      </form>
      <h2>{t("settings.admins")}</h2>
      {w && <NewAdmin onDone={() => admins.reload()} />}
      <ErrorBox error={admins.error} />
      <Table
        rows={admins.data?.data ?? []}
        cols={[
          { key: "auth.email", cell: (a: any) => a.email },
          { key: "settings.role", cell: (a: any) => a.role },
        ]}
      />
      <h2>{t("settings.catalogue")}</h2>
      <Table
        rows={versions.data?.data ?? []}
        cols={[
          { key: "settings.version", cell: (v: any) => v.version ?? v.id },
          { key: "keys.created", cell: (v: any) => fmtTime(v.published_at ?? v.created_at ?? v.at) },
          { key: "admin.nav.models", cell: (v: any) => v.models ?? "" },
        ]}
      />
    </section>
  );
}

function NewAdmin({ onDone }: { onDone: () => void }) {
  const act = useAction();
  const [role, setRole] = useState("viewer");
  return (
    <form
      class="card row"
      onSubmit={(e) => {
        e.preventDefault();
        const f = new FormData(e.currentTarget as HTMLFormElement);
        act.run(async () => {
          await api("post", "/api/admin/admins", {
            body: { email: String(f.get("email")), password: String(f.get("password")), role: role as any },
          });
          (e.target as HTMLFormElement).reset();
          onDone();
        });
      }}
    >
      <Field label={t("auth.email")} name="email" type="email" required />
      <Field label={t("auth.password")} name="password" type="password" autocomplete="new-password" required />
      <Select
        label={t("settings.role")}
        name="role"
        value={role}
        options={[
          ["viewer", "viewer"],
          ["admin", "admin"],
          ["owner", "owner"],
        ]}
        onChange={setRole}
      />
      <button type="submit">{t("common.create")}</button>
      <ErrorBox error={act.error} />
    </form>
  );
}
