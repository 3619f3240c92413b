//! The offline search-term extractor: footage search terms taken from the subject and the script,
//! when no language model gives them (or gives too few). Deterministic; no duplicates; each term
//! at most three words; never a word of the offline writer's templates nor a bare number.

use super::offline::template_words;
use super::words::{content_runs, is_stopword, words_of};

/// `count` search terms: the subject's noun phrases, its single words, then the script's most
/// frequent content words; no duplicates, each at most three words.
pub fn offline_search_terms(subject: &str, script: &str, count: usize) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    let add = |t: String, terms: &mut Vec<String>| {
        if terms.len() < count && !t.is_empty() && !terms.contains(&t) {
            terms.push(t);
        }
    };
    let runs = content_runs(subject);
    for r in &runs {
        add(r.clone(), &mut terms);
    }
    // Script words by frequency, first appearance breaking ties; the single words of the subject's
    // phrases come after them (the phrase already carries them).
    let mut freq: Vec<(String, usize, usize)> = Vec::new();
    for (i, w) in words_of(script).into_iter().enumerate() {
        if is_stopword(&w)
            || w.chars().count() < 4
            || w.chars().all(|c| c.is_ascii_digit())
            || template_words().contains(&w)
        {
            continue;
        }
        match freq.iter_mut().find(|(x, _, _)| *x == w) {
            Some(e) => e.1 += 1,
            None => freq.push((w, 1, i)),
        }
    }
    freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    for (w, _, _) in freq {
        if !is_number_word(&w) {
            add(w, &mut terms);
        }
    }
    for r in &runs {
        for w in r.split(' ').filter(|w| w.chars().count() > 2) {
            if !is_number_word(w) {
                add(w.to_string(), &mut terms);
            }
        }
    }
    // A tiny subject and script still yields `count` distinct terms.
    let base = terms
        .first()
        .cloned()
        .unwrap_or_else(|| "abstract".to_string());
    for suffix in [
        "closeup",
        "landscape",
        "abstract",
        "motion",
        "light",
        "texture",
        "colors",
        "background",
    ] {
        add(format!("{base} {suffix}"), &mut terms);
    }
    let mut n = 2;
    while terms.len() < count {
        add(format!("{base} {n}"), &mut terms);
        n += 1;
    }
    terms
}

/// Counting words make poor footage searches on their own ("three").
fn is_number_word(w: &str) -> bool {
    const NUMBERS: &[&str] = &[
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "twenty", "hundred", "thousand", "million", "billion", "first", "second",
        "third",
    ];
    NUMBERS.contains(&w) || w.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_come_from_subject_then_script() {
        let terms = offline_search_terms(
            "Why octopuses have three hearts",
            "Octopus blood is blue. The blood carries copper. Hearts pump blood through the gills.",
            5,
        );
        assert_eq!(terms.len(), 5);
        assert_eq!(terms[0], "octopuses");
        assert_eq!(terms[1], "three hearts");
        assert!(terms.contains(&"blood".to_string()), "{terms:?}");
        let mut dedup = terms.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), terms.len());
        // Even an empty-ish subject gives distinct terms.
        let t = offline_search_terms("Why?", "", 7);
        assert_eq!(t.len(), 7);
        let set: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(set.len(), 7);
    }
}
