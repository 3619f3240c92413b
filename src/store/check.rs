//! `reelsmith store check`: verifies a log file without the daemon. Every record decodes (payload
//! JSON included), each job's history starts with `queued` and every later event is legal after the
//! ones before it (the rule the journal enforces), the per-job index agrees with the events entry
//! for entry, and last redb's own integrity check passes (every page's checksum). The first problem
//! is reported naming its record. Nothing is written but what redb's repairs write: of an unclean
//! shutdown at open (as a daemon start would), and of failed checksums (back to the last intact
//! commit).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::error::{damage_advice, OpenError};
use super::guard::catch_panic;
use super::{codec, EVENTS, JOB_EVENTS};
use crate::event::{EventId, JobId, JobView, Kind, NewEvent};

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
