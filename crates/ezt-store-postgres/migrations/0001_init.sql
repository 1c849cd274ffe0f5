-- The first schema: everything the store traits need, plus the cluster's membership and lane
-- rows (nodes, lanes with owner and epochs) that later stages fill in.
--
-- Times the callers pass in (the trait's `now_ms`, `run_at`, …) are stored as given, in ms since
-- the epoch (bigint). Times the database decides are `ezt_now_ms()`, the server's clock.

CREATE FUNCTION ezt_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL);

CREATE TABLE tenants (
    id bytea PRIMARY KEY,
    name text NOT NULL UNIQUE,
    tier text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE api_keys (
    id bytea PRIMARY KEY,
    tenant_id bytea NOT NULL REFERENCES tenants (id),
    digest bytea NOT NULL UNIQUE,
    prefix text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

-- `key_claim` is true while the job holds its idempotency key: the unique index below makes
-- the claim atomic across every node (two admissions of one key never both insert). A job
-- whose claim has lapsed (final for longer than the dedup window) gives it up (NULL) when a
-- new job with the key is admitted.
CREATE TABLE jobs (
    id bytea PRIMARY KEY,
    tenant_id bytea NOT NULL,
    lane text NOT NULL,
    state text NOT NULL,
    spec text NOT NULL,
    hooked boolean NOT NULL,
    idempotent_key text NOT NULL,
    key_claim boolean DEFAULT true,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    run_at bigint NOT NULL,
    deadline_at bigint NOT NULL,
    attempt_count integer NOT NULL DEFAULT 0,
    retries integer NOT NULL DEFAULT 0,
    reroutes integer NOT NULL DEFAULT 0,
    series integer NOT NULL DEFAULT 1,
    lease_token bigint,
    lease_holder text,
    -- Database time: when the current attempt was leased and until when the lease holds (the
    -- attempt ledger a lane's adopter rebuilds its limiter from).
    leased_at bigint,
    lease_expires_at bigint,
    -- The lane epoch the attempt was leased under (the fencing token of cluster mode).
    lane_epoch bigint,
    response text,
    error text,
    finished_at bigint
);
CREATE UNIQUE INDEX jobs_key_claim ON jobs (tenant_id, idempotent_key) WHERE key_claim;
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_pending ON jobs (id) WHERE state IN ('queued', 'scheduled', 'running');
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- No index on lease_holder or (lane, leased_at) yet: every dispatch would pay for them, and
-- nothing reads them on a hot path until cluster mode (dead-peer recovery, the ledger rebuild).

CREATE TABLE attempts (
    job_id bytea NOT NULL,
    n integer NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (job_id, n)
);

CREATE TABLE wakeups (seq bigserial PRIMARY KEY, job_id bytea NOT NULL);

CREATE TABLE webhook_payloads (
    job_id bytea NOT NULL,
    series integer NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (job_id, series)
);

CREATE TABLE webhook_deliveries (
    id bytea PRIMARY KEY,
    job_id bytea NOT NULL,
    tenant_id bytea NOT NULL,
    series integer NOT NULL,
    idx integer NOT NULL,
    url text NOT NULL,
    voting boolean NOT NULL,
    state text NOT NULL,
    attempts jsonb NOT NULL DEFAULT '[]',
    created_at bigint NOT NULL,
    next_at bigint,
    acked_at bigint,
    failed_in_run integer NOT NULL DEFAULT 0,
    lease_token bigint,
    lease_holder text
);
CREATE INDEX deliveries_by_job ON webhook_deliveries (job_id, series, idx);
CREATE INDEX deliveries_pending ON webhook_deliveries (created_at) WHERE state = 'pending';

CREATE TABLE webhook_secrets (
    tenant_id bytea PRIMARY KEY,
    primary_secret bytea NOT NULL,
    secondary_secret bytea,
    updated_at bigint NOT NULL
);

-- Cluster membership (cluster.md §1.3): one row per node, leased with database time. `epoch`
-- comes from `node_epochs` and is new on every start of the node.
CREATE SEQUENCE node_epochs;
CREATE TABLE nodes (
    id text PRIMARY KEY,
    epoch bigint NOT NULL,
    region text NOT NULL,
    advertise_url text,
    version text NOT NULL,
    draining boolean NOT NULL DEFAULT false,
    started_at bigint NOT NULL DEFAULT ezt_now_ms(),
    expires_at bigint NOT NULL
);

-- One row per lane (the scheduler's name, e.g. `job:host:port`): what it learned (written
-- through by `LaneStore`), and who dispatches it. `lane_epoch` comes from `lane_epochs` and
-- grows on every change of owner: the fencing token of the attempt lease.
CREATE SEQUENCE lane_epochs;
CREATE TABLE lanes (
    lane text PRIMARY KEY,
    owner_node text,
    owner_node_epoch bigint,
    lane_epoch bigint NOT NULL DEFAULT 0,
    rate double precision,
    burst integer,
    max_in_flight integer,
    pinned boolean NOT NULL DEFAULT false,
    paused_until_ms bigint,
    learned_at_ms bigint,
    updated_at bigint NOT NULL DEFAULT ezt_now_ms()
);
CREATE INDEX lanes_by_owner ON lanes (owner_node);
