//! Bring your own media: the request's `footage` (local paths or http(s) URLs) and `music` (a song
//! of the library, a local path or a URL).
//!
//! Invariants: no path outside `footage.allowed_dirs` is ever opened. A path must be absolute,
//! without `.` or `..` components, lexically inside an allowed folder before anything touches the
//! disk, and still inside one (canonical form) once symlinks are resolved; it is checked when the
//! request is parsed ([`check_footage`], [`check_music`]: a 400 naming the field and index) and
//! again when the stage runs ([`open_inside`]), which opens the canonical path with `openat2`
//! beneath its allowed folder through no symbolic link (`O_NOFOLLOW` on kernels without it) and
//! takes the opened file into the job's folder (a hard link of that inode, else a copy), so the
//! render reads only the job's own copy. URLs are fetched through the shared clip cache, capped at
//! `footage.download_max_bytes`; a failed download fails the stage, naming the field and index.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tracing::info;

use super::{JobContext, StageError};
use crate::config::Config;
use crate::event::NewEvent;
use crate::providers::cache::ClipCache;
use crate::providers::http::{HttpClient, HttpRequest};

/// Most `footage` items one request may name.
pub const MAX_FOOTAGE: usize = 20;
/// File extensions taken as audio for `music`.
pub const AUDIO_EXTENSIONS: &[&str] = &["mp3", "m4a", "aac", "wav", "ogg", "opus", "flac"];

/// What one `footage` or `music` item names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSource {
    Url(String),
    Path(PathBuf),
    /// A song of the library, by file name (with or without `.mp3`).
    Song(String),
}

impl MediaSource {
    /// Classifies an item: an http(s) URL, an absolute path, else (music only) a song name.
    pub fn of(raw: &str) -> MediaSource {
        let lower = raw.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") || raw.contains("://") {
            MediaSource::Url(raw.to_string())
        } else if raw.starts_with('/') || raw.contains('/') {
            MediaSource::Path(PathBuf::from(raw))
        } else {
            MediaSource::Song(raw.to_string())
        }
    }
}

/// The allowed folders of `cfg`, each as configured and in canonical form (when it exists).
fn roots(cfg: &Config) -> Vec<(PathBuf, Option<PathBuf>)> {
    cfg.footage
        .allowed_dirs
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            let p = PathBuf::from(d.trim());
            let c = std::fs::canonicalize(&p).ok();
            (p, c)
        })
        .collect()
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
}

/// The canonical path of `raw` if it may be read: absolute, no `.`/`..`, lexically inside an
/// allowed folder (checked before any file system access), with one of `exts`, and its canonical
/// form (symlinks resolved) still inside an allowed folder and a regular file. The error says why,
/// without the field name.
pub fn check_path(raw: &str, cfg: &Config, exts: &[&str]) -> Result<PathBuf, String> {
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(format!("`{raw}` is not an absolute path"));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("`{raw}` may not contain `.` or `..`"));
    }
    let roots = roots(cfg);
    if roots.is_empty() {
        return Err(format!(
            "`{raw}`: local paths are not allowed (footage.allowed_dirs is empty)"
        ));
    }
    let lexically_inside = roots
        .iter()
        .any(|(r, c)| p.starts_with(r) || c.as_ref().is_some_and(|c| p.starts_with(c)));
    if !lexically_inside {
        return Err(format!("`{raw}` is outside footage.allowed_dirs"));
    }
    if !has_extension(p, exts) {
        return Err(format!(
            "`{raw}` does not end in one of .{}",
            exts.join(", .")
        ));
    }
    let canonical = std::fs::canonicalize(p).map_err(|e| format!("`{raw}`: {e}"))?;
    if !roots
        .iter()
        .any(|(_, c)| c.as_ref().is_some_and(|c| canonical.starts_with(c)))
    {
        return Err(format!(
            "`{raw}` leads outside footage.allowed_dirs (through a symbolic link)"
        ));
    }
    if !has_extension(&canonical, exts) {
        return Err(format!(
            "`{raw}` leads to a file that does not end in one of .{}",
            exts.join(", .")
        ));
    }
    match std::fs::metadata(&canonical) {
        Ok(m) if m.is_file() => Ok(canonical),
        Ok(_) => Err(format!("`{raw}` is not a regular file")),
        Err(e) => Err(format!("`{raw}`: {e}")),
    }
}

fn check_url(raw: &str) -> Result<(), String> {
    match crate::config::webhook_url_problem(raw) {
        None => Ok(()),
        Some(problem) => Err(format!("`{raw}` {problem}")),
    }
}

