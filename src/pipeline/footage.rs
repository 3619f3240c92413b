//! Footage stage: one clip per search term, from a [`FootageProvider`]; a request that brings
//! its own `footage` skips the providers (see `own_media`).
//!
//! Providers here: `local` (video files of `footage.local_dir`, matched to terms by file name, never
//! the same file twice) and `generated` (moving backgrounds made by ffmpeg, see `backgrounds`:
//! gradients, moving light, aurora, bokeh, in a palette chosen from the subject; the recipe and its
//! motion seeded by the term, so a subject and term always give the same clip). With `generated` and a `local_dir`, local clips come first and
//! generated ones fill the rest. `pexels` ([`PexelsFootage`]) searches Pexels per term, downloads
//! through the shared clip cache and places each clip into the job's folder; it falls back to
//! generated backgrounds (with a warning) when Pexels is not configured or fails for good, unless
//! `footage.fallback` is off. Generated clips are small
//! (a quarter of the render size or less) and `seconds_per_clip` long: the render scales and loops
//! them. Events: `Searching for footage: <term>` {searchTerm} per term, then `Downloaded N video
//! clips` (success) {clipCount} or the warning `Only found F video clips, requested R` {found,
//! requested}. No clip at all fails the stage.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::info;

use super::backgrounds::{self, Palette, RECIPES};
use super::online::{self, CallSite, Failover};
use super::process::{self, Tool};
use super::text::seed_of;
use super::{EventSink, JobContext, LocalBoxFuture, StageError, StopSignal};
use crate::config::{Config, FootageSource};
use crate::event::NewEvent;
use crate::providers::cache::ClipCache;
use crate::providers::pexels::{take_unseen, Pexels};
use crate::providers::{ProviderError, RetryPolicy};

/// File extensions taken as video clips in a local folder.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "mkv", "webm", "m4v", "avi"];

/// Something that finds one clip for a search term.
pub trait FootageProvider {
    fn name(&self) -> &'static str;
    /// A clip for `term`, the `index`-th of the job, written under `dir` if it must be made; `None`
    /// when the provider has nothing (more) for it.
    fn fetch<'a>(
        &'a self,
        stop: &'a StopSignal,
        term: &'a str,
        index: usize,
        dir: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<PathBuf>, StageError>>;
}

/// Clips from a folder and its subfolders (up to [`LOCAL_DEPTH`] levels, at most [`LOCAL_FILES`]
/// files), matched to a term by file name and folder names, each used once.
///
/// Clips fetched at once pick in the order of their index (clip `i` waits until every lower index
/// has picked), so a job's clips are the same whatever order the fetches run in.
pub struct LocalFolder {
    dir: PathBuf,
    used: RefCell<HashSet<PathBuf>>,
    /// The lowest index that has not picked yet.
    next: Cell<usize>,
    turn: Notify,
}

/// How deep [`LocalFolder`] looks below its folder.
pub const LOCAL_DEPTH: usize = 4;
/// How many video files [`LocalFolder`] considers at most (in name order).
pub const LOCAL_FILES: usize = 10_000;

impl LocalFolder {
    pub fn new(dir: impl Into<PathBuf>) -> LocalFolder {
        LocalFolder {
            dir: dir.into(),
            used: RefCell::new(HashSet::new()),
            next: Cell::new(0),
            turn: Notify::new(),
        }
    }

    /// Resolves once clip `index` may pick: every lower index has.
    async fn my_turn(&self, stop: &StopSignal, index: usize) -> Result<(), StageError> {
        loop {
            let notified = self.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if index <= self.next.get() {
                return Ok(());
            }
            tokio::select! {
                () = notified => {}
                reason = stop.stopped() => return Err(StageError::Stopped(reason)),
            }
        }
    }

    async fn list(&self) -> Result<Vec<PathBuf>, StageError> {
        let dir = self.dir.clone();
        let listed = tokio::task::spawn_blocking(move || list_videos(&dir))
            .await
            .map_err(|e| StageError::failed("FootageFolder", format!("listing stopped: {e}")))?;
        listed.map_err(|e| {
            StageError::failed(
                "FootageFolder",
                format!(
                    "cannot read the footage folder {} (footage.local_dir): {e}",
                    self.dir.display()
                ),
            )
        })
    }
}

