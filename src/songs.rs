//! The song library (`music.songs_dir`): replaced whole, in one rename, and never read in place by a
//! render.
//!
//! Invariants:
//! - An upload writes its songs into a fresh staging folder next to the library ([`staging_dir`]),
//!   and [`replace`] swaps that folder in with one `renameat2(RENAME_EXCHANGE)` (a plain `rename`
//!   when there is no library yet). A reader sees the old library or the new one, never a mix; two
//!   uploads never interleave (the library ends as exactly one of them: the one swapped in last);
//!   an upload that fails before the swap leaves the old library as it was, and one a crash cut
//!   off leaves only a staging folder, which the next start removes ([`sweep_staging`]). Where the
//!   filesystem has no exchange, the swap is two renames through an aside folder; a crash between
//!   them leaves that folder, which the next start puts back as the library when there is none
//!   (the upload was never acknowledged) and otherwise retires like any replaced library.
//! - Only `.mp3` files belong to an upload. Anything else the old library held (a note, a folder)
//!   is moved into the new one after the swap, so a replace never deletes what it does not own.
//! - A job takes its song with [`take_song`]: a hard link (a copy across filesystems) inside its own
//!   folder, made when it chooses it. A later upload removes only the library's names, so the
//!   job's render never loses its song.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{info, warn};

/// Serialises the swap and the carry-over of non-song entries within this process.
static SWAP: Mutex<()> = Mutex::new(());

/// The prefix of staging folders (next to the library; never listed as songs).
pub const STAGING_PREFIX: &str = ".songs-upload-";
/// Where the two-rename fallback moves the old library for a moment. After a crash between its
/// renames it may be the only copy of the old library: [`sweep_staging`] restores it then.
const ASIDE_PREFIX: &str = ".songs-previous-";

/// Why the library could not be replaced or a song taken.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("cannot swap {staging} in as the song library {library}: {source}")]
    Swap {
        staging: PathBuf,
        library: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot take the song {song} into {dest}: {source}")]
    Take {
        song: PathBuf,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LibraryError {
    /// The I/O error underneath.
    pub fn io(&self) -> &std::io::Error {
        match self {
            LibraryError::Swap { source, .. } | LibraryError::Take { source, .. } => source,
        }
    }
}

/// The library folder the swap works on: `dir` with symlinks resolved when it exists (the swap
/// replaces the real folder, not a link to it), else `dir` itself.
pub fn resolve(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// A fresh staging folder name next to `library` (same filesystem, so the swap is one rename).
pub fn staging_dir(library: &Path) -> PathBuf {
    let parent = library
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parent.join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4()))
}

fn is_song(entry: &std::fs::DirEntry) -> bool {
    let mp3 = Path::new(&entry.file_name())
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mp3"));
    mp3 && entry.file_type().is_ok_and(|t| t.is_file())
}

/// Swaps the staged folder `staging` in as `library` (blocking: run it off the async threads).
/// On success `staging` is gone and the old library's songs with it (a failure to remove them is
/// logged: the new library is in place); on error the old library is untouched and `staging` is
/// left for the caller to remove.
pub fn replace(staging: &Path, library: &Path) -> Result<(), LibraryError> {
    // A poisoned lock only means another swap panicked; the folders are still consistent.
    let _one_at_a_time = SWAP.lock().unwrap_or_else(|p| p.into_inner());
    let swap_err = |source| LibraryError::Swap {
        staging: staging.to_path_buf(),
        library: library.to_path_buf(),
        source,
    };
    let had_library = match std::fs::symlink_metadata(library) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(swap_err(e)),
    };
    if !had_library {
        return std::fs::rename(staging, library).map_err(swap_err);
    }
    exchange(staging, library).map_err(swap_err)?;
    // `staging` now holds the old library.
    retire(staging, library);
    info!(library = %library.display(), "song library replaced");
    Ok(())
}

/// Removes `old`, a replaced library, once the new `library` is in place: what is not a song moves
/// into the new library first (a replace never deletes what it does not own). Answers whether `old`
/// is gone.
fn retire(old: &Path, library: &Path) -> bool {
    if let Ok(rd) = std::fs::read_dir(old) {
        for entry in rd.flatten() {
            if is_song(&entry) {
                continue;
            }
            let to = library.join(entry.file_name());
            if let Err(e) = std::fs::rename(entry.path(), &to) {
                warn!(from = %entry.path().display(), to = %to.display(), error = %e,
                    "cannot keep a non-song entry of the replaced song library");
            }
        }
    }
    // The new library is in place: a leftover old folder is only wasted space.
    match std::fs::remove_dir_all(old) {
        Ok(()) => true,
        Err(e) => {
            warn!(path = %old.display(), error = %e, "cannot remove the replaced song library");
            false
        }
    }
}

