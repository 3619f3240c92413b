//! Word timings of the voiceover: the caption units of a sentence and when each is spoken.
//!
//! A sentence's units are its words; a run of CJK characters (text written without spaces) is one
//! unit per character, and punctuation stays with the unit it follows. Times come from the voice
//! engine where it reports them ([`WordMark`]s: exact), else they are estimated inside the sentence's
//! measured audio with its leading and trailing silence trimmed (ffmpeg's `silencedetect` over the
//! voice track), shared out by syllables (CJK: by characters).
//!
//! Invariants of [`word_times`]: one [`SpokenWord`] per unit, in order; each has
//! `start <= end`, none starts before the previous one ends, and all lie inside the sentence's audio
//! `[start, start + duration]`.

use std::ffi::OsString;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::process::{self, Tool};
use super::text::is_wide;
use super::{StageError, StopSignal};

/// One caption unit with its time in the voice track, seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpokenWord {
    pub text: String,
    pub start: f64,
    pub end: f64,
    /// Written without a space before it (the second and later characters of a CJK run).
    pub glued: bool,
}

/// A caption unit of a sentence, before it has a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub text: String,
    /// Offset of its first character in the sentence, in characters.
    pub offset: usize,
    pub glued: bool,
}

/// Where a voice engine says a word starts: `offset` in characters into the sentence it was given,
/// `time` in seconds from the start of that sentence's audio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WordMark {
    pub offset: usize,
    pub time: f64,
}

/// The caption units of `sentence`, in order; every letter and digit of it is in exactly one.
pub fn units(sentence: &str) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let chars: Vec<char> = sentence.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let token_start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        let token = &chars[token_start..i];
        if !token.iter().any(|c| c.is_alphanumeric()) {
            // Punctuation on its own ("—", "..."): shown with the word before it.
            match out.last_mut() {
                Some(u) => {
                    u.text.push(' ');
                    u.text.extend(token);
                }
                None => out.push(Unit {
                    text: token.iter().collect(),
                    offset: token_start,
                    glued: false,
                }),
            }
            continue;
        }
        // Split the token before every wide letter and before the first narrow letter after one.
        let mut cur = String::new();
        let mut cur_offset = token_start;
        let mut cur_has_letter = false;
        let mut prev_wide = false;
        let mut first = true;
        for (k, &c) in token.iter().enumerate() {
            let letter = c.is_alphanumeric();
            let wide = letter && is_wide(c);
            let starts_unit = cur_has_letter && letter && (wide || prev_wide);
            if starts_unit {
                out.push(Unit {
                    text: std::mem::take(&mut cur),
                    offset: cur_offset,
                    glued: !first,
                });
                first = false;
                cur_offset = token_start + k;
                cur_has_letter = false;
            }
            cur.push(c);
            if letter {
                cur_has_letter = true;
                prev_wide = wide;
            }
        }
        if !cur.is_empty() {
            out.push(Unit {
                text: cur,
                offset: cur_offset,
                glued: !first,
            });
        }
    }
    out
}

/// How long a unit takes to say, relative to the others: syllables (vowel groups) for alphabetic
/// words, one per character for CJK and digits, a little more before a comma-like pause.
fn weight(unit: &str) -> f64 {
    let mut syllables = 0usize;
    let mut in_vowel = false;
    let mut letters = 0usize;
    for c in unit.chars().flat_map(char::to_lowercase) {
        if is_wide(c) || c.is_ascii_digit() {
            syllables += 1;
            in_vowel = false;
            continue;
        }
        if !c.is_alphabetic() {
            in_vowel = false;
            continue;
        }
        letters += 1;
        let vowel = if c.is_ascii() {
            matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
        } else {
            // Accented Latin vowels.
            "àáâãäåæèéêëìíîïòóôõöøùúûüýÿœ".contains(c)
        };
        if vowel && !in_vowel {
            syllables += 1;
        }
        in_vowel = vowel;
    }
    // Vowel groups count English syllables well; other scripts get one per three letters.
    let guess = if unit.is_ascii() {
        0
    } else {
        letters.div_ceil(3)
    };
    let syllables = syllables.max(guess).max(1) as f64;
    let pause = if unit.ends_with([',', ';', ':', '—', '–', '、', '，']) {
        0.6
    } else {
        0.0
    };
    syllables + pause
}

