-- Migration 1 for PostgreSQL, applied under an advisory lock by PostgresStore.open().
-- Times are BIGINT milliseconds since the epoch.

CREATE TABLE jobs (
    -- take order within a priority class: FIFO by this ever-growing rowid
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    endpoint_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input_json TEXT NOT NULL,
    execution_timeout_ms BIGINT NOT NULL,
    ttl_ms BIGINT NOT NULL,
    low_priority BOOLEAN NOT NULL,
    webhook TEXT,
    s3_config_json TEXT,
    sync BOOLEAN NOT NULL,
    -- the NewJob's own retention; NULL = the store's default for sync / async jobs
    retention_ms BIGINT,
    idempotency_key TEXT,
    created_at_ms BIGINT NOT NULL,
    -- created (or retried) + ttl: past it a live job times out
    ttl_deadline_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    worker_id TEXT,
    lease_expires_at_ms BIGINT,
    output_json TEXT,
    error_json TEXT,
    retries BIGINT NOT NULL DEFAULT 0,
    expires_at_ms BIGINT,
    stop_pending BOOLEAN NOT NULL DEFAULT FALSE,
    -- seq of the last chunk handed out by the consuming stream read
    stream_cursor BIGINT NOT NULL DEFAULT 0,
    -- seq of the last chunk appended; never decreases, so SSE cursors stay valid across attempts
    stream_seq BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX jobs_take ON jobs (endpoint_id, low_priority, seq) WHERE status = 'IN_QUEUE';
CREATE INDEX jobs_endpoint_status ON jobs (endpoint_id, status);
CREATE INDEX jobs_queue_ttl ON jobs (ttl_deadline_ms) WHERE status = 'IN_QUEUE';
CREATE INDEX jobs_expires ON jobs (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE INDEX jobs_running ON jobs (worker_id) WHERE status = 'IN_PROGRESS';
CREATE INDEX jobs_stop ON jobs (worker_id) WHERE stop_pending;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (endpoint_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE stream_chunks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    chunk_json TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE workers (
    worker_id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);
CREATE INDEX workers_endpoint ON workers (endpoint_id);
CREATE INDEX workers_last_seen ON workers (last_seen_ms);

-- Durable webhook outbox: rows are written in the transaction that made the job terminal.
CREATE TABLE webhook_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body_json TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    -- a sender owns the row until then, so two processes never post it at once
    claimed_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at_ms);
