-- kv2d1: the D1 schema of the migration plan (plan/d1-migration-plan.md, Phase 1), v1.0.
--
-- Apply with:
--   npx wrangler d1 execute PREDICT_JOBS_DB --local  --file schema/scheduled-jobs.sql
--   npx wrangler d1 execute PREDICT_JOBS_DB --remote --file schema/scheduled-jobs.sql
--
-- The three tables, their CHECKs, foreign keys and indexes are the plan's, column for column.
-- Two deliberate departures from the plan's migration script (Phase 2, Task 1):
--   * No `DROP TABLE IF EXISTS` and no seed `INSERT`. This file is applied to databases that
--     already hold dual-written data; applying it must never delete (or invent) a row. Every
--     statement is `IF NOT EXISTS`, so re-applying it is a no-op.
--   * Three extra, NON-UNIQUE indexes on the natural keys kv2d1 looks records up by. They are
--     non-unique on purpose: the plan's tables allow duplicates, and kv2d1 must be able to see
--     them (`duplicate_in_d1`) rather than have a constraint hide or reject them.

CREATE TABLE IF NOT EXISTS job_executions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_type TEXT NOT NULL,           -- 'analysis', 'pre-market', 'intraday', 'end-of-day', 'weekly'
  execution_date TEXT NOT NULL,     -- YYYY-MM-DD
  execution_time TEXT NOT NULL,     -- ISO 8601 timestamp
  status TEXT NOT NULL,             -- 'success', 'failure', 'partial'
  duration_ms INTEGER,              -- Execution time in milliseconds
  symbols_processed INTEGER,        -- Number of symbols analyzed
  symbols_successful INTEGER,       -- Number of successful analyses
  symbols_failed INTEGER,           -- Number of failed analyses
  error_message TEXT,               -- Error details if status = 'failure'
  metadata TEXT,                    -- JSON blob for flexible data
  created_at TEXT DEFAULT (datetime('now')),

  -- Constraints
  CHECK (status IN ('success', 'failure', 'partial')),
  CHECK (job_type IN ('analysis', 'pre-market', 'intraday', 'end-of-day', 'weekly'))
);

CREATE INDEX IF NOT EXISTS idx_job_executions_type_date ON job_executions(job_type, execution_date DESC);
CREATE INDEX IF NOT EXISTS idx_job_executions_date ON job_executions(execution_date DESC);
CREATE INDEX IF NOT EXISTS idx_job_executions_status ON job_executions(status);

CREATE TABLE IF NOT EXISTS analysis_results (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  execution_id INTEGER NOT NULL,
  symbol TEXT NOT NULL,
  sentiment TEXT,                   -- 'bullish', 'bearish', 'neutral'
  confidence REAL,                  -- 0.0 to 1.0
  direction TEXT,                   -- 'buy', 'sell', 'hold'
  reasoning TEXT,                   -- AI reasoning text
  signals TEXT,                     -- JSON array of trading signals
  technical_data TEXT,              -- JSON blob for technical indicators
  news_count INTEGER,               -- Number of news articles analyzed
  created_at TEXT DEFAULT (datetime('now')),

  FOREIGN KEY (execution_id) REFERENCES job_executions(id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_analysis_results_execution ON analysis_results(execution_id);
CREATE INDEX IF NOT EXISTS idx_analysis_results_symbol ON analysis_results(symbol);
CREATE INDEX IF NOT EXISTS idx_analysis_results_sentiment ON analysis_results(sentiment);

CREATE TABLE IF NOT EXISTS report_snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  execution_id INTEGER NOT NULL,
  report_type TEXT NOT NULL,        -- 'pre-market', 'intraday', 'end-of-day', 'weekly'
  report_date TEXT NOT NULL,        -- YYYY-MM-DD
  content TEXT,                     -- Full report data (JSON)
  html_snapshot TEXT,               -- Optional HTML snapshot for archival
  summary TEXT,                     -- Brief summary for quick display
  high_confidence_count INTEGER,    -- Number of high-confidence signals
  created_at TEXT DEFAULT (datetime('now')),

  FOREIGN KEY (execution_id) REFERENCES job_executions(id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_report_snapshots_type_date ON report_snapshots(report_type, report_date DESC);
CREATE INDEX IF NOT EXISTS idx_report_snapshots_execution ON report_snapshots(execution_id);

-- kv2d1's natural-key lookups (not in the plan). Non-unique: the plan's tables allow duplicates,
-- and kv2d1 must be able to detect them. They change no query's result, only its speed.
CREATE INDEX IF NOT EXISTS idx_job_executions_natural ON job_executions(job_type, execution_date, execution_time);
CREATE INDEX IF NOT EXISTS idx_analysis_results_exec_symbol ON analysis_results(execution_id, symbol);
CREATE INDEX IF NOT EXISTS idx_report_snapshots_exec_type ON report_snapshots(execution_id, report_type);