/// Times for `units` shared out over `[from, to]` by [`weight`], back to back.
fn share_out(units: &[Unit], from: f64, to: f64) -> Vec<SpokenWord> {
    let to = to.max(from);
    let weights: Vec<f64> = units.iter().map(|u| weight(&u.text)).collect();
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut t = from;
    let mut acc = 0.0;
    units
        .iter()
        .zip(&weights)
        .enumerate()
        .map(|(i, (u, w))| {
            acc += w;
            let end = if i + 1 == units.len() {
                to
            } else {
                (from + (to - from) * acc / total).clamp(t, to)
            };
            let word = SpokenWord {
                text: u.text.clone(),
                start: t,
                end,
                glued: u.glued,
            };
            t = end;
            word
        })
        .collect()
}

/// The times of `sentence`'s words from an engine's marks: each unit belongs to the last mark at or
/// before its first letter, and the units of one mark share out its time (up to the next mark)
/// by weight. `audio_start` is where the sentence's audio starts in the track, `speech_end` where
/// its speech ends (trailing silence trimmed). With no marks, the times are estimated over
/// `[speech_start, speech_end]`.
pub fn word_times(
    sentence: &str,
    marks: &[WordMark],
    audio_start: f64,
    speech: (f64, f64),
) -> Vec<SpokenWord> {
    let units = units(sentence);
    let (speech_start, speech_end) = (speech.0, speech.1.max(speech.0));
    if marks.is_empty() || units.is_empty() {
        return share_out(&units, speech_start, speech_end);
    }
    let mut marks: Vec<WordMark> = marks.to_vec();
    marks.sort_by_key(|m| m.offset);
    // The mark each unit belongs to.
    let owner: Vec<usize> = units
        .iter()
        .map(|u| {
            let letter = u.offset
                + u.text
                    .chars()
                    .position(char::is_alphanumeric)
                    .unwrap_or_default();
            marks.iter().rposition(|m| m.offset <= letter).unwrap_or(0)
        })
        .collect();
    let mut out = Vec::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        let mut j = i + 1;
        while j < units.len() && owner[j] == owner[i] {
            j += 1;
        }
        let at = |k: usize| (audio_start + marks[owner[k]].time).clamp(audio_start, speech_end);
        let from = at(i).max(out.last().map_or(audio_start, |w: &SpokenWord| w.end));
        let to = if j < units.len() { at(j) } else { speech_end };
        out.extend(share_out(&units[i..j], from.min(speech_end), to.max(from)));
        i = j;
    }
    out
}

/// Silent stretches of an audio file, `(start, end)` in seconds, from ffmpeg's `silencedetect`
/// (quieter than -50 dB for 50 ms or more); a silence running to the end ends at the file's end.
pub async fn silences(
    stop: &StopSignal,
    ffmpeg: &Tool,
    audio: &Path,
) -> Result<Vec<(f64, f64)>, StageError> {
    let mut args: Vec<OsString> = process::FFMPEG_QUIET.map(Into::into).to_vec();
    args.extend([
        "-i".into(),
        audio.into(),
        "-af".into(),
        "silencedetect=noise=-50dB:d=0.05,ametadata=mode=print:file='pipe\\:1'".into(),
        "-f".into(),
        "null".into(),
        "-".into(),
    ]);
    let out = process::run(stop, ffmpeg, &args).await?;
    Ok(parse_silences(&String::from_utf8_lossy(&out.stdout)))
}