/// Checks the request's `footage` items; answers them in stored form (URLs as given, paths
/// canonical). Errors name `footage[i]`.
pub fn check_footage(items: &[String], cfg: &Config) -> Result<Vec<String>, String> {
    if items.len() > MAX_FOOTAGE {
        return Err(format!("footage names more than {MAX_FOOTAGE} clips"));
    }
    let exts = super::footage::VIDEO_EXTENSIONS;
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let raw = raw.trim();
            let stored = match MediaSource::of(raw) {
                MediaSource::Url(u) => check_url(&u).map(|()| u),
                MediaSource::Path(_) => check_path(raw, cfg, exts).map(|p| p.display().to_string()),
                MediaSource::Song(_) if raw.is_empty() => Err("is empty".to_string()),
                MediaSource::Song(_) => Err(format!(
                    "`{raw}` is neither an http(s) URL nor an absolute path"
                )),
            };
            stored.map_err(|e| format!("footage[{i}] {e}."))
        })
        .collect()
}

/// The library file of song `name`: `name` itself or `name.mp3`, directly in `library`.
fn song_in(library: &Path, name: &str) -> Option<PathBuf> {
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return None;
    }
    let songs = crate::songs::list(library);
    songs.into_iter().find(|s| {
        s.file_name().is_some_and(|f| f == name) || s.file_stem().is_some_and(|f| f == name)
    })
}

/// Checks the request's `music`; answers its stored form. Errors name `music`.
pub fn check_music(raw: &str, cfg: &Config) -> Result<String, String> {
    let raw = raw.trim();
    let r = match MediaSource::of(raw) {
        MediaSource::Url(u) => check_url(&u).map(|()| u),
        MediaSource::Path(_) => {
            check_path(raw, cfg, AUDIO_EXTENSIONS).map(|p| p.display().to_string())
        }
        MediaSource::Song(name) => match song_in(&cfg.songs_dir(), &name) {
            Some(_) => Ok(name),
            None => Err(format!(
                "`{name}` is not a song of the library (GET /api/songs lists them)"
            )),
        },
    };
    r.map_err(|e| format!("music {e}."))
}

