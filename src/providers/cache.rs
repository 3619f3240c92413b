//! The clip cache: downloaded footage, content-addressed by the SHA-256 of its URL, shared by all
//! jobs of the daemon, bounded in size with least-recently-used eviction.
//!
//! Invariants: a file named `<hash>.<ext>` is complete (downloads go to a `.part` file that is renamed
//! into place); one URL is downloaded at most once at a time in this process (a per-key lock; the
//! second caller waits and then finds the file); a hit touches the file's mtime, and eviction removes
//! the oldest mtimes first, never the file just fetched. Jobs should [`ClipCache::place`] a clip into
//! their own folder (a hard link), so a later eviction cannot pull it from under a render.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::ProviderError;
use crate::config::Config;

const SERVICE: &str = "Clip cache";

/// A clip in the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedClip {
    pub path: PathBuf,
    /// Whether this call downloaded it (false: it was already there).
    pub downloaded: bool,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct ClipCache {
    dir: PathBuf,
    max_bytes: u64,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ClipCache {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> ClipCache {
        ClipCache {
            dir: dir.into(),
            max_bytes,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The one cache of this process for `dir` (created on first use), so that concurrent jobs share
    /// the in-flight map.
    pub fn shared(dir: impl Into<PathBuf>, max_bytes: u64) -> Arc<ClipCache> {
        static ALL: OnceLock<Mutex<HashMap<PathBuf, Arc<ClipCache>>>> = OnceLock::new();
        let dir = dir.into();
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        all.entry(dir.clone())
            .or_insert_with(|| Arc::new(ClipCache::new(dir, max_bytes)))
            .clone()
    }

    /// The cache of a config: `footage.cache_dir`, or `<state_dir>/cache/clips` when that is empty.
    pub fn for_config(cfg: &Config) -> Arc<ClipCache> {
        let dir = if cfg.footage.cache_dir.is_empty() {
            cfg.state_dir().join("cache").join("clips")
        } else {
            PathBuf::from(&cfg.footage.cache_dir)
        };
        ClipCache::shared(dir, cfg.footage.cache_max_bytes)
    }

    /// The folder the clips live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the clip of `url` lives (whether or not it is there yet).
    pub fn path_for(&self, url: &str) -> PathBuf {
        self.dir
            .join(format!("{}.{}", key_of(url), extension_of(url)))
    }

    /// The clip of `url`: from the cache (touched), or downloaded by `download(part_path)`, which
    /// returns the bytes written, then renamed into place, after which the cache is trimmed.
    pub async fn fetch<F, Fut>(&self, url: &str, download: F) -> Result<CachedClip, ProviderError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64, ProviderError>>,
    {
        let key = key_of(url);
        let lock = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            self.fetch_locked(url, &key, download).await
        };
        {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            // The map's reference and ours: nobody else waits on this key.
            if Arc::strong_count(&lock) == 2 {
                map.remove(&key);
            }
        }
        result
    }

    async fn fetch_locked<F, Fut>(
        &self,
        url: &str,
        key: &str,
        download: F,
    ) -> Result<CachedClip, ProviderError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64, ProviderError>>,
    {
        let path = self.path_for(url);
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            if meta.is_file() && meta.len() > 0 {
                touch(&path).await;
                tracing::debug!(cache = %self.dir.display(), key, "clip cache hit");
                return Ok(CachedClip {
                    path,
                    downloaded: false,
                    bytes: meta.len(),
                });
            }
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|source| self.io(&self.dir, source))?;
        let part = self.dir.join(format!(".{key}.{}.part", fastrand::u64(..)));
        let bytes = match download(part.clone()).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        if let Err(source) = tokio::fs::rename(&part, &path).await {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(self.io(&path, source));
        }
        tracing::debug!(cache = %self.dir.display(), key, bytes, "clip downloaded into the cache");
        let dir = self.dir.clone();
        let (max, keep) = (self.max_bytes, path.clone());
        match tokio::task::spawn_blocking(move || evict(&dir, max, &keep)).await {
            Ok(Ok(removed)) if removed > 0 => {
                tracing::debug!(cache = %self.dir.display(), removed, "clip cache trimmed")
            }
            Ok(Err(e)) => {
                tracing::warn!(cache = %self.dir.display(), error = %e, "clip cache trim failed")
            }
            _ => {}
        }
        Ok(CachedClip {
            path,
            downloaded: true,
            bytes,
        })
    }

    fn io(&self, path: &Path, source: std::io::Error) -> ProviderError {
        ProviderError::Io {
            service: SERVICE,
            path: path.to_owned(),
            source,
        }
    }

    /// Puts a cached clip at `dest` (a job's folder): a hard link, or a copy across file systems.
    pub async fn place(clip: &Path, dest: &Path) -> Result<(), ProviderError> {
        let _ = tokio::fs::remove_file(dest).await;
        if tokio::fs::hard_link(clip, dest).await.is_ok() {
            return Ok(());
        }
        tokio::fs::copy(clip, dest)
            .await
            .map(|_| ())
            .map_err(|source| ProviderError::Io {
                service: SERVICE,
                path: dest.to_owned(),
                source,
            })
    }
}

async fn touch(path: &Path) {
    let p = path.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(SystemTime::now()))
    })
    .await;
}

/// Removes the least recently used complete clips until the total is at most `max_bytes`, never
/// `keep`. Returns how many files it removed.
fn evict(dir: &Path, max_bytes: u64, keep: &Path) -> std::io::Result<usize> {
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // downloads in progress
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        total += meta.len();
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((mtime, meta.len(), entry.path()));
    }
    files.sort();
    let mut removed = 0;
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total -= len;
                removed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Hex SHA-256 of the URL.
pub fn key_of(url: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn extension_of(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        Some((_, ext))
            if (1..=5).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            ext.to_ascii_lowercase()
        }
        _ => "mp4".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn put(cache: &ClipCache, url: &str, size: usize) -> CachedClip {
        cache
            .fetch(url, |part| async move {
                tokio::fs::write(&part, vec![7u8; size]).await.unwrap();
                Ok(size as u64)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn least_recently_used_clips_are_evicted_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ClipCache::new(dir.path(), 250);
        let a = put(&cache, "http://x/a.mp4", 100).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = put(&cache, "http://x/b.mp4", 100).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A hit on a makes b the least recently used.
        assert!(!put(&cache, "http://x/a.mp4", 100).await.downloaded);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = put(&cache, "http://x/c.mp4", 100).await;
        assert!(c.downloaded);
        assert!(a.path.exists(), "recently used clip was evicted");
        assert!(!b.path.exists(), "least recently used clip was kept");
        assert!(c.path.exists());
        assert_eq!(a.path, cache.path_for("http://x/a.mp4"));
        assert!(a.path.extension().is_some_and(|e| e == "mp4"));
    }

    #[tokio::test]
    async fn a_failed_download_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ClipCache::new(dir.path(), 1000);
        let err = cache
            .fetch("http://x/bad.mp4", |part| async move {
                tokio::fs::write(&part, b"half").await.unwrap();
                Err(ProviderError::bad_answer("test", "broken"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "BadAnswer");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
