-- Credential health, written by the Cron Trigger (edge-worker/src/cron.rs): the latest
-- probe result per provider credential. The router skips credentials whose last check
-- failed recently. Never holds a secret: credentials are named by their catalogue id.
CREATE TABLE IF NOT EXISTS credential_health (
  provider_id          TEXT    NOT NULL,
  credential_id        TEXT    NOT NULL,
  ok                   INTEGER NOT NULL,           -- 1 healthy, 0 failed
  status               INTEGER,                    -- upstream HTTP status; NULL if unreachable
  latency_ms           INTEGER NOT NULL,
  error                TEXT,                       -- short reason, no secrets, no URLs with keys
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  checked_at           INTEGER NOT NULL,           -- unix milliseconds
  PRIMARY KEY (provider_id, credential_id)
);
CREATE INDEX IF NOT EXISTS credential_health_failed ON credential_health (ok, checked_at);
