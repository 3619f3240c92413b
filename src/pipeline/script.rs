//! Script stage: the words of the video, and the footage search terms taken from them.
//!
//! The caller's own script (`request.script`) wins and no model is asked anything. Otherwise a
//! [`ScriptWriter`] writes one: a language model ([`LlmWriter`]: Ollama or an OpenAI-compatible
//! server, each call retried per `llm.retries` with a warning event per retry) or the built-in
//! offline writer (templates, seeded by the subject so a subject always gets the same script).
//! `llm.provider`: `auto` asks Ollama's model list (a short deadline) and uses Ollama when it answers,
//! else the offline writer with a warning event saying why; an explicit `ollama`/`openai` that fails
//! fails the stage {error, retryable, stage, provider}; `offline` uses the offline writer. Search
//! terms come from the same writer (a model's unusable answer falls back to the offline terms, with
//! a warning). Events: `Generating script with model: <model>` {model, paragraphs}, then `Script
//! generated successfully` (success) {wordCount, duration}. The stage leaves the script in
//! `artifacts.script`, exactly `footage.clips` search terms in `artifacts.search_terms`, and the
//! model it used in `artifacts.llm`.

use std::rc::Rc;

use serde_json::json;
use tracing::info;

use super::online::{self, CallSite};
use super::text::{collapse_whitespace, estimated_speech_seconds, has_words, word_count};
use super::{EventSink, JobContext, LlmChoice, LocalBoxFuture, Stage, StageError, StopSignal};
use crate::config::{Config, LlmConfig};
use crate::event::NewEvent;
use crate::providers::http::origin_of;
use crate::providers::llm::{self, Llm, ScriptRequest};
use crate::providers::{ollama, RetryPolicy};

/// What a writer is asked for.
#[derive(Clone, Debug)]
pub struct ScriptPrompt<'a> {
    pub subject: &'a str,
    pub paragraphs: u32,
    pub custom_prompt: Option<&'a str>,
    /// Language of the script (from the voice); `None` for English.
    pub language: Option<&'a str>,
}

/// Something that writes scripts and search terms: the offline writer or a language model.
pub trait ScriptWriter {
    /// Provider name for logs (`offline`, `ollama`, ...).
    fn name(&self) -> &'static str;
    /// The model as the event names it (`offline`, `llama3.1:8b`).
    fn model(&self) -> &str;
    /// `paragraphs` paragraphs of plain text, separated by blank lines.
    fn write<'a>(
        &'a self,
        prompt: &'a ScriptPrompt<'a>,
    ) -> LocalBoxFuture<'a, Result<String, StageError>>;
    /// `count` short stock-footage search terms for the subject and script.
    fn search_terms<'a>(
        &'a self,
        subject: &'a str,
        script: &'a str,
        count: usize,
    ) -> LocalBoxFuture<'a, Result<Vec<String>, StageError>>;
}

/// The built-in writer: readable, subject-specific text from templates, no network.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfflineWriter;

impl ScriptWriter for OfflineWriter {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        "offline"
    }

    fn write<'a>(
        &'a self,
        prompt: &'a ScriptPrompt<'a>,
    ) -> LocalBoxFuture<'a, Result<String, StageError>> {
        let text = offline_script(prompt.subject, prompt.paragraphs);
        Box::pin(async move { Ok(text) })
    }

    fn search_terms<'a>(
        &'a self,
        subject: &'a str,
        script: &'a str,
        count: usize,
    ) -> LocalBoxFuture<'a, Result<Vec<String>, StageError>> {
        let terms = offline_search_terms(subject, script, count);
        Box::pin(async move { Ok(terms) })
    }
}

/// A language model behind HTTP; every call retried per `llm.retries`, each retry a warning event.
pub struct LlmWriter {
    llm: Box<dyn Llm>,
    /// Short name for payloads: `ollama` or `openai`.
    provider: &'static str,
    model: String,
    policy: RetryPolicy,
    events: Rc<dyn EventSink>,
    stop: StopSignal,
}

impl LlmWriter {
    fn site(&self) -> CallSite<'_> {
        CallSite {
            events: self.events.as_ref(),
            stop: &self.stop,
            stage: "script",
            provider: self.provider,
        }
    }
}