/// Atomically exchanges the folders `a` and `b` (both exist).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (ca, cb) = (cstr(a)?, cstr(b)?);
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // A filesystem (or kernel) without RENAME_EXCHANGE: two renames under the lock.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            warn!(library = %b.display(), error = %err,
                "no atomic exchange on this filesystem; replacing the song library with two renames");
            two_renames(a, b)
        }
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    two_renames(a, b)
}

/// `b` moves aside to a temporary name, `a` takes its place, and the old `b` ends at `a`'s name.
/// Not atomic for readers (the library is missing for a moment), but never a mix of two uploads.
fn two_renames(a: &Path, b: &Path) -> std::io::Result<()> {
    let parent = b.parent().unwrap_or(Path::new("."));
    let aside = parent.join(format!("{ASIDE_PREFIX}{}", uuid::Uuid::new_v4()));
    std::fs::rename(b, &aside)?;
    if let Err(e) = std::fs::rename(a, b) {
        let _ = std::fs::rename(&aside, b);
        return Err(e);
    }
    std::fs::rename(&aside, a)
}

/// Clears what uploads cut off by a crash left next to `library` (at start, when no upload can be
/// in flight); answers how many folders it handled. A staging folder holds an unfinished upload, or
/// the old library after its swap: never the library in use, so it is removed. An aside folder of
/// the two-rename swap holds the old library: it becomes the library again when there is none, and
/// is retired otherwise (its non-song entries kept).
pub fn sweep_staging(library: &Path) -> usize {
    let Some(parent) = library.parent() else {
        return 0;
    };
    let Ok(rd) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut entries: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    entries.sort();
    let mut removed = 0;
    for (_, aside) in entries.iter().filter(|(n, _)| n.starts_with(ASIDE_PREFIX)) {
        if library.exists() {
            removed += usize::from(retire(aside, library));
            continue;
        }
        match std::fs::rename(aside, library) {
            Ok(()) => {
                warn!(library = %library.display(), from = %aside.display(),
                    "a crash cut off a song upload's swap; the previous song library is back");
                removed += 1;
            }
            Err(e) => {
                warn!(from = %aside.display(), error = %e, "cannot put the previous song library back")
            }
        }
    }
    for (_, stale) in entries
        .iter()
        .filter(|(n, _)| n.starts_with(STAGING_PREFIX))
    {
        match std::fs::remove_dir_all(stale) {
            Ok(()) => removed += 1,
            Err(e) => {
                warn!(path = %stale.display(), error = %e, "cannot remove a stale song upload")
            }
        }
    }
    removed
}

/// The `.mp3` files (any case, non-empty) directly in `dir`, sorted; empty when it does not exist.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut songs: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| is_song(e) && e.metadata().is_ok_and(|m| m.len() > 0))
        .map(|e| e.path())
        .collect();
    songs.sort();
    songs
}

