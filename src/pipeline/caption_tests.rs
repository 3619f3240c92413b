//! End-to-end tests of the captions and aspect ratios: real espeak-ng, ffmpeg and libass renders
//! over a flat dark background, so the caption's pixels can be found in extracted frames.
//!
//! "Inside the frame" is checked on pixels: the caption's colours appear in the frame, and none of
//! them touches the frame's outermost rows or columns (a caption cut by the edge would).

use std::path::Path;

use serde_json::json;

use super::e2e_tests::{context, ffprobe_json, tiny_config, Recorder};
use super::timing::units;
use super::*;
use crate::config::{AspectRatio, CaptionStyle, FootageSource};

/// The caption colour of these tests: magenta, which nothing else in the frame is.
const COLOR: &str = "#FF00FF";

/// A folder with one flat dark clip, as the only footage.
fn flat_footage(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ok = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i"])
        .arg("color=c=0x282828:s=320x320:r=30:d=2")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(dir.join("flat.mp4"))
        .status()
        .expect("ffmpeg must be installed")
        .success();
    assert!(ok, "could not make the flat clip");
}

fn caption_config(root: &Path) -> Config {
    let mut cfg = tiny_config(root);
    let footage = root.join("footage");
    flat_footage(&footage);
    cfg.footage.provider = FootageSource::Local;
    cfg.footage.local_dir = footage.display().to_string();
    cfg.footage.clips = 1;
    cfg.render.width = 360;
    cfg.render.height = 640;
    cfg
}

/// Runs a whole job; panics unless it completes.
async fn make_video(cfg: &Config, root: &Path, body: serde_json::Value) -> JobContext {
    let (_h, stop) = StopSignal::pair();
    let rec = Recorder::new(root, None);
    let mut cx = context(cfg.clone(), body, root, rec.clone(), stop);
    let outcome = run(&mut cx).await;
    assert!(
        matches!(outcome, Outcome::Completed),
        "{outcome:?}\n{:#?}",
        rec.messages()
    );
    cx
}

/// The RGB frame of `video` at `t` seconds.
fn frame(video: &Path, t: f64, (w, h): (u32, u32)) -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-ss", &format!("{t:.3}"), "-i"])
        .arg(video)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg must be installed");
    assert_eq!(
        out.stdout.len(),
        (w * h * 3) as usize,
        "no frame at {t} s of {}",
        video.display()
    );
    out.stdout
}

/// Bounding box (x0, y0, x1, y1) and count of the pixels `pick` selects.
fn pixels(
    rgb: &[u8],
    (w, _h): (u32, u32),
    pick: impl Fn(u8, u8, u8) -> bool,
) -> Option<((u32, u32, u32, u32), usize)> {
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    let mut n = 0;
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        if pick(p[0], p[1], p[2]) {
            let (x, y) = (i as u32 % w, i as u32 / w);
            n += 1;
            bbox = Some(match bbox {
                None => (x, y, x, y),
                Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
            });
        }
    }
    bbox.map(|b| (b, n))
}

fn magenta(r: u8, g: u8, b: u8) -> bool {
    r > 170 && b > 170 && g < 100
}

fn white(r: u8, g: u8, b: u8) -> bool {
    r > 190 && g > 190 && b > 190
}

/// Asserts that the caption (`pick`'s pixels) is in the frame and clear of its edges.
fn assert_caption_inside(
    rgb: &[u8],
    size: (u32, u32),
    pick: impl Fn(u8, u8, u8) -> bool,
    what: &str,
) {
    let ((x0, y0, x1, y1), n) =
        pixels(rgb, size, pick).unwrap_or_else(|| panic!("{what}: no caption in the frame"));
    assert!(n > 20, "{what}: only {n} caption pixels");
    let (w, h) = size;
    assert!(
        x0 > 0 && y0 > 0 && x1 < w - 1 && y1 < h - 1,
        "{what}: caption at ({x0},{y0})-({x1},{y1}) touches the edge of the {w}x{h} frame"
    );
}

