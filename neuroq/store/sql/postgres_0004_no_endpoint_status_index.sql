-- Migration 4 for PostgreSQL: drop the (endpoint_id, status) index.
--
-- Every status change of a job wrote an entry into it, and it was a trap for plans made
-- without statistics (a new table, autovacuum off or not run yet): a job read by id and
-- endpoint could be planned through it and read every job of the endpoint, a cost that grew
-- with each job retained. Job reads and updates now find their row through the unique `id`
-- index only; health's per-endpoint counts read the table once (`health_jobs`).

DROP INDEX IF EXISTS jobs_endpoint_status;
