import { t, type MessageKey } from "../i18n";

/** A page whose API does not exist yet (another issue adds it). */
export function NotYetPage({ title, waits }: { title: MessageKey; waits: MessageKey }) {
  return (
    <section>
      <h1>{t(title)}</h1>
      <p class="notice" data-testid="not-yet">
        {t("notyet.body")} {t(waits)}
      </p>
    </section>
  );
}
