//! `PgStore`: the store contract on PostgreSQL, for several daemons sharing one queue and one history.
//!
//! Ordering: every write transaction first locks the one-row `log_head` (`FOR UPDATE`) and takes its
//! ids from it, so ids are assigned in commit order: a transaction holding id N+1 cannot commit before
//! the one holding N (it waits for the row), and a reader at `after = N` never misses an event. That
//! lock is also what makes group commit pay: the journal sends many appends in one transaction.
//! Heads (`jobs.head`, the folded `JobView` as JSON, and beside it the fields a daemon's cache
//! keeps of every job as plain columns) are updated in the same transaction as their events. Claims take the oldest queued job `FOR UPDATE SKIP LOCKED`. Leases (`leases`) are
//! coordination state, not history: the `running` event records owner, epoch and first expiry.
//! Wake-ups: every commit sends `NOTIFY reelsmith_events` with ids only (the last id, then the jobs'
//! ids while they fit in 7,000 bytes); a listener task turns them into local watch channels, and a
//! one-second poll of `log_head` is the backstop for notifications lost while it reconnects.
//! Schema: embedded, versioned migrations applied at connect (and by `reelsmith migrate`) under an
//! advisory lock; a schema newer than this build knows is refused.
//! Round trips: an append is two, its `BEGIN` pipelined with the reads of the log head, the heads
//! and the idempotency keys, its `COMMIT` with the writes; every statement is prepared once per
//! pooled connection.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::types::Json;
use tokio_postgres::NoTls;
use tracing::{debug, warn};
use uuid::Uuid;

use super::codec;
use super::contract::{
    lease_lost_reason, pause_event, pause_state, purge_event, running_event, stage_batch,
    AppendOutcome, AppendRequest, Claimed, CommitHook, EngineError, EventStore, Owner, PurgeNote,
    Purged, Staged, StoreFault, StoreFuture,
};
use crate::event::{
    interruption_events, now_ms, Event, EventId, IdempotencyTag, JobId, JobState, JobView, Kind,
    Level, NewEvent, IDEMPOTENCY_WINDOW_MS,
};
use crate::views::Head;

