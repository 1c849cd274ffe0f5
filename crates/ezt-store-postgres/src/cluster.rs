//! `ClusterStore` on PostgreSQL: node leases and lane claims on the database clock.
//!
//! Membership is one `nodes` row per node, leased (`expires_at`) with `ezt_now_ms()`; each
//! join takes a new epoch from `node_epochs`. A lane's owner is its `lanes` row's `owner_node`
//! and `owner_node_epoch`; every change of owner takes a new `lane_epoch` from `lane_epochs`,
//! and the attempt lease (`jobs.rs`) is conditional on it.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use ezt_core::JobId;
use ezt_store::*;

use crate::codec::*;
use crate::lanes::learned_state;
use crate::PgStore;

/// How far back the ledger an adopter rebuilds its limiter from reaches.
const LEDGER_MS: i64 = 60_000;
/// At most this many ledger entries are handed over (the newest).
const LEDGER_MAX: i64 = 10_000;

/// The channel owners LISTEN on for "new work in this lane".
pub const LANE_CHANNEL: &str = "ezt_lane";

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn join(&self, node: &NodeInfo, ttl_ms: u64) -> Result<u64> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "INSERT INTO nodes (id, epoch, region, advertise_url, version, draining, started_at, expires_at)
                 VALUES ($1, nextval('node_epochs'), $2, $3, $4, false, ezt_now_ms(), ezt_now_ms() + $5)
                 ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, region = EXCLUDED.region,
                   advertise_url = EXCLUDED.advertise_url, version = EXCLUDED.version, draining = false,
                   started_at = EXCLUDED.started_at, expires_at = EXCLUDED.expires_at
                 WHERE nodes.expires_at <= ezt_now_ms()
                 RETURNING epoch",
                &[
                    &node.id.as_str(),
                    &node.region,
                    &node.advertise_url,
                    &node.version,
                    &(ttl_ms as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        match row {
            Some(r) => Ok(to_u64(r.get(0))),
            None => Err(Error::Conflict(format!(
                "a live node named {} is already a member (its lease has not expired)",
                node.id
            ))),
        }
        .inspect(|_| self.notifier.tell(MEMBERS_MESSAGE))
    }

    /// On a session of its own, not the pool's: a pool saturated by admissions or slow queries
    /// must not make a healthy node miss its renewal and fence itself. The session is taken
    /// out for the call and put back only after a success, so an error, or a caller that gave
    /// up (timeout), makes the next heartbeat connect afresh.
    async fn heartbeat(&self, id: &NodeId, epoch: u64, ttl_ms: u64) -> Result<bool> {
        let mut slot = self.beat.lock().await;
        let c = match slot.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                let (c, conn) = self
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(pg_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "heartbeat session ended");
                    }
                });
                c
            }
        };
        let n = c
            .execute(
                "UPDATE nodes SET expires_at = ezt_now_ms() + $3
                 WHERE id = $1 AND epoch = $2 AND expires_at > ezt_now_ms()",
                &[&id.as_str(), &(epoch as i64), &(ttl_ms as i64)],
            )
            .await
            .map_err(pg_err)?;
        *slot = Some(c);
        Ok(n == 1)
    }

    async fn drain(&self, id: &NodeId, epoch: u64) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.execute(
            "UPDATE nodes SET draining = true WHERE id = $1 AND epoch = $2",
            &[&id.as_str(), &(epoch as i64)],
        )
        .await
        .map_err(pg_err)?;
        release_all(&tx, id, epoch).await?;
        tx.commit().await.map_err(pg_err)?;
        self.notifier.tell(MEMBERS_MESSAGE);
        Ok(())
    }

    async fn leave(&self, id: &NodeId, epoch: u64) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        release_all(&tx, id, epoch).await?;
        tx.execute(
            "UPDATE nodes SET expires_at = LEAST(expires_at, ezt_now_ms()), draining = true
             WHERE id = $1 AND epoch = $2",
            &[&id.as_str(), &(epoch as i64)],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        self.notifier.tell(MEMBERS_MESSAGE);
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT n.id, n.epoch, n.region, n.advertise_url, n.version, n.started_at, n.expires_at,
                        n.expires_at > ezt_now_ms(), n.draining,
                        (SELECT count(*) FROM lanes l WHERE l.owner_node = n.id AND l.owner_node_epoch = n.epoch)
                 FROM nodes n ORDER BY n.id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                id: r.get(0),
                epoch: to_u64(r.get(1)),
                region: r.get(2),
                advertise_url: r.get(3),
                version: r.get(4),
                started_at_ms: to_u64(r.get(5)),
                expires_at_ms: to_u64(r.get(6)),
                alive: r.get(7),
                draining: r.get(8),
                lanes: to_u64(r.get(9)),
            })
            .collect())
    }

    async fn lane_rows(
        &self,
        prefix: &str,
        tenant: Option<ezt_core::TenantId>,
        active_since_ms: u64,
    ) -> Result<Option<Vec<LaneRow>>> {
        let c = self.client().await?;
        // The lanes asked for, as (stored name, key in `jobs.lane`).
        let named = match tenant {
            Some(_) => {
                "SELECT DISTINCT $1 || lane AS name, lane AS key FROM jobs
                 WHERE tenant_id = $2 AND (state IN ('queued', 'scheduled', 'running') OR updated_at >= $3)"
            }
            None => {
                "SELECT lane AS name, substr(lane, length($1) + 1) AS key FROM lanes
                 WHERE starts_with(lane, $1) AND ($2::bytea IS NULL OR $3::bigint >= 0)"
            }
        };
        let sql = format!(
            "WITH named AS ({named})
             SELECT n.name, CASE WHEN o.id IS NOT NULL THEN l.owner_node END, COALESCE(l.lane_epoch, 0),
                    l.rate, l.burst, l.max_in_flight, l.paused_until_ms, l.learned_at_ms, l.detail,
                    COALESCE(l.paused_until_db > db.now, false),
                    (SELECT count(*) FROM jobs j WHERE j.lane = n.key AND j.state = 'queued' AND j.lease_token IS NULL),
                    (SELECT count(*) FROM jobs j WHERE j.lane = n.key AND j.state = 'running')
             FROM named n CROSS JOIN (SELECT ezt_now_ms() AS now) db
             LEFT JOIN lanes l ON l.lane = n.name
             LEFT JOIN nodes o ON o.id = l.owner_node AND o.epoch = l.owner_node_epoch AND o.expires_at > db.now
             ORDER BY n.name"
        );
        let t = tenant.map(|t| id_bytes(t.0));
        let rows = c
            .query(&sql, &[&prefix, &t, &(active_since_ms as i64)])
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let state = learned_state(r, 3)?;
                Ok(LaneRow {
                    lane: r.get(0),
                    owner_node: r.get(1),
                    lane_epoch: to_u64(r.get(2)),
                    state,
                    paused: r.get(9),
                    queued: to_u64(r.get(10)),
                    running: to_u64(r.get(11)),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn forget_dead_nodes(&self, older_than_ms: u64) -> Result<u64> {
        // Epochs come from the `node_epochs` sequence, never from a row: deleting rows cannot
        // make an epoch repeat.
        let c = self.client().await?;
        c.execute(
            "DELETE FROM nodes WHERE expires_at <= ezt_now_ms() - $1",
            &[&(older_than_ms as i64)],
        )
        .await
        .map_err(pg_err)
    }

    async fn claim_lane(
        &self,
        id: &NodeId,
        epoch: u64,
        lane: &str,
        take: bool,
    ) -> Result<LaneClaim> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO lanes (lane) VALUES ($1) ON CONFLICT (lane) DO NOTHING",
            &[&lane],
        )
        .await
        .map_err(pg_err)?;
        // The row locked first, in a statement of its own; then, in the next statement (a new
        // snapshot under READ COMMITTED), the owner's liveness and this node's own on one
        // database instant. One statement that locked the row and outer-joined the owner's
        // member row re-checked a row changed by a concurrent claim without re-joining it: it
        // saw the new owner with no member row, "not alive", and took the lane too (two nodes
        // claimed one fresh lane 10 ms apart in the drain benchmark).
        let r = tx
            .query_one(
                "SELECT owner_node, owner_node_epoch, lane_epoch FROM lanes WHERE lane = $1 FOR UPDATE",
                &[&lane],
            )
            .await
            .map_err(pg_err)?;
        let owner: Option<String> = r.get(0);
        let owner_epoch: Option<i64> = r.get(1);
        let mut lane_epoch: i64 = r.get(2);
        let live = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM nodes o WHERE o.id = $1 AND o.epoch = $2 AND o.expires_at > db.now),
                        EXISTS (SELECT 1 FROM nodes m WHERE m.id = $3 AND m.epoch = $4
                                AND m.expires_at > db.now AND NOT m.draining),
                        db.now
                 FROM (SELECT ezt_now_ms() AS now) db",
                &[&owner, &owner_epoch, &id.as_str(), &(epoch as i64)],
            )
            .await
            .map_err(pg_err)?;
        let owner_alive: bool = live.get(0);
        let me_alive: bool = live.get(1);
        let now: i64 = live.get(2);
        let mine = owner.as_deref() == Some(id.as_str()) && owner_epoch == Some(epoch as i64);
        if !mine {
            if owner_alive {
                tx.commit().await.map_err(pg_err)?;
                return Ok(LaneClaim::Elsewhere { owner });
            }
            if !take || !me_alive {
                tx.commit().await.map_err(pg_err)?;
                return Ok(LaneClaim::Elsewhere { owner: None });
            }
            lane_epoch = tx
                .query_one(
                    "UPDATE lanes SET owner_node = $2, owner_node_epoch = $3,
                     lane_epoch = nextval('lane_epochs'), updated_at = ezt_now_ms()
                     WHERE lane = $1 RETURNING lane_epoch",
                    &[&lane, &id.as_str(), &(epoch as i64)],
                )
                .await
                .map_err(pg_err)?
                .get(0);
        }
        let st = tx
            .query_one(
                "SELECT rate, burst, max_in_flight, paused_until_ms, learned_at_ms, detail, paused_until_db
                 FROM lanes WHERE lane = $1",
                &[&lane],
            )
            .await
            .map_err(pg_err)?;
        let state = learned_state(&st, 0)?;
        let pause_left_ms = st
            .get::<_, Option<i64>>(6)
            .filter(|&p| p > now)
            .map(|p| to_u64(p - now));
        let key = lane.strip_prefix("job:").unwrap_or(lane);
        // Calls that may still be running under earlier owners: leased under another epoch (or
        // cut off by recovery, token gone) and their lease not yet expired.
        let foreign = tx
            .query(
                "SELECT lease_expires_at - $3 FROM jobs
                 WHERE lane = $1 AND leased_at IS NOT NULL AND lease_expires_at > $3
                   AND (lease_token IS NULL OR lane_epoch IS DISTINCT FROM $2)",
                &[&key, &lane_epoch, &now],
            )
            .await
            .map_err(pg_err)?;
        let ledger = tx
            .query(
                "SELECT $2 - leased_at FROM jobs
                 WHERE lane = $1 AND leased_at > $2 - $3 AND leased_at <= $2
                 ORDER BY leased_at DESC LIMIT $4",
                &[&key, &now, &LEDGER_MS, &LEDGER_MAX],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(LaneClaim::Owned(Box::new(OwnedLane {
            lane_epoch: to_u64(lane_epoch),
            state,
            pause_left_ms,
            foreign_in_flight_ms: foreign.iter().map(|r| to_u64(r.get(0))).collect(),
            ledger_ages_ms: ledger.iter().map(|r| to_u64(r.get(0))).collect(),
        })))
    }

    async fn release_lanes(&self, id: &NodeId, epoch: u64, lanes: &[String]) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE lanes SET owner_node = NULL, owner_node_epoch = NULL, updated_at = ezt_now_ms()
             WHERE lane = ANY($3) AND owner_node = $1 AND owner_node_epoch = $2",
            &[&id.as_str(), &(epoch as i64), &lanes],
        )
        .await
        .map_err(pg_err)?;
        for l in lanes {
            self.notifier.tell(l);
        }
        Ok(())
    }

    async fn lane_owners(&self, lanes: &[String]) -> Result<Vec<LaneOwner>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT w.lane, l.owner_node, l.owner_node_epoch, COALESCE(l.lane_epoch, 0),
                        (o.id IS NOT NULL AND o.epoch = l.owner_node_epoch AND o.expires_at > ezt_now_ms())
                 FROM unnest($1::text[]) AS w(lane)
                 LEFT JOIN lanes l ON l.lane = w.lane
                 LEFT JOIN nodes o ON o.id = l.owner_node",
                &[&lanes],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| LaneOwner {
                lane: r.get(0),
                owner_node: r.get(1),
                owner_node_epoch: r.get::<_, Option<i64>>(2).map(to_u64),
                lane_epoch: to_u64(r.get(3)),
                owner_alive: r.get(4),
            })
            .collect())
    }

    async fn orphan_lanes(&self, prefix: &str, thorough: bool) -> Result<Vec<String>> {
        let c = self.client().await?;
        let sql = if thorough {
            // Every lane with waiting work: a read of every waiting job.
            "SELECT w.name FROM (
                SELECT DISTINCT $1 || lane AS name FROM jobs
                WHERE state IN ('queued', 'scheduled') AND lease_token IS NULL) w
             LEFT JOIN lanes l ON l.lane = w.name
             LEFT JOIN nodes o ON o.id = l.owner_node AND o.epoch = l.owner_node_epoch
                  AND o.expires_at > ezt_now_ms()
             WHERE o.id IS NULL
             ORDER BY w.name"
        } else {
            // The lanes with a row and no live owner, each probed for waiting work (one index
            // lookup each): the cost follows the lanes, not the backlog.
            // (LATERAL … LIMIT 1: a probe per ownerless lane; as a semi-join the planner
            // hashed every waiting job instead, 0.6 s a call in the drain.)
            "SELECT l.lane FROM lanes l
             LEFT JOIN nodes o ON o.id = l.owner_node AND o.epoch = l.owner_node_epoch
                  AND o.expires_at > ezt_now_ms()
             CROSS JOIN LATERAL (
                SELECT 1 FROM jobs j WHERE j.lane = substr(l.lane, length($1) + 1)
                  AND j.state IN ('queued', 'scheduled') AND j.lease_token IS NULL
                LIMIT 1) w
             WHERE starts_with(l.lane, $1) AND o.id IS NULL
             ORDER BY l.lane"
        };
        let rows = c.query(sql, &[&prefix]).await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn owned_lanes(&self, id: &NodeId, epoch: u64) -> Result<Vec<(String, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT lane, lane_epoch FROM lanes WHERE owner_node = $1 AND owner_node_epoch = $2 ORDER BY lane",
                &[&id.as_str(), &(epoch as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), to_u64(r.get(1)))).collect())
    }

    async fn waiting_jobs(&self, prefix: &str, lanes: &[String]) -> Result<Vec<PendingJob>> {
        let keys: Vec<&str> = lanes
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, tenant_id, lane, run_at, deadline_at FROM jobs
                 WHERE lane = ANY($1) AND state IN ('queued', 'scheduled') AND lease_token IS NULL
                 ORDER BY id",
            )
            .await
            .map_err(pg_err)?;
        let rows = c.query(&st, &[&keys]).await.map_err(pg_err)?;
        Ok(rows.iter().map(pending_row).collect())
    }

    async fn waiting_jobs_after(
        &self,
        prefix: &str,
        lanes: &[String],
        after: ezt_core::JobId,
        until: Option<ezt_core::JobId>,
    ) -> Result<Vec<PendingJob>> {
        let keys: Vec<&str> = lanes
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, tenant_id, lane, run_at, deadline_at FROM jobs
                 WHERE lane = ANY($1) AND id > $2 AND ($3::bytea IS NULL OR id <= $3)
                   AND state IN ('queued', 'scheduled') AND lease_token IS NULL
                 ORDER BY id",
            )
            .await
            .map_err(pg_err)?;
        let rows = c
            .query(
                &st,
                &[&keys, &id_bytes(after.0), &until.map(|u| id_bytes(u.0))],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(pending_row).collect())
    }

    async fn dead_holders(&self) -> Result<Vec<NodeId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT h FROM (
                    SELECT DISTINCT lease_holder AS h FROM jobs
                    WHERE lease_holder IS NOT NULL AND lease_token IS NOT NULL
                    UNION
                    SELECT DISTINCT lease_holder FROM webhook_deliveries
                    WHERE lease_holder IS NOT NULL AND lease_token IS NOT NULL) x
                 WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = x.h AND n.expires_at > ezt_now_ms())
                 ORDER BY h",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| NodeId::new(r.get::<_, String>(0)))
            .collect())
    }

    async fn notify_lane(&self, lane: &str) -> Result<()> {
        match parse_work_message(lane) {
            Some((name, floor, ceiling)) => self.notifier.tell_work(name, floor, ceiling),
            None => self.notifier.tell(lane),
        }
        Ok(())
    }

    async fn lane_event(&self) -> Result<Option<String>> {
        let mut rx = self.lane_events.lock().await;
        if rx.is_none() {
            let (tx, r) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(listen(self.pg.clone(), tx));
            *rx = Some(r);
        }
        let r = rx.as_mut().expect("set above");
        match r.recv().await {
            Some(lane) => Ok(Some(lane)),
            None => Err(Error::Unavailable {
                message: "the lane listener ended".into(),
            }),
        }
    }

    async fn unlease(&self, job: JobId, token: u64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE jobs SET state = 'queued', attempt_count = attempt_count - 1,
                 lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                 WHERE id = $1 AND state = 'running' AND lease_token = $2",
                &[&id_bytes(job.0), &(token as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }
}

/// Frees every lane a membership owns, telling their next owners.
async fn release_all(c: &impl GenericClient, id: &NodeId, epoch: u64) -> Result<()> {
    let rows = c
        .query(
            "UPDATE lanes SET owner_node = NULL, owner_node_epoch = NULL, updated_at = ezt_now_ms()
             WHERE owner_node = $1 AND owner_node_epoch = $2 RETURNING lane",
            &[&id.as_str(), &(epoch as i64)],
        )
        .await
        .map_err(pg_err)?;
    for r in &rows {
        let lane: String = r.get(0);
        c.execute("SELECT pg_notify($1, $2)", &[&LANE_CHANNEL, &lane])
            .await
            .map_err(pg_err)?;
    }
    Ok(())
}

/// Keeps a session of its own LISTENing on [`LANE_CHANNEL`], reconnecting after a second when
/// it ends; forwards each notification's payload until nobody reads them.
async fn listen(pg: tokio_postgres::Config, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    loop {
        if tx.is_closed() {
            return;
        }
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                let _ = ntx.send(n.payload().to_string());
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {LANE_CHANNEL}"))
                    .await
                    .is_ok()
                {
                    // A poke after (re)connecting: whatever was sent meanwhile is looked for.
                    let _ = tx.send(String::new());
                    while let Some(lane) = nrx.recv().await {
                        if tx.send(lane).is_err() {
                            return;
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::debug!(error = %e, "lane listener cannot connect; retrying in 1 s"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// A waiting job's index entry from `SELECT id, tenant_id, lane, run_at, deadline_at`.
fn pending_row(r: &tokio_postgres::Row) -> PendingJob {
    PendingJob {
        id: JobId(bytes_id(r.get(0))),
        tenant_id: ezt_core::TenantId(bytes_id(r.get(1))),
        lane: ezt_core::lane::LaneKey(r.get(2)),
        run_at: to_u64(r.get(3)),
        deadline_at: to_u64(r.get(4)),
    }
}
