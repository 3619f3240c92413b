//! `reelsmith store check`: verifies a log file without the daemon. Every record decodes (payload
//! JSON included), each job's history starts with `queued` and every later event is legal after the
//! ones before it (the rule the journal enforces), the per-job index agrees with the events entry
//! for entry, and last redb's own integrity check passes (every page's checksum). The first problem
//! is reported naming its record. Nothing is written but what redb's repairs write: of an unclean
//! shutdown at open (as a daemon start would), and of failed checksums (back to the last intact
//! commit).
//!
//! On a PostgreSQL store ([`check_postgres`]) it writes nothing at all: one `REPEATABLE READ READ
//! ONLY` transaction (a running cluster can be checked; the check sees one commit's state), the
//! events and the heads streamed side by side in job order through two portals (a page at a time,
//! never the whole table). Every record decodes and belongs to the job its row says; ids are unique
//! and none exceeds `log_head.last_id`; each job's history is legal; each job's stored head (the
//! `head` JSON and the columns the queue reads) equals the fold of its events; a job has a head row
//! exactly when it has events.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::error::{damage_advice, OpenError};
use super::guard::catch_panic;
use super::{codec, postgres::SCHEMA_VERSION, EVENTS, JOB_EVENTS};
use crate::event::{Event, EventId, JobId, JobView, Kind, NewEvent};

/// A log that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub jobs: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("there is no event log at {path}")]
    Missing { path: PathBuf },
    #[error("the event log {path} is in use by a running daemon; check a copy instead: `reelsmith ctl backup /tmp/copy.redb && reelsmith store check /tmp/copy.redb`")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Open(OpenError),
    /// `record` is the first bad event's id, when the problem is in one.
    #[error("the event log {path} is damaged: {problem}. {}", damage_advice(path))]
    Damaged {
        path: PathBuf,
        record: Option<EventId>,
        problem: String,
    },
}

/// Checks the log at `path` (see the module comment).
pub fn check(path: &Path) -> Result<Report, CheckError> {
    // The whole check, closing the file included (redb writes on close), never panics.
    catch_panic(|| check_unguarded(path)).unwrap_or_else(|e| {
        Err(CheckError::Damaged {
            path: path.to_owned(),
            record: None,
            problem: e.to_string(),
        })
    })
}

fn check_unguarded(path: &Path) -> Result<Report, CheckError> {
    if !path.exists() {
        return Err(CheckError::Missing {
            path: path.to_owned(),
        });
    }
    let damaged = |record: Option<EventId>, problem: String| CheckError::Damaged {
        path: path.to_owned(),
        record,
        problem,
    };
    let opened = catch_panic(|| Database::builder().open(path))
        .map_err(|e| CheckError::Open(OpenError::classify(path, e)))?;
    let mut db = match opened {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(CheckError::Locked {
                path: path.to_owned(),
            })
        }
        Err(e) => match OpenError::classify(path, e.into()) {
            OpenError::Damaged { reason, .. } => return Err(damaged(None, reason)),
            other => return Err(CheckError::Open(other)),
        },
    };
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (events, jobs) = match catch_panic(|| records(&db)) {
        Ok(Ok(counts)) => counts,
        Ok(Err((record, problem))) => return Err(damaged(record, problem)),
        Err(e) => return Err(damaged(None, e.to_string())),
    };
    // Last, the checksum of every page (what the records do not show, such as a flipped bit in a
    // timestamp). On a failure redb rolls the file back to its last intact commit.
    match catch_panic(|| db.check_integrity()) {
        Ok(Ok(true)) => Ok(Report {
            events,
            jobs,
            bytes,
        }),
        Ok(Ok(false)) => Err(damaged(
            None,
            "pages failed their checksums (redb rolled the file back to its last intact commit, so events may be missing)".into(),
        )),
        Ok(Err(e)) => Err(damaged(None, e.to_string())),
        Err(e) => Err(damaged(None, e.to_string())),
    }
}

