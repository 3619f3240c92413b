//! The event log on disk: one redb file, the daemon's only source of truth.
//!
//! Tables: `events` (global id -> versioned record), `job_events` ((job, id) -> (), the per-job index
//! for range reads) and `jobs` (id of a job's first event -> job, creation order). Ids come from the
//! journal, which is the only writer; a batch is one write transaction with immediate durability, so
//! an append that returned `Ok` survives any crash. Nothing outside this module sees a redb type: the
//! contract (append a batch, read a job's range after an id, scan everything) would fit another engine.

pub mod codec;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::event::{Event, EventId, JobId};

pub use codec::DecodeError;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const JOB_EVENTS: TableDefinition<(u128, u64), ()> = TableDefinition::new("job_events");
const JOBS: TableDefinition<u64, u128> = TableDefinition::new("jobs");

/// The database file's name inside the state directory.
pub const FILE_NAME: &str = "reelsmith.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the event log {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("the event log {path} is in use by another reelsmith process (a running `reelsmith serve`?); stop it or use another state directory")]
    Locked { path: PathBuf },
    #[error("event log write failed: {0}")]
    Write(String),
    #[error("event log read failed: {0}")]
    Read(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("backup to {path} failed: {reason}")]
    Backup { path: PathBuf, reason: String },
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

