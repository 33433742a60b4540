-- Named queries shared by the SQLite and PostgreSQL stores. Each starts with a `-- name: NAME`
-- line and a one-line description. Parameters are written `:name` (turned into `%(name)s` for
-- psycopg). Macros in braces are filled per dialect when the file is loaded:
--   {job}          the columns a Job is built from (neuroq.store.sql.job_from_row)
--   {retained}     the row is not past its retention (its now is :now)
--   {expires}      expires_at_ms for a job becoming terminal at :now
--   {held}         the job is held by the poster (:worker_id, :alias) in attempt :attempt
--   {ids}          a sub-select over the list parameter :ids
--   {lock}         FOR UPDATE on PostgreSQL (SQLite's BEGIN IMMEDIATE already serialises writers)
--   {skip_locked}  FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent takers never block
--   {picked_seqs}  seq is one of the CTE `picked`'s (on PostgreSQL an array, so the plan is
--                  always primary-key look-ups, never a scan of the table)
--   {log_rows}     the rows of the JSON text :rows ([[at_ms, level, line], ...]) as i (from 0),
--                  at_ms, level, line
--   {result_rows}  the rows of the JSON text :rows ([[id, status, output_json, error_json,
--                  attempt], ...]) as r_id, r_status, r_output, r_error, r_attempt

-- name: find_by_key
-- The job holding an idempotency key on an endpoint, retained or not.
SELECT {job} FROM jobs WHERE endpoint_id = :endpoint_id AND idempotency_key = :key

-- name: delete_job
-- Drop one record (its stream chunks and log lines go with it).
DELETE FROM jobs WHERE id = :id

-- name: insert_job
-- A new IN_QUEUE job; a key already used on the endpoint inserts nothing. A job submitted
-- without an executionTimeout takes its endpoint's configured one, if any, else the default.
INSERT INTO jobs (id, endpoint_id, status, input_json, execution_timeout_ms, ttl_ms, low_priority,
                  webhook, s3_config_json, sync, retention_ms, idempotency_key, created_at_ms,
                  ttl_deadline_ms)
VALUES (:id, :endpoint_id, 'IN_QUEUE', :input_json,
        COALESCE(CASE WHEN :timeout_explicit THEN NULL
                      ELSE (SELECT e.execution_timeout_ms FROM endpoints e
                            WHERE e.endpoint_id = :endpoint_id) END,
                 :execution_timeout_ms),
        :ttl_ms, :low_priority,
        :webhook, :s3_config_json, :sync, :retention_ms, :key, :now, :now + :ttl_ms)
