// Shared pieces of both apps: hash routing, layout, labelled fields, tables, charts.
import type { ComponentChildren, JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { ApiError } from "./api";
import { LANGS, setLang, t, useLang, type Lang, type MessageKey } from "./i18n";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);

/** The path after `#`, e.g. `/keys`; `/` when empty. */
export function useRoute(): string {
  const read = () => (location.hash.replace(/^#/, "") || "/").split("?")[0];
  const [route, set] = useState(read());
  useEffect(() => {
    const f = () => set(read());
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return route;
}
export function go(path: string) {
  location.hash = path;
}

/** Async data for a page: `{data, error, loading, reload}`. */
export function useData<T>(load: () => Promise<T>, deps: unknown[] = []) {
  const [state, set] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    set((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && set({ data, loading: false }),
      (error) => live && set({ error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, n]);
  return { ...state, reload: () => setN((x) => x + 1) };
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 0) return t("error.network");
    if (e.status === 403 && e.code === "forbidden") return t("error.forbidden");
    return `${t("error.prefix")} ${e.message}${e.param ? ` (${e.param})` : ""}`;
  }
  return t("error.unknown");
}

export function ErrorBox({ error }: { error?: unknown }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {errorText(error)}
    </p>
  );
}
export function Notice({ children }: { children: ComponentChildren }) {
  return (
    <p class="notice" role="status">
      {children}
    </p>
  );
}

/** Runs a mutating action with busy/error state; returns `[run, busy, error, setError]`. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async (f: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
      return true;
    } catch (e) {
      setError(e);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { run, busy, error, setError };
}

let fieldSeq = 0;
type InputProps = JSX.InputHTMLAttributes<HTMLInputElement> & { label: string; name: string };
/** An input with a real `<label for>`. */
export function Field({ label, name, ...rest }: InputProps) {
  const id = useRef(`f${++fieldSeq}-${name}`).current;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} name={name} {...rest} />
    </div>
  );
}
export function Select({
  label,
  name,
  value,
  options,
  onChange,
}: {
  label: string;
  name: string;
  value: string;
  options: [string, string][];
  onChange: (v: string) => void;
}) {
  const id = useRef(`f${++fieldSeq}-${name}`).current;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} name={name} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        {options.map(([v, l]) => (
          <option value={v}>{l}</option>
        ))}
      </select>
    </div>
  );
}
export function Check({
  label,
  name,
  checked,
  onChange,
}: {
  label: string;
  name: string;
  checked: boolean;
  onChange: (v: boolean) => void;
}) {
  const id = useRef(`f${++fieldSeq}-${name}`).current;
  return (
    <div class="field check">
      <input
        id={id}
        name={name}
        type="checkbox"
        checked={checked}
        onChange={(e) => onChange(e.currentTarget.checked)}
      />
      <label for={id}>{label}</label>
    </div>
  );
}

/** Form values as a plain object. */
export function formValues(e: Event): Record<string, string> {
  e.preventDefault();
  const f = new FormData(e.currentTarget as HTMLFormElement);
  const out: Record<string, string> = {};
  f.forEach((v, k) => (out[k] = String(v)));
  return out;
}