type Problem = (Option<EventId>, String);

/// Every record, then the index: (events, jobs) or the first problem.
fn records(db: &Database) -> Result<(u64, u64), Problem> {
    let whole = |e: redb::Error| (None, e.to_string());
    let txn = db.begin_read().map_err(|e| whole(e.into()))?;
    let events = txn.open_table(EVENTS).map_err(|e| whole(e.into()))?;
    let mut views: HashMap<JobId, JobView> = HashMap::new();
    // (id, job) of every event, ascending: what the index must hold.
    let mut expected: Vec<(EventId, u128)> = Vec::new();
    for entry in events.iter().map_err(|e| whole(e.into()))? {
        let (k, v) = entry.map_err(|e| whole(e.into()))?;
        let id = k.value();
        let ev = codec::decode(id, v.value()).map_err(|e| (Some(id), e.to_string()))?;
        let at = |what: String| {
            (
                Some(id),
                format!("event record {id} (job {}): {what}", ev.job),
            )
        };
        expected.push((id, ev.job.as_u128()));
        if ev.job == JobId::DAEMON {
            if ev.kind != Kind::Admin {
                return Err(at(format!(
                    "a `{}` event of the daemon's own history",
                    ev.kind.as_str()
                )));
            }
            continue;
        }
        match views.get_mut(&ev.job) {
            Some(view) => {
                let new = NewEvent {
                    kind: ev.kind,
                    level: ev.level,
                    message: ev.message.clone(),
                    payload: ev.payload.clone(),
                    stage: ev.stage.clone(),
                };
                view.check(&new).map_err(|e| at(e.to_string()))?;
                view.apply(&ev);
            }
            None => match JobView::create(&ev) {
                Some(view) => {
                    views.insert(ev.job, view);
                }
                None => {
                    return Err(at(format!(
                        "the job's first event is `{}`, not `queued`",
                        ev.kind.as_str()
                    )))
                }
            },
        }
    }
    let jobs = views.len() as u64;
    drop(views);
    let index = txn.open_table(JOB_EVENTS).map_err(|e| whole(e.into()))?;
    let mut indexed: Vec<(EventId, u128)> = Vec::with_capacity(expected.len());
    for entry in index.iter().map_err(|e| whole(e.into()))? {
        let (k, _) = entry.map_err(|e| whole(e.into()))?;
        let (job, id) = k.value();
        indexed.push((id, job));
    }
    indexed.sort_unstable();
    let job_name = |j: u128| JobId::from_u128(j).to_string();
    let mut a = expected.iter().peekable();
    let mut b = indexed.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(&&(id, job)), None) => {
                return Err((
                    Some(id),
                    format!(
                        "event record {id} (job {}) is missing from the job index",
                        job_name(job)
                    ),
                ))
            }
            (None, Some(&&(id, job))) => {
                return Err((
                    Some(id),
                    format!(
                        "the job index names event {id} under job {}, which has no such event",
                        job_name(job)
                    ),
                ))
            }
            (Some(&&(ia, ja)), Some(&&(ib, jb))) => {
                if ia == ib && ja == jb {
                    a.next();
                    b.next();
                } else if ia == ib {
                    return Err((
                        Some(ia),
                        format!(
                            "the job index files event {ia} under job {}, but it belongs to job {}",
                            job_name(jb),
                            job_name(ja)
                        ),
                    ));
                } else if ia < ib {
                    return Err((
                        Some(ia),
                        format!(
                            "event record {ia} (job {}) is missing from the job index",
                            job_name(ja)
                        ),
                    ));
                } else {
                    return Err((
                        Some(ib),
                        format!(
                            "the job index names event {ib} under job {}, which has no such event",
                            job_name(jb)
                        ),
                    ));
                }
            }
        }
    }
    Ok((expected.len() as u64, jobs))
}