/// Whether `path` names a video file by its extension.
pub fn is_video(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The video files under `root` (breadth first, hidden entries skipped, sorted); an unreadable
/// subfolder is skipped, an unreadable `root` is an error.
fn list_videos(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut level = vec![root.to_path_buf()];
    for depth in 0..=LOCAL_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if depth == 0 => return Err(e),
                Err(_) => continue,
            };
            for entry in rd.flatten() {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                // Follows symlinks: the folder is the operator's own.
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => next.push(path),
                    Ok(m) if m.is_file() && is_video(&path) => files.push(path),
                    _ => {}
                }
            }
        }
        if files.len() >= LOCAL_FILES {
            break;
        }
        level = next;
    }
    files.sort();
    files.truncate(LOCAL_FILES);
    Ok(files)
}

/// How well a clip matches a term: two points for each of the term's words (longer than two
/// letters) in the file name, one for each found only in the names of its folders below `root`.
fn name_score(root: &Path, path: &Path, term: &str) -> usize {
    let lower = |s: &std::ffi::OsStr| s.to_string_lossy().to_lowercase();
    let name = path.file_stem().map(lower).unwrap_or_default();
    let folders: Vec<String> = path
        .parent()
        .and_then(|p| p.strip_prefix(root).ok())
        .map(|rel| rel.iter().map(lower).collect())
        .unwrap_or_default();
    term.split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() > 2)
        .map(|w| {
            if name.contains(&w) {
                2
            } else if folders.iter().any(|f| f.contains(&w)) {
                1
            } else {
                0
            }
        })
        .sum()
}

impl FootageProvider for LocalFolder {
    fn name(&self) -> &'static str {
        "local"
    }

    fn fetch<'a>(
        &'a self,
        stop: &'a StopSignal,
        term: &'a str,
        index: usize,
        _dir: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<PathBuf>, StageError>> {
        Box::pin(async move {
            self.my_turn(stop, index).await?;
            let files = self.list().await;
            // This index has had its turn, found a clip or not.
            self.next.set(self.next.get().max(index + 1));
            self.turn.notify_waiters();
            let files = files?;
            let mut used = self.used.borrow_mut();
            let best = files
                .iter()
                .filter(|f| !used.contains(*f))
                .enumerate()
                // The best name match; the first file in name order when none matches.
                .max_by_key(|(i, f)| (name_score(&self.dir, f, term), std::cmp::Reverse(*i)))
                .map(|(_, f)| f.clone());
            if let Some(f) = &best {
                used.insert(f.clone());
            }
            Ok(best)
        })
    }
}

/// Moving backgrounds made by ffmpeg (see `backgrounds`), in the palette of the video's subject.
#[derive(Clone, Debug)]
pub struct Generated {
    tool: Tool,
    width: u32,
    height: u32,
    fps: u32,
    seconds: f64,
    palette: Palette,
    /// The subject's seed: the first clip's recipe.
    subject_seed: u64,
}

/// The size generated clips are made at: a quarter of the render's height, between 96 and 480
/// pixels high (never above the render), the render's aspect, even sides.
pub fn generated_size(w: u32, h: u32) -> (u32, u32) {
    let gh = (h / 4).clamp(96.min(h), 480.min(h)) & !1;
    let gw = ((u64::from(gh) * u64::from(w) / u64::from(h.max(1))) as u32).max(2) & !1;
    (gw, gh.max(2))
}

impl Generated {
    /// Backgrounds for a video about `subject` of `frame` (width, height).
    pub fn new(cfg: &Config, frame: (u32, u32), subject: &str) -> Generated {
        let (width, height) = generated_size(frame.0, frame.1);
        Generated {
            tool: Tool::ffmpeg(cfg),
            width,
            height,
            fps: cfg.render.fps,
            seconds: cfg.footage.seconds_per_clip,
            palette: backgrounds::palette_for(subject, seed_of(subject)),
            subject_seed: seed_of(subject),
        }
    }

