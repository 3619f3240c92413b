//! Text helpers shared by the script, voice and subtitle stages: sentence splitting, word counts,
//! display widths and the speech-length estimate.
//!
//! Invariants: `split_sentences` never loses a spoken word (joining its output with spaces gives the
//! input's words in order), never returns an empty or punctuation-only sentence, and does not break
//! after abbreviations (`Dr.`, `e.g.`, initials), inside decimals (`3.14`) or between `?!…` runs.
//! Sentence ends include CJK and other non-Latin full stops (`。！？` and friends).

/// Words after which a full stop does not end the sentence (lower case, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie",
    "approx", "no", "fig", "inc", "ltd", "co", "corp", "mt", "ft", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m", "ca",
    "cf", "al",
];

/// Characters that end a sentence on their own.
fn is_terminal(c: char) -> bool {
    matches!(
        c,
        '.' | '!'
            | '?'
            | '…'
            | '。'
            | '！'
            | '？'
            | '｡'
            | '։'
            | '؟'
            | '۔'
            | '।'
            | '॥'
            | '።'
            | '‼'
            | '⁇'
            | '⁈'
            | '⁉'
    )
}

/// Characters that may follow a terminal and still belong to the sentence (closing quotes, brackets).
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '”'
            | '’'
            | '»'
            | '」'
            | '』'
            | '）'
            | '】'
            | '〕'
            | '〉'
            | '》'
    )
}

/// Whether a terminal at a full-width/CJK punctuation mark needs no following space to end.
fn ends_without_space(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

/// Whether `s` has something to say (a letter or a digit).
pub fn has_words(s: &str) -> bool {
    s.chars().any(char::is_alphanumeric)
}

/// Splits text into sentences, trimmed, whitespace collapsed, in order.
pub fn split_sentences(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // A blank line ends a sentence even without punctuation (paragraph breaks, headings).
        if c == '\n' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_whitespace() && chars[j] != '\n' {
                j += 1;
            }
            if j < chars.len() && chars[j] == '\n' {
                push_sentence(&mut out, &chars[start..i]);
                start = j + 1;
                i = j + 1;
                continue;
            }
        }
        if !is_terminal(c) {
            i += 1;
            continue;
        }
        // Take the whole run of terminals ("?!", "...", "?!…") and closers after it.
        let mut end = i + 1;
        while end < chars.len() && is_terminal(chars[end]) {
            end += 1;
        }
        while end < chars.len() && is_closer(chars[end]) {
            end += 1;
        }
        let at_end = end >= chars.len();
        let followed_by_space = !at_end && chars[end].is_whitespace();
        let cjk = chars[i..end].iter().any(|&t| ends_without_space(t));
        let run: Vec<char> = chars[i..end]
            .iter()
            .copied()
            .filter(|&t| !is_closer(t))
            .collect();
        let single_dot = run == ['.'];
        // "Yes… it was" and "and so... on" continue the sentence; "Then he left... Quietly" does not.
        let ellipsis = run.iter().all(|&t| t == '.' || t == '…') && !single_dot;
        let breaks = if at_end || cjk {
            true
        } else if !followed_by_space {
            false // "3.14", "e.g.x", "example.com"
        } else if single_dot {
            !is_abbreviation(&chars[start..i]) && !next_starts_lowercase(&chars[end..])
        } else if ellipsis {
            !next_starts_lowercase(&chars[end..])
        } else {
            true
        };
        if breaks {
            push_sentence(&mut out, &chars[start..end]);
            start = end;
        }
        i = end;
    }
    if start < chars.len() {
        push_sentence(&mut out, &chars[start..]);
    }
    out
}

fn push_sentence(out: &mut Vec<String>, chars: &[char]) {
    let s: String = chars.iter().collect();
    let s = collapse_whitespace(&s);
    if s.is_empty() {
        return;
    }
    if !has_words(&s) {
        // Stray punctuation ("..." on its own) joins the previous sentence rather than being spoken.
        if let Some(last) = out.last_mut() {
            last.push_str(&s);
        }
        return;
    }
    out.push(s);
}

/// Whether the word just before a full stop is an abbreviation or an initial ("J. R. R. Tolkien").
fn is_abbreviation(before: &[char]) -> bool {
    let word: String = before
        .iter()
        .rev()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '(' | '"' | '“' | '\''))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let word = word.to_lowercase();
    if word.is_empty() {
        return false;
    }
    if ABBREVIATIONS.contains(&word.as_str()) {
        return true;
    }
    // A single capital letter is an initial.
    let mut it = before.iter().rev().take_while(|c| !c.is_whitespace());
    matches!((it.next(), it.next()), (Some(c), None) if c.is_uppercase())
}