/// Why a PostgreSQL store failed its check (or could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum PgCheckError {
    #[error("the store URL is not valid: {source}")]
    BadUrl { source: tokio_postgres::Error },
    #[error("cannot start the check's async runtime: {source}")]
    Runtime { source: std::io::Error },
    #[error("cannot reach the PostgreSQL store {target}: {source}")]
    Unreachable {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("reading {what} of the PostgreSQL store {target} failed: {source}")]
    Read {
        target: String,
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error(
        "{target} holds no reelsmith store (no schema version; `reelsmith migrate` creates one)"
    )]
    NotAStore { target: String },
    #[error("the store {target} has schema version {found}, newer than this build knows ({known}): check it with a newer reelsmith")]
    SchemaTooNew {
        target: String,
        found: i64,
        known: i64,
    },
    /// `job` and `record`: where the first problem is, when it is in a job or an event.
    #[error("the PostgreSQL store {target} is damaged: {problem}")]
    Damaged {
        target: String,
        job: Option<JobId>,
        record: Option<EventId>,
        problem: String,
    },
}

/// The store a URL names, without its password: `postgres://user@host:port/database`.
fn pg_target(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = cfg.get_dbname().or(cfg.get_user()).unwrap_or_default();
    format!("postgres://{user}{host}:{port}/{db}")
}

/// `url` as [`pg_target`] names it (no password); the URL itself when it does not parse.
pub fn redacted(url: &str) -> String {
    tokio_postgres::Config::from_str(url)
        .map(|c| pg_target(&c))
        .unwrap_or_else(|_| "the store URL".into())
}

/// Checks the PostgreSQL store at `url` (see the module comment); answers its counts (`bytes`:
/// the records' total size).
pub fn check_postgres(url: &str) -> Result<Report, PgCheckError> {
    check_postgres_paged(url, PAGE_ROWS)
}

/// [`check_postgres`] fetching `page_rows` rows at a time from each table.
pub(crate) fn check_postgres_paged(url: &str, page_rows: i32) -> Result<Report, PgCheckError> {
    let cfg =
        tokio_postgres::Config::from_str(url).map_err(|source| PgCheckError::BadUrl { source })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PgCheckError::Runtime { source })?;
    rt.block_on(check_pg(cfg, page_rows.max(1)))
}

/// Rows a page at a time from a portal.
struct Paged {
    portal: tokio_postgres::Portal,
    page_rows: i32,
    rows: VecDeque<tokio_postgres::Row>,
    done: bool,
}

const PAGE_ROWS: i32 = 1_000;

impl Paged {
    async fn next(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        if self.rows.is_empty() && !self.done {
            let page = tx.query_portal(&self.portal, self.page_rows).await?;
            self.done = page.len() < self.page_rows as usize;
            self.rows.extend(page);
        }
        Ok(self.rows.pop_front())
    }
}

/// One `events` row: id, job, record.
type EventRow = (EventId, JobId, Vec<u8>);
/// One `jobs` row: id, state, first_event, queued_at, cancel_requested, head.
/// A `jobs` row: id, state, first_event, queued_at, cancel_requested, head, then the head columns
/// the daemons' caches start from (attempt, last_event, created_ms, completed_ms).
type HeadRow = (
    JobId,
    String,
    i64,
    i64,
    bool,
    serde_json::Value,
    (i32, i64, i64, Option<i64>),
);

async fn check_pg(cfg: tokio_postgres::Config, page_rows: i32) -> Result<Report, PgCheckError> {
    let target = pg_target(&cfg);
    let (mut client, conn) =
        cfg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| PgCheckError::Unreachable {
                target: target.clone(),
                source,
            })?;
    let conn = tokio::spawn(conn);
    let result = check_pg_client(&mut client, &target, page_rows).await;
    drop(client);
    let _ = conn.await;
    result
}

