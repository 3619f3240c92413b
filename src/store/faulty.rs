//! Test support: redb's file backend with injected faults (a disk that stops taking data, or fills
//! up). While a fault is set, every write, resize and sync fails with it; reads always work. Counts
//! the writes tried, so a test can prove that nothing keeps hammering a broken disk.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The fault a [`FaultyDisk`] answers writes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An I/O error (EIO).
    Io,
    /// No space left on the device (ENOSPC).
    Full,
}

/// The switch shared by a test and its disk.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch {
    fault: Arc<Mutex<Option<Fault>>>,
    writes: Arc<AtomicU64>,
}

impl FaultSwitch {
    pub fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Writes, resizes and syncs tried so far (failed ones included).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), std::io::Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        match *self.fault.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(Fault::Io) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            Some(Fault::Full) => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        }
    }
}

#[derive(Debug)]
pub struct FaultyDisk {
    inner: redb::backends::FileBackend,
    switch: FaultSwitch,
}

impl FaultyDisk {
    /// The file at `path` (created if missing), with its switch.
    pub fn open(path: &Path) -> (FaultyDisk, FaultSwitch) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open the test database file");
        let switch = FaultSwitch::default();
        let disk = FaultyDisk {
            inner: redb::backends::FileBackend::new(file).expect("lock the test database file"),
            switch: switch.clone(),
        };
        (disk, switch)
    }
}

impl redb::StorageBackend for FaultyDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.switch.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.switch.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.switch.check()?;
        self.inner.write(offset, data)
    }
}