/// Puts `song` into the job folder `dest_dir` under its own name: a hard link (the library's
/// files are never written in place), or a copy when linking is not possible. Answers the job's
/// path. A song that vanished (an upload replaced the library meanwhile) is a `NotFound` error:
/// the caller chooses again.
pub fn take_song(song: &Path, dest_dir: &Path) -> Result<PathBuf, LibraryError> {
    let name = song.file_name().unwrap_or(song.as_os_str());
    let dest = dest_dir.join(name);
    let err = |source| LibraryError::Take {
        song: song.to_path_buf(),
        dest: dest.clone(),
        source,
    };
    std::fs::create_dir_all(dest_dir).map_err(err)?;
    // A song an earlier attempt took: replaced, so the job uses the one it chooses now.
    match std::fs::remove_file(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    match std::fs::hard_link(song, &dest) {
        Ok(()) => Ok(dest),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(err(e)),
        Err(_) => {
            // Another filesystem, or a link the system refuses (protected_hardlinks): copy it,
            // to a temporary name first so a partial copy is never taken for the song.
            let tmp = dest_dir.join(format!(".{}.part", uuid::Uuid::new_v4()));
            let copied = std::fs::copy(song, &tmp).and_then(|_| std::fs::rename(&tmp, &dest));
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&tmp);
                return Err(err(e));
            }
            Ok(dest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    fn stage(library: &Path, prefix: &str, n: usize) -> PathBuf {
        let s = staging_dir(library);
        std::fs::create_dir_all(&s).unwrap();
        for i in 0..n {
            std::fs::write(s.join(format!("{prefix}-{i:03}.mp3")), prefix).unwrap();
        }
        s
    }

    #[test]
    fn concurrent_replaces_end_as_exactly_one_upload() {
        let root = tempfile::tempdir().unwrap();
        let library = root.path().join("songs");
        std::fs::create_dir_all(&library).unwrap();
        std::fs::write(library.join("old.mp3"), b"old").unwrap();
        std::fs::write(library.join("notes.txt"), b"mine").unwrap();
        for round in 0..20 {
            let barrier = Arc::new(Barrier::new(2));
            let threads: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|p| {
                    let (library, barrier) = (library.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let s = stage(&library, p, 40);
                        barrier.wait();
                        replace(&s, &library).unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let got = names(&library);
            let songs: Vec<&String> = got.iter().filter(|n| n.ends_with(".mp3")).collect();
            assert_eq!(songs.len(), 40, "round {round}: {got:?}");
            let first = &songs[0][..1];
            assert!(
                songs.iter().all(|n| n.starts_with(first)),
                "round {round}: two uploads interleaved: {got:?}"
            );
            assert!(got.contains(&"notes.txt".to_string()), "{got:?}");
        }
        // No staging folder left behind.
        assert_eq!(names(root.path()), ["songs"]);

        // What a crash mid-upload leaves is swept at start; the library is not touched.
        let cut_off = stage(&library, "c", 3);
        assert!(cut_off.exists());
        assert_eq!(sweep_staging(&library), 1);
        assert_eq!(names(root.path()), ["songs"]);
        assert_eq!(list(&library).len(), 40);
    }

    #[test]
    fn a_failed_swap_leaves_the_old_library_and_a_taken_song_survives_a_replace() {
        let root = tempfile::tempdir().unwrap();
        let library = root.path().join("songs");
        let s = stage(&library, "old", 2);
        replace(&s, &library).unwrap();
        assert_eq!(names(&library), ["old-000.mp3", "old-001.mp3"]);

        let job = root.path().join("jobs").join("j1").join("music");
        let songs = list(&library);
        let taken = take_song(&songs[0], &job).unwrap();
        assert_eq!(taken, job.join("old-000.mp3"));

        // A staging folder that vanished before the swap: an error, the library as it was.
        let gone = staging_dir(&library);
        let e = replace(&gone, &library).unwrap_err();
        assert!(e.to_string().contains("cannot swap"), "{e}");
        assert_eq!(names(&library), ["old-000.mp3", "old-001.mp3"]);

        let s = stage(&library, "new", 1);
        replace(&s, &library).unwrap();
        assert_eq!(names(&library), ["new-000.mp3"]);
        // The job's song is still there, whole.
        assert_eq!(std::fs::read(&taken).unwrap(), b"old");
        // A song whose name vanished is NotFound (the caller chooses again).
        let e = take_song(&songs[1], &job).unwrap_err();
        assert_eq!(e.io().kind(), std::io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn a_crash_inside_the_two_rename_swap_is_mended_at_start() {
        let root = tempfile::tempdir().unwrap();
        let library = root.path().join("songs");
        let s = stage(&library, "old", 2);
        replace(&s, &library).unwrap();
        std::fs::write(library.join("notes.txt"), "mine").unwrap();
        let aside = root.path().join(format!("{ASIDE_PREFIX}crash"));

        // Cut off after the first rename: no library, the old one aside, the upload staged.
        std::fs::rename(&library, &aside).unwrap();
        stage(&library, "new", 1);
        assert_eq!(sweep_staging(&library), 2);
        assert_eq!(names(root.path()), ["songs"]);
        assert_eq!(names(&library), ["notes.txt", "old-000.mp3", "old-001.mp3"]);

        // Cut off after the second: the new library in place, the old one still aside.
        let s = stage(&library, "new", 1);
        std::fs::rename(&library, &aside).unwrap();
        std::fs::rename(&s, &library).unwrap();
        assert_eq!(sweep_staging(&library), 1);
        assert_eq!(names(root.path()), ["songs"]);
        assert_eq!(names(&library), ["new-000.mp3", "notes.txt"]);
        assert_eq!(std::fs::read(library.join("notes.txt")).unwrap(), b"mine");
    }
}
