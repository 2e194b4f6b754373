// One message table per language (src/messages/*.ts); `t(key)` is the only way a visible
// string reaches the page. The choice is remembered in localStorage (a preference, not a
// secret); the default follows navigator.language.
import { useEffect, useState } from "preact/hooks";
import { en, type MessageKey } from "./messages/en";
import { zh } from "./messages/zh";

export type Lang = "en" | "zh-CN";
export const LANGS: Lang[] = ["en", "zh-CN"];
const TABLES: Record<Lang, Record<MessageKey, string>> = { en, "zh-CN": zh };
const STORE = "tollbooth.lang";

function initial(): Lang {
  try {
    const saved = localStorage.getItem(STORE);
    if (saved === "en" || saved === "zh-CN") return saved;
  } catch {
    /* storage disabled: fall through */
  }
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

let lang: Lang = initial();
const subs = new Set<() => void>();
document.documentElement.lang = lang;

export function getLang() {
  return lang;
}
export function setLang(l: Lang) {
  lang = l;
  document.documentElement.lang = l;
  try {
    localStorage.setItem(STORE, l);
  } catch {
    /* ignore */
  }
  subs.forEach((f) => f());
}

/** The message for `key`, with `{name}` placeholders filled from `vars`. */
export function t(key: MessageKey, vars?: Record<string, string | number>): string {
  let s = TABLES[lang][key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

/** Re-renders the caller when the language changes. */
export function useLang(): Lang {
  const [, set] = useState(0);
  useEffect(() => {
    const f = () => set((n) => n + 1);
    subs.add(f);
    return () => {
      subs.delete(f);
    };
  }, []);
  return lang;
}

export type { MessageKey };
