-- Schema version 3 for SQLite: per-job log lines (neuroq.store.base.LogLine), deleted with
-- their job. `seq` counts up across the job's attempts; `attempt` is the job's retries then.

CREATE TABLE job_logs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    level TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
