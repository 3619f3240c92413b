//! Subtitles stage: an ASS file timed from the real sentence audio, burnt in by the render.
//!
//! Invariants: a cue never shows more than two lines; a line is at most `subtitles.max_line_chars`
//! columns (a wide CJK character counts two) unless one unbreakable word is longer; a sentence
//! too long for two lines becomes several cues whose durations are proportional to their text and
//! exactly fill the sentence's time; cues never overlap and are in order. Text is escaped so libass
//! shows it as written: `{`/`}` become `\{`/`\}` (libass's literal braces) and every backslash is
//! followed by a WORD JOINER (U+2060, zero width) so `\N`, `\h`, `\{` in the text stay literal.
//! The font size (`font_size` at 1920 high, scaled) is capped so a full line fits between the
//! margins, so libass never re-wraps a line into a third. Event: `Generating subtitles`.

use std::fmt::Write as _;

use tracing::info;

use super::text::display_width;
use super::{JobContext, SpokenSentence, StageError};
use crate::event::NewEvent;
use crate::request::{Horizontal, Vertical};

/// Lines shown at once.
pub const MAX_LINES: usize = 2;

/// Average advance of a character of a bold sans font, in ems (DejaVu Sans Bold: about 0.6).
const AVERAGE_CHAR_EM: f64 = 0.6;

/// One subtitle on screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    /// One or two lines, unescaped.
    pub lines: Vec<String>,
}