    /// The palette this job's backgrounds use.
    #[cfg(test)]
    pub fn palette(&self) -> &Palette {
        &self.palette
    }

    /// ffmpeg arguments that make background `recipe` for `seed` into `out`.
    pub fn args(&self, recipe: usize, seed: u64, out: &Path) -> Vec<String> {
        let mut a: Vec<String> = process::FFMPEG_QUIET.map(String::from).to_vec();
        a.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            backgrounds::source(
                recipe,
                &self.palette,
                seed,
                self.width,
                self.height,
                self.fps,
            ),
            "-t".into(),
            format!("{:.3}", self.seconds),
            "-an".into(),
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            "ultrafast".into(),
            "-crf".into(),
            "20".into(),
            "-pix_fmt".into(),
            "yuv420p".into(),
            out.display().to_string(),
        ]);
        a
    }
}

impl FootageProvider for Generated {
    fn name(&self) -> &'static str {
        "generated"
    }

    fn fetch<'a>(
        &'a self,
        stop: &'a StopSignal,
        term: &'a str,
        index: usize,
        dir: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<PathBuf>, StageError>> {
        Box::pin(async move {
            let seed = seed_of(term);
            // Consecutive clips take the recipes in turn, so the video keeps changing look and
            // shows every one.
            let recipe = (self.subject_seed % RECIPES as u64) as usize + index;
            let out = dir.join(format!("generated-{index:02}.mp4"));
            process::run(stop, &self.tool, &self.args(recipe, seed, &out)).await?;
            Ok(Some(out))
        })
    }
}

/// Local clips first, generated ones for the rest.
pub struct LocalThenGenerated {
    local: LocalFolder,
    generated: Generated,
}

impl FootageProvider for LocalThenGenerated {
    fn name(&self) -> &'static str {
        "local+generated"
    }

    fn fetch<'a>(
        &'a self,
        stop: &'a StopSignal,
        term: &'a str,
        index: usize,
        dir: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<PathBuf>, StageError>> {
        Box::pin(async move {
            match self.local.fetch(stop, term, index, dir).await? {
                Some(p) => Ok(Some(p)),
                None => self.generated.fetch(stop, term, index, dir).await,
            }
        })
    }
}

/// Stock footage from Pexels: one search per term, the first video not used yet by this job, fetched
/// through the shared clip cache and placed (hard-linked) into the job's folder. Each call is retried
/// with a warning event per retry. When Pexels fails for good and `footage.fallback` is on, the clip
/// of that term and of every later term is a generated background (one warning says so); with the
/// fallback off the stage fails {stage: footage, provider: pexels}.
pub struct PexelsFootage {
    pexels: Pexels,
    cache: Arc<ClipCache>,
    policy: RetryPolicy,
    events: Rc<dyn EventSink>,
    seen: RefCell<HashSet<u64>>,
    /// Stands in once Pexels has failed for good; `None` when the fallback is off.
    fallback: Option<Generated>,
    failover: Failover,
}

impl PexelsFootage {
    async fn search_and_fetch(
        &self,
        stop: &StopSignal,
        term: &str,
        index: usize,
        dir: &Path,
    ) -> Result<Result<Option<PathBuf>, ProviderError>, StageError> {
        let site = CallSite {
            events: self.events.as_ref(),
            stop,
            stage: "footage",
            provider: online::PEXELS,
        };
        let found = match online::call(site, &self.policy, |_| self.pexels.search(term)).await? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let Some(pick) = take_unseen(&found, &mut self.seen.borrow_mut()) else {
            return Ok(Ok(None));
        };
        let clip = match online::call(site, &self.policy, |_| {
            self.pexels.fetch(&self.cache, &pick)
        })
        .await?
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let ext = clip
            .path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("mp4")
            .to_string();
        let dest = dir.join(format!("pexels-{index:02}.{ext}"));
        if let Err(e) = ClipCache::place(&clip.path, &dest).await {
            return Ok(Err(e));
        }
        info!(
            stage = "footage",
            video = pick.video_id,
            downloaded = clip.downloaded,
            bytes = clip.bytes,
            "pexels clip ready"
        );
        Ok(Ok(Some(dest)))
    }
}

