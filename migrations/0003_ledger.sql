-- Tollbooth edge ledger (D1): wallets, plan allowances, reservations, usage, rollups,
-- rate-limit windows and the internal API's replay/idempotency records.
--
-- Invariants (see docs/billing.md):
--  * money in integer micro-units, quota in integer tokens/characters/requests;
--  * every admission is one conditional UPDATE (`... WHERE amount - used - reserved >= ?`)
--    batched with the reservation insert, so concurrent isolates cannot overspend;
--  * every settlement is one D1 batch guarded by the reservation's state transition
--    `reserved|expired -> settled`, so a replayed settle changes nothing.
--  * `claim` columns hold a random token written by the guarding statement of a batch;
--    later statements of the same batch only act when the token is theirs.

CREATE TABLE IF NOT EXISTS wallets (
  member_id       TEXT PRIMARY KEY,
  balance_micros  INTEGER NOT NULL DEFAULT 0,
  reserved_micros INTEGER NOT NULL DEFAULT 0,
  claim           TEXT,
  updated_at      INTEGER NOT NULL DEFAULT 0
);

-- One row per member per period. `period` is the auto-renew rule (day|week|month|year|
-- none): when the period ends the edge opens the next one with the same amount.
CREATE TABLE IF NOT EXISTS allowances (
  member_id    TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  period_end   INTEGER NOT NULL,
  plan_id      TEXT NOT NULL,
  unit         TEXT NOT NULL CHECK (unit IN ('tokens', 'characters', 'requests', 'money')),
  amount       INTEGER NOT NULL CHECK (amount >= 0),
  used         INTEGER NOT NULL DEFAULT 0,
  reserved     INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  period       TEXT NOT NULL DEFAULT 'none',
  grant_id     TEXT NOT NULL,
  claim        TEXT,
  updated_at   INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (member_id, period_start)
);
CREATE INDEX IF NOT EXISTS allowances_by_end ON allowances (member_id, period_end);

-- Grants applied (PUT /internal/v1/allowances, once per grant_id).
CREATE TABLE IF NOT EXISTS applied_grants (
  grant_id   TEXT PRIMARY KEY,
  member_id  TEXT NOT NULL,
  claim      TEXT NOT NULL,
  applied_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS reservations (
  request_id   TEXT PRIMARY KEY,
  member_id    TEXT NOT NULL,
  key_id       TEXT NOT NULL,
  source       TEXT NOT NULL CHECK (source IN ('allowance', 'wallet')),
  period_start INTEGER,            -- the allowance row (source = allowance)
  unit         TEXT NOT NULL,
  amount       INTEGER NOT NULL CHECK (amount >= 0),
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('reserved', 'settled', 'expired')),
  settled_from TEXT,               -- state before settlement (reserved | expired)
  charged      INTEGER,
  claim        TEXT,
  settled_at   INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_open ON reservations (state, expires_at);
CREATE INDEX IF NOT EXISTS reservations_member_open ON reservations (member_id, state, expires_at);

-- Wallet credits applied (POST /internal/v1/wallets/{id}/credits, once per credit_id).
CREATE TABLE IF NOT EXISTS applied_credits (
  credit_id     TEXT PRIMARY KEY,
  member_id     TEXT NOT NULL,
  amount_micros INTEGER NOT NULL,
  reason        TEXT,
  claim         TEXT NOT NULL,
  applied_at    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS usage_events (
  seq                INTEGER PRIMARY KEY AUTOINCREMENT,  -- the read cursor
  request_id         TEXT NOT NULL UNIQUE,
  member_id          TEXT NOT NULL,
  key_id             TEXT NOT NULL,
  model              TEXT NOT NULL,
  deployment         TEXT,
  input_tokens       INTEGER NOT NULL DEFAULT 0,
  output_tokens      INTEGER NOT NULL DEFAULT 0,
  cached_tokens      INTEGER NOT NULL DEFAULT 0,
  output_chars       INTEGER NOT NULL DEFAULT 0,
  cost_micros        INTEGER NOT NULL DEFAULT 0,
  charged            INTEGER NOT NULL DEFAULT 0,
  charged_unit       TEXT NOT NULL,
  source             TEXT NOT NULL,
  status             TEXT NOT NULL,        -- ok | error | client_abort | upstream_error
  estimated          INTEGER NOT NULL DEFAULT 0,
  latency_ms         INTEGER NOT NULL DEFAULT 0,
  ttft_ms            INTEGER,
  created_at         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_member_time ON usage_events (member_id, created_at);

-- member x model x hour. `rev` is a global revision: the read cursor for rollups.
CREATE TABLE IF NOT EXISTS rollups_hourly (
  member_id     TEXT NOT NULL,
  model         TEXT NOT NULL,
  hour          INTEGER NOT NULL,     -- unix seconds at the start of the hour
  requests      INTEGER NOT NULL DEFAULT 0,
  errors        INTEGER NOT NULL DEFAULT 0,
  input_tokens  INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cached_tokens INTEGER NOT NULL DEFAULT 0,
  cost_micros   INTEGER NOT NULL DEFAULT 0,
  latency_ms_sum INTEGER NOT NULL DEFAULT 0,
  ttft_ms_sum   INTEGER NOT NULL DEFAULT 0,
  ttft_count    INTEGER NOT NULL DEFAULT 0,
  rev           INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (member_id, model, hour)
);
CREATE INDEX IF NOT EXISTS rollups_by_rev ON rollups_hourly (rev);
CREATE INDEX IF NOT EXISTS rollups_by_member_hour ON rollups_hourly (member_id, hour);

-- Fixed-window rate-limit counters, shared by every isolate.
CREATE TABLE IF NOT EXISTS rate_windows (
  scope        TEXT NOT NULL,       -- key:<public id> | member:<member id>
  window_start INTEGER NOT NULL,
  requests     INTEGER NOT NULL DEFAULT 0,
  tokens       INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, window_start)
);

-- Internal API replay protection: signatures seen within the freshness window.
CREATE TABLE IF NOT EXISTS seen_signatures (
  nonce      TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_signatures_exp ON seen_signatures (expires_at);

-- Internal API idempotency: the stored result of the first application of a key.
CREATE TABLE IF NOT EXISTS internal_idempotency (
  idem_key   TEXT PRIMARY KEY,
  method     TEXT NOT NULL,
  path       TEXT NOT NULL,
  status     INTEGER NOT NULL,
  body       TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('ledger_schema', '3');
