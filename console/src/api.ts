// The one HTTP client. Paths and request bodies are typed from the generated
// src/api.gen.ts (lambda-admin/openapi.json), so the console cannot call an endpoint or
// send a body the control plane does not declare. Sessions live in memory only (never
// localStorage): a reload asks for the password again.
import type { paths } from "./api.gen";

type Method = "get" | "post" | "put" | "patch" | "delete";
type Op<P extends keyof paths, M extends Method> = M extends keyof paths[P] ? paths[P][M] : never;
export type BodyOf<P extends keyof paths, M extends Method> =
  Op<P, M> extends { requestBody?: { content: { "application/json": infer B } } } ? B : undefined;
export type Schema<N extends keyof import("./api.gen").components["schemas"]> =
  import("./api.gen").components["schemas"][N];

/** An error in the API's own shape: `{"error": {"message", "type", "code", "param"}}`. */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public code?: string,
    public param?: string,
  ) {
    super(message);
  }
}

let token: string | null = null;
const listeners = new Set<() => void>();

export function setToken(t: string | null) {
  token = t;
  listeners.forEach((f) => f());
}
export function getToken() {
  return token;
}
export function onTokenChange(f: () => void) {
  listeners.add(f);
  return () => listeners.delete(f);
}

function fill(path: string, params?: Record<string, string>) {
  return path.replace(/\{(\w+)\}/g, (_, k: string) => encodeURIComponent(params?.[k] ?? ""));
}

export async function raw(
  method: string,
  url: string,
  body?: unknown,
  bearer: string | null = token,
): Promise<any> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network");
  }
  const text = await res.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = data?.error ?? {};
    // An expired or ended session signs out; a 401 about a field (a wrong current
    // password) does not.
    if (res.status === 401 && !e.param && bearer === token && token) setToken(null);
    throw new ApiError(res.status, e.message ?? `HTTP ${res.status}`, e.code, e.param);
  }
  return data;
}

/** A typed call to the control plane: `api("post", "/api/me/keys", { body: { name } })`. */
export function api<P extends keyof paths, M extends Method>(
  method: M,
  path: P,
  opts: {
    params?: Record<string, string>;
    query?: Record<string, string | number | undefined>;
    body?: BodyOf<P, M>;
  } = {},
): Promise<any> {
  let url = fill(path as string, opts.params);
  const q = Object.entries(opts.query ?? {}).filter(([, v]) => v !== undefined && v !== "");
  if (q.length) url += "?" + new URLSearchParams(q.map(([k, v]) => [k, String(v)])).toString();
  return raw(method.toUpperCase(), url, opts.body);
}

/** The edge's own member endpoint (not in the control plane's OpenAPI): API-key auth. */
export function usage(apiKey: string): Promise<any> {
  return raw("GET", "/api/usage", undefined, apiKey);
}
