//! Subtitles stage: an ASS file timed from the real sentence audio, burnt in by the render.
//!
//! Three styles (`subtitlesStyle`): `classic` (the sentence's lines in the colour), `word` (one or
//! two words at a time, large, popping in) and `karaoke` (a classic cue's lines in white, one event
//! per word with that word in the colour). Word times come from the voice stage (`timing`).
//!
//! Invariants: a cue never shows more than two lines; a line is at most `subtitles.max_line_chars`
//! columns (a wide CJK character counts two; CJK text breaks between characters) unless one
//! unbreakable word is longer; a sentence too long for two lines becomes several cues that exactly
//! fill the sentence's time, each starting with its first word (proportional to its text when the
//! words have no times); cues never overlap and are in order. Text is escaped so libass shows it as
//! written: `{`/`}` become `\{`/`\}` (libass's literal braces) and every backslash is followed by a
//! WORD JOINER (U+2060, zero width) so `\N`, `\h`, `\{` in the text stay literal. Captions never
//! leave the frame: the style's size (`font_size` at a 1080-pixel short side, scaled) is capped so an
//! average full line fits between the margins, and a cue whose lines would still not fit (measured
//! with DejaVu Sans Bold's advance widths, on the safe side, outline and shadow included; height too)
//! gets a smaller `\fs` of its own. Event: `Generating subtitles`.

use std::fmt::Write as _;
use std::ops::Range;

use tracing::info;

use super::text::display_width;
use super::timing::SpokenWord;
use super::{JobContext, SpokenSentence, StageError};
use crate::config::CaptionStyle;
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
/// sentence's start (so the text stays up through the pause), or `total` for the last one. A cue
/// starts when its first word is spoken (the sentence's own words, when it has them), else at a
/// time proportional to its text.
pub fn build_cues(sentences: &[SpokenSentence], max_line_chars: usize, total: f64) -> Vec<Cue> {
    sentences
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let end = sentence_end(sentences, i, total);
            sentence_cues(s, max_line_chars, end)
                .into_iter()
                .map(|(cue, _)| cue)
        })
        .collect()
}

/// Where sentence `i`'s captions may stay up to: the next sentence's start, or the end of the video.
fn sentence_end(sentences: &[SpokenSentence], i: usize, total: f64) -> f64 {
    let s = &sentences[i];
    match sentences.get(i + 1) {
        Some(next) => next.start,
        None => (s.start + s.duration).max(total),
    }
    .max(s.start)
}

/// The cues of one sentence ending at `end`, each with the range of the sentence's words it shows
/// (empty when the sentence has no word times).
fn sentence_cues(s: &SpokenSentence, max_line_chars: usize, end: f64) -> Vec<(Cue, Range<usize>)> {
    let start = s.start;
    let lines = balanced_lines(&s.text, max_line_chars);
    if lines.is_empty() {
        return Vec::new();
    }
    let chunks: Vec<Vec<String>> = lines.chunks(MAX_LINES).map(<[String]>::to_vec).collect();
    // The words of each chunk: its letters are the next ones of the sentence.
    let ranges = word_ranges(&chunks, &s.words);
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
    let mut out = Vec::with_capacity(chunks.len());
    let mut t = start;
    let n = chunks.len();
    for (k, (chunk, w)) in chunks.into_iter().zip(weights).enumerate() {
        let chunk_end = if k + 1 == n {
            end
        } else {
            match ranges.get(k + 1).and_then(|r| s.words.get(r.start)) {
                Some(next) => next.start.clamp(t, end),
                None => t + (end - start) * w / total_weight,
            }
        };
        out.push((
            Cue {
                start: t,
                end: chunk_end,
                lines: chunk,
            },
            ranges.get(k).cloned().unwrap_or(0..0),
        ));
        t = chunk_end;
    }
    out
}

/// Number of characters of `s` that are not white space.
fn ink(s: &str) -> usize {
    s.chars().filter(|c| !c.is_whitespace()).count()
}

/// The word each non-space character of a sentence belongs to, from its words in order.
fn ink_owners(words: &[SpokenWord]) -> Vec<usize> {
    words
        .iter()
        .enumerate()
        .flat_map(|(i, w)| std::iter::repeat_n(i, ink(&w.text)))
        .collect()
}