const ENGINE: &str = "postgres";
const CHANNEL: &str = "reelsmith_events";
/// Longest NOTIFY payload we send (PostgreSQL's limit is 8000 bytes).
const MAX_NOTIFY: usize = 7_000;

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`. Never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE log_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL
);
INSERT INTO log_head VALUES (true, 0);
CREATE TABLE events (
    id bigint PRIMARY KEY,
    job uuid NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX events_by_job ON events (job, id);
CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    first_event bigint NOT NULL,
    state text NOT NULL,
    queued_at bigint NOT NULL,
    cancel_requested boolean NOT NULL,
    head jsonb NOT NULL
);
CREATE INDEX jobs_newest ON jobs (first_event DESC);
CREATE INDEX jobs_queue ON jobs (queued_at) WHERE state = 'queued';
CREATE TABLE leases (
    job uuid PRIMARY KEY,
    epoch integer NOT NULL,
    owner jsonb NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE TABLE settings (
    key text PRIMARY KEY,
    value jsonb NOT NULL
);
"#,
    r#"
CREATE TABLE daemons (
    name text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_ms bigint NOT NULL,
    heartbeat_ms bigint NOT NULL,
    running jsonb NOT NULL
);
"#,
    // Idempotency keys bound by submits (checked inside the append transaction); a key older than
    // the window may be bound again.
    r#"
CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    job uuid NOT NULL,
    created_ms bigint NOT NULL
);
"#,
    // The head fields a daemon's cache keeps of every job (`views::Head`), as columns beside the
    // jsonb head (written with it), so a start loads every job's head without reading any jsonb.
    r#"
ALTER TABLE jobs ADD COLUMN attempt integer, ADD COLUMN last_event bigint,
    ADD COLUMN created_ms bigint, ADD COLUMN completed_ms bigint;
UPDATE jobs SET attempt = (head->>'attempt')::integer,
    last_event = (head->>'last_event_id')::bigint,
    created_ms = (head->>'created_ms')::bigint,
    completed_ms = (head->>'completed_ms')::bigint;
ALTER TABLE jobs ALTER COLUMN attempt SET NOT NULL, ALTER COLUMN last_event SET NOT NULL,
    ALTER COLUMN created_ms SET NOT NULL;
"#,
];

// The statements of the write path, prepared once per pooled connection.
const LOCK_HEAD: &str = "SELECT last_id FROM log_head FOR UPDATE";
const LOCK_JOBS: &str = "SELECT id, head FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const LIVE_KEYS: &str = "SELECT key FROM idempotency_keys WHERE key = ANY($1) AND created_ms > $2";
const INSERT_EVENTS: &str =
    "INSERT INTO events (id, job, record) SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bytea[])";
const UPSERT_HEADS: &str = "INSERT INTO jobs (id, first_event, state, queued_at, cancel_requested, head,
         attempt, last_event, created_ms, completed_ms)
     SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::boolean[], $6::jsonb[],
         $7::integer[], $8::bigint[], $9::bigint[], $10::bigint[])
     ON CONFLICT (id) DO UPDATE SET state = excluded.state, queued_at = excluded.queued_at,
         cancel_requested = excluded.cancel_requested, head = excluded.head,
         attempt = excluded.attempt, last_event = excluded.last_event,
         completed_ms = excluded.completed_ms";
const END_LEASES: &str = "DELETE FROM leases WHERE job = ANY($1)";
const BIND_KEYS: &str = "INSERT INTO idempotency_keys (key, job, created_ms)
     SELECT k, j, $3 FROM UNNEST($1::text[], $2::uuid[]) AS b(k, j)
     ON CONFLICT (key) DO UPDATE SET job = excluded.job, created_ms = excluded.created_ms";
const SET_PAUSED: &str = "INSERT INTO settings (key, value) VALUES ('paused', $1)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const SET_LAST: &str = "UPDATE log_head SET last_id = $1";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Session settings of every pooled connection.
const SESSION_OPTIONS: &str = "-c idle_in_transaction_session_timeout=5000 -c lock_timeout=15000";

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn fault(
    kind: fn(&'static str, EngineError) -> StoreFault,
) -> impl Fn(tokio_postgres::Error) -> StoreFault {
    move |e| kind(ENGINE, Box::new(e))
}

fn write_fault(engine: &'static str, source: EngineError) -> StoreFault {
    StoreFault::Write { engine, source }
}

fn read_fault(engine: &'static str, source: EngineError) -> StoreFault {
    StoreFault::Read { engine, source }
}

fn unavailable(engine: &'static str, source: EngineError) -> StoreFault {
    StoreFault::Unavailable { engine, source }
}

fn pool_fault(e: deadpool_postgres::PoolError) -> StoreFault {
    unavailable(ENGINE, Box::new(e))
}

fn codec_fault(e: impl std::error::Error + Send + Sync + 'static) -> StoreFault {
    read_fault(ENGINE, Box::new(e))
}

/// Column `i` of `row`, a jsonb head, decoded straight into a view (no `Value` tree between).
fn head_at(row: &tokio_postgres::Row, i: usize) -> Result<JobView, StoreFault> {
    row.try_get::<_, Json<JobView>>(i)
        .map(|j| j.0)
        .map_err(codec_fault)
}

/// What [`PgStore::load_cache`] reads.
pub struct CacheStart {
    pub last: EventId,
    /// Every job's head, oldest first.
    pub heads: Vec<(JobId, Head)>,
    /// The views kept whole, in no order.
    pub whole: Vec<JobView>,
}

/// A column that holds what no head can have.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadColumn(String);

/// Local wake-up channels, fed by the listener.
#[derive(Default)]
struct Wakers {
    jobs: HashMap<JobId, watch::Sender<EventId>>,
}

pub struct PgStore {
    pool: Pool,
    hook: Mutex<Option<CommitHook>>,
    wakers: Arc<Mutex<Wakers>>,
    any: watch::Sender<EventId>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The owner of a copied job's running attempt, from its `running` event: a single daemon's records
/// `{host, pid}` only, and its name is then the one such a daemon has, `<host>-<pid>`.
fn copied_owner(view: &JobView) -> Owner {
    let field = |k: &str| view.owner.as_ref().and_then(|o| o.get(k));
    let host = field("host")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let pid = field("pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    let daemon = field("daemon")
        .and_then(Value::as_str)
        .map_or_else(|| format!("{host}-{pid}"), str::to_string);
    Owner { daemon, host, pid }
}

/// Applies the migrations this build knows to the database at `url`; answers the version now in
/// force. Refuses a newer schema.
pub async fn migrate(url: &str) -> Result<i64, StoreFault> {
    let cfg = tokio_postgres::Config::from_str(url).map_err(fault(unavailable))?;
    let (mut client, conn) = cfg.connect(NoTls).await.map_err(fault(unavailable))?;
    let conn = tokio::spawn(conn);
    let result = migrate_client(&mut client).await;
    drop(client);
    let _ = conn.await;
    result
}

async fn migrate_client(client: &mut tokio_postgres::Client) -> Result<i64, StoreFault> {
    let tx = client.transaction().await.map_err(fault(write_fault))?;
    // One migrator at a time across the cluster.
    tx.execute("SELECT pg_advisory_xact_lock(72656573)", &[])
        .await
        .map_err(fault(write_fault))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS reelsmith_schema (version bigint NOT NULL)")
        .await
        .map_err(fault(write_fault))?;
    let found: i64 = tx
        .query_opt("SELECT version FROM reelsmith_schema", &[])
        .await
        .map_err(fault(read_fault))?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreFault::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        debug!(version = i + 1, "applying store migration");
        tx.batch_execute(sql).await.map_err(fault(write_fault))?;
    }
    tx.execute("DELETE FROM reelsmith_schema", &[])
        .await
        .map_err(fault(write_fault))?;
    tx.execute(
        "INSERT INTO reelsmith_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(fault(write_fault))?;
    tx.commit().await.map_err(fault(write_fault))?;
    Ok(SCHEMA_VERSION)
}

/// Who ends a [`PgStore::write_batch`]'s transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// `write_batch` opens and commits it, pipelined with its statements.
    Own,
    /// The caller opened it and commits it.
    Caller,
}

/// A pooled connection lent to a pipelined transaction: back to the pool once that transaction
/// ended ([`Held::release`]); dropped before (an error, a cancelled future) it is closed instead,
/// and the server rolls back whatever it had open.
struct Held(Option<deadpool_postgres::Client>);

impl Held {
    fn client(&self) -> &deadpool_postgres::Client {
        self.0.as_ref().expect("held until released")
    }

    fn release(mut self) {
        self.0.take();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// Upserts job heads.
async fn write_heads<C: GenericClient>(tx: &C, changed: &[JobView]) -> Result<(), StoreFault> {
    // Serialised straight into the jsonb parameter (no intermediate `Value` tree).
    let heads: Vec<tokio_postgres::types::Json<&JobView>> =
        changed.iter().map(tokio_postgres::types::Json).collect();
    let h_ids: Vec<Uuid> = changed.iter().map(|v| v.id.0).collect();
    let h_first: Vec<i64> = changed.iter().map(|v| v.first_event_id as i64).collect();
    let h_state: Vec<&str> = changed.iter().map(|v| v.state.as_str()).collect();
    let h_queued: Vec<i64> = changed.iter().map(|v| v.queued_at as i64).collect();
    let h_cancel: Vec<bool> = changed.iter().map(|v| v.cancel_requested).collect();
    let h_attempt: Vec<i32> = changed
        .iter()
        .map(|v| i32::try_from(v.attempt).unwrap_or(i32::MAX))
        .collect();
    let h_last: Vec<i64> = changed.iter().map(|v| v.last_event_id as i64).collect();
    let h_created: Vec<i64> = changed.iter().map(|v| v.created_ms).collect();
    let h_completed: Vec<Option<i64>> = changed.iter().map(|v| v.completed_ms).collect();
    let st = tx
        .prepare_cached(UPSERT_HEADS)
        .await
        .map_err(fault(write_fault))?;
    tx.execute(
        &st,
        &[
            &h_ids,
            &h_first,
            &h_state,
            &h_queued,
            &h_cancel,
            &heads,
            &h_attempt,
            &h_last,
            &h_created,
            &h_completed,
        ],
    )
    .await
    .map_err(fault(write_fault))?;
    Ok(())
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), applies the migrations and starts the
    /// listener. Must run inside a tokio runtime.
    pub async fn connect(url: &str) -> Result<PgStore, StoreFault> {
        migrate(url).await?;
        let mut cfg = tokio_postgres::Config::from_str(url).map_err(fault(unavailable))?;
        // A daemon frozen (SIGSTOP, a stalled VM) inside a transaction would hold the log head's
        // lock and stop every other daemon: the server ends such a session after 5 s (its
        // transaction rolls back; that daemon's lease lapses and its job is rescued).
        cfg.options(SESSION_OPTIONS);
        let mgr = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .build()
            .map_err(|e| unavailable(ENGINE, Box::new(e)))?;
        let wakers = Arc::new(Mutex::new(Wakers::default()));
        let (any, _) = watch::channel(0);
        let listener = tokio::spawn(listen(cfg, pool.clone(), wakers.clone(), any.clone()));
        Ok(PgStore {
            pool,
            hook: Mutex::new(None),
            wakers,
            any,
            listener,
        })
    }

    /// Writes a history recorded elsewhere, ids kept, into this store, which must be empty
    /// (`reelsmith store copy`). `pages` yields the events in id order; heads are folded here and
    /// written at the end, in the same transaction, so a failed copy leaves the store empty.
    /// A job still running in the copied history (a `ctl backup` of a busy daemon, the log of one
    /// that crashed) gets a lease that has already expired, held by the daemon of its `running`
    /// event: nothing runs it here, so the first daemon on the copy rescues it as it would any job
    /// of a daemon that stopped renewing. `last_id` is the largest id the source ever gave out
    /// (retention may have deleted its newest events): the copy goes on after it, so no id is
    /// used twice. Answers (events, jobs) written.
    pub async fn import<F, Fut>(
        &self,
        last_id: EventId,
        mut next_page: F,
    ) -> Result<(u64, u64), StoreFault>
    where
        F: FnMut(EventId) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Event>, StoreFault>>,
    {
        let mut client = self.pool.get().await.map_err(pool_fault)?;
        let tx = client.transaction().await.map_err(fault(write_fault))?;
        let next = Self::lock_head(&tx).await?;
        let any: Option<i64> = tx
            .query_one("SELECT max(id) FROM events", &[])
            .await
            .map_err(fault(read_fault))?
            .get(0);
        if next > 1 || any.is_some() {
            return Err(write_fault(
                ENGINE,
                "the target store is not empty; copy into a new database".into(),
            ));
        }
        let mut heads: HashMap<JobId, JobView> = HashMap::new();
        let mut keys: HashMap<String, (Uuid, i64)> = HashMap::new();
        let (mut after, mut count, mut paused) = (0, 0u64, None);
        loop {
            let page = next_page(after).await?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            for ev in &page {
                if ev.job == JobId::DAEMON {
                    paused = pause_state(ev).or(paused);
                    continue;
                }
                match heads.get_mut(&ev.job) {
                    Some(v) => v.apply(ev),
                    None => {
                        if let Some(v) = JobView::create(ev) {
                            heads.insert(ev.job, v);
                        }
                        let tag = (ev.kind == Kind::Queued)
                            .then_some(ev.payload.as_ref())
                            .flatten()
                            .and_then(IdempotencyTag::from_payload);
                        if let Some(t) = tag {
                            // The submit that bound the key last; its first job.
                            let e = keys.entry(t.key).or_insert((ev.job.0, ev.timestamp_ms));
                            if t.index == 0 && ev.timestamp_ms >= e.1 {
                                *e = (ev.job.0, ev.timestamp_ms);
                            }
                        }
                    }
                }
            }
            let ids: Vec<i64> = page.iter().map(|e| e.id as i64).collect();
            let jobs: Vec<Uuid> = page.iter().map(|e| e.job.0).collect();
            let records: Vec<Vec<u8>> = page.iter().map(codec::encode).collect();
            tx.execute(
                "INSERT INTO events (id, job, record) SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bytea[])",
                &[&ids, &jobs, &records],
            )
            .await
            .map_err(fault(write_fault))?;
            count += page.len() as u64;
            after = last;
        }
        let views: Vec<JobView> = heads.into_values().collect();
        for chunk in views.chunks(5_000) {
            write_heads(&tx, chunk).await?;
        }
        for v in views.iter().filter(|v| v.state == JobState::Running) {
            let owner = serde_json::to_value(copied_owner(v)).map_err(codec_fault)?;
            tx.execute(
                "INSERT INTO leases (job, epoch, owner, expires_ms) VALUES ($1, $2, $3, 0)",
                &[&v.id.0, &(v.attempt as i32), &owner],
            )
            .await
            .map_err(fault(write_fault))?;
        }
        let keys: Vec<(String, (Uuid, i64))> = keys.into_iter().collect();
        for chunk in keys.chunks(5_000) {
            let k: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let j: Vec<Uuid> = chunk.iter().map(|(_, (j, _))| *j).collect();
            let t: Vec<i64> = chunk.iter().map(|(_, (_, t))| *t).collect();
            tx.execute(
                "INSERT INTO idempotency_keys (key, job, created_ms)
                 SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::bigint[])",
                &[&k, &j, &t],
            )
            .await
            .map_err(fault(write_fault))?;
        }
        if let Some(p) = paused {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('paused', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&Value::Bool(p)],
            )
            .await
            .map_err(fault(write_fault))?;
        }
        let last = after.max(last_id) as i64;
        tx.execute("UPDATE log_head SET last_id = $1", &[&last])
            .await
            .map_err(fault(write_fault))?;
        tx.commit().await.map_err(fault(write_fault))?;
        Ok((count, views.len() as u64))
    }

    /// Locks the log head and answers the next free id.
    async fn lock_head(tx: &Transaction<'_>) -> Result<EventId, StoreFault> {
        let st = tx
            .prepare_cached(LOCK_HEAD)
            .await
            .map_err(fault(write_fault))?;
        let row = tx.query_one(&st, &[]).await.map_err(fault(write_fault))?;
        Ok(row.get::<_, i64>(0) as u64 + 1)
    }

    /// Stages `batch` against the locked heads and writes it, inside `tx`. `next`: the first free
    /// id when the caller already locked the log head; `None` locks it here (in the same round
    /// trip as the heads' reads). Statements are prepared once per connection and sent
    /// pipelined: the reads in one round trip, the writes in another. With [`Ends::Own`], `tx` is
    /// a plain connection and the transaction's `BEGIN` and `COMMIT` ride in those two round
    /// trips too (a batch that writes nothing is rolled back); an error then leaves the
    /// connection in an unknown state, to be discarded ([`Held`]). With [`Ends::Caller`] nothing
    /// is committed here.
    async fn write_batch<C: GenericClient>(
        tx: &C,
        batch: Vec<AppendRequest>,
        next: Option<EventId>,
        ends: Ends,
    ) -> Result<(Vec<AppendOutcome>, Vec<Event>, Vec<JobView>), StoreFault> {
        let own = ends == Ends::Own;
        let mut ids: Vec<Uuid> = batch
            .iter()
            .filter(|r| r.job != JobId::DAEMON)
            .map(|r| r.job.0)
            .collect();
        ids.sort();
        ids.dedup();
        let now = now_ms();
        let keys: Vec<String> = batch
            .iter()
            .filter_map(|r| {
                r.events
                    .first()
                    .filter(|e| e.kind == Kind::Queued)
                    .and_then(|e| e.payload.as_ref())
                    .and_then(IdempotencyTag::from_payload)
                    .map(|t| t.key)
            })
            .collect();
        let prep = |sql: &'static str| async move {
            tx.prepare_cached(sql).await.map_err(fault(write_fault))
        };
        let (s_head, s_jobs, s_keys) =
            tokio::try_join!(prep(LOCK_HEAD), prep(LOCK_JOBS), prep(LIVE_KEYS))?;
        // In this order on the server: the log head first (every write transaction takes it
        // first), so the keys and heads read are those of every commit before this one, and two
        // daemons cannot bind one key.
        let (_, next, rows, key_rows) = tokio::try_join!(
            async {
                if own {
                    tx.batch_execute("BEGIN")
                        .await
                        .map_err(fault(write_fault))?;
                }
                Ok(())
            },
            async {
                match next {
                    Some(n) => Ok(n),
                    None => tx
                        .query_one(&s_head, &[])
                        .await
                        .map(|r| r.get::<_, i64>(0) as u64 + 1)
                        .map_err(fault(write_fault)),
                }
            },
            async { tx.query(&s_jobs, &[&ids]).await.map_err(fault(write_fault)) },
            async {
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                tx.query(&s_keys, &[&keys, &(now - IDEMPOTENCY_WINDOW_MS)])
                    .await
                    .map_err(fault(write_fault))
            },
        )?;
        let mut work: HashMap<JobId, Option<JobView>> = HashMap::new();
        for row in rows {
            let id: Uuid = row.get(0);
            let view = head_at(&row, 1)?;
            work.insert(JobId(id), Some(view));
        }
        let live: std::collections::HashSet<String> =
            key_rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let Staged {
            outcomes,
            events,
            bound,
            created: _,
        } = stage_batch(&mut work, |_| None, batch, next, now, |k| live.contains(k));
        if events.is_empty() {
            if own {
                tx.batch_execute("ROLLBACK")
                    .await
                    .map_err(fault(write_fault))?;
            }
            return Ok((outcomes, events, Vec::new()));
        }
        let touched: std::collections::HashSet<JobId> = events.iter().map(|e| e.job).collect();
        let changed: Vec<JobView> = work
            .into_iter()
            .filter(|(j, _)| touched.contains(j))
            .filter_map(|(_, v)| v)
            .collect();
        let ended: Vec<Uuid> = changed
            .iter()
            .filter(|v| v.state != JobState::Running)
            .map(|v| v.id.0)
            .collect();
        let paused = events.iter().filter_map(pause_state).next_back();
        let last = events.last().map(|e| e.id).unwrap_or(0) as i64;
        let ev_ids: Vec<i64> = events.iter().map(|e| e.id as i64).collect();
        let ev_jobs: Vec<Uuid> = events.iter().map(|e| e.job.0).collect();
        let records: Vec<Vec<u8>> = events.iter().map(codec::encode).collect();
        let b_keys: Vec<&str> = bound.iter().map(|(k, _)| k.as_str()).collect();
        let b_jobs: Vec<Uuid> = bound.iter().map(|(_, j)| j.0).collect();
        let notify = notify_payload(last as u64, &events);
        let (s_events, s_leases, s_bind, s_pause, s_last, s_notify) = tokio::try_join!(
            prep(INSERT_EVENTS),
            prep(END_LEASES),
            prep(BIND_KEYS),
            prep(SET_PAUSED),
            prep(SET_LAST),
            prep(NOTIFY)
        )?;
        let w = &fault(write_fault);
        tokio::try_join!(
            async {
                tx.execute(&s_events, &[&ev_ids, &ev_jobs, &records])
                    .await
                    .map_err(w)
            },
            async {
                if changed.is_empty() {
                    Ok(())
                } else {
                    write_heads(tx, &changed).await
                }
            },
            async {
                if ended.is_empty() {
                    return Ok(0);
                }
                tx.execute(&s_leases, &[&ended]).await.map_err(w)
            },
            async {
                if bound.is_empty() {
                    return Ok(0);
                }
                tx.execute(&s_bind, &[&b_keys, &b_jobs, &now])
                    .await
                    .map_err(w)
            },
            async {
                match paused {
                    Some(p) => tx.execute(&s_pause, &[&Value::Bool(p)]).await.map_err(w),
                    None => Ok(0),
                }
            },
            async { tx.execute(&s_last, &[&last]).await.map_err(w) },
            async { tx.execute(&s_notify, &[&CHANNEL, &notify]).await.map_err(w) },
            async {
                // Sent last: it commits only when every statement before it succeeded (in an
                // aborted transaction it rolls back, and one of those statements answered the
                // error that fails this join).
                if own {
                    tx.batch_execute("COMMIT").await.map_err(w)?;
                }
                Ok(())
            },
        )?;
        Ok((outcomes, events, changed))
    }

    /// Records the `running` event of `view` (queued, its row locked by the caller) for `owner` and
    /// takes its lease, inside `tx`; `next` as in [`PgStore::write_batch`]. Answers the events
    /// written and the claim, or `None` when the event was refused.
    async fn take(
        tx: &Transaction<'_>,
        view: &JobView,
        owner: &Owner,
        lease: Duration,
        next: Option<EventId>,
    ) -> Result<Option<(Vec<Event>, Claimed)>, StoreFault> {
        let until = now_ms() + lease.as_millis() as i64;
        let epoch = view.attempt + 1;
        let req = AppendRequest::new(view.id, vec![running_event(view, owner, until)], None);
        let (outcomes, events, changed) =
            Self::write_batch(tx, vec![req], next, Ends::Caller).await?;
        if outcomes.first().is_none_or(|r| r.is_err()) {
            return Ok(None);
        }
        let owner_json = serde_json::to_value(owner).map_err(codec_fault)?;
        tx.execute(
            "INSERT INTO leases (job, epoch, owner, expires_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job) DO UPDATE SET epoch = excluded.epoch, owner = excluded.owner,
                 expires_ms = excluded.expires_ms",
            &[&view.id.0, &(epoch as i32), &owner_json, &until],
        )
        .await
        .map_err(fault(write_fault))?;
        Ok(changed.into_iter().next().map(|view| {
            (
                events,
                Claimed {
                    view,
                    epoch,
                    lease_until_ms: until,
                },
            )
        }))
    }

    /// Publishes a commit to this process's followers at once (the NOTIFY reaches the others).
    fn publish(&self, events: &[Event]) {
        let Some(last) = events.last().map(|e| e.id) else {
            return;
        };
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            hook(events);
        }
        let w = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            if let Some(tx) = w.jobs.get(&ev.job) {
                tx.send_replace(last);
            }
        }
        self.any.send_replace(last);
    }

    async fn read_events(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Event>, StoreFault> {
        let client = self.pool.get().await.map_err(pool_fault)?;
        let st = client
            .prepare_cached(sql)
            .await
            .map_err(fault(read_fault))?;
        let rows = client.query(&st, params).await.map_err(fault(read_fault))?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let bytes: &[u8] = r.get(1);
                codec::decode(id as u64, bytes).map_err(codec_fault)
            })
            .collect()
    }
}

/// `"<last id> <job> <job> ..."`, the jobs while they fit.
fn notify_payload(last: EventId, events: &[Event]) -> String {
    let mut out = last.to_string();
    let mut seen = std::collections::HashSet::new();
    for ev in events {
        if seen.insert(ev.job) {
            if out.len() + 37 > MAX_NOTIFY {
                break;
            }
            out.push(' ');
            out.push_str(&ev.job.to_string());
        }
    }
    out
}

/// The listener: `LISTEN reelsmith_events` on its own connection, reconnecting with a backoff; and
/// the poll of `log_head` that catches what a reconnect lost.
async fn listen(
    cfg: tokio_postgres::Config,
    pool: Pool,
    wakers: Arc<Mutex<Wakers>>,
    any: watch::Sender<EventId>,
) {
    use futures_util::StreamExt;
    let wake_all = |last: EventId| {
        let w = wakers.lock().unwrap_or_else(|p| p.into_inner());
        for tx in w.jobs.values() {
            tx.send_replace(last);
        }
        any.send_replace(last);
    };
    let mut known: EventId = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        let (client, mut conn) = match cfg.connect(NoTls).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "store listener cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if ntx.send(n.payload().to_string()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            warn!(error = %e, "store listener cannot LISTEN; retrying");
            driver.abort();
            continue;
        }
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                n = nrx.recv() => {
                    let Some(payload) = n else { break };
                    let mut parts = payload.split(' ');
                    let last: EventId = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    known = known.max(last);
                    let jobs: Vec<JobId> = parts.filter_map(|p| p.parse().ok()).collect();
                    let w = wakers.lock().unwrap_or_else(|p| p.into_inner());
                    for j in jobs {
                        if let Some(tx) = w.jobs.get(&j) {
                            tx.send_replace(last);
                        }
                    }
                    drop(w);
                    any.send_replace(last);
                }
                _ = poll.tick() => {
                    let Ok(c) = pool.get().await else { continue };
                    if let Ok(row) = c.query_one("SELECT last_id FROM log_head", &[]).await {
                        let last = row.get::<_, i64>(0) as u64;
                        if last > known {
                            known = last;
                            wake_all(last);
                        }
                    }
                }
            }
        }
        driver.abort();
    }
}

/// One daemon of the cluster as its heartbeat row shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRow {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// The jobs it said it runs at its last heartbeat.
    pub running: Value,
}

impl PgStore {
    /// Records that `owner` is alive and runs `running` (every few seconds, by each daemon).
    pub async fn heartbeat(
        &self,
        owner: &Owner,
        started_ms: i64,
        running: &[JobId],
    ) -> Result<(), StoreFault> {
        let client = self.pool.get().await.map_err(pool_fault)?;
        let running: Vec<String> = running.iter().map(|j| j.to_string()).collect();
        client
            .execute(
                "INSERT INTO daemons (name, host, pid, started_ms, heartbeat_ms, running)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                     started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms,
                     running = excluded.running",
                &[
                    &owner.daemon,
                    &owner.host,
                    &(owner.pid as i32),
                    &started_ms,
                    &now_ms(),
                    &serde_json::json!(running),
                ],
            )
            .await
            .map_err(fault(write_fault))?;
        Ok(())
    }

    /// The daemons whose last heartbeat is more recent than `within`.
    pub async fn live_daemons(&self, within: Duration) -> Result<Vec<DaemonRow>, StoreFault> {
        let client = self.pool.get().await.map_err(pool_fault)?;
        let since = now_ms() - within.as_millis() as i64;
        let rows = client
            .query(
                "SELECT name, host, pid, started_ms, heartbeat_ms, running FROM daemons
                 WHERE heartbeat_ms >= $1 ORDER BY name",
                &[&since],
            )
            .await
            .map_err(fault(read_fault))?;
        Ok(rows
            .iter()
            .map(|r| DaemonRow {
                name: r.get(0),
                host: r.get(1),
                pid: r.get::<_, i32>(2) as u32,
                started_ms: r.get(3),
                heartbeat_ms: r.get(4),
                running: r.get(5),
            })
            .collect())
    }

    /// Removes this daemon's heartbeat row (a clean stop).
    pub async fn leave(&self, name: &str) -> Result<(), StoreFault> {
        let client = self.pool.get().await.map_err(pool_fault)?;
        client
            .execute("DELETE FROM daemons WHERE name = $1", &[&name])
            .await
            .map_err(fault(write_fault))?;
        Ok(())
    }

    /// What a daemon's cache starts from, read in one snapshot: the last id, every job's [`Head`]
    /// (from the head columns: no jsonb is read) in creation order, and the whole views of the
    /// jobs it keeps whole: the live ones (not finished), the `recent` most recently finished, and
    /// those whose idempotency key may still be in its window (created after `keys_since_ms`).
    pub async fn load_cache(
        &self,
        recent: usize,
        keys_since_ms: i64,
    ) -> Result<CacheStart, StoreFault> {
        let mut client = self.pool.get().await.map_err(pool_fault)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(fault(read_fault))?;
        let r = fault(read_fault);
        let last = tx
            .query_one("SELECT last_id FROM log_head", &[])
            .await
            .map_err(&r)?
            .get::<_, i64>(0) as u64;
        let rows = tx
            .query(
                "SELECT id, state, cancel_requested, attempt, first_event, last_event, created_ms,
                     completed_ms FROM jobs ORDER BY first_event",
                &[],
            )
            .await
            .map_err(&r)?;
        let mut heads = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: &str = row.get(1);
            let state = JobState::parse(state).ok_or_else(|| {
                codec_fault(BadColumn(format!("jobs.state `{state}` is not a state")))
            })?;
            heads.push((
                JobId(row.get::<_, Uuid>(0)),
                Head {
                    state,
                    cancel_requested: row.get(2),
                    attempt: row.get::<_, i32>(3).max(0) as u32,
                    first_event_id: row.get::<_, i64>(4) as u64,
                    last_event_id: row.get::<_, i64>(5) as u64,
                    created_ms: row.get(6),
                    completed_ms: row.get(7),
                },
            ));
        }
        drop(rows);
        let recent = recent.min(i64::MAX as usize) as i64;
        let rows = tx
            .query(
                "SELECT head FROM jobs WHERE state IN ('queued', 'running')
                 OR id IN (SELECT id FROM jobs WHERE state NOT IN ('queued', 'running')
                           ORDER BY last_event DESC LIMIT $1)
                 OR (created_ms > $2 AND jsonb_typeof(head->'idempotency') = 'object')",
                &[&recent, &keys_since_ms],
            )
            .await
            .map_err(&r)?;
        let whole = rows
            .iter()
            .map(|row| head_at(row, 0))
            .collect::<Result<Vec<JobView>, StoreFault>>()?;
        tx.commit().await.map_err(&r)?;
        Ok(CacheStart { last, heads, whole })
    }

    /// Writes the wire JSON of `job`'s events with `after < id <= upto` (at most `limit`) into
    /// `out`, comma-separated, straight from the stored records; answers (count, last id).
    pub async fn read_job_wire(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(usize, EventId), StoreFault> {
        if upto <= after || limit == 0 {
            return Ok((0, after));
        }
        let client = self.pool.get().await.map_err(pool_fault)?;
        let (a, u, l) = (
            after as i64,
            upto as i64,
            limit.min(i64::MAX as usize) as i64,
        );
        let st = client
            .prepare_cached(
                "SELECT id, record FROM events WHERE job = $1 AND id > $2 AND id <= $3
                 ORDER BY id LIMIT $4",
            )
            .await
            .map_err(fault(read_fault))?;
        let rows = client
            .query(&st, &[&job.0, &a, &u, &l])
            .await
            .map_err(fault(read_fault))?;
        let (mut n, mut last) = (0, after);
        for r in &rows {
            let id = r.get::<_, i64>(0) as u64;
            if n > 0 {
                out.push(b',');
            }
            codec::write_wire(id, r.get::<_, &[u8]>(1), out).map_err(codec_fault)?;
            n += 1;
            last = id;
        }
        Ok((n, last))
    }
}

impl EventStore for PgStore {
    fn engine(&self) -> &'static str {
        ENGINE
    }

    fn append(
        &self,
        batch: Vec<AppendRequest>,
    ) -> StoreFuture<'_, Result<Vec<AppendOutcome>, StoreFault>> {
        Box::pin(async move {
            // Two round trips: BEGIN with the reads, the writes with COMMIT.
            let held = Held(Some(self.pool.get().await.map_err(pool_fault)?));
            let (outcomes, events, _) =
                Self::write_batch(held.client(), batch, None, Ends::Own).await?;
            held.release();
            self.publish(&events);
            Ok(outcomes)
        })
    }

    fn read_job(
        &self,
        job: JobId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<Event>, StoreFault>> {
        Box::pin(async move {
            let (after, limit) = (after as i64, limit.min(i64::MAX as usize) as i64);
            self.read_events(
                "SELECT id, record FROM events WHERE job = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&job.0, &after, &limit],
            )
            .await
        })
    }

    fn read_since(
        &self,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<Event>, StoreFault>> {
        Box::pin(async move {
            let (after, limit) = (after as i64, limit.min(i64::MAX as usize) as i64);
            self.read_events(
                "SELECT id, record FROM events WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
            )
            .await
        })
    }

    fn head(&self, job: JobId) -> StoreFuture<'_, Result<Option<JobView>, StoreFault>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_fault)?;
            let st = client
                .prepare_cached("SELECT head FROM jobs WHERE id = $1")
                .await
                .map_err(fault(read_fault))?;
            let row = client
                .query_opt(&st, &[&job.0])
                .await
                .map_err(fault(read_fault))?;
            match row {
                Some(r) => Ok(Some(head_at(&r, 0)?)),
                None => Ok(None),
            }
        })
    }

    fn list(
        &self,
        state: Option<JobState>,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'_, Result<Vec<JobView>, StoreFault>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_fault)?;
            let state = state.map(|s| s.as_str());
            let before = before.map(|b| b as i64);
            let limit = limit.min(i64::MAX as usize) as i64;
            let st = client
                .prepare_cached(
                    "SELECT head FROM jobs WHERE ($1::text IS NULL OR state = $1)
                     AND ($2::bigint IS NULL OR first_event < $2)
                     ORDER BY first_event DESC LIMIT $3",
                )
                .await
                .map_err(fault(read_fault))?;
            let rows = client
                .query(&st, &[&state, &before, &limit])
                .await
                .map_err(fault(read_fault))?;
            rows.iter().map(|r| head_at(r, 0)).collect()
        })
    }

    fn last_id(&self) -> StoreFuture<'_, Result<EventId, StoreFault>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_fault)?;
            let st = client
                .prepare_cached("SELECT last_id FROM log_head")
                .await
                .map_err(fault(read_fault))?;
            let row = client
                .query_one(&st, &[])
                .await
                .map_err(fault(read_fault))?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn claim<'a>(
        &'a self,
        owner: &'a Owner,
        lease: Duration,
    ) -> StoreFuture<'a, Result<Option<Claimed>, StoreFault>> {
        Box::pin(async move {
            let mut client = self.pool.get().await.map_err(pool_fault)?;
            let tx = client.transaction().await.map_err(fault(write_fault))?;
            let next = Self::lock_head(&tx).await?;
            let row = tx
                .query_opt(
                    "SELECT head FROM jobs WHERE state = 'queued' AND NOT cancel_requested
                     ORDER BY queued_at LIMIT 1 FOR UPDATE SKIP LOCKED",
                    &[],
                )
                .await
                .map_err(fault(write_fault))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let view = head_at(&row, 0)?;
            let Some((events, claimed)) = Self::take(&tx, &view, owner, lease, Some(next)).await?
            else {
                return Ok(None);
            };
            tx.commit().await.map_err(fault(write_fault))?;
            self.publish(&events);
            Ok(Some(claimed))
        })
    }

    fn claim_job<'a>(
        &'a self,
        job: JobId,
        first: Vec<NewEvent>,
        owner: &'a Owner,
        lease: Duration,
    ) -> StoreFuture<'a, Result<Option<Claimed>, StoreFault>> {
        Box::pin(async move {
            let mut client = self.pool.get().await.map_err(pool_fault)?;
            let tx = client.transaction().await.map_err(fault(write_fault))?;
            let next = Self::lock_head(&tx).await?;
            let mut events = Vec::new();
            if !first.is_empty() {
                let req = AppendRequest::new(job, first, None);
                let (outcomes, written, _) =
                    Self::write_batch(&tx, vec![req], Some(next), Ends::Caller).await?;
                if outcomes.first().is_none_or(|r| r.is_err()) {
                    return Ok(None);
                }
                events = written;
            }
            let row = tx
                .query_opt(
                    "SELECT head FROM jobs WHERE id = $1 AND state = 'queued'
                     AND NOT cancel_requested FOR UPDATE",
                    &[&job.0],
                )
                .await
                .map_err(fault(write_fault))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let view = head_at(&row, 0)?;
            // `None`: the log head is locked already; its id moved with `first`'s events.
            let Some((running, claimed)) = Self::take(&tx, &view, owner, lease, None).await? else {
                return Ok(None);
            };
            events.extend(running);
            tx.commit().await.map_err(fault(write_fault))?;
            self.publish(&events);
            Ok(Some(claimed))
        })
    }

    fn purge(
        &self,
        jobs: Vec<JobId>,
        note: PurgeNote,
    ) -> StoreFuture<'_, Result<Purged, StoreFault>> {
        Box::pin(async move {
            let ids: Vec<Uuid> = jobs
                .iter()
                .filter(|j| **j != JobId::DAEMON)
                .map(|j| j.0)
                .collect();
            if ids.is_empty() {
                return Ok(Purged::default());
            }
            let mut client = self.pool.get().await.map_err(pool_fault)?;
            let tx = client.transaction().await.map_err(fault(write_fault))?;
            // The log head first, as every writer: purges and appends are serialised, so a job
            // found finished here stays finished until the commit, and a second purge of the
            // same jobs (another daemon's sweep) finds them gone.
            let next = Self::lock_head(&tx).await?;
            let rows = tx
                .query(
                    "SELECT id FROM jobs WHERE id = ANY($1)
                     AND state IN ('completed', 'failed', 'cancelled') ORDER BY id FOR UPDATE",
                    &[&ids],
                )
                .await
                .map_err(fault(write_fault))?;
            let gone: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
            if gone.is_empty() {
                return Ok(Purged::default());
            }
            let events = tx
                .execute("DELETE FROM events WHERE job = ANY($1)", &[&gone])
                .await
                .map_err(fault(write_fault))?;
            for sql in [
                "DELETE FROM jobs WHERE id = ANY($1)",
                "DELETE FROM leases WHERE job = ANY($1)",
            ] {
                tx.execute(sql, &[&gone])
                    .await
                    .map_err(fault(write_fault))?;
            }
            let jobs: Vec<JobId> = gone.into_iter().map(JobId).collect();
            let req =
                AppendRequest::new(JobId::DAEMON, vec![purge_event(&jobs, events, &note)], None);
            // Its id comes after every id given out, deleted or not: the log head only grows.
            let (_, written, _) =
                Self::write_batch(&tx, vec![req], Some(next), Ends::Caller).await?;
            tx.commit().await.map_err(fault(write_fault))?;
            self.publish(&written);
            Ok(Purged {
                jobs,
                events,
                recorded: written.last().map_or(0, |e| e.id),
            })
        })
    }

    fn renew(
        &self,
        job: JobId,
        epoch: u32,
        lease: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreFault>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_fault)?;
            let until = now_ms() + lease.as_millis() as i64;
            let n = client
                .execute(
                    "UPDATE leases SET expires_ms = $3 WHERE job = $1 AND epoch = $2",
                    &[&job.0, &(epoch as i32), &until],
                )
                .await
                .map_err(fault(write_fault))?;
            Ok(n == 1)
        })
    }

    fn release(&self, job: JobId, epoch: u32) -> StoreFuture<'_, Result<(), StoreFault>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_fault)?;
            client
                .execute(
                    "DELETE FROM leases WHERE job = $1 AND epoch = $2",
                    &[&job.0, &(epoch as i32)],
                )
                .await
                .map_err(fault(write_fault))?;
            Ok(())
        })
    }

    fn rescue_expired(&self) -> StoreFuture<'_, Result<Vec<JobId>, StoreFault>> {
        Box::pin(async move {
            let mut client = self.pool.get().await.map_err(pool_fault)?;
            let tx = client.transaction().await.map_err(fault(write_fault))?;
            let next = Self::lock_head(&tx).await?;
            let rows = tx
                .query(
                    "DELETE FROM leases WHERE expires_ms < $1 RETURNING job, epoch, owner",
                    &[&now_ms()],
                )
                .await
                .map_err(fault(write_fault))?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let mut expired = Vec::new();
            for r in &rows {
                let owner: Owner =
                    serde_json::from_value(r.get::<_, Value>(2)).map_err(codec_fault)?;
                expired.push((JobId(r.get(0)), r.get::<_, i32>(1) as u32, owner));
            }
            let ids: Vec<Uuid> = expired.iter().map(|(j, _, _)| j.0).collect();
            let heads = tx
                .query("SELECT id, head FROM jobs WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(fault(write_fault))?;
            let mut views = HashMap::new();
            for r in heads {
                let v = head_at(&r, 1)?;
                views.insert(JobId(r.get(0)), v);
            }
            let mut batch = Vec::new();
            let mut rescued = Vec::new();
            for (job, epoch, owner) in expired {
                let Some(view) = views.get(&job) else {
                    continue;
                };
                if view.state == JobState::Running && view.attempt == epoch {
                    // A cancel requested of the dead owner ends the job; else it goes back to the
                    // queue while attempts remain.
                    let events = if view.cancel_requested {
                        vec![
                            NewEvent::warning(lease_lost_reason(&owner)),
                            NewEvent::new(Kind::Cancelled, Level::Warning, "Job cancelled."),
                        ]
                    } else {
                        interruption_events(view, &lease_lost_reason(&owner))
                    };
                    batch.push(AppendRequest {
                        job,
                        events,
                        epoch: Some(epoch),
                        with_next: false,
                    });
                    rescued.push(job);
                }
            }
            let (_, events, _) = Self::write_batch(&tx, batch, Some(next), Ends::Caller).await?;
            tx.commit().await.map_err(fault(write_fault))?;
            self.publish(&events);
            Ok(rescued)
        })
    }

    fn paused(&self) -> StoreFuture<'_, Result<bool, StoreFault>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_fault)?;
            let row = client
                .query_opt("SELECT value FROM settings WHERE key = 'paused'", &[])
                .await
                .map_err(fault(read_fault))?;
            Ok(row
                .and_then(|r| r.get::<_, Value>(0).as_bool())
                .unwrap_or(false))
        })
    }

    fn set_paused(&self, paused: bool, by: Value) -> StoreFuture<'_, Result<EventId, StoreFault>> {
        Box::pin(async move {
            let req = AppendRequest {
                job: JobId::DAEMON,
                events: vec![pause_event(paused, by)],
                epoch: None,
                with_next: false,
            };
            let out = self.append(vec![req]).await?;
            match out.into_iter().next() {
                Some(Ok(ids)) => Ok(ids.last().copied().unwrap_or(0)),
                Some(Err(r)) => Err(write_fault(ENGINE, Box::new(r))),
                None => Ok(0),
            }
        })
    }

    fn subscribe(&self, job: JobId) -> watch::Receiver<EventId> {
        let mut w = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        w.jobs.retain(|_, tx| tx.receiver_count() > 0);
        w.jobs
            .entry(job)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn on_commit(&self, hook: CommitHook) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn subscribe_all(&self) -> watch::Receiver<EventId> {
        self.any.subscribe()
    }
}