impl FootageProvider for PexelsFootage {
    fn name(&self) -> &'static str {
        "Pexels"
    }

    fn fetch<'a>(
        &'a self,
        stop: &'a StopSignal,
        term: &'a str,
        index: usize,
        dir: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<PathBuf>, StageError>> {
        Box::pin(async move {
            if self.failover.online() {
                match self.search_and_fetch(stop, term, index, dir).await? {
                    Ok(clip) => return Ok(clip),
                    Err(e) => self.failover.give_up(self.events.as_ref(), &e).await?,
                }
            }
            match &self.fallback {
                Some(g) => g.fetch(stop, term, index, dir).await,
                None => Ok(None),
            }
        })
    }
}

/// The provider for `cfg`, and a warning when it is a fallback.
fn choose_provider(
    cfg: &Config,
    frame: (u32, u32),
    subject: &str,
    events: &Rc<dyn EventSink>,
) -> Result<(Box<dyn FootageProvider>, Option<NewEvent>), StageError> {
    let f = &cfg.footage;
    match f.provider {
        FootageSource::Local => Ok((Box::new(LocalFolder::new(&f.local_dir)), None)),
        FootageSource::Generated if !f.local_dir.is_empty() => Ok((
            Box::new(LocalThenGenerated {
                local: LocalFolder::new(&f.local_dir),
                generated: Generated::new(cfg, frame, subject),
            }),
            None,
        )),
        FootageSource::Generated => Ok((Box::new(Generated::new(cfg, frame, subject)), None)),
        FootageSource::Pexels => match Pexels::from_config(f) {
            Ok(pexels) => Ok((
                Box::new(PexelsFootage {
                    pexels,
                    cache: ClipCache::for_config(cfg),
                    policy: RetryPolicy::for_provider(
                        f.retries,
                        Duration::from_secs(f.request_timeout_secs.max(1)),
                    ),
                    events: events.clone(),
                    seen: RefCell::new(HashSet::new()),
                    fallback: f.fallback.then(|| Generated::new(cfg, frame, subject)),
                    failover: Failover::new(
                        "footage",
                        online::PEXELS,
                        f.fallback
                            .then_some("Using generated backgrounds for the remaining clips."),
                    ),
                }),
                None,
            )),
            Err(e) if f.fallback => Ok((
                Box::new(Generated::new(cfg, frame, subject)),
                Some(online::fallback_warning(
                    &e,
                    "Using generated backgrounds instead.",
                    "footage",
                    online::PEXELS,
                )),
            )),
            Err(e) => Err(StageError::provider(online::PEXELS, &e)),
        },
    }
}

/// Clips made or found at once.
const PARALLEL_FETCHES: usize = 2;