/// For each chunk of lines, the range of `words` whose characters it shows (words and lines hold
/// the sentence's non-space characters in the same order). Empty when there are no words.
fn word_ranges(chunks: &[Vec<String>], words: &[SpokenWord]) -> Vec<Range<usize>> {
    if words.is_empty() {
        return Vec::new();
    }
    let owners = ink_owners(words);
    let owner = |k: usize| owners.get(k).copied().unwrap_or(words.len() - 1);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(chunks.len());
    let mut at = 0;
    for chunk in chunks {
        let n: usize = chunk.iter().map(|l| ink(l)).sum();
        // A word cut over two chunks belongs to the one it starts in.
        let first = out
            .last()
            .map_or(0, |r| r.end)
            .max(owner(at))
            .min(words.len());
        let last = owner(at + n.max(1) - 1) + 1;
        out.push(first..last.max(first));
        at += n;
    }
    if let Some(last) = out.last_mut() {
        last.end = words.len();
    }
    out
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

/// An inline colour override `{\c&HBBGGRR&}`.
fn inline_color((r, g, b): (u8, u8, u8)) -> String {
    format!("{{\\c&H{b:02X}{g:02X}{r:02X}&}}")
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
    /// Size at 1080 pixels of short side (a 1080x1920 frame), scaled with the frame's short side.
    pub font_size_1920: u32,
    /// Longest line, in columns: caps the font size so such a line fits the width.
    pub max_line_chars: usize,
    pub color: (u8, u8, u8),
    pub position: (Horizontal, Vertical),
    pub style: CaptionStyle,
}

/// Advance widths of DejaVu Sans Bold (the default font), printable ASCII from the space on, in
/// thousandths of an em.
const ASCII_ADVANCE: [u16; 95] = [
    348, 456, 521, 838, 696, 1002, 872, 306, 457, 457, 523, 838, 380, 415, 380, 365, 696, 696, 696,
    696, 696, 696, 696, 696, 696, 696, 400, 400, 838, 838, 838, 580, 1000, 774, 762, 734, 830, 683,
    683, 821, 837, 372, 372, 775, 637, 995, 837, 850, 733, 850, 770, 720, 682, 812, 774, 1103, 771,
    724, 725, 457, 365, 457, 838, 500, 500, 675, 716, 593, 716, 678, 435, 716, 712, 343, 343, 665,
    343, 1042, 712, 687, 716, 716, 493, 595, 478, 712, 652, 924, 645, 652, 582, 712, 365, 712, 838,
];

/// Width of `text` in ems, on the safe side: exact for ASCII in DejaVu Sans Bold, one em for a wide
/// (CJK) character, 0.85 em for any other, plus 8% for a font that runs wider.
pub fn text_em(text: &str) -> f64 {
    let sum: f64 = text
        .chars()
        .map(|c| match c as u32 {
            0x20..=0x7e => f64::from(ASCII_ADVANCE[c as usize - 0x20]) / 1000.0,
            _ if super::text::is_wide(c) => 1.0,
            _ if c == '\u{2060}' || c.is_control() => 0.0,
            _ => 0.85,
        })
        .sum();
    sum * 1.08
}

/// Height of one line, in ems (DejaVu's ascent plus descent, with a little room).
const LINE_EM: f64 = 1.2;
/// The outline and the shadow, as parts of the font size.
const OUTLINE_EM: f64 = 1.0 / 14.0;
const SHADOW_EM: f64 = 1.0 / 28.0;
/// How much larger than a classic line the `word` style is.
const WORD_SCALE: f64 = 1.8;
/// Colour of the words not being spoken, in the `karaoke` style.
const WHITE: (u8, u8, u8) = (255, 255, 255);

/// The frame's geometry for captions: margins and the style's font size.
#[derive(Clone, Copy, Debug)]
struct Layout {
    margin_lr: f64,
    margin_v: f64,
    /// The style's font size (before any per-cue shrinking).
    size: f64,
    width: f64,
    height: f64,
}

impl Layout {
    fn of(style: &SubtitleStyle) -> Layout {
        let (w, h) = (f64::from(style.width), f64::from(style.height));
        let margin_lr = (w * 0.05).round();
        // Capped so a line of `max_line_chars` average characters fits between the margins.
        let usable = w - 2.0 * margin_lr;
        let fit = usable / (style.max_line_chars.max(1) as f64 * AVERAGE_CHAR_EM);
        let short = w.min(h);
        let size = (f64::from(style.font_size_1920) * short / 1080.0)
            .min(fit)
            .round()
            .max(6.0);
        Layout {
            margin_lr,
            // Phone apps cover the bottom and top of a short with their own buttons and captions.
            margin_v: (h * 0.14).round(),
            size,
            width: w,
            height: h,
        }
    }

    /// The largest size up to `want` at which `lines` fit between the margins, outline and
    /// shadow included: never outside the frame, whatever the aspect ratio or font size.
    fn fit(&self, lines: &[String], want: f64) -> f64 {
        let usable_w = self.width - 2.0 * self.margin_lr;
        let usable_h = self.height - 2.0 * self.margin_v;
        let widest = lines.iter().map(|l| text_em(l)).fold(0.0, f64::max);
        let by_width = usable_w / (widest + 2.0 * OUTLINE_EM + SHADOW_EM).max(0.1);
        let by_height =
            usable_h / (lines.len().max(1) as f64 * LINE_EM + 2.0 * OUTLINE_EM + SHADOW_EM);
        want.min(by_width).min(by_height).floor().max(6.0)
    }
}

/// The `[Script Info]` and `[V4+ Styles]` sections; the style's primary colour is `color`.
fn ass_header(style: &SubtitleStyle, layout: &Layout, color: (u8, u8, u8)) -> String {
    let size = layout.size;
    let outline = (size * OUTLINE_EM).max(1.0);
    let shadow = (size * SHADOW_EM).max(0.5);
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
        "Style: Default,{font},{size},{},&H000000FF,&H00000000,&H80000000,-1,0,0,0,100,100,0,0,1,{outline:.1},{shadow:.1},{},{},{},{},1",
        ass_color(color, 0),
        alignment(style.position.0, style.position.1),
        layout.margin_lr,
        layout.margin_lr,
        layout.margin_v,
    );
    s.push_str("\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n");
    s
}