impl ScriptWriter for LlmWriter {
    fn name(&self) -> &'static str {
        self.provider
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn write<'a>(
        &'a self,
        prompt: &'a ScriptPrompt<'a>,
    ) -> LocalBoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let req = ScriptRequest {
                subject: prompt.subject,
                paragraphs: prompt.paragraphs,
                custom_prompt: prompt.custom_prompt,
                language: prompt.language,
            };
            let llm = self.llm.as_ref();
            let model = self.model.as_str();
            let req = &req;
            online::call(self.site(), &self.policy, |_| {
                llm::write_script(llm, model, req)
            })
            .await?
            .map_err(|e| StageError::provider(self.provider, &e))
        })
    }

    fn search_terms<'a>(
        &'a self,
        subject: &'a str,
        script: &'a str,
        count: usize,
    ) -> LocalBoxFuture<'a, Result<Vec<String>, StageError>> {
        Box::pin(async move {
            let llm = self.llm.as_ref();
            let model = self.model.as_str();
            online::call(self.site(), &self.policy, |_| {
                llm::search_terms(llm, model, subject, script, count)
            })
            .await?
            .map_err(|e| StageError::provider(self.provider, &e))
        })
    }
}

/// The script stage.
#[derive(Debug, Default)]
pub struct ScriptStage;

/// The language model client that `llm.provider` names, with its short name (`auto` is Ollama).
pub fn llm_client(cfg: &LlmConfig) -> Result<(Box<dyn Llm>, &'static str), StageError> {
    let provider = match cfg.provider.as_str() {
        "openai" => online::OPENAI,
        _ => online::OLLAMA,
    };
    let mut cfg = cfg.clone();
    if cfg.provider == "auto" {
        cfg.provider = "ollama".into();
    }
    llm::from_config(&cfg)
        .map(|l| (l, provider))
        .map_err(|e| StageError::provider(provider, &e))
}

/// Which writer a job uses, and the event that says why when it is the offline one
/// (a warning when it stands in for an unreachable Ollama).
async fn choose_writer(
    cfg: &Config,
    requested_model: Option<&str>,
    events: &Rc<dyn EventSink>,
    stop: &StopSignal,
) -> Result<(Box<dyn ScriptWriter>, Option<NewEvent>), StageError> {
    let llm_cfg = &cfg.llm;
    let online = |llm: Box<dyn Llm>, provider: &'static str| -> Box<dyn ScriptWriter> {
        Box::new(LlmWriter {
            llm,
            provider,
            model: llm::model_for(llm_cfg, requested_model).to_string(),
            policy: RetryPolicy::with_retries(llm_cfg.retries),
            events: events.clone(),
            stop: stop.clone(),
        })
    };
    match llm_cfg.provider.as_str() {
        "offline" => Ok((
            Box::new(OfflineWriter),
            Some(NewEvent::info(
                "No language model is configured (llm.provider = offline); the built-in offline writer wrote the script.",
            )),
        )),
        "auto" => {
            let answer = tokio::select! {
                r = ollama::list_models(llm_cfg) => r,
                reason = stop.stopped() => return Err(StageError::Stopped(reason)),
            };
            match answer {
                Ok(_) => {
                    let (llm, provider) = llm_client(llm_cfg)?;
                    Ok((online(llm, provider), None))
                }
                Err(e) => {
                    info!(error = %e, "Ollama unreachable; using the offline writer");
                    let warning = NewEvent::warning(format!(
                        "Ollama is not reachable at {} ({}); the built-in offline writer wrote the script.",
                        origin_of(&llm_cfg.ollama_base_url),
                        online::unreachable_reason(&e)
                    ))
                    .with_payload(json!({
                        "error": e.code(),
                        "retryable": e.retryable(),
                        "stage": "script",
                        "provider": online::OLLAMA,
                    }));
                    Ok((Box::new(OfflineWriter), Some(warning)))
                }
            }
        }
        _ => {
            let (llm, provider) = llm_client(llm_cfg)?;
            Ok((online(llm, provider), None))
        }
    }
}

/// The language a script is written in, from the MoneyPrinter voice id; `None` for English.
pub fn language_of_voice(voice: &str) -> Option<&'static str> {
    let prefix = voice.split('_').next().unwrap_or("");
    match prefix {
        "fr" => Some("French"),
        "de" => Some("German"),
        "es" => Some("Spanish"),
        "br" => Some("Portuguese (Brazil)"),
        "id" => Some("Indonesian"),
        "jp" => Some("Japanese"),
        "kr" => Some("Korean"),
        _ => None,
    }
}