async fn check_pg_client(
    client: &mut tokio_postgres::Client,
    target: &str,
    page_rows: i32,
) -> Result<Report, PgCheckError> {
    let read = |what: &'static str| {
        move |source| PgCheckError::Read {
            target: target.to_string(),
            what,
            source,
        }
    };
    let damaged =
        |job: Option<JobId>, record: Option<EventId>, problem: String| PgCheckError::Damaged {
            target: target.to_string(),
            job,
            record,
            problem,
        };
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(read("a snapshot"))?;
    let has_schema: bool = tx
        .query_one("SELECT to_regclass('reelsmith_schema') IS NOT NULL", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(read("the schema version"))?;
    let version: Option<i64> = if has_schema {
        tx.query_opt("SELECT max(version) FROM reelsmith_schema", &[])
            .await
            .and_then(|r| r.map(|r| r.try_get(0)).transpose())
            .map_err(read("the schema version"))?
            .flatten()
    } else {
        None
    };
    let Some(found) = version.filter(|v| *v >= 1) else {
        return Err(PgCheckError::NotAStore {
            target: target.to_string(),
        });
    };
    if found > SCHEMA_VERSION {
        return Err(PgCheckError::SchemaTooNew {
            target: target.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    let last_id: i64 = tx
        .query_one("SELECT last_id FROM log_head", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(read("the log head"))?;
    let last_id = last_id.max(0) as EventId;
    // The primary key makes ids unique; a store whose key was dropped or disabled is caught here.
    let dup: Option<i64> = tx
        .query_opt(
            "SELECT id FROM events GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .and_then(|r| r.map(|r| r.try_get(0)).transpose())
        .map_err(read("the event ids"))?;
    if let Some(id) = dup {
        let id = id as EventId;
        return Err(damaged(
            None,
            Some(id),
            format!("event id {id} is stored more than once"),
        ));
    }
    let mut events = Paged {
        portal: tx
            .bind("SELECT id, job, record FROM events ORDER BY job, id", &[])
            .await
            .map_err(read("the events"))?,
        rows: VecDeque::new(),
        page_rows,
        done: false,
    };
    let mut heads = Paged {
        portal: tx
            .bind(
                "SELECT id, state, first_event, queued_at, cancel_requested, head, attempt, last_event,
                     created_ms, completed_ms FROM jobs ORDER BY id",
                &[],
            )
            .await
            .map_err(read("the job heads"))?,
        rows: VecDeque::new(),
        page_rows,
        done: false,
    };
    let next_event =
        |row: Option<tokio_postgres::Row>| -> Result<Option<EventRow>, tokio_postgres::Error> {
            row.map(|r| {
                Ok((
                    r.try_get::<_, i64>(0)? as EventId,
                    JobId(r.try_get(1)?),
                    r.try_get(2)?,
                ))
            })
            .transpose()
        };
    let next_head =
        |row: Option<tokio_postgres::Row>| -> Result<Option<HeadRow>, tokio_postgres::Error> {
            row.map(|r| {
                Ok((
                    JobId(r.try_get(0)?),
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    (r.try_get(6)?, r.try_get(7)?, r.try_get(8)?, r.try_get(9)?),
                ))
            })
            .transpose()
        };
    let mut ev = next_event(events.next(&tx).await.map_err(read("the events"))?)
        .map_err(read("the events"))?;
    let mut head = next_head(heads.next(&tx).await.map_err(read("the job heads"))?)
        .map_err(read("the job heads"))?;
    let (mut count, mut jobs, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        // The next job in uuid order (PostgreSQL's and `Uuid`'s order are both bytewise).
        let job = match (&ev, &head) {
            (None, None) => break,
            (Some(e), None) => e.1,
            (None, Some(h)) => h.0,
            (Some(e), Some(h)) => e.1.min(h.0),
        };
        let mut view: Option<JobView> = None;
        while let Some((id, row_job, record)) = ev.take_if(|e| e.1 == job) {
            let at = |what: String| {
                damaged(
                    Some(job),
                    Some(id),
                    format!("event record {id} (job {job}): {what}"),
                )
            };
            if id > last_id {
                return Err(at(format!(
                    "its id is above the log head's last id {last_id}"
                )));
            }
            let event = codec::decode(id, &record)
                .map_err(|e| damaged(Some(job), Some(id), format!("{e} (job {job})")))?;
            if event.job != row_job {
                return Err(at(format!("the record names job {}", event.job)));
            }
            count += 1;
            bytes += record.len() as u64;
            fold_one(&mut view, &event).map_err(at)?;
            ev = next_event(events.next(&tx).await.map_err(read("the events"))?)
                .map_err(read("the events"))?;
        }
        let stored = head.take_if(|h| h.0 == job);
        if stored.is_some() {
            head = next_head(heads.next(&tx).await.map_err(read("the job heads"))?)
                .map_err(read("the job heads"))?;
        }
        match (view, stored) {
            (Some(v), Some(h)) => {
                jobs += 1;
                compare_head(&v, h)
                    .map_err(|p| damaged(Some(job), None, format!("job {job}: {p}")))?;
            }
            (Some(_), None) => {
                return Err(damaged(
                    Some(job),
                    None,
                    format!("job {job} has events but no row in `jobs`"),
                ))
            }
            (None, Some(_)) => {
                return Err(damaged(
                    Some(job),
                    None,
                    format!("job {job} has a row in `jobs` but no events"),
                ))
            }
            // The daemon's own history: admin events, no head.
            (None, None) => {}
        }
    }
    Ok(Report {
        events: count,
        jobs,
        bytes,
    })
}

/// Folds one more event of a job into `view` (the daemon's history folds to nothing); refuses what
/// the journal would have refused.
fn fold_one(view: &mut Option<JobView>, ev: &Event) -> Result<(), String> {
    if ev.job == JobId::DAEMON {
        if ev.kind != Kind::Admin {
            return Err(format!(
                "a `{}` event of the daemon's own history",
                ev.kind.as_str()
            ));
        }
        return Ok(());
    }
    match view {
        Some(v) => {
            let new = NewEvent {
                kind: ev.kind,
                level: ev.level,
                message: ev.message.clone(),
                payload: ev.payload.clone(),
                stage: ev.stage.clone(),
            };
            v.check(&new).map_err(|e| e.to_string())?;
            v.apply(ev);
        }
        None => {
            *view = Some(JobView::create(ev).ok_or_else(|| {
                format!(
                    "the job's first event is `{}`, not `queued`",
                    ev.kind.as_str()
                )
            })?)
        }
    }
    Ok(())
}

/// The stored head against the fold of the job's events: the first field that differs.
fn compare_head(
    folded: &JobView,
    (_, state, first, queued, cancel, head, (attempt, last, created, completed)): HeadRow,
) -> Result<(), String> {
    let stored: JobView = serde_json::from_value(head)
        .map_err(|e| format!("the stored head does not decode: {e}"))?;
    let (a, b) = (
        serde_json::to_value(&stored).map_err(|e| e.to_string())?,
        serde_json::to_value(folded).map_err(|e| e.to_string())?,
    );
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (field, want) in b {
            let got = a.get(field).unwrap_or(&serde_json::Value::Null);
            if got != want {
                return Err(format!(
                    "the stored head's `{field}` is {got}, the fold of its events gives {want}"
                ));
            }
        }
    }
    let columns = [
        (
            "state",
            serde_json::json!(state),
            serde_json::json!(folded.state.as_str()),
        ),
        (
            "first_event",
            serde_json::json!(first),
            serde_json::json!(folded.first_event_id),
        ),
        (
            "queued_at",
            serde_json::json!(queued),
            serde_json::json!(folded.queued_at),
        ),
        (
            "cancel_requested",
            serde_json::json!(cancel),
            serde_json::json!(folded.cancel_requested),
        ),
        (
            "attempt",
            serde_json::json!(attempt),
            serde_json::json!(folded.attempt),
        ),
        (
            "last_event",
            serde_json::json!(last),
            serde_json::json!(folded.last_event_id),
        ),
        (
            "created_ms",
            serde_json::json!(created),
            serde_json::json!(folded.created_ms),
        ),
        (
            "completed_ms",
            serde_json::json!(completed),
            serde_json::json!(folded.completed_ms),
        ),
    ];
    for (column, got, want) in columns {
        if got != want {
            return Err(format!(
                "the `jobs.{column}` column is {got}, the fold of its events gives {want}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Level};
    use crate::store::{Store, FILE_NAME};

    fn ev(id: u64, job: JobId, kind: Kind) -> Event {
        Event {
            id,
            job,
            kind,
            level: Level::Info,
            message: format!("event {id}"),
            payload: (kind == Kind::Queued)
                .then(|| serde_json::json!({"maxAttempts": 1, "request": {"videoSubject": "x"}})),
            timestamp_ms: 1,
            stage: None,
        }
    }

    fn sample(path: &Path) -> (JobId, JobId) {
        let (a, b) = (JobId::new(), JobId::new());
        let store = Store::open(path).unwrap();
        store
            .append(&[
                ev(1, a, Kind::Queued),
                ev(2, b, Kind::Queued),
                ev(3, a, Kind::Running),
                ev(4, a, Kind::Log),
                ev(5, a, Kind::Complete),
            ])
            .unwrap();
        (a, b)
    }

    #[test]
    fn a_good_log_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        sample(&path);
        let r = check(&path).unwrap();
        assert_eq!((r.events, r.jobs), (5, 2));
    }

    /// Writes raw rows behind the codec's back.
    fn poke(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    }

    #[test]
    fn the_first_bad_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        sample(&path);
        poke(&path, |t| {
            let mut e = t.open_table(EVENTS).unwrap();
            e.insert(4, [1u8, 0xff, 0xff].as_slice()).unwrap();
        });
        let err = check(&path).unwrap_err();
        assert!(
            matches!(
                err,
                CheckError::Damaged {
                    record: Some(4),
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("event record 4 is damaged"), "{msg}");
        assert!(msg.contains("reelsmith ctl backup"), "{msg}");
    }

    #[test]
    fn an_illegal_history_and_a_broken_index_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (a, _) = sample(&path);
        // A second `complete` after the first.
        poke(&path, |t| {
            let mut e = t.open_table(EVENTS).unwrap();
            e.insert(6, codec::encode(&ev(6, a, Kind::Complete)).as_slice())
                .unwrap();
            let mut i = t.open_table(JOB_EVENTS).unwrap();
            i.insert((a.as_u128(), 6), ()).unwrap();
        });
        let err = check(&path).unwrap_err();
        assert!(
            matches!(
                err,
                CheckError::Damaged {
                    record: Some(6),
                    ..
                }
            ),
            "{err}"
        );

        let path = dir.path().join("second.redb");
        let (a, b) = sample(&path);
        poke(&path, |t| {
            let mut i = t.open_table(JOB_EVENTS).unwrap();
            i.remove((a.as_u128(), 3)).unwrap();
        });
        let err = check(&path).unwrap_err().to_string();
        assert!(
            err.contains("event record 3") && err.contains("missing from the job index"),
            "{err}"
        );
        poke(&path, |t| {
            let mut i = t.open_table(JOB_EVENTS).unwrap();
            i.insert((a.as_u128(), 3), ()).unwrap();
            i.insert((b.as_u128(), 4), ()).unwrap();
        });
        let err = check(&path).unwrap_err().to_string();
        assert!(err.contains("event 4"), "{err}");
    }

    #[test]
    fn a_missing_or_locked_log_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(matches!(check(&path), Err(CheckError::Missing { .. })));
        sample(&path);
        let _open = Store::open(&path).unwrap();
        let err = check(&path).unwrap_err();
        assert!(matches!(err, CheckError::Locked { .. }), "{err}");
    }
}