ON CONFLICT (endpoint_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {job}

-- name: insert_jobs
-- `insert_job` for several jobs at once, one array per column, in the arrays' order
-- (PostgreSQL only).
INSERT INTO jobs (id, endpoint_id, status, input_json, execution_timeout_ms, ttl_ms, low_priority,
                  webhook, s3_config_json, sync, retention_ms, idempotency_key, created_at_ms,
                  ttl_deadline_ms)
SELECT n.id, n.endpoint_id, 'IN_QUEUE', n.input_json,
       COALESCE(CASE WHEN n.timeout_explicit THEN NULL
                     ELSE (SELECT e.execution_timeout_ms FROM endpoints e
                           WHERE e.endpoint_id = n.endpoint_id) END,
                n.execution_timeout_ms),
       n.ttl_ms, n.low_priority, n.webhook, n.s3_config_json, n.sync, n.retention_ms, n.key,
       n.now, n.now + n.ttl_ms
FROM unnest(CAST(:ids AS TEXT[]), CAST(:endpoint_ids AS TEXT[]), CAST(:input_jsons AS TEXT[]),
            CAST(:execution_timeouts_ms AS BIGINT[]), CAST(:timeouts_explicit AS BOOLEAN[]),
            CAST(:ttls_ms AS BIGINT[]), CAST(:low_priorities AS BOOLEAN[]),
            CAST(:webhooks AS TEXT[]), CAST(:s3_config_jsons AS TEXT[]),
            CAST(:syncs AS BOOLEAN[]), CAST(:retentions_ms AS BIGINT[]), CAST(:keys AS TEXT[]),
            CAST(:nows AS BIGINT[]))
     WITH ORDINALITY AS n(id, endpoint_id, input_json, execution_timeout_ms, timeout_explicit,
                          ttl_ms, low_priority, webhook, s3_config_json, sync, retention_ms, key,
                          now, i)
ORDER BY n.i
ON CONFLICT (endpoint_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {job}

-- name: get
-- One retained job of an endpoint.
SELECT {job} FROM jobs WHERE id = :id AND endpoint_id = :endpoint_id AND {retained}

-- name: get_locked
-- The same, locked until the transaction ends (the consuming stream read moves its cursor).
SELECT {job} FROM jobs WHERE id = :id AND endpoint_id = :endpoint_id AND {retained} {lock}

-- name: take
-- Lease the first :limit queued, unexpired jobs: normal priority first, FIFO within each;
-- none to a recycling worker.
-- The pick is a MATERIALIZED CTE because PostgreSQL may re-run an IN (...) sub-select for
-- each row, and a re-run that skips rows it just locked would lease more than :limit.
WITH picked AS MATERIALIZED (
    SELECT seq FROM jobs
    WHERE endpoint_id = :endpoint_id AND status = 'IN_QUEUE' AND ttl_deadline_ms > :now
      AND NOT EXISTS (SELECT 1 FROM workers w
                      WHERE w.worker_id = :worker_id AND w.state = 'recycling')
    ORDER BY low_priority, seq LIMIT :limit {skip_locked})
UPDATE jobs
SET status = 'IN_PROGRESS', started_at_ms = :now, worker_id = :worker_id,
    lease_expires_at_ms = :lease_until
WHERE status = 'IN_QUEUE' AND seq IN (SELECT seq FROM picked)
RETURNING {job}

-- name: fail_undeliverable
-- A job just taken whose stored payload cannot be sent to a worker -> FAILED with the reason.
UPDATE jobs
SET status = 'FAILED', error_json = :error_json, finished_at_ms = :now, worker_id = NULL,
    lease_expires_at_ms = NULL, expires_at_ms = {expires}
WHERE id = :id
RETURNING {job}

-- name: release
-- Undo a take whose reply was never delivered: no retry is counted.
UPDATE jobs SET status = 'IN_QUEUE', started_at_ms = NULL, worker_id = NULL,
                lease_expires_at_ms = NULL
WHERE id IN {ids} AND worker_id = :worker_id AND status = 'IN_PROGRESS'
RETURNING id, endpoint_id

-- name: progress
-- Replace the progress output of a job its poster runs, renewing its lease when :lease_until.
UPDATE jobs
SET output_json = :output_json,
    lease_expires_at_ms = COALESCE(CAST(:lease_until AS BIGINT), lease_expires_at_ms)
WHERE id = :id AND status = 'IN_PROGRESS' AND {held}
RETURNING id

-- name: stream_next
-- Reserve the next chunk seq of a job its poster runs, renewing its lease when :lease_until.
UPDATE jobs
SET stream_seq = stream_seq + 1,
    lease_expires_at_ms = COALESCE(CAST(:lease_until AS BIGINT), lease_expires_at_ms)
WHERE id = :id AND status = 'IN_PROGRESS' AND {held}
RETURNING stream_seq

-- name: stream_insert
-- Store one chunk under the seq just reserved.
INSERT INTO stream_chunks (job_id, seq, chunk_json) VALUES (:id, :seq, :chunk_json)

-- name: chunks_after
-- Chunks of a job past a seq, in order.
SELECT seq, chunk_json FROM stream_chunks WHERE job_id = :id AND seq > :after ORDER BY seq

-- name: set_cursor
-- Move the consuming stream cursor.
UPDATE jobs SET stream_cursor = :cursor WHERE id = :id

-- name: delete_chunks
-- Forget the stream of an attempt that will run again.
DELETE FROM stream_chunks WHERE job_id = :id

-- name: log_fence
-- The attempt of a job its poster holds, running or ended since :late_since, renewing a running
-- job's lease when :lease_until; the row stays locked so one job's appends run one at a time.
UPDATE jobs
SET lease_expires_at_ms = CASE WHEN status = 'IN_PROGRESS'
                               THEN COALESCE(CAST(:lease_until AS BIGINT), lease_expires_at_ms)
                               ELSE lease_expires_at_ms END
WHERE id = :id AND worker_id IS NOT NULL AND {held}
  AND (status = 'IN_PROGRESS' OR finished_at_ms >= :late_since)
RETURNING retries

-- name: log_stats
-- The last log seq of a job, and the rows, characters and TRUNCATED markers of one attempt.
SELECT COALESCE(MAX(seq), 0),
       COALESCE(SUM(CASE WHEN attempt = :attempt THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN attempt = :attempt THEN LENGTH(line) ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN attempt = :attempt AND level = :truncated THEN 1 ELSE 0 END), 0)
FROM job_logs WHERE job_id = :id

-- name: log_insert
-- Store log rows, given as a JSON array of [at_ms, level, line], under seqs :first, :first + 1...
INSERT INTO job_logs (job_id, seq, attempt, at_ms, level, line)
SELECT :id, :first + r.i, :attempt, r.at_ms, r.level, r.line FROM {log_rows} AS r

-- name: logs_after
-- Up to :limit log rows of a job past a seq, in order.
SELECT seq, attempt, at_ms, level, line FROM job_logs
WHERE job_id = :id AND seq > :after ORDER BY seq LIMIT :limit

-- name: logs_truncated
-- Whether any attempt of the job dropped log lines at its cap.
SELECT COUNT(*) FROM job_logs WHERE job_id = :id AND level = :truncated

-- name: finish
-- IN_PROGRESS -> COMPLETED or FAILED, only from its holder and on the endpoint when named;
-- a job with a webhook only when :with_webhook.
UPDATE jobs
SET status = :status, output_json = :output_json, error_json = :error_json,
    finished_at_ms = :now, lease_expires_at_ms = NULL, stop_pending = FALSE,
    expires_at_ms = {expires}
WHERE id = :id AND status = 'IN_PROGRESS' AND {held}
  AND (CAST(:endpoint_id AS TEXT) IS NULL OR endpoint_id = :endpoint_id)
  AND (:with_webhook OR webhook IS NULL)
RETURNING {job}

-- name: finish_batch
-- `finish` for each of a batch of results of one poster (each row with its own attempt).
UPDATE jobs
SET status = r.r_status, output_json = r.r_output, error_json = r.r_error,
    finished_at_ms = :now, lease_expires_at_ms = NULL, stop_pending = FALSE,
    expires_at_ms = {expires}
FROM {result_rows} AS r
WHERE jobs.id = r.r_id AND jobs.status = 'IN_PROGRESS'
  AND (CAST(:worker_id AS TEXT) IS NULL OR jobs.worker_id = :worker_id OR jobs.worker_id = :alias)
  AND (r.r_attempt IS NULL OR jobs.retries = r.r_attempt)
  AND (CAST(:endpoint_id AS TEXT) IS NULL OR jobs.endpoint_id = :endpoint_id)
  AND (:with_webhook OR jobs.webhook IS NULL)
RETURNING {job}

-- name: let_go
-- The worker no longer holds this terminal job: stop telling it to stop.
UPDATE jobs SET stop_pending = FALSE
WHERE id = :id AND stop_pending AND {held}

-- name: outbox_insert
-- Queue one webhook delivery, due at once.
INSERT INTO webhook_outbox (job_id, url, body_json, attempts, next_attempt_at_ms, claimed_until_ms)
VALUES (:job_id, :url, :body_json, 0, :now, 0)

-- name: cancel
-- IN_QUEUE or IN_PROGRESS -> CANCELLED; a running job's worker gets a stop signal.
UPDATE jobs
SET status = 'CANCELLED', finished_at_ms = :now, lease_expires_at_ms = NULL,
    stop_pending = (status = 'IN_PROGRESS'), expires_at_ms = {expires}
WHERE id = :id AND endpoint_id = :endpoint_id AND status IN ('IN_QUEUE', 'IN_PROGRESS')
RETURNING {job}

-- name: shorten_retention
-- `?ttl=` on status: a finished record expires by :until at the latest; a live job's record is
-- kept at most :ttl after it ends. Never lengthens retention.
UPDATE jobs
SET expires_at_ms = CASE WHEN expires_at_ms IS NOT NULL AND expires_at_ms > :until
                         THEN :until ELSE expires_at_ms END,
    retention_ms = CASE WHEN expires_at_ms IS NULL AND :ttl < COALESCE(retention_ms,
                         CASE WHEN sync THEN :retention_sync ELSE :retention_run END)
                        THEN :ttl ELSE retention_ms END
WHERE id = :id AND endpoint_id = :endpoint_id AND {retained}
RETURNING id

-- name: retry
-- FAILED or TIMED_OUT -> IN_QUEUE as a new attempt; ttl counts again from now.
UPDATE jobs
SET status = 'IN_QUEUE', retries = retries + 1, output_json = NULL, error_json = NULL,
    started_at_ms = NULL, finished_at_ms = NULL, worker_id = NULL, lease_expires_at_ms = NULL,
    expires_at_ms = NULL, stop_pending = FALSE, stream_cursor = stream_seq,
    ttl_deadline_ms = :now + ttl_ms
WHERE id = :id AND endpoint_id = :endpoint_id AND status IN ('FAILED', 'TIMED_OUT') AND {retained}
RETURNING {job}

-- name: purge
-- Every queued job of an endpoint -> CANCELLED.
UPDATE jobs SET status = 'CANCELLED', finished_at_ms = :now, expires_at_ms = {expires}
WHERE endpoint_id = :endpoint_id AND status = 'IN_QUEUE'
RETURNING {job}

-- name: touch_worker
-- Upsert a worker; "unhealthy" and "recycling" stick until it is removed or given a new state.
INSERT INTO workers (worker_id, endpoint_id, state, last_seen_ms)
VALUES (:worker_id, :endpoint_id, COALESCE(CAST(:state AS TEXT), 'ready'), :now)
ON CONFLICT (worker_id) DO UPDATE
SET endpoint_id = excluded.endpoint_id, last_seen_ms = excluded.last_seen_ms,
    state = CASE WHEN CAST(:state AS TEXT) IS NOT NULL THEN excluded.state
                 WHEN workers.state IN ('unhealthy', 'recycling') THEN workers.state
                 ELSE 'ready' END
RETURNING state

-- name: renew_held
-- Extend the leases of the listed jobs the worker runs (under its own id or its alias).
UPDATE jobs SET lease_expires_at_ms = :lease_until
WHERE status = 'IN_PROGRESS' AND id IN {ids} AND (worker_id = :worker_id OR worker_id = :alias)

-- name: let_go_unlisted
-- Jobs missing from the worker's list are no longer held: clear their stop signals.
UPDATE jobs SET stop_pending = FALSE
WHERE worker_id = :worker_id AND stop_pending AND id NOT IN {ids}

-- name: jobs_to_stop
-- Terminal jobs the worker still holds and must be told to stop.
SELECT id FROM jobs WHERE worker_id = :worker_id AND stop_pending ORDER BY seq

-- name: worker_state
-- One worker's state.
SELECT state FROM workers WHERE worker_id = :worker_id

-- name: worker_get
-- One worker row.
SELECT worker_id, endpoint_id, state, last_seen_ms FROM workers WHERE worker_id = :worker_id

-- name: worker_held
-- The jobs a worker runs.
SELECT id FROM jobs WHERE worker_id = :worker_id AND status = 'IN_PROGRESS' ORDER BY seq

-- name: forget_worker
-- A worker that said it is leaving.
DELETE FROM workers WHERE worker_id = :worker_id AND endpoint_id = :endpoint_id
RETURNING worker_id

-- name: health_jobs
-- Retained jobs of an endpoint by state, with how many of each were retried.
SELECT status, COUNT(*), SUM(CASE WHEN retries > 0 THEN 1 ELSE 0 END)
FROM jobs WHERE endpoint_id = :endpoint_id AND {retained}
GROUP BY status

-- name: health_workers
-- Each live worker of an endpoint with whether it runs at least one job.
SELECT w.state, EXISTS (SELECT 1 FROM jobs j
                        WHERE j.worker_id = w.worker_id AND j.status = 'IN_PROGRESS')
FROM workers w WHERE w.endpoint_id = :endpoint_id

-- name: sweep_queue_ttl
-- Queued jobs past their ttl -> TIMED_OUT.
UPDATE jobs SET status = 'TIMED_OUT', finished_at_ms = :now, error_json = :ttl_error,
                expires_at_ms = {expires}
WHERE status = 'IN_QUEUE' AND ttl_deadline_ms <= :now
RETURNING {job}

-- name: sweep_run_timeout
-- Running jobs past executionTimeout or ttl -> TIMED_OUT, and their worker told to stop.
UPDATE jobs
SET status = 'TIMED_OUT', finished_at_ms = :now, lease_expires_at_ms = NULL, stop_pending = TRUE,
    error_json = CASE WHEN ttl_deadline_ms <= :now THEN :ttl_error ELSE :execution_error END,
    expires_at_ms = {expires}
WHERE status = 'IN_PROGRESS'
  AND (started_at_ms + execution_timeout_ms <= :now OR ttl_deadline_ms <= :now)
RETURNING {job}

-- name: sweep_workers
-- Forget workers silent since :lost_before.
DELETE FROM workers WHERE last_seen_ms <= :lost_before RETURNING worker_id

-- name: sweep_requeue
-- Running jobs whose lease lapsed or whose worker was lost, with retries left -> IN_QUEUE.
UPDATE jobs
SET status = 'IN_QUEUE', retries = retries + 1, started_at_ms = NULL, worker_id = NULL,
    lease_expires_at_ms = NULL, output_json = NULL, stream_cursor = stream_seq
WHERE status = 'IN_PROGRESS' AND (lease_expires_at_ms <= :now OR worker_id IN {ids})
  AND retries < :max_retries
RETURNING {job}

-- name: sweep_lost_fail
-- The same jobs without retries left -> FAILED "worker lost".
UPDATE jobs
SET status = 'FAILED', finished_at_ms = :now, lease_expires_at_ms = NULL, stop_pending = TRUE,
    error_json = CAST(:lost_prefix AS TEXT) || retries || CAST(:lost_suffix AS TEXT),
    expires_at_ms = {expires}
WHERE status = 'IN_PROGRESS' AND (lease_expires_at_ms <= :now OR worker_id IN {ids})
RETURNING {job}

-- name: sweep_expired
-- Delete up to :limit records past retention (stream chunks and log lines cascade).
-- A prepared statement's generic plan knows neither :now nor :limit: unordered, it read the
-- whole table for the pick, and with `seq IN (SELECT ...)` it hashed the pick against a second
-- scan. In expiry order the pick walks the expiry index, and {picked_seqs} looks rows up by key.
WITH picked AS MATERIALIZED (
    SELECT seq FROM jobs WHERE expires_at_ms <= :now ORDER BY expires_at_ms LIMIT :limit)
DELETE FROM jobs WHERE {picked_seqs}
RETURNING seq

-- name: due_webhooks
-- Claim due, unclaimed deliveries until :claim_until.
WITH picked AS MATERIALIZED (
    SELECT id FROM webhook_outbox
    WHERE next_attempt_at_ms <= :now AND claimed_until_ms <= :now
    ORDER BY next_attempt_at_ms, id LIMIT :limit {skip_locked})
UPDATE webhook_outbox SET claimed_until_ms = :claim_until
WHERE next_attempt_at_ms <= :now AND claimed_until_ms <= :now
  AND id IN (SELECT id FROM picked)
RETURNING id, job_id, url, body_json, attempts, next_attempt_at_ms

-- name: webhook_delete
-- A delivery succeeded or was given up; its job and how many attempts had failed before.
DELETE FROM webhook_outbox WHERE id = :id RETURNING job_id, attempts

-- name: webhook_reschedule
-- A delivery failed and will be tried again; its job and how many attempts have failed now.
UPDATE webhook_outbox
SET attempts = attempts + 1, next_attempt_at_ms = :next_attempt_at_ms, claimed_until_ms = 0
WHERE id = :id
RETURNING job_id, attempts

-- name: endpoint_put
-- Create or replace an endpoint's settings; created_at_ms is kept on a replace.
INSERT INTO endpoints (endpoint_id, config_json, execution_timeout_ms, created_at_ms,
                       updated_at_ms)
VALUES (:endpoint_id, :config_json, :execution_timeout_ms, :now, :now)
ON CONFLICT (endpoint_id) DO UPDATE
SET config_json = excluded.config_json, execution_timeout_ms = excluded.execution_timeout_ms,
    updated_at_ms = excluded.updated_at_ms
RETURNING endpoint_id, config_json, created_at_ms, updated_at_ms

-- name: endpoint_get
-- One endpoint's settings.
SELECT endpoint_id, config_json, created_at_ms, updated_at_ms FROM endpoints
WHERE endpoint_id = :endpoint_id

-- name: endpoint_list
-- Every configured endpoint.
SELECT endpoint_id, config_json, created_at_ms, updated_at_ms FROM endpoints ORDER BY endpoint_id

-- name: endpoint_delete
-- Forget an endpoint's settings (its jobs stay: it is a plain queue again).
DELETE FROM endpoints WHERE endpoint_id = :endpoint_id RETURNING endpoint_id

-- name: queue_stats
-- What a scaler decides on, per endpoint with live jobs: queued, running, and when the job
-- that has waited longest entered the queue (submitted or retried: its ttl started then).
-- Two halves so each reads only its own partial index, never the retained finished jobs.
SELECT endpoint_id, COUNT(*), 0, MIN(ttl_deadline_ms - ttl_ms)
FROM jobs WHERE status = 'IN_QUEUE' GROUP BY endpoint_id
UNION ALL
SELECT endpoint_id, 0, COUNT(*), NULL
FROM jobs WHERE status = 'IN_PROGRESS' GROUP BY endpoint_id

-- Read-only queries for the dashboard and metrics (neuroq.api.dashboard, neuroq.api.metrics).

-- name: dash_list_jobs
-- Retained jobs, newest first, filtered by endpoint and status when given and created since :since.
SELECT {job} FROM jobs
WHERE {retained}
  AND (CAST(:endpoint_id AS TEXT) IS NULL OR endpoint_id = :endpoint_id)
  AND (CAST(:status AS TEXT) IS NULL OR status = :status)
  AND created_at_ms >= :since
ORDER BY seq DESC LIMIT :limit OFFSET :offset

-- name: dash_job_counts
-- Retained jobs by endpoint and state.
SELECT endpoint_id, status, COUNT(*) FROM jobs WHERE {retained} GROUP BY endpoint_id, status

-- name: dash_workers
-- Every live worker.
SELECT worker_id, endpoint_id, state, last_seen_ms FROM workers ORDER BY endpoint_id, worker_id

-- name: dash_running
-- The jobs each worker runs.
SELECT worker_id, id FROM jobs WHERE status = 'IN_PROGRESS' AND worker_id IS NOT NULL ORDER BY seq

-- name: dash_jobs_by_ids
-- Retained jobs with the listed ids, on any endpoint.
SELECT {job} FROM jobs WHERE id IN {ids} AND {retained}

-- name: dash_job_webhooks
-- Webhook deliveries of a job still waiting in the outbox.
SELECT id, job_id, url, body_json, attempts, next_attempt_at_ms
FROM webhook_outbox WHERE job_id = :id ORDER BY id

-- name: dash_finished_minutes
-- Retained jobs that finished since :since, per endpoint and minute (0 = the minute starting at
-- :since): how many, how many COMPLETED, and the mean and longest execution and delay in ms.
SELECT endpoint_id, CAST((finished_at_ms - :since) / 60000 AS BIGINT) AS minute, COUNT(*),
       SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END),
       AVG(finished_at_ms - started_at_ms), MAX(finished_at_ms - started_at_ms),
       AVG(started_at_ms - created_at_ms), MAX(started_at_ms - created_at_ms)
FROM jobs
WHERE finished_at_ms >= :since AND finished_at_ms <= :now AND {retained}
  AND status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT')
GROUP BY endpoint_id, minute
ORDER BY endpoint_id, minute
