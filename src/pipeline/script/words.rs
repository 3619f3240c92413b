//! Words of a text as the term extractor and the offline writer see them: lower-case words with
//! punctuation trimmed, the stopwords that say nothing about what to show, and the runs of content
//! words that make a subject's noun phrases. Pure; no crate imports beyond the text helpers.

use crate::pipeline::text::collapse_whitespace;

/// Words that say nothing about what to show.
pub(super) const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "even",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "know",
    "let",
    "lets",
    "like",
    "make",
    "makes",
    "many",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "never",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "out",
    "over",
    "own",
    "really",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "us",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "actually",
    "ever",
    "way",
    "ways",
    "well",
    "yes",
    "next",
    "time",
    "still",
    "see",
    "look",
    "take",
    "tell",
    "want",
    "story",
    "question",
    "answer",
    "people",
    "minute",
    "something",
    "worth",
    "fact",
    "facts",
    "world",
    "part",
    "bit",
    "lot",
    "kind",
    "sort",
    "today",
    "why's",
    "what's",
    "it's",
    "that's",
    "there's",
    "don't",
    "doesn't",
    "isn't",
    "aren't",
    "can't",
    "won't",
];

pub(super) fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// Lower-case words of `s`, punctuation trimmed (apostrophes inside words kept).
pub(super) fn words_of(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '/' | '(' | ')' | '"'))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .replace('’', "'")
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Runs of consecutive content words (at most three words each): the noun phrases of a subject.
pub(super) fn content_runs(s: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for w in words_of(s) {
        if is_stopword(&w) {
            if !cur.is_empty() {
                runs.push(cur.join(" "));
                cur.clear();
            }
        } else {
            cur.push(w);
            if cur.len() == 3 {
                runs.push(cur.join(" "));
                cur.clear();
            }
        }
    }
    if !cur.is_empty() {
        runs.push(cur.join(" "));
    }
    runs
}

/// The subject's main noun phrase ("Why octopuses have three hearts" -> "octopuses").
pub fn key_phrase(subject: &str) -> String {
    content_runs(subject)
        .into_iter()
        .next()
        .unwrap_or_else(|| collapse_whitespace(subject).to_lowercase())
}
