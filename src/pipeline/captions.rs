//! Captions as files people and players read: SubRip (`.srt`) written next to the video by the
//! subtitles stage, and WebVTT derived from it on request. Pure text functions.
//!
//! Invariants: cues are numbered from 1 in order; times are `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm`
//! (WebVTT), never negative; a cue's text never holds an empty line (that would end the cue early),
//! so the conversion SRT -> WebVTT only has to rewrite timing lines.

use std::fmt::Write as _;

use super::subtitles::Cue;

/// `3723.4567` -> `01:02:03,457` (`sep` is `,` for SRT, `.` for WebVTT).
fn timestamp(seconds: f64, sep: char) -> String {
    let ms = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    };
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// The cues as a SubRip document.
pub fn srt_document(cues: &[Cue]) -> String {
    let mut s = String::new();
    for (i, c) in cues.iter().enumerate() {
        let lines: Vec<&str> = c
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            continue;
        }
        // Writes into a String cannot fail.
        let _ = write!(
            s,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(c.start, ','),
            timestamp(c.end.max(c.start), ','),
            lines.join("\n")
        );
    }
    s
}

/// A SubRip document as WebVTT: a `WEBVTT` header, and `.` for `,` in the timing lines only.
pub fn srt_to_vtt(srt: &str) -> String {
    let mut out = String::with_capacity(srt.len() + 16);
    out.push_str("WEBVTT\n\n");
    for line in srt.trim_start_matches('\u{feff}').lines() {
        if line.contains(" --> ") {
            out.push_str(&line.replace(',', "."));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(start: f64, end: f64, lines: &[&str]) -> Cue {
        Cue {
            start,
            end,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn srt_numbers_cues_and_formats_times() {
        let doc = srt_document(&[
            cue(0.0, 1.5, &["Octopuses have", "three hearts."]),
            cue(3723.4567, 3725.0, &["Two pump blood, 1, 2."]),
        ]);
        assert_eq!(
            doc,
            "1\n00:00:00,000 --> 00:00:01,500\nOctopuses have\nthree hearts.\n\n\
             2\n01:02:03,457 --> 01:02:05,000\nTwo pump blood, 1, 2.\n\n"
        );
    }

    #[test]
    fn empty_lines_never_end_a_cue_early() {
        let doc = srt_document(&[cue(1.0, 2.0, &["a", "  ", "b"]), cue(2.0, 3.0, &[""])]);
        assert_eq!(doc, "1\n00:00:01,000 --> 00:00:02,000\na\nb\n\n");
    }

    #[test]
    fn vtt_rewrites_timing_lines_only() {
        let srt = srt_document(&[cue(0.25, 1.0, &["Hello, world."])]);
        assert_eq!(
            srt_to_vtt(&srt),
            "WEBVTT\n\n1\n00:00:00.250 --> 00:00:01.000\nHello, world.\n\n"
        );
        assert_eq!(timestamp(-3.0, ','), "00:00:00,000");
        assert_eq!(timestamp(f64::NAN, '.'), "00:00:00.000");
    }
}
