import { api } from "../api";

/**
 * Opens the provider's checkout (Stripe Checkout or EPay) in a new tab, so this tab keeps
 * its in-memory session, then polls the order until it is fulfilled (or gives up).
 */
export async function payAndWait(
  order: any,
  checkoutUrl: string,
  onState: (state: string) => void,
  win: Window | null,
): Promise<string> {
  if (win) win.location.href = checkoutUrl;
  else location.assign(checkoutUrl);
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const r = await api("get", "/api/me/orders/{id}", { params: { id: order.id } });
    const state = r.order?.state ?? "pending";
    onState(state);
    if (state !== "pending" && state !== "paid") return state;
  }
  return "pending";
}
