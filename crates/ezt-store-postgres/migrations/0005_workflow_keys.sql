-- Workflow-level idempotency keys (issue 14): a tenant's runs with the same key are one run,
-- cluster-wide (the unique index decides between two nodes admitting the same key at once).
ALTER TABLE workflows ADD COLUMN idempotent_key text;
CREATE UNIQUE INDEX workflows_by_key ON workflows (tenant_id, idempotent_key)
    WHERE idempotent_key IS NOT NULL;