/// One `Dialogue` line; `size` overrides the style's font size when it differs (smaller where a
/// line must shrink to fit, larger for the `word` style).
fn dialogue(s: &mut String, start: f64, end: f64, layout: &Layout, size: f64, text: &str) {
    let fs = if (size - layout.size).abs() > 0.01 {
        format!("{{\\fs{size}}}")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "Dialogue: 0,{},{},Default,,0,0,0,,{fs}{text}",
        ass_time(start),
        ass_time(end)
    );
}

/// The whole ASS document of `classic` cues: each cue's lines in the colour, shrunk where a line
/// would not fit the frame.
pub fn ass_document(style: &SubtitleStyle, cues: &[Cue]) -> String {
    let layout = Layout::of(style);
    let mut s = ass_header(style, &layout, style.color);
    for c in cues {
        let text = c
            .lines
            .iter()
            .map(|l| ass_escape(l))
            .collect::<Vec<_>>()
            .join("\\N");
        let size = layout.fit(&c.lines, layout.size);
        dialogue(&mut s, c.start, c.end, &layout, size, &text);
    }
    s
}

/// The ASS document of the spoken sentences in `style.style`. Sentences without word times (none
/// come from the voice stage) fall back to classic cues.
pub fn document(style: &SubtitleStyle, sentences: &[SpokenSentence], total: f64) -> String {
    match style.style {
        CaptionStyle::Classic => {
            ass_document(style, &build_cues(sentences, style.max_line_chars, total))
        }
        CaptionStyle::Word => word_document(style, sentences, total),
        CaptionStyle::Karaoke => karaoke_document(style, sentences, total),
    }
}