/// The embedded event log.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the log at `path` and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        let db = match Database::builder().set_cache_size(64 << 20).create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(open_err(e.to_string())),
        };
        let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
        {
            txn.open_table(EVENTS)
                .map_err(|e| open_err(e.to_string()))?;
            txn.open_table(JOB_EVENTS)
                .map_err(|e| open_err(e.to_string()))?;
            txn.open_table(JOBS).map_err(|e| open_err(e.to_string()))?;
        }
        txn.commit().map_err(|e| open_err(e.to_string()))?;
        Ok(Store {
            db,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch in one durable transaction. `created` lists the jobs whose first event is in
    /// the batch, by that event's id. Ids must be larger than every id already stored.
    pub fn append(&self, batch: &[Event], created: &[(EventId, JobId)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut events = txn.open_table(EVENTS).map_err(write_err)?;
            let mut index = txn.open_table(JOB_EVENTS).map_err(write_err)?;
            for ev in batch {
                events
                    .insert(ev.id, codec::encode(ev).as_slice())
                    .map_err(write_err)?;
                index
                    .insert((ev.job.as_u128(), ev.id), ())
                    .map_err(write_err)?;
            }
            let mut jobs = txn.open_table(JOBS).map_err(write_err)?;
            for (id, job) in created {
                jobs.insert(*id, job.as_u128()).map_err(write_err)?;
            }
        }
        txn.commit().map_err(write_err)
    }

    /// The largest id stored, or 0 for an empty log.
    pub fn last_id(&self) -> Result<EventId, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let last = events.last().map_err(read_err)?.map(|(k, _)| k.value());
        Ok(last.unwrap_or(0))
    }

    /// Events of `job` with `after < id <= upto`, ascending, at most `limit`.
    pub fn read_job(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(256));
        self.for_each_in_job(job, after, upto, limit, |id, bytes| {
            out.push(codec::decode(id, bytes)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Like [`Store::read_job`], but appends the events' wire JSON to `out`, comma-separated, without
    /// decoding payloads. Returns (count, id of the last event written).
    pub fn read_job_wire(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(usize, EventId), StoreError> {
        let (mut n, mut last) = (0, after);
        self.for_each_in_job(job, after, upto, limit, |id, bytes| {
            if n > 0 {
                out.push(b',');
            }
            codec::write_wire(id, bytes, out)?;
            n += 1;
            last = id;
            Ok(())
        })?;
        Ok((n, last))
    }

    /// Calls `f` with (id, record) for the events of `job` with `after < id <= upto`, ascending, at
    /// most `limit`, all from one read transaction (one snapshot).
    fn for_each_in_job(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
        mut f: impl FnMut(EventId, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if upto <= after || limit == 0 {
            return Ok(());
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let index = txn.open_table(JOB_EVENTS).map_err(read_err)?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let j = job.as_u128();
        let mut n = 0;
        for entry in index.range((j, after + 1)..=(j, upto)).map_err(read_err)? {
            let (key, _) = entry.map_err(read_err)?;
            let id = key.value().1;
            let bytes = events
                .get(id)
                .map_err(read_err)?
                .ok_or_else(|| StoreError::Read(format!("index names missing event {id}")))?;
            f(id, bytes.value())?;
            n += 1;
            if n >= limit {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` with every event in id order (start-up replay). Stops at the first damaged record.
    pub fn scan(&self, mut f: impl FnMut(Event)) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let mut n = 0;
        for entry in events.iter().map_err(read_err)? {
            let (k, v) = entry.map_err(read_err)?;
            f(codec::decode(k.value(), v.value())?);
            n += 1;
        }
        Ok(n)
    }

    /// Number of events stored.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        events.len().map_err(read_err)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Size of the database file in bytes.
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Writes a consistent copy of the whole log to a new database at `dest`, from one read
    /// transaction (a snapshot: concurrent appends are neither blocked nor half-copied).
    pub fn backup(&self, dest: &Path) -> Result<u64, StoreError> {
        let fail = |reason: String| StoreError::Backup {
            path: dest.to_owned(),
            reason,
        };
        if dest.exists() {
            return Err(fail("the file already exists; choose a new path".into()));
        }
        let src = self.db.begin_read().map_err(|e| fail(e.to_string()))?;
        let out = Database::create(dest).map_err(|e| fail(e.to_string()))?;
        let txn = out.begin_write().map_err(|e| fail(e.to_string()))?;
        let mut copied = 0;
        {
            let from = src.open_table(EVENTS).map_err(|e| fail(e.to_string()))?;
            let mut to = txn.open_table(EVENTS).map_err(|e| fail(e.to_string()))?;
            for entry in from.iter().map_err(|e| fail(e.to_string()))? {
                let (k, v) = entry.map_err(|e| fail(e.to_string()))?;
                to.insert(k.value(), v.value())
                    .map_err(|e| fail(e.to_string()))?;
                copied += 1;
            }
            let from = src
                .open_table(JOB_EVENTS)
                .map_err(|e| fail(e.to_string()))?;
            let mut to = txn
                .open_table(JOB_EVENTS)
                .map_err(|e| fail(e.to_string()))?;
            for entry in from.iter().map_err(|e| fail(e.to_string()))? {
                let (k, _) = entry.map_err(|e| fail(e.to_string()))?;
                to.insert(k.value(), ()).map_err(|e| fail(e.to_string()))?;
            }
            let from = src.open_table(JOBS).map_err(|e| fail(e.to_string()))?;
            let mut to = txn.open_table(JOBS).map_err(|e| fail(e.to_string()))?;
            for entry in from.iter().map_err(|e| fail(e.to_string()))? {
                let (k, v) = entry.map_err(|e| fail(e.to_string()))?;
                to.insert(k.value(), v.value())
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        txn.commit().map_err(|e| fail(e.to_string()))?;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Level};

    fn ev(id: u64, job: JobId, msg: &str) -> Event {
        Event {
            id,
            job,
            kind: if id == 1 { Kind::Queued } else { Kind::Log },
            level: Level::Info,
            message: msg.into(),
            payload: None,
            timestamp_ms: 0,
            stage: None,
        }
    }

    #[test]
    fn ranges_are_per_job_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (a, b) = (JobId::new(), JobId::new());
        {
            let store = Store::open(&path).unwrap();
            let batch: Vec<_> = (1..=10)
                .map(|i| ev(i, if i % 2 == 0 { a } else { b }, &format!("m{i}")))
                .collect();
            store.append(&batch, &[(1, b), (2, a)]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.last_id().unwrap(), 10);
        let ids: Vec<_> = store
            .read_job(a, 2, u64::MAX, 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![4, 6, 8, 10]);
        let ids: Vec<_> = store
            .read_job(a, 0, 8, 2)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![2, 4]);
        let mut all = Vec::new();
        store.scan(|e| all.push(e.id)).unwrap();
        assert_eq!(all, (1..=10).collect::<Vec<_>>());

        let copy = dir.path().join("copy.redb");
        assert_eq!(store.backup(&copy).unwrap(), 10);
        assert!(store.backup(&copy).is_err());
        drop(store);
        let copy = Store::open(&copy).unwrap();
        assert_eq!(copy.read_job(b, 0, u64::MAX, 100).unwrap().len(), 5);
    }
}
