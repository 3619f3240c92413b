//! The event log on disk: one redb file, the daemon's only source of truth.
//!
//! Tables: `events` (global id -> versioned record) and `job_events` ((job, id) -> (), the per-job
//! index for range reads). Files written before this version also hold a `jobs` table (first event id
//! -> job); nothing reads it and it is no longer written or copied (the creation order is the order of
//! each job's first event). Ids come from the journal, which is the only writer; a batch is one write
//! transaction with immediate durability, so an append that returned `Ok` survives any crash. Nothing
//! outside this module sees a redb type: the contract (append a batch, read a job's range after an id,
//! scan everything) would fit another engine.

pub mod check;
pub mod codec;
pub(crate) mod contract;
#[cfg(test)]
mod contract_tests;
mod error;
#[cfg(test)]
pub(crate) mod faulty;
mod guard;
pub(crate) mod local;
pub(crate) mod postgres;

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::event::{Event, EventId, JobId};

pub use contract::StoreFault;
pub use error::{damage_advice, AppendError, BackupError, DecodeError, OpenError, ReadError};
use guard::catch_panic;

/// `reelsmith store copy`: copies the whole redb log at `from` (ids, jobs, admin events) into the
/// empty PostgreSQL store at `to`, then checks that both hold the same events and jobs. Answers
/// (events, jobs) copied. A missing `from` is refused (opening it would create an empty log, and
/// a mistyped path would copy nothing, successfully).
pub fn copy_to_postgres(from: &Path, to: &str) -> Result<(u64, u64), StoreFault> {
    if !from.is_file() {
        return Err(StoreFault::Unavailable {
            engine: "redb",
            source: format!(
                "no event log at {} (give a daemon's {FILE_NAME} or a `ctl backup` file)",
                from.display()
            )
            .into(),
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| StoreFault::Unavailable {
            engine: "postgres",
            source: Box::new(e),
        })?;
    rt.block_on(async {
        use contract::EventStore;
        let src = local::LocalStore::open(from)?;
        let dst = postgres::PgStore::connect(to).await?;
        let (events, jobs) = dst
            .import(src.last_id().await?, |after| src.read_since(after, 5_000))
            .await?;
        let verify = |what: &str, a: u64, b: u64| {
            if a == b {
                Ok(())
            } else {
                Err(StoreFault::Write {
                    engine: "postgres",
                    source: format!(
                        "copy verification failed: {what}: {a} in the source, {b} in the copy"
                    )
                    .into(),
                })
            }
        };
        verify("last event id", src.last_id().await?, dst.last_id().await?)?;
        let (a, b) = (
            src.list(None, None, usize::MAX).await?.len() as u64,
            dst.list(None, None, usize::MAX).await?.len() as u64,
        );
        verify("jobs", a, b)?;
        Ok((events, jobs))
    })
}

/// `reelsmith migrate`: creates or upgrades the PostgreSQL schema at `url` (on a runtime of its
/// own); answers the version in force. A schema newer than this build knows is refused.
/// `url` with its password, if any, replaced by `***` (for messages and logs).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

pub fn migrate_postgres(url: &str) -> Result<i64, StoreFault> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreFault::Unavailable {
            engine: "postgres",
            source: Box::new(e),
        })?;
    rt.block_on(postgres::migrate(url))
}

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const JOB_EVENTS: TableDefinition<(u128, u64), ()> = TableDefinition::new("job_events");
/// Counters that outlive the events they count: `last_id`, the largest id ever given out, so that
/// ids stay unused forever even when retention deletes the newest events.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_LAST_ID: &str = "last_id";

/// redb's page cache. Reads of a job's events touch a few pages; a bigger cache only remembers
/// the start-up scan, and its size is resident memory (the daemon's RSS target is 100 MB with
/// 100,000 finished jobs).
const CACHE_BYTES: usize = 16 << 20;

/// The database file's name inside the state directory.
pub const FILE_NAME: &str = "reelsmith.redb";

/// The embedded event log.
pub struct Store {
    /// Dropped by hand, inside [`catch_panic`]: redb writes on close and may panic on a damaged file.
    db: ManuallyDrop<Database>,
    path: PathBuf,
    /// Write transactions committed since open (one per group commit).
    commits: AtomicU64,
}

