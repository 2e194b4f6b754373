// An API key the member typed or created in this tab, held in memory only: the edge's
// `GET /api/usage` authenticates with an API key, not the console session.
let usageKey: string | null = null;
export function getUsageKey() {
  return usageKey;
}
export function setUsageKey(k: string | null) {
  usageKey = k;
}