/// The footage stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    if !cx.request.footage.is_empty() {
        return super::own_media::footage_stage(cx).await;
    }
    let cfg = cx.config.clone();
    let (provider, warning) =
        choose_provider(&cfg, cx.frame(), &cx.request.video_subject, &cx.events)?;
    if let Some(w) = warning {
        cx.emit("footage", w).await?;
    }
    let requested = cfg.footage.clips.max(1) as usize;
    let mut terms = cx.artifacts.search_terms.clone();
    if terms.is_empty() {
        terms.push(cx.request.video_subject.clone());
    }
    // One clip per term; a short term list is cycled.
    let terms: Vec<String> = (0..requested)
        .map(|i| terms[i % terms.len()].clone())
        .collect();
    let dir = cx.work_dir.join("footage");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| StageError::failed("Io", format!("{}: {e}", dir.display())))?;

    let cxr: &JobContext = cx;
    let provider = provider.as_ref();
    let dir_ref = dir.as_path();
    let fetches = terms.iter().enumerate().map(|(i, term)| async move {
        cxr.stop.check()?;
        cxr.emit(
            "footage",
            NewEvent::info(format!("Searching for footage: {term}"))
                .with_payload(json!({ "searchTerm": term })),
        )
        .await?;
        provider.fetch(&cxr.stop, term, i, dir_ref).await
    });
    let found: Vec<Option<PathBuf>> = stream::iter(fetches)
        .buffered(PARALLEL_FETCHES)
        .try_collect()
        .await?;
    cx.stop.check()?;
    let clips: Vec<PathBuf> = found.into_iter().flatten().collect();
    if clips.is_empty() {
        return Err(StageError::failed(
            "NoFootage",
            format!("no video clips found ({} provider)", provider.name()),
        ));
    }
    if clips.len() < requested {
        cx.emit(
            "footage",
            NewEvent::warning(format!(
                "Only found {} video clips, requested {requested}",
                clips.len()
            ))
            .with_payload(json!({ "found": clips.len(), "requested": requested })),
        )
        .await?;
    } else {
        cx.emit(
            "footage",
            NewEvent::success(format!("Downloaded {} video clips", clips.len()))
                .with_payload(json!({ "clipCount": clips.len() })),
        )
        .await?;
    }
    info!(job = %cx.job.0, stage = "footage", clips = clips.len(), provider = provider.name(), "footage ready");
    cx.artifacts.clips = clips;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sizes_are_small_even_and_keep_the_aspect() {
        assert_eq!(generated_size(1080, 1920), (270, 480));
        assert_eq!(generated_size(180, 320), (54, 96));
        let (w, h) = generated_size(720, 1280);
        assert_eq!((w % 2, h % 2), (0, 0));
        assert_eq!(h, 320);
    }

    /// Gray pixels of frame `n` of `clip`, scaled to `w`x`h` (an area average: grain cancels out).
    fn gray_frame(clip: &Path, n: u32, w: u32, h: u32) -> Vec<u8> {
        let o = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(clip)
            .args([
                "-vf",
                &format!("select=eq(n\\,{n}),scale={w}:{h}:flags=area"),
                "-frames:v",
                "1",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "gray",
                "-",
            ])
            .output()
            .expect("ffmpeg must be installed");
        o.stdout
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.len().max(1) as f64
    }

    #[tokio::test]
    async fn every_recipe_makes_a_smooth_moving_clip_in_the_subjects_palette() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.render.width = 180;
        cfg.render.height = 320;
        cfg.footage.seconds_per_clip = 2.0;
        let g = Generated::new(&cfg, (360, 640), "Why octopuses have three hearts");
        assert_eq!(g.palette().name, "ocean");
        let (_h, stop) = StopSignal::pair();
        for recipe in 0..RECIPES {
            let out = dir.path().join(format!("r{recipe}.mp4"));
            process::run(&stop, &g.tool, &g.args(recipe, 12345 + recipe as u64, &out))
                .await
                .unwrap_or_else(|e| panic!("recipe {recipe}: {e}"));
            // It moves: the first and last frames differ beyond the grain.
            let (first, last) = (gray_frame(&out, 0, 9, 16), gray_frame(&out, 59, 9, 16));
            assert!(
                !first.is_empty() && first.len() == last.len(),
                "recipe {recipe}"
            );
            let moved = mean_abs_diff(&first, &last);
            if let Some(keep) = std::env::var_os("REELSMITH_KEEP_BACKGROUNDS") {
                let _ = std::fs::copy(&out, Path::new(&keep).join(format!("r{recipe}.mp4")));
            }
            // It is smooth, not a pattern: neighbouring pixels are close.
            let full = gray_frame(&out, 30, g.width, g.height);
            let w = g.width as usize;
            let (left, right): (Vec<u8>, Vec<u8>) = full
                .chunks(w)
                .flat_map(|row| row.windows(2).map(|p| (p[0], p[1])))
                .unzip();
            let rough = mean_abs_diff(&left, &right);
            eprintln!("recipe {recipe}: moved {moved:.2}, roughness {rough:.2}");
            assert!(moved > 0.5, "recipe {recipe} does not move ({moved:.2})");
            assert!(rough < 4.0, "recipe {recipe} is not smooth ({rough:.2})");
        }
    }

    #[tokio::test]
    async fn local_clips_go_in_index_order_whatever_order_the_fetches_run_in() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a-city.mp4", "b-reef.mp4", "c-sky.mp4"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let local = LocalFolder::new(dir.path());
        let (_h, stop) = StopSignal::pair();
        let name =
            |p: Option<PathBuf>| p.map(|p| p.file_name().unwrap().to_string_lossy().to_string());
        // Clip 2 and clip 1 start before clip 0; none of the terms matches a name.
        let (c2, c1, c0) = tokio::join!(
            local.fetch(&stop, "anything", 2, dir.path()),
            local.fetch(&stop, "anything", 1, dir.path()),
            local.fetch(&stop, "anything", 0, dir.path()),
        );
        assert_eq!(
            (name(c0.unwrap()), name(c1.unwrap()), name(c2.unwrap())),
            (
                Some("a-city.mp4".into()),
                Some("b-reef.mp4".into()),
                Some("c-sky.mp4".into())
            )
        );
    }

    #[tokio::test]
    async fn local_folder_matches_names_and_never_repeats() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "a-city.mp4",
            "b-octopus-reef.MOV",
            "c-sky.webm",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let local = LocalFolder::new(dir.path());
        let (_h, stop) = StopSignal::pair();
        let get = |t: &'static str| {
            let local = &local;
            let stop = &stop;
            let d = dir.path();
            async move {
                local
                    .fetch(stop, t, 0, d)
                    .await
                    .unwrap()
                    .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            }
        };
        assert_eq!(get("octopus").await.as_deref(), Some("b-octopus-reef.MOV"));
        assert_eq!(get("octopus").await.as_deref(), Some("a-city.mp4"));
        assert_eq!(get("blue sky").await.as_deref(), Some("c-sky.webm"));
        assert_eq!(get("anything").await, None);
    }

    #[tokio::test]
    async fn local_subfolders_match_by_folder_name_after_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (d, n) in [
            ("ocean/octopus", "clip1.mp4"),
            ("ocean", "reef-octopus.mp4"),
            ("space", "stars.mkv"),
            (".hidden", "octopus.mp4"),
            ("a/b/c/d/e/f", "octopus-deep.mp4"),
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join(n), b"x").unwrap();
        }
        let local = LocalFolder::new(root);
        let (_h, stop) = StopSignal::pair();
        let name = |p: Option<PathBuf>| p.map(|p| p.strip_prefix(root).unwrap().to_path_buf());
        let f = |t| local.fetch(&stop, t, 0, root);
        // The file name first, then the folder name; hidden and too deep files are never seen.
        assert_eq!(
            name(f("octopus").await.unwrap()),
            Some("ocean/reef-octopus.mp4".into())
        );
        assert_eq!(
            name(f("octopus").await.unwrap()),
            Some("ocean/octopus/clip1.mp4".into())
        );
        assert_eq!(
            name(f("deep space").await.unwrap()),
            Some("space/stars.mkv".into())
        );
        assert_eq!(f("octopus").await.unwrap(), None);
        // With generated backgrounds, the folder's clips come first, generated ones fill the rest.
        let mut cfg = Config::default();
        cfg.footage.seconds_per_clip = 0.5;
        let both = LocalThenGenerated {
            local: LocalFolder::new(root.join("space")),
            generated: Generated::new(&cfg, (180, 320), "stars"),
        };
        let out = tempfile::tempdir().unwrap();
        let first = both.fetch(&stop, "stars", 0, out.path()).await.unwrap();
        assert_eq!(first, Some(root.join("space/stars.mkv")));
        let second = both.fetch(&stop, "stars", 1, out.path()).await.unwrap();
        assert_eq!(second, Some(out.path().join("generated-01.mp4")));
        assert!(
            out.path()
                .join("generated-01.mp4")
                .metadata()
                .unwrap()
                .len()
                > 0
        );
        let missing = LocalFolder::new(root.join("nope"));
        assert!(missing.fetch(&stop, "x", 0, root).await.is_err());
    }
}