impl Store {
    /// Opens (or creates) the log at `path` and makes sure every table exists.
    /// A damaged file is refused with [`OpenError::Damaged`] (never a panic).
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        Store::init(path, || {
            Database::builder().set_cache_size(CACHE_BYTES).create(path)
        })
    }

    fn init(
        path: &Path,
        open: impl FnOnce() -> Result<Database, redb::DatabaseError>,
    ) -> Result<Store, OpenError> {
        let err = |e: redb::Error| OpenError::classify(path, e);
        let db = match catch_panic(open).map_err(err)? {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenError::Locked {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(err(e.into())),
        };
        let tables = catch_panic(|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                txn.open_table(EVENTS)?;
                txn.open_table(JOB_EVENTS)?;
                txn.open_table(META)?;
            }
            txn.commit()?;
            Ok(())
        });
        if let Err(e) = tables.and_then(|r| r) {
            let _ = catch_panic(move || drop(db));
            return Err(err(e));
        }
        Ok(Store {
            db: ManuallyDrop::new(db),
            path: path.to_owned(),
            commits: AtomicU64::new(0),
        })
    }

    /// Opens the log on a caller's storage backend (fault injection in tests).
    #[cfg(test)]
    pub(crate) fn open_with_backend(
        path: &Path,
        backend: impl redb::StorageBackend,
    ) -> Result<Store, OpenError> {
        Store::init(path, || Database::builder().create_with_backend(backend))
    }

    /// Write transactions committed since the log was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch in one durable transaction. Ids must be larger than every id already stored.
    pub fn append(&self, batch: &[Event]) -> Result<(), AppendError> {
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut events = txn.open_table(EVENTS)?;
                let mut index = txn.open_table(JOB_EVENTS)?;
                for ev in batch {
                    events.insert(ev.id, codec::encode(ev).as_slice())?;
                    index.insert((ev.job.as_u128(), ev.id), ())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        catch_panic(write)
            .and_then(|r| r)
            .map_err(|source| AppendError {
                path: self.path.clone(),
                source,
            })?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores already encoded records `(id, job, bytes)` as they are (tests of damaged or odd
    /// records).
    #[cfg(test)]
    pub(crate) fn append_raw(
        &self,
        records: &[(EventId, JobId, Vec<u8>)],
    ) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut index = txn.open_table(JOB_EVENTS)?;
            for (id, job, bytes) in records {
                events.insert(*id, bytes.as_slice())?;
                index.insert((job.as_u128(), *id), ())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes every event of `jobs` (and their index entries) in one durable transaction, keeping
    /// the largest id ever given out (see `META`). Answers the events deleted. Retention only: the
    /// journal calls it for finished jobs.
    pub fn purge(&self, jobs: &[JobId]) -> Result<u64, AppendError> {
        self.purge_recording(jobs, |_| Vec::new())
    }

    /// [`Store::purge`], and in the same transaction appends the events `record` makes of the
    /// count deleted (ids above every id given out: the record of the purge).
    pub fn purge_recording(
        &self,
        jobs: &[JobId],
        record: impl FnOnce(u64) -> Vec<Event>,
    ) -> Result<u64, AppendError> {
        let write = || -> Result<u64, redb::Error> {
            let txn = self.db.begin_write()?;
            let mut removed = 0;
            {
                let mut events = txn.open_table(EVENTS)?;
                let mut index = txn.open_table(JOB_EVENTS)?;
                let mut meta = txn.open_table(META)?;
                let last = events.last()?.map(|(k, _)| k.value()).unwrap_or(0);
                let kept = meta.get(META_LAST_ID)?.map(|v| v.value()).unwrap_or(0);
                meta.insert(META_LAST_ID, last.max(kept))?;
                for job in jobs {
                    let j = job.as_u128();
                    let ids: Vec<EventId> = index
                        .range((j, 0)..=(j, u64::MAX))?
                        .map(|e| e.map(|(k, _)| k.value().1))
                        .collect::<Result<_, _>>()?;
                    for id in ids {
                        events.remove(id)?;
                        index.remove((j, id))?;
                        removed += 1;
                    }
                }
                for ev in record(removed) {
                    events.insert(ev.id, codec::encode(&ev).as_slice())?;
                    index.insert((ev.job.as_u128(), ev.id), ())?;
                }
            }
            txn.commit()?;
            Ok(removed)
        };
        let removed = catch_panic(write)
            .and_then(|r| r)
            .map_err(|source| AppendError {
                path: self.path.clone(),
                source,
            })?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(removed)
    }

    /// The largest id given out (stored, or stored and since purged), or 0 for an empty log.
    pub fn last_id(&self) -> Result<EventId, ReadError> {
        let read = || -> Result<Option<EventId>, redb::Error> {
            let txn = self.db.begin_read()?;
            let events = txn.open_table(EVENTS)?;
            let last = events.last()?.map(|(k, _)| k.value());
            let meta = txn.open_table(META)?;
            let kept = meta.get(META_LAST_ID)?.map(|v| v.value());
            Ok(last.max(kept))
        };
        let last = catch_panic(read)
            .and_then(|r| r)
            .map_err(ReadError::storage)?;
        Ok(last.unwrap_or(0))
    }

    /// Events of `job` with `after < id <= upto`, ascending, at most `limit`.
    pub fn read_job(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, ReadError> {
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
    ) -> Result<(usize, EventId), ReadError> {
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
        mut f: impl FnMut(EventId, &[u8]) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        if upto <= after || limit == 0 {
            return Ok(());
        }
        catch_panic(|| self.for_each_in_job_unguarded(job, after, upto, limit, &mut f))
            .map_err(ReadError::storage)?
    }

    fn for_each_in_job_unguarded(
        &self,
        job: JobId,
        after: EventId,
        upto: EventId,
        limit: usize,
        f: &mut impl FnMut(EventId, &[u8]) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let txn = self.db.begin_read().map_err(ReadError::storage)?;
        let index = txn.open_table(JOB_EVENTS).map_err(ReadError::storage)?;
        let events = txn.open_table(EVENTS).map_err(ReadError::storage)?;
        let j = job.as_u128();
        let mut n = 0;
        for entry in index
            .range((j, after + 1)..=(j, upto))
            .map_err(ReadError::storage)?
        {
            let (key, _) = entry.map_err(ReadError::storage)?;
            let id = key.value().1;
            let bytes = events
                .get(id)
                .map_err(ReadError::storage)?
                .ok_or(ReadError::MissingEvent { id })?;
            f(id, bytes.value())?;
            n += 1;
            if n >= limit {
                break;
            }
        }
        Ok(())
    }

    /// Events of every job with id > `after`, ascending, at most `limit` (the daemon-wide feed).
    pub fn read_since(&self, after: EventId, limit: usize) -> Result<Vec<Event>, ReadError> {
        catch_panic(|| self.read_since_unguarded(after, limit)).map_err(ReadError::storage)?
    }

    fn read_since_unguarded(&self, after: EventId, limit: usize) -> Result<Vec<Event>, ReadError> {
        let txn = self.db.begin_read().map_err(ReadError::storage)?;
        let events = txn.open_table(EVENTS).map_err(ReadError::storage)?;
        let mut out = Vec::new();
        for entry in events
            .range(after + 1..)
            .map_err(ReadError::storage)?
            .take(limit)
        {
            let (k, v) = entry.map_err(ReadError::storage)?;
            out.push(codec::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Calls `f` with every event in id order (start-up replay). Stops at the first damaged record.
    pub fn scan(&self, mut f: impl FnMut(Event)) -> Result<u64, ReadError> {
        catch_panic(|| self.scan_unguarded(&mut f)).map_err(ReadError::storage)?
    }

    fn scan_unguarded(&self, f: &mut impl FnMut(Event)) -> Result<u64, ReadError> {
        let txn = self.db.begin_read().map_err(ReadError::storage)?;
        let events = txn.open_table(EVENTS).map_err(ReadError::storage)?;
        let mut n = 0;
        for entry in events.iter().map_err(ReadError::storage)? {
            let (k, v) = entry.map_err(ReadError::storage)?;
            f(codec::decode(k.value(), v.value())?);
            n += 1;
        }
        Ok(n)
    }

    /// Calls `f` with the [`codec::Head`] of every event in id order, without parsing payloads
    /// (the start-up replay's first pass). Stops at the first damaged record.
    pub fn scan_heads(
        &self,
        mut f: impl FnMut(EventId, codec::Head<'_>),
    ) -> Result<u64, ReadError> {
        let scan = || -> Result<u64, ReadError> {
            let txn = self.db.begin_read().map_err(ReadError::storage)?;
            let events = txn.open_table(EVENTS).map_err(ReadError::storage)?;
            let mut n = 0;
            for entry in events.iter().map_err(ReadError::storage)? {
                let (k, v) = entry.map_err(ReadError::storage)?;
                let id = k.value();
                f(id, codec::decode_head(id, v.value())?);
                n += 1;
            }
            Ok(n)
        };
        catch_panic(scan).map_err(ReadError::storage)?
    }

    /// Number of events stored.
    pub fn len(&self) -> Result<u64, ReadError> {
        let txn = self.db.begin_read().map_err(ReadError::storage)?;
        let events = txn.open_table(EVENTS).map_err(ReadError::storage)?;
        events.len().map_err(ReadError::storage)
    }

    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// Size of the database file in bytes.
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Writes a consistent copy of the whole log to a new database at `dest`, from one read
    /// transaction (a snapshot: concurrent appends are neither blocked nor half-copied).
    pub fn backup(&self, dest: &Path) -> Result<u64, BackupError> {
        if dest.exists() {
            return Err(BackupError::Exists {
                path: dest.to_owned(),
            });
        }
        catch_panic(|| self.copy_to(dest))
            .and_then(|r| r)
            .map_err(|source| BackupError::Storage {
                path: dest.to_owned(),
                source,
            })
    }

    fn copy_to(&self, dest: &Path) -> Result<u64, redb::Error> {
        let src = self.db.begin_read()?;
        let out = Database::create(dest)?;
        let txn = out.begin_write()?;
        let mut copied = 0;
        {
            let from = src.open_table(EVENTS)?;
            let mut to = txn.open_table(EVENTS)?;
            for entry in from.iter()? {
                let (k, v) = entry?;
                to.insert(k.value(), v.value())?;
                copied += 1;
            }
            let from = src.open_table(JOB_EVENTS)?;
            let mut to = txn.open_table(JOB_EVENTS)?;
            for entry in from.iter()? {
                let (k, _) = entry?;
                to.insert(k.value(), ())?;
            }
            let from = src.open_table(META)?;
            let mut to = txn.open_table(META)?;
            for entry in from.iter()? {
                let (k, v) = entry?;
                to.insert(k.value(), v.value())?;
            }
        }
        txn.commit()?;
        Ok(copied)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `db` is taken once, here, and never used again: `self` is being dropped.
        let db = unsafe { ManuallyDrop::take(&mut self.db) };
        if let Err(e) = catch_panic(move || drop(db)) {
            tracing::error!(path = %self.path.display(), error = %e, "closing the event log failed");
        }
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
            store.append(&batch).unwrap();
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

#[cfg(test)]
mod damage_tests {
    use super::*;
    use crate::event::{Kind, Level};

    /// Flipped bytes and truncations anywhere in the file: opening, replaying, reading every job and
    /// checking the file give errors (a damaged open names the file), never a panic.
    #[test]
    fn a_damaged_file_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut jobs = Vec::new();
        {
            let store = Store::open(&path).unwrap();
            for b in 0..20u64 {
                let job = JobId::new();
                jobs.push(job);
                let batch: Vec<_> = (0..50)
                    .map(|i| Event {
                        id: b * 50 + i + 1,
                        job,
                        kind: if i == 0 { Kind::Queued } else { Kind::Log },
                        level: Level::Info,
                        message: format!("message {i} of a job, with some text"),
                        payload: Some(serde_json::json!({"request": {"videoSubject": "x"}})),
                        timestamp_ms: 0,
                        stage: None,
                    })
                    .collect();
                store.append(&batch).unwrap();
            }
        }
        let good = std::fs::read(&path).unwrap();
        let mut rng = fastrand::Rng::with_seed(0xda3a9e);
        let (mut refused, mut opened) = (0, 0);
        for trial in 0..150 {
            let mut bytes = good.clone();
            if trial % 3 == 0 {
                bytes.truncate(rng.usize(0..good.len()));
            } else {
                for _ in 0..rng.usize(1..16) {
                    let i = rng.usize(0..bytes.len());
                    bytes[i] ^= 0xff;
                }
            }
            // A file of its own per trial: a damaged file redb failed to close may stay locked.
            let path = dir.path().join(format!("trial-{trial}.redb"));
            std::fs::write(&path, &bytes).unwrap();
            let outcome = std::panic::catch_unwind(|| {
                match Store::open(&path) {
                    Err(OpenError::Damaged { path: p, reason }) => {
                        assert_eq!(p, path);
                        assert!(!reason.is_empty());
                        return false;
                    }
                    Err(e) => panic!("a damaged file is not a {e:?}"),
                    Ok(store) => {
                        let _ = store.scan(|_| {});
                        for job in &jobs {
                            let _ = store.read_job(*job, 0, u64::MAX, 1000);
                        }
                    }
                }
                let _ = check::check(&path);
                true
            });
            match outcome {
                Ok(true) => opened += 1,
                Ok(false) => refused += 1,
                Err(_) => panic!("trial {trial} panicked"),
            }
        }
        assert!(
            refused > 10 && opened > 10,
            "{refused} refused, {opened} opened"
        );
    }
}
