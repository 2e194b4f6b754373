-- Conversation capture (docs/training-data.md, docs/architecture.md "Captures").
-- Bodies live in R2 (`CAPTURES`, key `r2_key`); D1 holds the index the review API
-- filters and pages, the conversations (grouped by message prefix) and their stats.
--
-- Invariants:
--  * one row per captured exchange (`id` = the request id), written once, after the
--    body is in R2;
--  * a conversation's `longest_*` columns name its longest capture; stats (`captures`,
--    tokens, cost, `first_ms`, `last_ms`) are summed over all its captures;
--  * `capture_prefixes` maps a message-prefix hash to the conversation that registered
--    it first;
--  * `seq` columns never change after insert: they are the paging cursors.

CREATE TABLE IF NOT EXISTS captures (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  id              TEXT NOT NULL UNIQUE,
  conversation_id TEXT NOT NULL,
  member_id       TEXT NOT NULL,
  key_id          TEXT NOT NULL,
  app_id          TEXT,
  ingress         TEXT NOT NULL,
  model           TEXT NOT NULL,
  served_model    TEXT,
  status          TEXT NOT NULL,
  has_tools       INTEGER NOT NULL DEFAULT 0,
  turns           INTEGER NOT NULL DEFAULT 0,
  transcript_len  INTEGER NOT NULL DEFAULT 0,
  input_tokens    INTEGER NOT NULL DEFAULT 0,
  output_tokens   INTEGER NOT NULL DEFAULT 0,
  cost_micros     INTEGER NOT NULL DEFAULT 0,
  latency_ms      INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL,          -- unix seconds (the request's ledger clock)
  truncated       INTEGER NOT NULL DEFAULT 0,
  bytes           INTEGER NOT NULL DEFAULT 0,
  r2_key          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_by_conversation ON captures (conversation_id);
CREATE INDEX IF NOT EXISTS captures_by_member ON captures (member_id, created_at);
CREATE INDEX IF NOT EXISTS captures_by_created ON captures (created_at);

CREATE TABLE IF NOT EXISTS conversations (
  seq                INTEGER PRIMARY KEY AUTOINCREMENT,
  id                 TEXT NOT NULL UNIQUE,
  member_id          TEXT NOT NULL,
  key_id             TEXT NOT NULL,
  app_id             TEXT,
  model              TEXT NOT NULL,
  status             TEXT NOT NULL,           -- the longest capture's status
  has_tools          INTEGER NOT NULL DEFAULT 0,
  longest_capture_id TEXT NOT NULL,
  longest_len        INTEGER NOT NULL,
  turns              INTEGER NOT NULL,        -- assistant answers in the longest form
  captures           INTEGER NOT NULL DEFAULT 1,
  input_tokens       INTEGER NOT NULL DEFAULT 0,
  output_tokens      INTEGER NOT NULL DEFAULT 0,
  cost_micros        INTEGER NOT NULL DEFAULT 0,
  first_ms           INTEGER NOT NULL,        -- start of the first exchange
  last_ms            INTEGER NOT NULL,        -- end of the last exchange
  search_text        TEXT NOT NULL DEFAULT '',-- the longest form's last 4096 chars, lowercased
  review             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (review IN ('pending', 'confirmed', 'rejected')),
  tags               TEXT NOT NULL DEFAULT '[]',
  note               TEXT,
  reviewed_at        INTEGER
);
CREATE INDEX IF NOT EXISTS conversations_by_member ON conversations (member_id, seq);
CREATE INDEX IF NOT EXISTS conversations_by_last ON conversations (last_ms);
CREATE INDEX IF NOT EXISTS conversations_by_review ON conversations (review, seq);

CREATE TABLE IF NOT EXISTS capture_prefixes (
  hash            TEXT PRIMARY KEY,
  conversation_id TEXT NOT NULL,
  created_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS capture_prefixes_by_conversation ON capture_prefixes (conversation_id);

-- Counters: `written`, `write_failures` (R2 or D1 failed; the response never changes).
CREATE TABLE IF NOT EXISTS capture_stats (
  name  TEXT PRIMARY KEY,
  value INTEGER NOT NULL DEFAULT 0
);
