-- Migration 2 for PostgreSQL: endpoint settings (neuroq.endpoints.EndpointConfig).

CREATE TABLE endpoints (
    endpoint_id TEXT PRIMARY KEY,
    -- the settings in their wire shape, less name and times
    config_json TEXT NOT NULL,
    -- the default executionTimeout of the endpoint's jobs, kept apart so a submit can read it
    execution_timeout_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