/// The `(start, end)` pairs of `ametadata` output of `silencedetect`.
pub fn parse_silences(text: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut open: Option<f64> = None;
    for line in text.lines() {
        let value = |key: &str| {
            line.strip_prefix(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if let Some(s) = value("lavfi.silence_start=") {
            open = Some(s.max(0.0));
        } else if let Some(e) = value("lavfi.silence_end=") {
            if let Some(s) = open.take() {
                out.push((s, e.max(s)));
            }
        }
    }
    if let Some(s) = open {
        out.push((s, f64::INFINITY));
    }
    out
}

/// `[start, end]` with a silence that covers either edge cut off; the span itself when the whole of
/// it is silent.
pub fn trim_silence(start: f64, end: f64, silences: &[(f64, f64)]) -> (f64, f64) {
    const EDGE: f64 = 0.02;
    let mut a = start;
    let mut b = end;
    for &(s, e) in silences {
        if s <= start + EDGE && e > a {
            a = a.max(e.min(end));
        }
        if e >= end - EDGE && s < b {
            b = b.min(s.max(start));
        }
    }
    if b - a < 0.05 {
        (start, end)
    } else {
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times of `sentence`'s words estimated over `[start, end]` (no engine marks).
    fn estimate(sentence: &str, start: f64, end: f64) -> Vec<SpokenWord> {
        word_times(sentence, &[], start, (start, end))
    }

    fn texts(units: &[Unit]) -> Vec<&str> {
        units.iter().map(|u| u.text.as_str()).collect()
    }

    #[test]
    fn units_are_words_and_cjk_characters() {
        let u = units("Octopuses have three hearts — really! 心臓は三つ。 C:\\New");
        assert_eq!(
            texts(&u),
            vec![
                "Octopuses",
                "have",
                "three",
                "hearts —",
                "really!",
                "心",
                "臓",
                "は",
                "三",
                "つ。",
                "C:\\New"
            ]
        );
        assert!(u[6].glued && !u[5].glued && !u[10].glued);
        assert_eq!(u[1].offset, 10);
        // Every letter is in exactly one unit.
        let s = "Dr. Smith paid $3.50 for it, e.g. today. タコ";
        let joined: String = units(s).iter().map(|u| u.text.clone()).collect();
        let letters = |t: &str| {
            t.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        };
        assert_eq!(letters(&joined), letters(s));
    }

    fn check(words: &[SpokenWord], from: f64, to: f64) {
        for w in words {
            assert!(w.start <= w.end, "{words:?}");
            assert!(w.start >= from - 1e-9 && w.end <= to + 1e-9, "{words:?}");
        }
        for p in words.windows(2) {
            assert!(p[0].end <= p[1].start + 1e-9, "{words:?}");
        }
    }

    #[test]
    fn estimates_follow_syllables_inside_the_span() {
        let w = estimate("A tremendous octopus, yes.", 2.0, 4.0);
        assert_eq!(w.len(), 4);
        check(&w, 2.0, 4.0);
        assert_eq!((w[0].start, w[3].end), (2.0, 4.0));
        let len = |x: &SpokenWord| x.end - x.start;
        // "tremendous" (3 syllables) takes three times "A" (1).
        assert!((len(&w[1]) / len(&w[0]) - 3.0).abs() < 1e-9, "{w:?}");
        assert!(len(&w[2]) > len(&w[1]), "a comma adds a pause: {w:?}");
        let jp = estimate("心臓は三つ", 0.0, 1.0);
        assert_eq!(jp.len(), 5);
        assert!(jp.iter().all(|x| (len(x) - 0.2).abs() < 1e-9), "{jp:?}");
    }

    #[test]
    fn engine_marks_place_words_and_share_out_unmarked_ones() {
        // The engine marked "Octopuses" at 0.1 s and "hearts" at 0.9 s (offsets 0 and 21).
        let marks = [
            WordMark {
                offset: 0,
                time: 0.1,
            },
            WordMark {
                offset: 21,
                time: 0.9,
            },
        ];
        let w = word_times("Octopuses have three hearts.", &marks, 10.0, (10.05, 11.5));
        assert_eq!(w.len(), 4);
        check(&w, 10.0, 11.5);
        assert!((w[0].start - 10.1).abs() < 1e-9, "{w:?}");
        assert!((w[3].start - 10.9).abs() < 1e-9, "{w:?}");
        assert!((w[2].end - 10.9).abs() < 1e-9, "{w:?}");
        assert_eq!(w[3].end, 11.5);
        // No marks: estimated over the speech.
        let e = word_times("Octopuses have three hearts.", &[], 10.0, (10.05, 11.5));
        check(&e, 10.05, 11.5);
    }

    #[test]
    fn silences_are_parsed_and_trimmed_at_the_edges_only() {
        let text = "frame:1 pts:1 pts_time:0\nlavfi.silence_start=0\nframe:2\nlavfi.silence_end=0.12\nlavfi.silence_duration=0.12\nlavfi.silence_start=1.4\nlavfi.silence_end=1.9\nlavfi.silence_start=3.3\n";
        let s = parse_silences(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], (0.0, 0.12));
        assert!(s[2].1.is_infinite());
        // Sentence 1 is [0, 1.6]: silence at its start and after 1.4.
        assert_eq!(trim_silence(0.0, 1.6, &s), (0.12, 1.4));
        // Sentence 2 is [1.85, 3.5]: the pause before it ends at 1.9, the tail is silent from 3.3.
        assert_eq!(trim_silence(1.85, 3.5, &s), (1.9, 3.3));
        // A silence in the middle changes nothing.
        assert_eq!(trim_silence(0.5, 1.0, &[(0.7, 0.8)]), (0.5, 1.0));
    }
}