/// Whether the text after a full stop continues in lower case ("approx. five", "etc. and so on").
fn next_starts_lowercase(after: &[char]) -> bool {
    after
        .iter()
        .find(|c| !c.is_whitespace())
        .is_some_and(|c| c.is_lowercase())
}

/// Collapses runs of whitespace to one space and trims.
pub fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Words in `s`; a run of CJK ideographs or kana counts one word per character.
pub fn word_count(s: &str) -> usize {
    s.split_whitespace()
        .map(|w| {
            let wide = w.chars().filter(|&c| is_wide(c)).count();
            let rest = w.chars().any(|c| c.is_alphanumeric() && !is_wide(c));
            wide + usize::from(rest)
        })
        .sum()
}

/// Seconds a voice speaking `wpm` words per minute takes for `s`.
pub fn estimated_speech_seconds(s: &str, wpm: u32) -> f64 {
    word_count(s) as f64 * 60.0 / f64::from(wpm.max(1))
}

/// East Asian wide characters (ideographs, kana, hangul, full-width forms): two columns on screen.
pub fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA960..=0xA97F | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
}

/// On-screen width of `s` in columns (a wide character counts two).
pub fn display_width(s: &str) -> usize {
    s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

/// Paragraphs of `text`: split at blank lines, whitespace collapsed, empty ones dropped.
pub fn paragraphs_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.trim().is_empty() {
                out.push(collapse_whitespace(&cur));
            }
            cur.clear();
        } else {
            cur.push(' ');
            cur.push_str(line);
        }
    }
    if !cur.trim().is_empty() {
        out.push(collapse_whitespace(&cur));
    }
    out
}

/// FNV-1a: a stable seed from text (the same subject always gets the same script and footage).
pub fn seed_of(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_on_ends_but_not_abbreviations_or_decimals() {
        let s = split_sentences(
            "Dr. Smith paid $3.50 for it. Really?! Yes… it was cheap. Mr. and Mrs. Jones, e.g. my \
             neighbours, agree.   J. R. R. Tolkien wrote it. Visit example.com today!",
        );
        assert_eq!(
            s,
            vec![
                "Dr. Smith paid $3.50 for it.",
                "Really?!",
                "Yes… it was cheap.",
                "Mr. and Mrs. Jones, e.g. my neighbours, agree.",
                "J. R. R. Tolkien wrote it.",
                "Visit example.com today!",
            ]
        );
    }

    #[test]
    fn quotes_and_ellipses_stay_with_their_sentence() {
        let s = split_sentences("He said \"Stop.\" Then he left... Quietly. (Or not.) End");
        assert_eq!(
            s,
            vec![
                "He said \"Stop.\"",
                "Then he left...",
                "Quietly.",
                "(Or not.)",
                "End"
            ]
        );
    }

    #[test]
    fn non_latin_full_stops_end_sentences() {
        let s = split_sentences(
            "タコには心臓が三つあります。本当ですか？はい！ 다음 문장입니다. Ещё одно предложение.",
        );
        assert_eq!(
            s,
            vec![
                "タコには心臓が三つあります。",
                "本当ですか？",
                "はい！",
                "다음 문장입니다.",
                "Ещё одно предложение."
            ]
        );
        assert_eq!(
            split_sentences("क्या यह सच है? हाँ।"),
            vec!["क्या यह सच है?", "हाँ।"]
        );
    }

    #[test]
    fn punctuation_only_pieces_and_paragraph_breaks() {
        assert_eq!(
            split_sentences("Hello.\n\nNew paragraph without stop\n\n... !"),
            vec!["Hello.", "New paragraph without stop...!"]
        );
        assert!(split_sentences("  ... ?! ").is_empty());
        // A single newline is just whitespace.
        assert_eq!(
            split_sentences("one line\ncontinues."),
            vec!["one line continues."]
        );
    }

    #[test]
    fn no_word_is_lost() {
        let text = "A. b? c! d… e。f「g」. 3.14 is pi. Ok";
        let joined = split_sentences(text).join(" ");
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(words(&joined).concat(), words(text).concat());
    }

    #[test]
    fn words_and_widths() {
        assert_eq!(word_count("Octopuses have three hearts."), 4);
        assert_eq!(word_count("心臓が三つ"), 5);
        assert_eq!(display_width("ab心"), 4);
        assert!((estimated_speech_seconds("one two three", 180) - 1.0).abs() < 1e-9);
    }
}