/// Word cues: one per unit of the sentence, in order, monotonic, inside the sentence's audio.
fn assert_word_cues(sentences: &[SpokenSentence]) {
    assert!(!sentences.is_empty());
    let mut last_end = 0.0;
    for s in sentences {
        let want: Vec<String> = units(&s.text).into_iter().map(|u| u.text).collect();
        let got: Vec<String> = s.words.iter().map(|w| w.text.clone()).collect();
        assert_eq!(got, want, "words of {:?}", s.text);
        for w in &s.words {
            assert!(w.start <= w.end, "{w:?}");
            assert!(w.start >= last_end - 1e-9, "not monotonic at {w:?}");
            assert!(
                w.start >= s.start - 1e-9 && w.end <= s.start + s.duration + 1e-9,
                "{w:?} outside the audio of {:?} [{}, {}]",
                s.text,
                s.start,
                s.start + s.duration
            );
            last_end = w.end;
        }
    }
}

const SCRIPT: &str = "Octopuses have three hearts and very blue blood. \
    SUPERCALIFRAGILISTICEXPIALIDOCIOUS WONDERS! 心臓は三つあります。";

#[tokio::test]
async fn each_caption_style_renders_inside_the_frame_and_karaoke_moves_its_highlight() {
    for style in CaptionStyle::ALL {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = caption_config(root.path());
        // The largest font the config allows: the fitting, not the setting, keeps it in the frame.
        cfg.subtitles.font_size = 400;
        let body = json!({
            "videoSubject": "Octopus hearts",
            "script": SCRIPT,
            "subtitlesStyle": style.as_str(),
            "color": COLOR,
        });
        let cx = make_video(&cfg, root.path(), body).await;
        let out = cx.artifacts.output.clone().expect("output");
        let size = cx.frame();
        assert_word_cues(&cx.artifacts.sentences);
        // espeak-ng's library times the words itself.
        assert!(cx.artifacts.sentences.iter().all(|s| s.exact_words));
        let ass = std::fs::read_to_string(cx.artifacts.subtitles.as_ref().unwrap()).unwrap();
        // Every spoken word is a caption at its time, in every sentence, long word and CJK too.
        for s in &cx.artifacts.sentences {
            let w = &s.words[s.words.len() / 2];
            let t = (w.start + w.end) / 2.0;
            let rgb = frame(&out, t, size);
            let caption = |r: u8, g: u8, b: u8| magenta(r, g, b) || white(r, g, b);
            let what = format!("{style} at {t:.2} s ({:?})", w.text);
            assert_caption_inside(&rgb, size, caption, &what);
            assert!(
                pixels(&rgb, size, magenta).is_some(),
                "{what}: no word in the colour"
            );
        }
        match style {
            CaptionStyle::Karaoke => {
                // Two words of one line: the highlight moves, the line stays.
                let s = &cx.artifacts.sentences[0];
                let (a, b) = (&s.words[0], &s.words[1]);
                let fa = frame(&out, (a.start + a.end) / 2.0, size);
                let fb = frame(&out, (b.start + b.end) / 2.0, size);
                let ((ax0, _, ax1, _), _) = pixels(&fa, size, magenta).unwrap();
                let ((bx0, _, bx1, _), _) = pixels(&fb, size, magenta).unwrap();
                assert!(
                    bx0 > ax1,
                    "the highlight did not move right from {:?} ({ax0}-{ax1}) to {:?} ({bx0}-{bx1})",
                    a.text,
                    b.text
                );
                let line = |f: &[u8]| pixels(f, size, |r, g, b| magenta(r, g, b) || white(r, g, b));
                let ((la0, _, la1, _), _) = line(&fa).unwrap();
                let ((lb0, _, lb1, _), _) = line(&fb).unwrap();
                assert!(
                    la0.abs_diff(lb0) <= 2 && la1.abs_diff(lb1) <= 2,
                    "the line moved: {la0}-{la1} vs {lb0}-{lb1}"
                );
                assert!(ass.contains("\\c&HFF00FF&"), "{ass}");
            }
            CaptionStyle::Word => assert!(ass.contains("\\t(0,100,"), "pop-in: {ass}"),
            CaptionStyle::Classic => assert!(!ass.contains("\\c&H"), "{ass}"),
        }
    }
}