impl Stage for ScriptStage {
    fn name(&self) -> &'static str {
        "script"
    }

    fn action(&self) -> &'static str {
        "generate script"
    }

    fn run<'a>(&'a self, cx: &'a mut JobContext) -> LocalBoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let cfg = cx.config.clone();
            let caller_script = cx.request.script.clone();
            let from_caller = caller_script.is_some();
            let (writer, note) = match caller_script {
                Some(_) => (Box::new(OfflineWriter) as Box<dyn ScriptWriter>, None),
                None => {
                    let requested = cx.request.ai_model.clone();
                    choose_writer(&cfg, requested.as_deref(), &cx.events, &cx.stop).await?
                }
            };
            let model = match &caller_script {
                Some(_) => "caller script".to_string(),
                None => writer.model().to_string(),
            };
            let paragraphs = match &caller_script {
                Some(s) => paragraphs_of(s).len() as u32,
                None => cx.request.paragraph_number,
            };
            cx.emit(
                "script",
                NewEvent::info(format!("Generating script with model: {model}"))
                    .with_payload(json!({ "model": model, "paragraphs": paragraphs })),
            )
            .await?;

            let script = match caller_script {
                Some(s) => paragraphs_of(&s).join("\n\n"),
                None => {
                    let subject = cx.request.video_subject.clone();
                    let custom = cx.request.custom_prompt.clone();
                    let prompt = ScriptPrompt {
                        subject: &subject,
                        paragraphs: cx.request.paragraph_number.max(1),
                        custom_prompt: custom.as_deref(),
                        language: language_of_voice(&cx.request.voice),
                    };
                    let text = tokio::select! {
                        r = writer.write(&prompt) => r?,
                        reason = cx.stop.stopped() => return Err(StageError::Stopped(reason)),
                    };
                    if let Some(ev) = note {
                        cx.emit("script", ev).await?;
                    }
                    text
                }
            };
            if !has_words(&script) {
                return Err(StageError::failed(
                    "EmptyScript",
                    "the script has no words to speak",
                ));
            }
            cx.stop.check()?;
            let words = word_count(&script);
            let duration = estimated_speech_seconds(&script, cfg.voice.speed_wpm);
            info!(job = %cx.job.0, stage = "script", words, writer = writer.name(), "script ready");
            cx.emit(
                "script",
                NewEvent::success("Script generated successfully").with_payload(json!({
                    "wordCount": words,
                    "duration": (duration * 10.0).round() / 10.0,
                })),
            )
            .await?;

            let count = cfg.footage.clips.max(1) as usize;
            let subject = cx.request.video_subject.clone();
            let asked = tokio::select! {
                r = writer.search_terms(&subject, &script, count) => r,
                reason = cx.stop.stopped() => return Err(StageError::Stopped(reason)),
            };
            let mut terms = match asked {
                Ok(t) => t,
                Err(StageError::Stopped(r)) => return Err(StageError::Stopped(r)),
                Err(StageError::Failed {
                    error,
                    message,
                    provider,
                    ..
                }) => {
                    cx.emit(
                        "script",
                        NewEvent::warning(format!(
                            "No search terms from the model ({message}); using terms taken from the subject and script."
                        ))
                        .with_payload(json!({
                            "error": error,
                            "retryable": false,
                            "stage": "script",
                            "provider": provider,
                        })),
                    )
                    .await?;
                    Vec::new()
                }
            };
            // A model may give too few terms: the offline ones fill up.
            if terms.len() < count {
                for t in offline_search_terms(&subject, &script, count) {
                    if terms.len() == count {
                        break;
                    }
                    if !terms.contains(&t) {
                        terms.push(t);
                    }
                }
            }
            terms.truncate(count);
            info!(job = %cx.job.0, stage = "script", terms = ?terms, "search terms ready");
            cx.artifacts.script = Some(script);
            cx.artifacts.search_terms = terms;
            if !from_caller && writer.name() != "offline" {
                cx.artifacts.llm = Some(LlmChoice {
                    provider: writer.name().to_string(),
                    model: writer.model().to_string(),
                });
            }
            Ok(())
        })
    }
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

/// Words that say nothing about what to show.
const STOPWORDS: &[&str] = &[
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

fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// Lower-case words of `s`, punctuation trimmed (apostrophes inside words kept).
fn words_of(s: &str) -> Vec<String> {
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
fn content_runs(s: &str) -> Vec<String> {
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

/// The words of the offline writer's templates ("think", "answer", "short"...): they say nothing
/// about the subject, so they never become search terms. Gathered once by writing scripts about
/// nonsense subjects, which exercises the templates' choices.
fn template_words() -> &'static std::collections::HashSet<String> {
    static WORDS: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    WORDS.get_or_init(|| {
        let mut set = std::collections::HashSet::new();
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

/// Counting words make poor footage searches on their own ("three").
fn is_number_word(w: &str) -> bool {
    const NUMBERS: &[&str] = &[
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "twenty", "hundred", "thousand", "million", "billion", "first", "second",
        "third",
    ];
    NUMBERS.contains(&w) || w.chars().all(|c| c.is_ascii_digit())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::text::split_sentences;

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

    #[test]
    fn the_voice_picks_the_script_language() {
        assert_eq!(language_of_voice("en_us_001"), None);
        assert_eq!(language_of_voice("fr_001"), Some("French"));
        assert_eq!(language_of_voice("br_003"), Some("Portuguese (Brazil)"));
        assert_eq!(language_of_voice("en_male_narration"), None);
    }
}
