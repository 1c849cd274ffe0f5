-- Workflow runs (issue 14): one row per run, its frozen definition and state as JSON, advanced
-- in the transaction that makes one of its step jobs final.
CREATE TABLE workflows (
    id bytea PRIMARY KEY,
    tenant_id bytea NOT NULL,
    run text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