/// The `word` style: one or two words at a time (up to four characters of CJK), large, centred
/// across the frame on the position's row (top, middle or bottom), popping in (from 75% to full size in 0.1 s, fading in). Each group stays up until
/// the next one starts.
fn word_document(style: &SubtitleStyle, sentences: &[SpokenSentence], total: f64) -> String {
    let layout = Layout::of(style);
    let mut s = ass_header(style, &layout, style.color);
    let want = (layout.size * WORD_SCALE).round();
    let centre = alignment(Horizontal::Center, style.position.1);
    for (i, sentence) in sentences.iter().enumerate() {
        let end = sentence_end(sentences, i, total);
        let groups = word_groups(&sentence.words);
        for (k, g) in groups.iter().enumerate() {
            let start = if k == 0 {
                sentence.start
            } else {
                sentence.words[g.start].start
            };
            let stop = match groups.get(k + 1) {
                Some(next) => sentence.words[next.start].start,
                None => end,
            };
            let text = join_words(&sentence.words[g.clone()]);
            let size = layout.fit(std::slice::from_ref(&text), want);
            // Centred across the frame, on the position's row.
            let pop =
                format!("{{\\an{centre}\\fad(60,0)\\fscx75\\fscy75\\t(0,100,\\fscx100\\fscy100)}}");
            dialogue(
                &mut s,
                start,
                stop.max(start),
                &layout,
                size.min(layout.size * WORD_SCALE),
                &format!("{pop}{}", ass_escape(&text)),
            );
        }
        if groups.is_empty() {
            for c in sentence_cues(sentence, style.max_line_chars, end) {
                let text = c.0.lines.join(" ");
                let size = layout.fit(&c.0.lines, layout.size);
                dialogue(
                    &mut s,
                    c.0.start,
                    c.0.end,
                    &layout,
                    size,
                    &ass_escape(&text),
                );
            }
        }
    }
    s
}

