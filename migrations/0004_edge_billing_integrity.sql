-- Edge billing integrity (issue 10) and one-batch admission (issue 11 §2).
--
--  * allowances.next_start/next_end: the bounds of the period after this one, computed
--    when the row is written, so the admission batch can open the next period itself
--    (no second round trip when a period rolls over).
--  * reservations: what the sweep needs to charge an expired reservation at its
--    reserved amount and write its usage event (model, estimate, reserved cost), and
--    what it charged (expiry_charged) so a late real settlement corrects it.
--  * rate_windows.claim: the admission batch's rate-limit upserts mark the rows they
--    counted, so the reservation in the same batch applies only when every scope did.
--  * pending_settlements: a settlement that kept failing, finished by the cron.
--  * edge_records: versions and tombstones of key and member records (KV `KEYS`): a
--    lower version never overwrites a higher one, a revoked key never comes back.
--  * internal_idempotency.body_hash: an idempotency key replays only the same body.

ALTER TABLE allowances ADD COLUMN next_start INTEGER;
ALTER TABLE allowances ADD COLUMN next_end INTEGER;

ALTER TABLE reservations ADD COLUMN model TEXT;
ALTER TABLE reservations ADD COLUMN est_input INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reservations ADD COLUMN est_output INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reservations ADD COLUMN est_cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reservations ADD COLUMN expiry_charged INTEGER;
CREATE INDEX IF NOT EXISTS reservations_settled ON reservations (state, settled_at);

ALTER TABLE rate_windows ADD COLUMN claim TEXT;

CREATE TABLE IF NOT EXISTS pending_settlements (
  request_id TEXT PRIMARY KEY,
  admission  TEXT NOT NULL,     -- JSON: what settlement needs (no secret)
  outcome    TEXT NOT NULL,     -- JSON: what the request path observed
  attempts   INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS edge_records (
  kind       TEXT NOT NULL CHECK (kind IN ('key', 'member')),
  id         TEXT NOT NULL,
  version    INTEGER NOT NULL DEFAULT 0,
  revoked    INTEGER NOT NULL DEFAULT 0,
  body       TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
);

ALTER TABLE internal_idempotency ADD COLUMN body_hash TEXT;
CREATE INDEX IF NOT EXISTS internal_idempotency_created ON internal_idempotency (created_at);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage_events (created_at);

INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('ledger_schema', '4');