export type Col<T> = { key: MessageKey; cell: (row: T) => ComponentChildren };
export function Table<T>({ cols, rows, testid }: { cols: Col<T>[]; rows: T[]; testid?: string }) {
  if (!rows.length) return <p class="muted">{t("common.empty")}</p>;
  return (
    <div class="table-wrap">
      <table data-testid={testid}>
        <thead>
          <tr>
            {cols.map((c) => (
              <th scope="col">{t(c.key)}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr>
              {cols.map((c) => (
                <td data-label={t(c.key)}>{c.cell(r)}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function LangSwitch() {
  const lang = useLang();
  return (
    <label class="lang">
      <span class="sr-only">{t("common.language")}</span>
      <select
        data-testid="lang"
        value={lang}
        onChange={(e) => setLang(e.currentTarget.value as Lang)}
        aria-label={t("common.language")}
      >
        {LANGS.map((l) => (
          <option value={l}>{l === "en" ? "English" : "简体中文"}</option>
        ))}
      </select>
    </label>
  );
}

export function Shell({
  brand,
  nav,
  route,
  onLogout,
  who,
  children,
}: {
  brand: string;
  nav: [string, MessageKey][];
  route: string;
  onLogout?: () => void;
  who?: string;
  children: ComponentChildren;
}) {
  useLang();
  const [open, setOpen] = useState(false);
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="#/">
          {brand}
        </a>
        {nav.length > 0 && (
          <button class="menu" aria-expanded={open} onClick={() => setOpen(!open)}>
            {t("common.menu")}
          </button>
        )}
        <nav class={open ? "open" : ""} aria-label={t("common.menu")}>
          {nav.map(([path, key]) => (
            <a
              href={`#${path}`}
              aria-current={route === path || (path !== "/" && route.startsWith(path + "/")) ? "page" : undefined}
              onClick={() => setOpen(false)}
            >
              {t(key)}
            </a>
          ))}
        </nav>
        <div class="tools">
          {who && <span class="who">{who}</span>}
          <LangSwitch />
          {onLogout && (
            <button class="link" onClick={onLogout} data-testid="logout">
              {t("common.logout")}
            </button>
          )}
        </div>
      </header>
      <main>{children}</main>
    </div>
  );
}

/** Exact formatting of integer micro-units (no floating point on money). */
export function fmtMicros(micros: number | null | undefined, digits = 2): string {
  if (micros === null || micros === undefined) return "—";
  const neg = micros < 0;
  const abs = BigInt(Math.abs(Math.trunc(micros)));
  const whole = abs / 1000000n;
  const frac = (abs % 1000000n).toString().padStart(6, "0").slice(0, Math.max(digits, 0));
  return `${neg ? "-" : ""}${whole}${digits > 0 ? "." + frac : ""}`;
}
/** Minor units (cents, fen) to a decimal string; zero-decimal currencies as is. */
export function fmtMinor(minor: number, currency: string): string {
  const zero = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG"].includes(currency);
  if (zero) return `${minor} ${currency}`;
  const s = String(Math.abs(minor)).padStart(3, "0");
  return `${minor < 0 ? "-" : ""}${s.slice(0, -2)}.${s.slice(-2)} ${currency}`;
}
export function fmtTime(unix?: number | null): string {
  if (!unix) return "—";
  return new Date(unix * 1000).toLocaleString();
}

type Series = { label: string; data: number[]; kind?: "line" | "bar" };
/** A Chart.js chart; the series also sit in a hidden table for screen readers and tests. */
export function ChartBox({
  title,
  labels,
  series,
  testid,
  yFormat,
}: {
  title: string;
  labels: string[];
  series: Series[];
  testid?: string;
  /** Tick labels of the value axis (e.g. micro-units shown as currency). */
  yFormat?: (v: number) => string;
}) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const colors = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c"];
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels,
        datasets: series.map((s, i) => ({
          type: s.kind ?? "bar",
          label: s.label,
          data: s.data,
          backgroundColor: colors[i % colors.length],
          borderColor: colors[i % colors.length],
        })) as any,
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { y: { beginAtZero: true, ticks: yFormat ? { callback: (v) => yFormat(Number(v)) } : {} } },
      },
    });
    return () => chart.destroy();
  }, [JSON.stringify(labels), JSON.stringify(series)]);
  return (
    <figure class="chart" data-testid={testid}>
      <figcaption>{title}</figcaption>
      <div class="canvas-wrap">
        <canvas ref={canvas} role="img" aria-label={title} />
      </div>
      <table class="sr-only" data-testid={testid ? `${testid}-data` : undefined}>
        <thead>
          <tr>
            <th scope="col">{t("common.time")}</th>
            {series.map((s) => (
              <th scope="col">{s.label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {labels.map((l, i) => (
            <tr>
              <td>{l}</td>
              {series.map((s) => (
                <td>{s.data[i]}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </figure>
  );
}

/** A secret shown once, with a copy button. */
export function ShownOnce({ label, value }: { label: string; value: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <div class="once" role="status">
      <p>{label}</p>
      <code data-testid="secret">{value}</code>
      <button
        type="button"
        onClick={async () => {
          try {
            await navigator.clipboard.writeText(value);
            setCopied(true);
          } catch {
            setCopied(false);
          }
        }}
      >
        {copied ? t("common.copied") : t("common.copy")}
      </button>
    </div>
  );
}