/// Groups of at most two words (a CJK run: at most four characters, or eight columns).
fn word_groups(words: &[SpokenWord]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut j = i + 1;
        let mut width = display_width(&words[i].text);
        let limit = if words[i].glued || words.get(j).is_some_and(|w| w.glued) {
            4
        } else {
            2
        };
        while j < words.len() && j - i < limit {
            let w = display_width(&words[j].text);
            // A word that ends a clause ends its group.
            if width + w > 12
                || words[j - 1]
                    .text
                    .ends_with([',', '.', '!', '?', ';', ':', '。', '、'])
            {
                break;
            }
            width += w;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// Words as written: a space before each but the glued ones.
fn join_words(words: &[SpokenWord]) -> String {
    let mut out = String::new();
    for w in words {
        if !out.is_empty() && !w.glued {
            out.push(' ');
        }
        out.push_str(&w.text);
    }
    out
}

/// The `karaoke` style: each classic cue's lines in white, the word being spoken in the colour. One
/// event per word, from its start to the next word's, so the highlight moves with the voice; the
/// layout never changes inside a cue.
fn karaoke_document(style: &SubtitleStyle, sentences: &[SpokenSentence], total: f64) -> String {
    let layout = Layout::of(style);
    let mut s = ass_header(style, &layout, WHITE);
    let hi = inline_color(style.color);
    let white = inline_color(WHITE);
    for (i, sentence) in sentences.iter().enumerate() {
        let end = sentence_end(sentences, i, total);
        let owners = ink_owners(&sentence.words);
        let mut ink_at = 0;
        for (cue, range) in sentence_cues(sentence, style.max_line_chars, end) {
            let size = layout.fit(&cue.lines, layout.size);
            let cue_ink: usize = cue.lines.iter().map(|l| ink(l)).sum();
            if range.is_empty() {
                let text = cue.lines.iter().map(|l| ass_escape(l)).collect::<Vec<_>>();
                dialogue(&mut s, cue.start, cue.end, &layout, size, &text.join("\\N"));
                ink_at += cue_ink;
                continue;
            }
            for w in range.clone() {
                let from = if w == range.start {
                    cue.start
                } else {
                    sentence.words[w].start.max(cue.start)
                };
                let to = if w + 1 == range.end {
                    cue.end
                } else {
                    sentence.words[w + 1].start.min(cue.end)
                };
                let mut k = ink_at;
                let lines: Vec<String> = cue
                    .lines
                    .iter()
                    .map(|line| {
                        let mut out = String::new();
                        let mut lit = false;
                        for c in line.chars() {
                            if !c.is_whitespace() {
                                let on = owners.get(k) == Some(&w);
                                k += 1;
                                if on != lit {
                                    out.push_str(if on { &hi } else { &white });
                                    lit = on;
                                }
                            }
                            out.push_str(&ass_escape(&c.to_string()));
                        }
                        if lit {
                            out.push_str(&white);
                        }
                        out
                    })
                    .collect();
                dialogue(
                    &mut s,
                    from,
                    to.max(from),
                    &layout,
                    size,
                    &lines.join("\\N"),
                );
            }
            ink_at += cue_ink;
        }
    }
    s
}

/// The subtitles stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    cx.emit("subtitles", NewEvent::info("Generating subtitles"))
        .await?;
    let cfg = cx.config.clone();
    let (width, height) = cx.frame();
    let style = SubtitleStyle {
        width,
        height,
        font: cfg.subtitles.font.clone(),
        font_size_1920: cfg.subtitles.font_size,
        max_line_chars: cfg.subtitles.max_line_chars as usize,
        color: cx.request.color_rgb,
        position: cx.request.subtitles_position,
        style: cx.request.subtitles_style,
    };
    let path = cx.work_dir.join("subtitles.ass");
    let doc = document(&style, &cx.artifacts.sentences, cx.artifacts.duration);
    let events = doc.lines().filter(|l| l.starts_with("Dialogue:")).count();
    tokio::fs::write(&path, doc)
        .await
        .map_err(|e| StageError::failed("Io", format!("{}: {e}", path.display())))?;
    // The captions as a file for people and players (`GET /api/jobs/:id/subtitles`), next to the
    // video: the cues of the classic style, whatever style is burnt in.
    let cues = build_cues(
        &cx.artifacts.sentences,
        cfg.subtitles.max_line_chars as usize,
        cx.artifacts.duration,
    );
    let srt = cx.output_path.with_extension("srt");
    if let Some(dir) = srt.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    tokio::fs::write(&srt, super::captions::srt_document(&cues))
        .await
        .map_err(|e| StageError::failed("Io", format!("{}: {e}", srt.display())))?;
    info!(job = %cx.job.0, stage = "subtitles", style = %style.style, events, "subtitles written");
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
            words: Vec::new(),
            exact_words: false,
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
            style: CaptionStyle::Classic,
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

    /// Sentences with words timed evenly: the kinds of text that are hard to fit.
    fn hard_sentences() -> Vec<SpokenSentence> {
        let texts = [
            "Octopuses have three hearts and very blue blood in their veins.",
            "SUPERCALIFRAGILISTICEXPIALIDOCIOUS WONDERS, WORLDWIDE!",
            "心臓は三つあります。タコの血は青く、二つの心臓がえらに血を送り、三つ目が体全体に送ります。",
            "Mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm.",
        ];
        let mut t = 0.0;
        texts
            .iter()
            .map(|text| {
                let units = super::super::timing::units(text);
                let step = 0.3;
                let words = units
                    .iter()
                    .enumerate()
                    .map(|(i, u)| SpokenWord {
                        text: u.text.clone(),
                        start: t + i as f64 * step,
                        end: t + (i as f64 + 0.9) * step,
                        glued: u.glued,
                    })
                    .collect::<Vec<_>>();
                let s = SpokenSentence {
                    text: (*text).into(),
                    start: t,
                    duration: units.len() as f64 * step + 0.2,
                    words,
                    exact_words: true,
                };
                t += s.duration;
                s
            })
            .collect()
    }

    /// A dialogue's lines with the override tags taken out, its font size and its `\an`.
    fn parse_dialogue(line: &str, style_size: f64) -> (Vec<String>, f64, Option<u8>) {
        let text = line.splitn(10, ',').nth(9).unwrap_or_default();
        let mut size = style_size;
        let mut an = None;
        let mut plain = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            plain.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
            let tags = &rest[open + 1..close];
            for tag in tags.split('\\') {
                if let Some(v) = tag.strip_prefix("fs").and_then(|v| v.parse::<f64>().ok()) {
                    size = v;
                }
                if let Some(v) = tag.strip_prefix("an").and_then(|v| v.parse::<u8>().ok()) {
                    an = Some(v);
                }
            }
            rest = &rest[(close + 1).min(rest.len())..];
        }
        plain.push_str(rest);
        let lines = plain
            .split("\\N")
            .map(|l| {
                l.replace("\\{", "{")
                    .replace("\\}", "}")
                    .replace("\\\\", "\\")
            })
            .collect();
        (lines, size, an)
    }

    #[test]
    fn captions_fit_the_frame_at_every_aspect_ratio_font_size_and_style() {
        let sentences = hard_sentences();
        let total = sentences.iter().map(|s| s.duration).sum::<f64>();
        let positions = [
            (Horizontal::Center, Vertical::Bottom),
            (Horizontal::Left, Vertical::Top),
            (Horizontal::Right, Vertical::Center),
        ];
        let mut checked = 0;
        for &aspect in crate::config::AspectRatio::ALL {
            let render = crate::config::RenderConfig {
                width: 1080,
                height: 1920,
                ..Default::default()
            };
            let (w, h) = render.frame(aspect);
            for font_size in [8, 84, 200, 400] {
                for max_line_chars in [8, 22, 60] {
                    for position in positions {
                        for &cap in CaptionStyle::ALL {
                            let style = SubtitleStyle {
                                width: w,
                                height: h,
                                font: "DejaVu Sans".into(),
                                font_size_1920: font_size,
                                max_line_chars,
                                color: (255, 255, 0),
                                position,
                                style: cap,
                            };
                            let layout = Layout::of(&style);
                            let doc = document(&style, &sentences, total);
                            let what = format!("{aspect} {w}x{h} font {font_size} cols {max_line_chars} {position:?} {cap}");
                            let usable_w = f64::from(w) - 2.0 * layout.margin_lr;
                            let usable_h = f64::from(h) - 2.0 * layout.margin_v;
                            let dialogues: Vec<&str> =
                                doc.lines().filter(|l| l.starts_with("Dialogue:")).collect();
                            assert!(!dialogues.is_empty(), "{what}");
                            let mut shown = String::new();
                            for d in &dialogues {
                                let (lines, size, an) = parse_dialogue(d, layout.size);
                                let widest = lines.iter().map(|l| text_em(l)).fold(0.0, f64::max);
                                let width = (widest + 2.0 * OUTLINE_EM + SHADOW_EM) * size;
                                let height =
                                    (lines.len() as f64 * LINE_EM + 2.0 * OUTLINE_EM + SHADOW_EM)
                                        * size;
                                assert!(
                                    width <= usable_w + 0.5,
                                    "{what}: {d} is {width:.0} wide, {usable_w} usable"
                                );
                                assert!(
                                    height <= usable_h + 0.5,
                                    "{what}: {d} is {height:.0} high, {usable_h} usable"
                                );
                                assert!(lines.len() <= MAX_LINES, "{what}: {d}");
                                if cap == CaptionStyle::Word {
                                    // Centred across the frame, on the position's row.
                                    assert_eq!(
                                        an,
                                        Some(alignment(Horizontal::Center, position.1)),
                                        "{what}: {d}"
                                    );
                                }
                                if cap != CaptionStyle::Karaoke {
                                    shown.push_str(&lines.concat());
                                }
                            }
                            if cap != CaptionStyle::Karaoke {
                                // Nothing is lost by the wrapping: every letter is shown, in order
                                // (CJK broken between characters, never dropped).
                                let letters = |t: &str| {
                                    t.chars()
                                        .filter(|c| c.is_alphanumeric())
                                        .collect::<String>()
                                };
                                let all: String =
                                    sentences.iter().map(|s| letters(&s.text)).collect();
                                assert_eq!(letters(&shown), all, "{what}");
                            }
                            // The `word` style is large: short words are shown half as large again
                            // as a classic line.
                            if cap == CaptionStyle::Word && font_size == 84 && max_line_chars == 22
                            {
                                let largest = dialogues
                                    .iter()
                                    .map(|d| parse_dialogue(d, layout.size).1)
                                    .fold(0.0, f64::max);
                                assert!(
                                    largest >= layout.size * 1.5,
                                    "{what}: largest word size {largest} vs {}",
                                    layout.size
                                );
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 4 * 3 * 3 * 3);
    }

    #[test]
    fn cjk_breaks_between_characters_within_the_line_limit() {
        let text = "心臓は三つあります。タコの血は青く、二つの心臓がえらに血を送り、三つ目が体全体に送ります。";
        for max in [6, 10, 16] {
            let lines = wrap_lines(text, max);
            assert!(lines.len() > 1, "{lines:?}");
            assert!(
                lines.iter().all(|l| display_width(l) <= max.max(2)),
                "{max}: {lines:?}"
            );
            assert_eq!(lines.concat(), text, "{max}: nothing lost or added");
        }
    }
}
