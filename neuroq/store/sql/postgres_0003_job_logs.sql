-- Migration 3 for PostgreSQL: per-job log lines (neuroq.store.base.LogLine), deleted with
-- their job. `seq` counts up across the job's attempts; `attempt` is the job's retries then.

CREATE TABLE job_logs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    level TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