#[tokio::test]
async fn without_the_espeak_library_the_program_speaks_and_word_times_are_estimated() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = caption_config(root.path());
    cfg.tools.espeak_library = String::new();
    let body = json!({ "videoSubject": "Hearts", "script": SCRIPT, "subtitlesStyle": "karaoke" });
    let cx = make_video(&cfg, root.path(), body).await;
    let sentences = &cx.artifacts.sentences;
    assert!(sentences.iter().all(|s| !s.exact_words));
    assert_word_cues(sentences);
    // Estimated inside the speech: the first word starts after the sentence's leading silence is
    // cut, or at its start, and the last ends before its trailing pause.
    for s in sentences {
        let (first, last) = (&s.words[0], s.words.last().unwrap());
        assert!(first.start >= s.start && last.end <= s.start + s.duration);
        assert!(
            last.end < s.start + s.duration - 0.03,
            "the trailing pause of {:?} was not trimmed: {last:?}, audio ends {}",
            s.text,
            s.start + s.duration
        );
    }
}

#[tokio::test]
async fn each_aspect_ratio_has_its_exact_size_and_the_caption_inside() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = caption_config(root.path());
    // The real frames: 1080x1920, 1920x1080, 1080x1080, 1080x1350.
    cfg.render.width = 1080;
    cfg.render.height = 1920;
    let expected = [
        (AspectRatio::Portrait, (1080, 1920)),
        (AspectRatio::Landscape, (1920, 1080)),
        (AspectRatio::Square, (1080, 1080)),
        (AspectRatio::Feed, (1080, 1350)),
    ];
    for (aspect, size) in expected {
        assert_eq!(cfg.render.frame(aspect), size);
        let body = json!({
            "videoSubject": "Hearts",
            "script": "Octopuses have THREE WONDERFUL HEARTS.",
            "aspectRatio": aspect.as_str(),
            "color": COLOR,
        });
        let cx = make_video(&cfg, root.path(), body).await;
        let out = cx.artifacts.output.clone().expect("output");
        let probe = ffprobe_json(&out);
        let v = &probe["streams"][0];
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(u64::from(size.0)), Some(u64::from(size.1))),
            "{aspect}: {probe}"
        );
        let s = &cx.artifacts.sentences[0];
        let t = s.start + s.duration / 2.0;
        assert_caption_inside(&frame(&out, t, size), size, magenta, &format!("{aspect}"));
    }
}

#[tokio::test]
async fn the_largest_captions_stay_inside_every_aspect_ratio_in_word_and_classic_styles() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = caption_config(root.path());
    cfg.render.width = 270;
    cfg.render.height = 480;
    // The largest font the config allows, few columns: only the fitting keeps it in the frame.
    cfg.subtitles.font_size = 400;
    let script =
        "SUPERCALIFRAGILISTICEXPIALIDOCIOUS WONDERS! 心臓は三つあります、タコの血は青いです。";
    for &aspect in AspectRatio::ALL {
        for style in [CaptionStyle::Word, CaptionStyle::Classic] {
            let body = json!({
                "videoSubject": "Hearts",
                "script": script,
                "aspectRatio": aspect.as_str(),
                "subtitlesStyle": style.as_str(),
                "subtitlesPosition": "left,top",
                "color": COLOR,
            });
            let cx = make_video(&cfg, root.path(), body).await;
            let out = cx.artifacts.output.clone().expect("output");
            let size = cx.frame();
            for s in &cx.artifacts.sentences {
                for w in [&s.words[0], &s.words[s.words.len() / 2]] {
                    let t = (w.start + w.end) / 2.0;
                    let what = format!("{aspect} {style} at {t:.2} s ({:?})", w.text);
                    assert_caption_inside(&frame(&out, t, size), size, magenta, &what);
                }
            }
        }
    }
}
