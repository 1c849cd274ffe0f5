-- Cluster mode (issue 13): what lane ownership, adoption and the ledger rebuild read.

-- A lane's Retry-After pause on the database clock: the node's `paused_until_ms` is its own
-- clock's, so a skewed node would end (or stretch) the pause for its adopter.
ALTER TABLE lanes ADD COLUMN paused_until_db bigint;

-- The sweeper's "lanes with waiting work" and an owner's poll of its lanes.
CREATE INDEX jobs_waiting_by_lane ON jobs (lane) WHERE state IN ('queued', 'scheduled') AND lease_token IS NULL;
-- The ledger an adopter rebuilds its limiter from, and the attempts it counts as in flight.
CREATE INDEX jobs_ledger ON jobs (lane, leased_at) WHERE leased_at IS NOT NULL;
-- Dead-holder recovery.
CREATE INDEX jobs_by_holder ON jobs (lease_holder) WHERE lease_holder IS NOT NULL;
