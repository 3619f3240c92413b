//! Footage stage: one clip per search term, from a [`FootageProvider`].
//!
//! Providers here: `local` (video files of `footage.local_dir`, matched to terms by file name, never
//! the same file twice) and `generated` (moving backgrounds made by ffmpeg's lavfi sources:
//! gradients, fractals, cellular automata, noise, plasma; colours and pattern seeded by the term, so
//! a term always gives the same clip). With `generated` and a `local_dir`, local clips come first and
//! generated ones fill the rest. `pexels` ([`PexelsFootage`]) searches Pexels per term, downloads
//! through the shared clip cache and places each clip into the job's folder; it falls back to
//! generated backgrounds (with a warning) when Pexels is not configured or fails for good, unless
//! `footage.fallback` is off. Generated clips are small
//! (a quarter of the render size or less) and `seconds_per_clip` long: the render scales and loops
//! them. Events: `Searching for footage: <term>` {searchTerm} per term, then `Downloaded N video
//! clips` (success) {clipCount} or the warning `Only found F video clips, requested R` {found,
//! requested}. No clip at all fails the stage.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use tracing::info;

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

/// Clips from a folder, matched by file name, each used once.
pub struct LocalFolder {
    dir: PathBuf,
    used: RefCell<HashSet<PathBuf>>,
}

impl LocalFolder {
    pub fn new(dir: impl Into<PathBuf>) -> LocalFolder {
        LocalFolder {
            dir: dir.into(),
            used: RefCell::new(HashSet::new()),
        }
    }

