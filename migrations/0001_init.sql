-- Tollbooth edge ledger (D1). Later migrations add wallets, allowances, reservations,
-- usage events and rollups; this one records the schema version the worker reports.
CREATE TABLE IF NOT EXISTS ledger_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('schema_version', '1');
