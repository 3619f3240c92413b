//! The built-in offline writer: a short, readable script about a subject from templates, no
//! network. Deterministic: a subject (any case) always gets the same script, its choices seeded by
//! the subject's text.

use std::collections::HashSet;
use std::sync::OnceLock;

use super::words::{key_phrase, words_of};
use crate::pipeline::text::{collapse_whitespace, seed_of};

fn pick<'t>(options: &[&'t str], seed: u64, salt: u64) -> &'t str {
    let i = (seed.rotate_left((salt % 63) as u32) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        % options.len() as u64;
    options[i as usize]
}

/// The subject as a sentence: first letter upper case, trailing punctuation removed.
pub fn subject_sentence(subject: &str) -> (String, bool) {
    let s = collapse_whitespace(subject);
    let question = s.ends_with('?')
        || words_of(&s).first().is_some_and(|w| {
            [
                "why", "how", "what", "when", "where", "who", "which", "is", "are", "do", "does",
                "can", "could", "should",
            ]
            .contains(&w.as_str())
        });
    let s = s.trim_end_matches(['.', '!', '?', '…', ' ']).to_string();
    let mut chars = s.chars();
    let s = match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => s,
    };
    (s, question)
}

/// A short, readable script about `subject`, `paragraphs` paragraphs, deterministic per subject.
pub fn offline_script(subject: &str, paragraphs: u32) -> String {
    let seed = seed_of(&subject.to_lowercase());
    let (title, question) = subject_sentence(subject);
    let key = key_phrase(subject);
    let fill = |t: &str| t.replace("{subject}", &title).replace("{key}", &key);

    let opener = if question {
        pick(
            &[
                "{subject}? It is a better question than it sounds.",
                "{subject}? Here is the short answer, and it is a good one.",
                "{subject}? Stay for a minute and you will never forget the answer.",
            ],
            seed,
            1,
        )
    } else {
        pick(
            &[
                "{subject}. Here is what most people never hear about it.",
                "{subject}. Give it one minute and it will change how you see it.",
                "Let's talk about {subject}, because it is stranger than it looks.",
            ],
            seed,
            1,
        )
    };
    let intro_rest = [
        pick(
            &[
                "At first glance {key} seems simple.",
                "Most of us think we already understand {key}.",
                "We see {key} all the time without a second thought.",
            ],
            seed,
            2,
        ),
        pick(
            &[
                "But the details tell a far more interesting story.",
                "Look a little closer, though, and the picture changes.",
                "The real explanation is hiding in plain sight.",
            ],
            seed,
            3,
        ),
    ];
    let middles: [[&str; 3]; 5] = [
        [
            "Scientists who study {key} keep finding surprises.",
            "Each answer seems to open a new question.",
            "That is exactly what makes the topic so fascinating.",
        ],
        [
            "Think about how {key} works on an ordinary day.",
            "Small changes add up to something remarkable.",
            "Over time, those tiny steps make all the difference.",
        ],
        [
            "History has a lot to say about {key} too.",
            "People have wondered about it for centuries.",
            "Some of their early guesses were wrong, and some were brilliant.",
        ],
        [
            "Here is the part that surprises almost everyone.",
            "The most important piece of {key} is the one you never see.",
            "Once you notice it, you will spot it everywhere.",
        ],
        [
            "So why does any of this matter?",
            "Because {key} connects to everyday life in quiet ways.",
            "Understanding it helps the rest of the world make a little more sense.",
        ],
    ];
    let closer = [
        pick(
            &[
                "So next time you think about {key}, remember this.",
                "Now you know a little more about {key} than most people do.",
                "And that is the secret behind {subject}.",
            ],
            seed,
            4,
        ),
        pick(
            &[
                "Follow for more short stories like this one.",
                "Share this with someone who would love to know.",
                "Which fact surprised you most? Tell us below.",
            ],
            seed,
            5,
        ),
    ];

    let n = paragraphs.max(1) as usize;
    let mut out: Vec<String> = Vec::with_capacity(n);
    let first = std::iter::once(opener)
        .chain(intro_rest)
        .map(fill)
        .collect::<Vec<_>>()
        .join(" ");
    out.push(first);
    let start = (seed % middles.len() as u64) as usize;
    for i in 0..n.saturating_sub(2) {
        let m = &middles[(start + i) % middles.len()];
        out.push(m.iter().map(|t| fill(t)).collect::<Vec<_>>().join(" "));
    }
    let closing = closer.iter().map(|t| fill(t)).collect::<Vec<_>>().join(" ");
    if n == 1 {
        if let Some(p) = out.last_mut() {
            p.push(' ');
            p.push_str(&closing);
        }
    } else {
        out.push(closing);
    }
    out.join("\n\n")
}

/// The words of the offline writer's templates ("think", "answer", "short"...): they say nothing
/// about the subject, so they never become search terms. Gathered once by writing scripts about
/// nonsense subjects, which exercises the templates' choices.
pub(super) fn template_words() -> &'static HashSet<String> {
    static WORDS: OnceLock<HashSet<String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        let mut set = HashSet::new();
        for a in b'a'..=b'z' {
            for subject in [
                format!("zq{}x", a as char),
                format!("Why zq{}x?", a as char),
            ] {
                for w in words_of(&offline_script(&subject, 10)) {
                    if !w.starts_with("zq") {
                        set.insert(w);
                    }
                }
            }
        }
        set
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::text::{paragraphs_of, split_sentences};

    #[test]
    fn offline_script_honours_paragraphs_and_mentions_the_subject() {
        for n in 1..=6 {
            let s = offline_script("Why octopuses have three hearts", n);
            assert_eq!(paragraphs_of(&s).len(), n as usize, "{s}");
            assert!(s.contains("Why octopuses have three hearts?"), "{s}");
            assert!(s.contains("octopuses"), "{s}");
            assert!(!s.contains('{'), "unfilled template: {s}");
            assert!(split_sentences(&s).len() >= 3);
        }
        // Deterministic per subject, different across subjects.
        assert_eq!(
            offline_script("Black holes", 2),
            offline_script("Black holes", 2)
        );
        assert_ne!(
            offline_script("Black holes", 2),
            offline_script("Honey bees", 2)
        );
        assert!(
            offline_script("black holes", 1).starts_with("Black holes")
                || offline_script("black holes", 1).contains("Black holes")
        );
    }
}