    async fn list(&self) -> Result<Vec<PathBuf>, StageError> {
        let mut rd = tokio::fs::read_dir(&self.dir).await.map_err(|e| {
            StageError::failed(
                "FootageFolder",
                format!(
                    "cannot read the footage folder {} (footage.local_dir): {e}",
                    self.dir.display()
                ),
            )
        })?;
        let mut files = Vec::new();
        while let Ok(Some(entry)) = rd.next_entry().await {
            let path = entry.path();
            let is_video = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if is_video
                && entry
                    .file_type()
                    .await
                    .is_ok_and(|t| t.is_file() || t.is_symlink())
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// How well a file name matches a term: the number of the term's words in the name.
fn name_score(path: &Path, term: &str) -> usize {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    term.split_whitespace()
        .filter(|w| w.chars().count() > 2 && name.contains(&w.to_lowercase()))
        .count()
}

impl FootageProvider for LocalFolder {
    fn name(&self) -> &'static str {
        "local"
    }

    fn fetch<'a>(
        &'a self,
        _stop: &'a StopSignal,
        term: &'a str,
        _index: usize,
        _dir: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<PathBuf>, StageError>> {
        Box::pin(async move {
            let files = self.list().await?;
            let mut used = self.used.borrow_mut();
            let best = files
                .iter()
                .filter(|f| !used.contains(*f))
                .enumerate()
                // The best name match; the first file in name order when none matches.
                .max_by_key(|(i, f)| (name_score(f, term), std::cmp::Reverse(*i)))
                .map(|(_, f)| f.clone());
            if let Some(f) = &best {
                used.insert(f.clone());
            }
            Ok(best)
        })
    }
}

/// Moving backgrounds made by ffmpeg.
#[derive(Clone, Debug)]
pub struct Generated {
    tool: Tool,
    width: u32,
    height: u32,
    fps: u32,
    seconds: f64,
}

/// Colour palettes for the generated backgrounds (three colours each, `0xRRGGBB`).
const PALETTES: &[[&str; 3]] = &[
    ["0x1a2a6c", "0xb21f1f", "0xfdbb2d"],
    ["0x0f2027", "0x2c5364", "0x00c9a7"],
    ["0x42275a", "0x734b6d", "0xf0a6ca"],
    ["0x141e30", "0x243b55", "0x6dd5ed"],
    ["0x3a1c71", "0xd76d77", "0xffaf7b"],
    ["0x0b486b", "0x3b8686", "0xcff09e"],
    ["0x232526", "0x414345", "0xe96443"],
    ["0x1d4350", "0xa43931", "0xf8b500"],
];

/// Number of background recipes [`generated_source`] knows.
pub const RECIPES: usize = 7;

/// The lavfi graph of background `recipe` at `w`x`h`, `fps`, seeded by `seed`.
pub fn generated_source(recipe: usize, seed: u64, w: u32, h: u32, fps: u32) -> String {
    let [c0, c1, c2] = PALETTES[(seed >> 8) as usize % PALETTES.len()];
    let s = seed % 1000;
    let hue_speed = 10 + (seed >> 20) % 40;
    let (hw, hh) = ((w / 2).max(8), (h / 2).max(8));
    match recipe % RECIPES {
        0 => format!(
            "gradients=s={w}x{h}:r={fps}:n=3:c0={c0}:c1={c1}:c2={c2}:speed=0.0{}:seed={s}",
            2 + s % 5
        ),
        1 => format!(
            "mandelbrot=s={w}x{h}:r={fps}:start_scale={}:end_scale=0.3:end_pts={},hue=h=t*{hue_speed}",
            2 + s % 3,
            200 + s % 200
        ),
        2 => format!(
            "life=s={hw}x{hh}:r={fps}:mold=20:ratio=0.{}:seed={s}:life_color={c2}:death_color={c0}:mold_color={c1},scale={w}x{h}:flags=neighbor,gblur=sigma=1.5",
            2 + s % 5
        ),
        3 => format!(
            "cellauto=s={hw}x{hh}:r={fps}:rule={}:scroll=1:seed={s}:full=1,format=rgb24,lutrgb=r='if(val,{},{})':g='if(val,{},{})':b='if(val,{},{})',scale={w}x{h}:flags=neighbor,gblur=sigma=1",
            [30, 45, 73, 86, 89, 105, 110, 150][(seed >> 4) as usize % 8],
            channel(c2, 0),
            channel(c0, 0),
            channel(c2, 1),
            channel(c0, 1),
            channel(c2, 2),
            channel(c0, 2),
        ),
        // Coloured noise at a tiny size, smoothed over time and scaled up: drifting clouds.
        4 => format!(
            "color=c={c1}:s=12x20:r={fps},noise=alls=90:allf=t,tmix=frames=20,scale={w}x{h}:flags=bicubic,gblur=sigma={},eq=contrast=1.6:saturation=2.5,hue=h=t*{hue_speed}",
            (w / 40).max(1)
        ),
        5 => {
            let f = |k: u64| 9 + (seed >> k) % 17;
            format!(
                "nullsrc=s={w}x{h}:r={fps},geq=r='{}+90*sin(X/{}+T*1.3)':g='{}+90*sin(Y/{}-T*1.1)':b='{}+90*sin((X+Y)/{}+T*0.7)'",
                channel(c1, 0).clamp(90, 165),
                f(3),
                channel(c1, 1).clamp(90, 165),
                f(9),
                channel(c1, 2).clamp(90, 165),
                f(15)
            )
        }
        _ => {
            // The fractal is black and white: map it onto two palette colours.
            let ramp = |k: usize| {
                let (a, b) = (channel(c0, k), channel(c2, k));
                format!("{a}+({b}-{a})*val/255")
            };
            format!(
                "sierpinski=s={w}x{h}:r={fps}:type={}:jump={}:seed={s},format=rgb24,lutrgb=r='{}':g='{}':b='{}'",
                if seed.is_multiple_of(2) { "carpet" } else { "triangle" },
                50 + s % 50,
                ramp(0),
                ramp(1),
                ramp(2)
            )
        }
    }
}

/// One channel (0 red, 1 green, 2 blue) of a `0xRRGGBB` colour.
fn channel(hex: &str, i: usize) -> u32 {
    let v = u32::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap_or(0);
    (v >> (16 - 8 * i as u32)) & 0xff
}

/// The size generated clips are made at: a quarter of the render's height, between 96 and 480
/// pixels high (never above the render), the render's aspect, even sides.
pub fn generated_size(w: u32, h: u32) -> (u32, u32) {
    let gh = (h / 4).clamp(96.min(h), 480.min(h)) & !1;
    let gw = ((u64::from(gh) * u64::from(w) / u64::from(h.max(1))) as u32).max(2) & !1;
    (gw, gh.max(2))
}

impl Generated {
    /// Backgrounds for a video of `frame` (width, height).
    pub fn new(cfg: &Config, frame: (u32, u32)) -> Generated {
        let (width, height) = generated_size(frame.0, frame.1);
        Generated {
            tool: Tool::ffmpeg(cfg),
            width,
            height,
            fps: cfg.render.fps,
            seconds: cfg.footage.seconds_per_clip,
        }
    }

    /// ffmpeg arguments that make background `recipe` for `seed` into `out`.
    pub fn args(&self, recipe: usize, seed: u64, out: &Path) -> Vec<String> {
        let mut a: Vec<String> = process::FFMPEG_QUIET.map(String::from).to_vec();
        a.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            generated_source(recipe, seed, self.width, self.height, self.fps),
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
            // Consecutive clips use different recipes, so the video keeps changing look.
            let recipe = (seed as usize % RECIPES + index) % RECIPES;
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
    events: &Rc<dyn EventSink>,
) -> Result<(Box<dyn FootageProvider>, Option<NewEvent>), StageError> {
    let f = &cfg.footage;
    match f.provider {
        FootageSource::Local => Ok((Box::new(LocalFolder::new(&f.local_dir)), None)),
        FootageSource::Generated if !f.local_dir.is_empty() => Ok((
            Box::new(LocalThenGenerated {
                local: LocalFolder::new(&f.local_dir),
                generated: Generated::new(cfg, frame),
            }),
            None,
        )),
        FootageSource::Generated => Ok((Box::new(Generated::new(cfg, frame)), None)),
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
                    fallback: f.fallback.then(|| Generated::new(cfg, frame)),
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
                Box::new(Generated::new(cfg, frame)),
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
    let cfg = cx.config.clone();
    let (provider, warning) = choose_provider(&cfg, cx.frame(), &cx.events)?;
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

    #[test]
    fn sources_are_seeded_and_varied() {
        let a = generated_source(0, seed_of("octopus"), 54, 96, 30);
        assert_eq!(a, generated_source(0, seed_of("octopus"), 54, 96, 30));
        let all: HashSet<String> = (0..RECIPES)
            .map(|r| {
                generated_source(r, 7, 54, 96, 30)
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            all.len(),
            RECIPES,
            "each recipe uses a different source: {all:?}"
        );
        assert_eq!(channel("0x1a2b3c", 0), 0x1a);
        assert_eq!(channel("0x1a2b3c", 2), 0x3c);
    }

    #[tokio::test]
    async fn every_recipe_makes_a_playable_moving_clip() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.render.width = 180;
        cfg.render.height = 320;
        cfg.footage.seconds_per_clip = 1.0;
        let g = Generated::new(&cfg, (cfg.render.width, cfg.render.height));
        let (_h, stop) = StopSignal::pair();
        for recipe in 0..RECIPES {
            let out = dir.path().join(format!("r{recipe}.mp4"));
            process::run(&stop, &g.tool, &g.args(recipe, 12345 + recipe as u64, &out))
                .await
                .unwrap_or_else(|e| panic!("recipe {recipe}: {e}"));
            // The first and last frames differ: the background moves.
            let frame = |sel: &str| {
                let o = std::process::Command::new("ffmpeg")
                    .args(["-v", "error", "-i"])
                    .arg(&out)
                    .args([
                        "-vf",
                        sel,
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
            };
            let first = frame("select=eq(n\\,0)");
            let last = frame("select=eq(n\\,29)");
            assert!(
                !first.is_empty() && first.len() == last.len(),
                "recipe {recipe}"
            );
            assert_ne!(first, last, "recipe {recipe} does not move");
        }
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
}