/// Greedy word wrap to `max` columns; a word wider than `max` is cut into `max`-column pieces
/// (text without spaces, like Japanese, wraps this way).
pub fn wrap_lines(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let pieces = split_wide_word(word, max);
        for piece in pieces {
            let needed = if cur.is_empty() {
                display_width(&piece)
            } else {
                display_width(&cur) + 1 + display_width(&piece)
            };
            if needed <= max || cur.is_empty() {
                if !cur.is_empty() {
                    cur.push(' ');
                }
                cur.push_str(&piece);
            } else {
                lines.push(std::mem::take(&mut cur));
                cur.push_str(&piece);
            }
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Like [`wrap_lines`], with the same number of lines but as even as they can be (the breaks that
/// minimise the sum of squared slack, every line included): no cue ends with a lone word when the
/// text can be balanced.
pub fn balanced_lines(text: &str, max: usize) -> Vec<String> {
    let greedy = wrap_lines(text, max);
    let k = greedy.len();
    if k < 2 {
        return greedy;
    }
    let max = max.max(1);
    let pieces: Vec<String> = text
        .split_whitespace()
        .flat_map(|w| split_wide_word(w, max))
        .collect();
    let n = pieces.len();
    let widths: Vec<usize> = pieces.iter().map(|p| display_width(p)).collect();
    let line_width = |i: usize, j: usize| widths[i..j].iter().sum::<usize>() + (j - i - 1);
    const INF: u64 = u64::MAX / 4;
    // cost[l][j]: best cost of the first j pieces on l lines; from[l][j]: where the last line starts.
    let mut cost = vec![vec![INF; n + 1]; k + 1];
    let mut from = vec![vec![0usize; n + 1]; k + 1];
    cost[0][0] = 0;
    for l in 1..=k {
        for j in 1..=n {
            for i in (l - 1)..j {
                if cost[l - 1][i] == INF {
                    continue;
                }
                let w = line_width(i, j);
                if w > max && j - i > 1 {
                    continue;
                }
                let slack = max.saturating_sub(w) as u64;
                let c = cost[l - 1][i] + slack * slack;
                if c < cost[l][j] {
                    cost[l][j] = c;
                    from[l][j] = i;
                }
            }
        }
    }
    if cost[k][n] == INF {
        return greedy;
    }
    let mut lines = Vec::with_capacity(k);
    let mut j = n;
    for l in (1..=k).rev() {
        let i = from[l][j];
        lines.push(pieces[i..j].join(" "));
        j = i;
    }
    lines.reverse();
    lines
}

fn split_wide_word(word: &str, max: usize) -> Vec<String> {
    if display_width(word) <= max {
        return vec![word.to_string()];
    }
    // Only cut words that are runs of wide characters or absurdly long: a long Latin word stays
    // whole (libass shrinks nothing, but cutting "internationalisation" reads worse than overflow).
    let wide = word.chars().filter(|&c| super::text::is_wide(c)).count();
    if wide * 2 < word.chars().count() && display_width(word) <= max * 2 {
        return vec![word.to_string()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in word.chars() {
        let w = if super::text::is_wide(c) { 2 } else { 1 };
        if display_width(&cur) + w > max && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Cues for the spoken sentences. Each sentence's cues fill `[start, end)`, where `end` is the next
/// sentence's start (so the text stays up through the pause), or `total` for the last one.
pub fn build_cues(sentences: &[SpokenSentence], max_line_chars: usize, total: f64) -> Vec<Cue> {
    let mut cues = Vec::new();
    for (i, s) in sentences.iter().enumerate() {
        let start = s.start;
        let natural_end = s.start + s.duration;
        let end = match sentences.get(i + 1) {
            Some(next) => next.start,
            None => natural_end.max(total),
        }
        .max(start);
        let lines = balanced_lines(&s.text, max_line_chars);
        if lines.is_empty() {
            continue;
        }
        let chunks: Vec<Vec<String>> = lines.chunks(MAX_LINES).map(<[String]>::to_vec).collect();
        let weights: Vec<f64> = chunks
            .iter()
            .map(|c| {
                c.iter()
                    .map(|l| display_width(l) as f64)
                    .sum::<f64>()
                    .max(1.0)
            })
            .collect();
        let total_weight: f64 = weights.iter().sum();
        let mut t = start;
        let n = chunks.len();
        for (k, (chunk, w)) in chunks.into_iter().zip(weights).enumerate() {
            let chunk_end = if k + 1 == n {
                end
            } else {
                t + (end - start) * w / total_weight
            };
            cues.push(Cue {
                start: t,
                end: chunk_end,
                lines: chunk,
            });
            t = chunk_end;
        }
    }
    cues
}

/// Escapes text for an ASS Dialogue line so libass renders it literally.
pub fn ass_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\u{2060}"),
            '{' => out.push_str("\\{"),
            '}' => out.push_str("\\}"),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// ASS colour `&HAABBGGRR` (alpha 00 = opaque).
pub fn ass_color((r, g, b): (u8, u8, u8), alpha: u8) -> String {
    format!("&H{alpha:02X}{b:02X}{g:02X}{r:02X}")
}

/// ASS time `H:MM:SS.cc`.
pub fn ass_time(seconds: f64) -> String {
    let cs = (seconds.max(0.0) * 100.0).round() as u64;
    format!(
        "{}:{:02}:{:02}.{:02}",
        cs / 360_000,
        cs / 6000 % 60,
        cs / 100 % 60,
        cs % 100
    )
}

/// Numpad alignment: 1-3 bottom, 4-6 middle, 7-9 top; left, centre, right.
pub fn alignment(h: Horizontal, v: Vertical) -> u8 {
    let col = match h {
        Horizontal::Left => 1,
        Horizontal::Center => 2,
        Horizontal::Right => 3,
    };
    let row = match v {
        Vertical::Bottom => 0,
        Vertical::Center => 3,
        Vertical::Top => 6,
    };
    row + col
}

/// How the subtitles look.
#[derive(Clone, Debug, PartialEq)]
pub struct SubtitleStyle {
    pub width: u32,
    pub height: u32,
    pub font: String,
    /// Size at 1920 pixels of height.
    pub font_size_1920: u32,
    /// Longest line, in columns: caps the font size so such a line fits the width.
    pub max_line_chars: usize,
    pub color: (u8, u8, u8),
    pub position: (Horizontal, Vertical),
}

/// The whole ASS document.
pub fn ass_document(style: &SubtitleStyle, cues: &[Cue]) -> String {
    let margin_lr = (f64::from(style.width) * 0.05).round();
    // Capped so a line of `max_line_chars` fits between the margins: libass must never re-wrap a
    // line, or a cue would show more than two.
    let usable = f64::from(style.width) - 2.0 * margin_lr;
    let fit = usable / (style.max_line_chars.max(1) as f64 * AVERAGE_CHAR_EM);
    let size = (f64::from(style.font_size_1920) * f64::from(style.height) / 1920.0)
        .min(fit)
        .round()
        .max(6.0);
    let outline = (size / 14.0).max(1.0);
    let shadow = (size / 28.0).max(0.5);
    // Phone apps cover the bottom and top of a short with their own buttons and captions.
    let margin_v = (f64::from(style.height) * 0.14).round();
    // A comma would end the style's font field.
    let font: String = style
        .font
        .chars()
        .filter(|&c| c != ',' && !c.is_control())
        .collect();
    let mut s = String::new();
    s.push_str("[Script Info]\n; Written by reelsmith\nScriptType: v4.00+\n");
    let _ = writeln!(s, "PlayResX: {}\nPlayResY: {}", style.width, style.height);
    s.push_str("WrapStyle: 0\nScaledBorderAndShadow: yes\nYCbCr Matrix: None\n\n");
    s.push_str("[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n");
    let _ = writeln!(
        s,
        "Style: Default,{font},{size},{},&H000000FF,&H00000000,&H80000000,-1,0,0,0,100,100,0,0,1,{outline:.1},{shadow:.1},{},{margin_lr},{margin_lr},{margin_v},1",
        ass_color(style.color, 0),
        alignment(style.position.0, style.position.1),
    );
    s.push_str("\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n");
    for c in cues {
        let text = c
            .lines
            .iter()
            .map(|l| ass_escape(l))
            .collect::<Vec<_>>()
            .join("\\N");
        let _ = writeln!(
            s,
            "Dialogue: 0,{},{},Default,,0,0,0,,{text}",
            ass_time(c.start),
            ass_time(c.end)
        );
    }
    s
}

/// The subtitles stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    cx.emit("subtitles", NewEvent::info("Generating subtitles"))
        .await?;
    let cfg = cx.config.clone();
    let cues = build_cues(
        &cx.artifacts.sentences,
        cfg.subtitles.max_line_chars as usize,
        cx.artifacts.duration,
    );
    let style = SubtitleStyle {
        width: cfg.render.width,
        height: cfg.render.height,
        font: cfg.subtitles.font.clone(),
        font_size_1920: cfg.subtitles.font_size,
        max_line_chars: cfg.subtitles.max_line_chars as usize,
        color: cx.request.color_rgb,
        position: cx.request.subtitles_position,
    };
    let path = cx.work_dir.join("subtitles.ass");
    tokio::fs::write(&path, ass_document(&style, &cues))
        .await
        .map_err(|e| StageError::failed("Io", format!("{}: {e}", path.display())))?;
    info!(job = %cx.job.0, stage = "subtitles", cues = cues.len(), "subtitles written");
    cx.artifacts.subtitles = Some(path);
    Ok(())
}

#[cfg(test)]
mod balance_tests {
    use super::*;

    #[test]
    fn balanced_lines_leave_no_orphan_word() {
        let text = "Here is the short answer, and it is a sight.";
        assert_eq!(
            wrap_lines(text, 22).last().map(String::as_str),
            Some("sight.")
        );
        let b = balanced_lines(text, 22);
        assert_eq!(b.len(), wrap_lines(text, 22).len());
        assert!(b.iter().all(|l| display_width(l) <= 22), "{b:?}");
        let (min, max) = b.iter().fold((usize::MAX, 0), |(lo, hi), l| {
            (lo.min(display_width(l)), hi.max(display_width(l)))
        });
        assert!(max - min <= 8, "{b:?}");
        assert_eq!(b.join(" "), text);
        assert_eq!(balanced_lines("short", 22), vec!["short"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(text: &str, start: f64, duration: f64) -> SpokenSentence {
        SpokenSentence {
            text: text.into(),
            start,
            duration,
        }
    }

    #[test]
    fn lines_wrap_at_the_limit_without_breaking_words() {
        let lines = wrap_lines(
            "Octopuses have three hearts and blue blood in their veins",
            22,
        );
        assert_eq!(
            lines,
            vec![
                "Octopuses have three",
                "hearts and blue blood",
                "in their veins"
            ]
        );
        assert!(lines.iter().all(|l| display_width(l) <= 22));
        // Japanese has no spaces: it is cut by width, two columns per character.
        let jp = wrap_lines("タコには心臓が三つあります。", 10);
        assert_eq!(jp, vec!["タコには心", "臓が三つあ", "ります。"]);
        // One long Latin word stays whole.
        assert_eq!(
            wrap_lines("supercalifragilistic", 12),
            vec!["supercalifragilistic"]
        );
    }

    #[test]
    fn long_sentences_become_proportional_cues_of_at_most_two_lines() {
        let s = [
            sentence("Short one.", 0.0, 1.0),
            sentence(
                "This sentence is much longer and needs more than two lines on a phone screen to fit.",
                1.25,
                5.0,
            ),
        ];
        let cues = build_cues(&s, 22, 6.5);
        assert!(cues
            .iter()
            .all(|c| !c.lines.is_empty() && c.lines.len() <= MAX_LINES));
        assert_eq!(cues[0].lines, vec!["Short one."]);
        // The first cue stays up through the pause, until the next sentence starts.
        assert_eq!((cues[0].start, cues[0].end), (0.0, 1.25));
        let long: Vec<_> = cues[1..].to_vec();
        assert_eq!(long.len(), 2);
        assert_eq!(long[0].start, 1.25);
        assert!((long.last().unwrap().end - 6.5).abs() < 1e-9);
        for w in cues.windows(2) {
            assert!(
                (w[0].end - w[1].start).abs() < 1e-9,
                "cues must be contiguous"
            );
        }
        // Proportional to text: the first chunk has more characters, so more time.
        let chars = |c: &Cue| c.lines.iter().map(|l| l.len()).sum::<usize>() as f64;
        let ratio_time = (long[0].end - long[0].start) / (long[1].end - long[1].start);
        assert!((ratio_time - chars(&long[0]) / chars(&long[1])).abs() < 1e-9);
    }

    #[test]
    fn escaping_keeps_text_literal() {
        assert_eq!(ass_escape("a {b} c"), "a \\{b\\} c");
        assert_eq!(ass_escape("C:\\New"), "C:\\\u{2060}New");
        assert_eq!(ass_escape("\\{x}"), "\\\u{2060}\\{x\\}");
        assert_eq!(
            ass_escape("\"quotes\" and 'single'"),
            "\"quotes\" and 'single'"
        );
        assert_eq!(ass_escape("two\nlines"), "two lines");
        assert_eq!(ass_escape("心臓 Ещё"), "心臓 Ещё");
    }

    #[test]
    fn document_has_play_res_colour_alignment_and_times() {
        let style = SubtitleStyle {
            width: 1080,
            height: 1920,
            font: "DejaVu Sans".into(),
            font_size_1920: 60,
            max_line_chars: 22,
            color: (255, 255, 0),
            position: (Horizontal::Center, Vertical::Bottom),
        };
        let doc = ass_document(
            &style,
            &[Cue {
                start: 0.0,
                end: 61.5,
                lines: vec!["Hi {there}".into(), "x".into()],
            }],
        );
        assert!(doc.contains("PlayResX: 1080\nPlayResY: 1920"));
        assert!(
            doc.contains("Style: Default,DejaVu Sans,60,&H0000FFFF,"),
            "{doc}"
        );
        assert!(
            doc.contains(",-1,0,0,0,100,100,0,0,1,"),
            "bold with an outline: {doc}"
        );
        assert!(
            doc.contains("Dialogue: 0,0:00:00.00,0:01:01.50,Default,,0,0,0,,Hi \\{there\\}\\Nx")
        );
        assert_eq!(alignment(Horizontal::Right, Vertical::Top), 9);
        assert_eq!(alignment(Horizontal::Left, Vertical::Center), 4);
        assert_eq!(ass_color((0x12, 0x34, 0x56), 0), "&H00563412");
        assert_eq!(ass_time(3723.456), "1:02:03.46");
        // Scaled with the height: 60 at 1920 is 20 at 640.
        let small = SubtitleStyle {
            height: 640,
            width: 360,
            ..style.clone()
        };
        assert!(ass_document(&small, &[]).contains("Style: Default,DejaVu Sans,20,"));
        // Capped so 22 characters fit 1080 - 2 x 54 pixels: 972 / (22 x 0.6) = 73.6.
        let big = SubtitleStyle {
            font_size_1920: 84,
            ..style
        };
        assert!(ass_document(&big, &[]).contains("Style: Default,DejaVu Sans,74,"));
    }
}