/// Opens `raw` after checking it again ([`check_path`]), with `O_NOFOLLOW`, and takes the opened
/// file to `dest` (a hard link of the opened inode through `/proc/self/fd`, else a copy).
pub fn open_inside(raw: &str, cfg: &Config, exts: &[&str], dest: &Path) -> Result<u64, String> {
    let canonical = check_path(raw, cfg, exts)?;
    let root = roots(cfg)
        .into_iter()
        .filter_map(|(_, c)| c)
        .find(|c| canonical.starts_with(c))
        .ok_or_else(|| format!("`{raw}` is outside footage.allowed_dirs"))?;
    let mut file = match open_beneath(&root, &canonical) {
        Ok(f) => f,
        // A kernel without openat2 (before 5.6): the final component is still not followed.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&canonical)
            .map_err(|e| format!("`{raw}`: {e}"))?,
        Err(e) => return Err(format!("`{raw}`: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("`{raw}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{raw}` is not a regular file"));
    }
    let _ = std::fs::remove_file(dest);
    if link_fd(&file, dest).is_ok() {
        return Ok(meta.len());
    }
    let mut out = std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    io::copy(&mut file, &mut out).map_err(|e| format!("copying `{raw}`: {e}"))
}

/// Opens `path` (canonical, inside `root`) for reading with `openat2` relative to `root`,
/// resolving beneath it and through no symbolic link at all: a folder swapped for a link after the
/// check cannot lead the open outside.
fn open_beneath(root: &Path, path: &Path) -> io::Result<std::fs::File> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::FromRawFd;
    let rel = path
        .strip_prefix(root)
        .map_err(|_| io::Error::from(io::ErrorKind::PermissionDenied))?;
    let dir = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    let rel = CString::new(rel.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain data; zeroed is a valid value before the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    use std::os::unix::io::AsRawFd;
    // SAFETY: the fd, the NUL-terminated path and the struct are valid for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel gave us this new descriptor; the File owns it from here.
    Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
}

/// Hard-links the opened `file` to `dest` (`linkat` of `/proc/self/fd/N`, following that one
/// link: the inode opened, whatever its path has become since).
fn link_fd(file: &std::fs::File, dest: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(dest.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Downloads `url` through the clip cache (capped at `footage.download_max_bytes`) and places it
/// at `dest`. `field` names the item in errors.
async fn fetch_url(cfg: &Config, url: &str, dest: &Path, field: &str) -> Result<u64, StageError> {
    let http =
        HttpClient::new().map_err(|e| StageError::failed("OwnMedia", format!("{field}: {e}")))?;
    let cache = ClipCache::for_config(cfg);
    let timeout = Duration::from_secs(cfg.footage.download_timeout_secs);
    let max = cfg.footage.download_max_bytes;
    let clip = cache
        .fetch(url, |part| {
            let http = &http;
            async move {
                let req = HttpRequest::get(url).timeout(timeout);
                http.download(&req, &part, max)
                    .await
                    .map_err(|e| crate::providers::ProviderError::http(&OWN_MEDIA, e))
            }
        })
        .await
        .map_err(|e| {
            let message = format!("{field} `{url}` could not be fetched: {e}");
            if e.retryable() {
                StageError::retryable("OwnMediaDownload", message)
            } else {
                StageError::failed("OwnMediaDownload", message)
            }
        })?;
    ClipCache::place(&clip.path, dest)
        .await
        .map_err(|e| StageError::failed("Io", format!("{field}: {e}")))?;
    Ok(clip.bytes)
}

/// The service named in download errors.
pub const OWN_MEDIA: crate::providers::Service = crate::providers::Service {
    name: "Your media",
    unreachable: "check that the URL is reachable from the daemon",
    auth: "the URL must not need credentials",
};

fn extension(raw: &str, default: &str) -> String {
    let p = Path::new(raw.split(['?', '#']).next().unwrap_or(raw));
    p.extension()
        .and_then(|e| e.to_str())
        .filter(|e| (1..=5).contains(&e.len()) && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| default.to_string())
}

/// The footage stage for a request that brings its clips: each taken into `<job>/footage` in
/// order. Events: `Using your footage: <item>` {footage, index} per clip, then `Downloaded N video
/// clips` {clipCount}.
pub async fn footage_stage(cx: &mut JobContext) -> Result<(), StageError> {
    let dir = cx.work_dir.join("footage");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| StageError::failed("Io", format!("{}: {e}", dir.display())))?;
    let items = cx.request.footage.clone();
    let mut clips = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        cx.stop.check()?;
        let field = format!("footage[{i}]");
        cx.emit(
            "footage",
            NewEvent::info(format!("Using your footage: {raw}"))
                .with_payload(json!({ "footage": raw, "index": i })),
        )
        .await?;
        let dest = dir.join(format!("own-{i:02}.{}", extension(raw, "mp4")));
        let bytes = match MediaSource::of(raw) {
            MediaSource::Url(u) => fetch_url(&cx.config, &u, &dest, &field).await?,
            _ => {
                let (cfg, raw2, dest2) = (cx.config.clone(), raw.clone(), dest.clone());
                tokio::task::spawn_blocking(move || {
                    open_inside(&raw2, &cfg, super::footage::VIDEO_EXTENSIONS, &dest2)
                })
                .await
                .map_err(|e| StageError::failed("OwnMedia", format!("{field}: {e}")))?
                .map_err(|e| StageError::failed("OwnMedia", format!("{field} {e}")))?
            }
        };
        info!(job = %cx.job.0, stage = "footage", item = %raw, bytes, "own clip taken");
        clips.push(dest);
    }
    cx.emit(
        "footage",
        NewEvent::success(format!("Downloaded {} video clips", clips.len()))
            .with_payload(json!({ "clipCount": clips.len() })),
    )
    .await?;
    cx.artifacts.clips = clips;
    Ok(())
}

/// The music stage for a request that names its `music`: the song, path or URL taken into
/// `<job>/music`. Event: `Adding background music: <item>` {music}.
pub async fn music_stage(cx: &mut JobContext, raw: &str) -> Result<(), StageError> {
    cx.emit(
        "music",
        NewEvent::info(format!("Adding background music: {raw}"))
            .with_payload(json!({ "music": raw })),
    )
    .await?;
    let dir = cx.work_dir.join(super::music::SONG_DIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| StageError::failed("Io", format!("{}: {e}", dir.display())))?;
    let dest = dir.join(format!("own.{}", extension(raw, "mp3")));
    match MediaSource::of(raw) {
        MediaSource::Url(u) => {
            fetch_url(&cx.config, &u, &dest, "music").await?;
        }
        MediaSource::Path(_) => {
            let (cfg, raw2, dest2) = (cx.config.clone(), raw.to_string(), dest.clone());
            tokio::task::spawn_blocking(move || open_inside(&raw2, &cfg, AUDIO_EXTENSIONS, &dest2))
                .await
                .map_err(|e| StageError::failed("OwnMedia", format!("music: {e}")))?
                .map_err(|e| StageError::failed("OwnMedia", format!("music {e}")))?;
        }
        MediaSource::Song(name) => {
            let song = song_in(&cx.songs_dir, &name).ok_or_else(|| {
                StageError::failed(
                    "OwnMedia",
                    format!("music `{name}` is no longer a song of the library"),
                )
            })?;
            let own = tokio::task::spawn_blocking(move || crate::songs::take_song(&song, &dir))
                .await
                .map_err(|e| StageError::failed("Io", format!("the song task failed: {e}")))?
                .map_err(|e| StageError::failed("Io", e.to_string()))?;
            cx.artifacts.music = Some(own);
            return Ok(());
        }
    }
    cx.artifacts.music = Some(dest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(dir: &Path) -> Config {
        let mut cfg = Config::default();
        cfg.footage.allowed_dirs = vec![dir.display().to_string()];
        cfg
    }

    #[test]
    fn paths_must_stay_inside_the_allowed_folders() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let allowed = root.path().join("clips");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::write(allowed.join("sub/a.mp4"), b"x").unwrap();
        std::fs::write(outside.path().join("secret.mp4"), b"s").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.mp4"),
            allowed.join("escape.mp4"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), allowed.join("door")).unwrap();
        std::fs::write(allowed.join("notes.txt"), b"x").unwrap();
        let cfg = cfg_with(&allowed);
        let a = allowed.join("sub/a.mp4").display().to_string();
        let ok = check_footage(&[a.clone(), "https://example.com/v.mp4".into()], &cfg).unwrap();
        assert_eq!(
            ok[0],
            std::fs::canonicalize(&a).unwrap().display().to_string()
        );
        let bad = |raw: String, why: &str| {
            let e = check_footage(&[a.clone(), raw.clone()], &cfg).unwrap_err();
            assert!(
                e.starts_with("footage[1] ") && e.contains(why),
                "{raw}: {e}"
            );
        };
        bad(
            outside.path().join("secret.mp4").display().to_string(),
            "outside",
        );
        bad(format!("{}/sub/../../x.mp4", allowed.display()), "`..`");
        bad(
            allowed.join("escape.mp4").display().to_string(),
            "symbolic link",
        );
        bad(
            allowed.join("door/secret.mp4").display().to_string(),
            "symbolic link",
        );
        bad(allowed.join("notes.txt").display().to_string(), ".mp4");
        bad(
            allowed.join("missing.mp4").display().to_string(),
            "No such file",
        );
        bad("clips/a.mp4".into(), "absolute");
        bad("ftp://example.com/a.mp4".into(), "http://");
        bad("http://".into(), "not a valid URL");
        // The run-time check refuses the same escapes and takes an allowed file.
        let dest = root.path().join("taken.mp4");
        assert_eq!(open_inside(&a, &cfg, &["mp4"], &dest).unwrap(), 1);
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        let esc = allowed.join("escape.mp4").display().to_string();
        assert!(open_inside(&esc, &cfg, &["mp4"], &dest).is_err());
        // A folder swapped for a link after the check cannot lead the open outside.
        let canon_root = std::fs::canonicalize(&allowed).unwrap();
        assert!(open_beneath(&canon_root, &canon_root.join("sub/a.mp4")).is_ok());
        let e = open_beneath(&canon_root, &canon_root.join("door/secret.mp4")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        // Nothing allowed: every path is refused.
        let e = check_footage(&[a], &Config::default()).unwrap_err();
        assert!(e.contains("footage.allowed_dirs is empty"), "{e}");
    }

    #[test]
    fn music_is_a_song_name_a_path_or_a_url() {
        let root = tempfile::tempdir().unwrap();
        let songs = root.path().join("songs");
        std::fs::create_dir_all(&songs).unwrap();
        std::fs::write(songs.join("calm.mp3"), b"id3").unwrap();
        let mut cfg = cfg_with(root.path());
        cfg.music.songs_dir = songs.display().to_string();
        assert_eq!(check_music("calm", &cfg).unwrap(), "calm");
        assert_eq!(check_music("calm.mp3", &cfg).unwrap(), "calm.mp3");
        let e = check_music("loud", &cfg).unwrap_err();
        assert!(e.starts_with("music `loud` is not a song"), "{e}");
        let path = songs.join("calm.mp3").display().to_string();
        assert!(check_music(&path, &cfg).is_ok());
        assert!(check_music("/etc/passwd", &cfg)
            .unwrap_err()
            .contains("outside"));
        assert!(check_music("https://example.com/s.mp3", &cfg).is_ok());
    }
}
