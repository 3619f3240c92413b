//! Language models: the [`Llm`] trait (Ollama and OpenAI-compatible servers implement it),
//! MoneyPrinter's prompts (script, search terms, metadata) and the cleaning and tolerant parsing of
//! what models answer.
//!
//! Invariants: a cleaned script has no markdown markers, no bracketed stage directions, no speaker
//! labels and at most the requested number of paragraphs; parsed search terms are non-empty, distinct
//! (ignoring case) and at most the requested number.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{BoxFuture, ProviderError};
use crate::config::{LlmConfig, LlmProvider};

/// A chat model behind an HTTP API. Each call is one attempt; wrap it in [`super::retry::retry`].
pub trait Llm: Send + Sync {
    /// The service's name as messages show it (`Ollama`).
    fn name(&self) -> &'static str;
    /// One completion of `prompt` (with an optional system message) by `model`.
    fn complete<'a>(
        &'a self,
        model: &'a str,
        system: Option<&'a str>,
        prompt: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>>;
    /// The models the server offers.
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>>;
}

/// The online model client that `llm.provider` names (`auto` means Ollama). `offline` gives
/// [`ProviderError::NotConfigured`].
pub fn from_config(cfg: &LlmConfig) -> Result<Box<dyn Llm>, ProviderError> {
    match cfg.provider {
        LlmProvider::Auto | LlmProvider::Ollama => {
            Ok(Box::new(super::ollama::Ollama::from_config(cfg)?))
        }
        LlmProvider::Openai => Ok(Box::new(super::openai::OpenAi::from_config(cfg)?)),
        LlmProvider::Offline => Err(ProviderError::NotConfigured {
            service: "LLM",
            hint: "llm.provider is \"offline\"; set it to \"ollama\" or \"openai\"".into(),
        }),
    }
}

/// The model a job uses: the request's `aiModel`, else the provider's configured default.
pub fn model_for<'a>(cfg: &'a LlmConfig, requested: Option<&'a str>) -> &'a str {
    match requested.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m,
        None if cfg.provider == LlmProvider::Openai => &cfg.openai_model,
        None => &cfg.model,
    }
}

/// What a script is about and how long it is.
#[derive(Clone, Debug)]
pub struct ScriptRequest<'a> {
    pub subject: &'a str,
    pub paragraphs: u32,
    /// MoneyPrinter's `customPrompt`: replaces the built-in instructions (subject and length are
    /// still appended).
    pub custom_prompt: Option<&'a str>,
    /// Language of the script (MoneyPrinter passes the voice); `None` for English.
    pub language: Option<&'a str>,
}

const SCRIPT_INSTRUCTIONS: &str = "Generate a script for a video, depending on the subject of the video.

The script is to be returned as a string with the specified number of paragraphs.

Here is an example of a string:
\"This is an example string.\"

Do not under any circumstance reference this prompt in your response.

Get straight to the point, don't start with unnecessary things like, \"welcome to this video\".

Obviously, the script should be related to the subject of the video.

YOU MUST NOT INCLUDE ANY TYPE OF MARKDOWN OR FORMATTING IN THE SCRIPT, NEVER USE A TITLE.
ONLY RETURN THE RAW CONTENT OF THE SCRIPT. DO NOT INCLUDE \"VOICEOVER\", \"NARRATOR\" OR SIMILAR INDICATORS OF WHAT SHOULD BE SPOKEN AT THE BEGINNING OF EACH PARAGRAPH OR LINE. YOU MUST NOT MENTION THE PROMPT, OR ANYTHING ABOUT THE SCRIPT ITSELF. ALSO, NEVER TALK ABOUT THE AMOUNT OF PARAGRAPHS OR LINES. JUST WRITE THE SCRIPT.";

/// The script prompt: built-in instructions (or the custom prompt), then subject, paragraphs, language.
pub fn script_prompt(req: &ScriptRequest<'_>) -> String {
    let base = req
        .custom_prompt
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(SCRIPT_INSTRUCTIONS);
    let mut prompt = format!(
        "{base}\n\nSubject: {}\nNumber of paragraphs: {}",
        req.subject.trim(),
        req.paragraphs.max(1)
    );
    if let Some(lang) = req.language.map(str::trim).filter(|l| !l.is_empty()) {
        prompt.push_str(&format!("\nLanguage: {lang}"));
    }
    prompt
}

/// Words that mark a parenthesised note as a stage direction rather than content.
const STAGE_WORDS: &[&str] = &[
    "music",
    "sound",
    "sfx",
    "pause",
    "cut to",
    "scene",
    "voiceover",
    "voice-over",
    "voice over",
    "narrator",
    "intro",
    "outro",
    "background",
    "b-roll",
    "visual",
    "on screen",
    "on-screen",
    "fade",
    "camera",
    "transition",
    "upbeat",
    "dramatic",
    "laugh",
    "beat",
    "footage",
    "clip",
    "shot",
];

/// Speaker or section labels a model puts before a line.
const LABELS: &[&str] = &[
    "voiceover",
    "voice-over",
    "voice over",
    "vo",
    "narrator",
    "narration",
    "host",
    "speaker",
    "script",
    "paragraph",
    "part",
    "scene",
];

/// Cleans a model's script as MoneyPrinter does and keeps at most `paragraphs` paragraphs (0 = all):
/// no `*` or `#`, no `[...]` notes, no parenthesised stage directions, no "Voiceover:"-style labels,
/// no title lines, whitespace collapsed. Paragraphs are separated by a blank line.
pub fn clean_script(raw: &str, paragraphs: u32) -> String {
    let text = strip_code_fences(raw);
    let mut paras: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let is_heading = trimmed.starts_with('#');
        let lower = trimmed.to_ascii_lowercase();
        let is_title = lower.starts_with("title:") || lower.starts_with("**title");
        let mut l = remove_square_notes(trimmed);
        l = remove_stage_parentheses(&l);
        l = l.replace(['*', '#'], "");
        l = strip_label(&l);
        let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
        let l = l
            .trim_matches(|c| c == '"' || c == '“' || c == '”')
            .trim()
            .to_string();
        if trimmed.is_empty() || is_heading || is_title || is_separator(trimmed) {
            if !current.is_empty() {
                paras.push(std::mem::take(&mut current));
            }
            continue;
        }
        if l.is_empty() {
            // A line that held only a note: it does not end the paragraph.
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&l);
    }
    if !current.is_empty() {
        paras.push(current);
    }
    if paragraphs > 0 {
        paras.truncate(paragraphs as usize);
    }
    paras.join("\n\n")
}

fn is_separator(l: &str) -> bool {
    l.chars().all(|c| matches!(c, '-' | '_' | '=' | '*' | '~'))
}

fn strip_code_fences(raw: &str) -> String {
    raw.lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn remove_square_notes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn remove_stage_parentheses(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')').map(|c| open + c) else {
            break;
        };
        let inner = rest[open + 1..close].to_ascii_lowercase();
        let whole_line = rest[..open].trim().is_empty()
            && rest[close + 1..].trim().is_empty()
            && out.trim().is_empty();
        let words = format!(
            " {} ",
            inner
                .split(|c: char| !c.is_alphanumeric() && c != '-')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let is_direction = whole_line
            || STAGE_WORDS
                .iter()
                .any(|w| words.contains(&format!(" {w} ")));
        out.push_str(&rest[..open]);
        if !is_direction {
            out.push_str(&rest[open..=close]);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn strip_label(line: &str) -> String {
    let l = line.trim_start();
    if let Some(colon) = l.find(':') {
        let head = l[..colon].trim().to_ascii_lowercase();
        let head_words: Vec<&str> = head.split_whitespace().collect();
        let first = head_words.first().copied().unwrap_or("");
        let is_label = head_words.len() <= 3
            && (LABELS.contains(&head.as_str())
                || LABELS.contains(&first)
                || head_words
                    .first()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit())));
        if is_label {
            return l[colon + 1..].trim_start().to_string();
        }
    }
    l.to_string()
}

/// MoneyPrinter's search-terms prompt.
pub fn search_terms_prompt(subject: &str, amount: usize, script: &str) -> String {
    format!(
        "Generate {amount} search terms for stock videos, depending on the subject of a video.
Subject: {subject}

The search terms are to be returned as a JSON-Array of strings.

Each search term should consist of 1-3 words, always add the main subject of the video.

YOU MUST ONLY RETURN THE JSON-ARRAY OF STRINGS.
YOU MUST NOT RETURN ANYTHING ELSE.
YOU MUST NOT RETURN THE SCRIPT.

The search terms must be related to the subject of the video.
Here is an example of a JSON-Array of strings:
[\"search term 1\", \"search term 2\", \"search term 3\"]

For context, here is the full text:
{script}"
    )
}

/// Search terms from a model's answer: the whole answer as a JSON array; else the first `[...]`
/// that parses as one; last resort, the double-quoted strings. Trimmed, distinct, at most `amount`.
pub fn parse_search_terms(answer: &str, amount: usize) -> Result<Vec<String>, String> {
    let text = strip_code_fences(answer);
    let text = text.trim();
    let terms = string_array(text)
        .or_else(|| first_array(text))
        .unwrap_or_else(|| quoted_strings(text));
    let mut out: Vec<String> = Vec::new();
    for t in terms {
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if !t.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&t)) {
            out.push(t);
        }
    }
    if out.is_empty() {
        let shown: String = text.chars().take(120).collect();
        return Err(format!("no search terms in the answer `{shown}`"));
    }
    out.truncate(amount.max(1));
    Ok(out)
}

fn string_array(text: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<Value>(text).ok()? {
        Value::Array(items) => {
            let v: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            (!v.is_empty()).then_some(v)
        }
        Value::Object(o) => o.values().find_map(|v| string_array(&v.to_string())),
        _ => None,
    }
}

fn first_array(text: &str) -> Option<Vec<String>> {
    for (start, _) in text.match_indices('[') {
        for (end, _) in text[start..].match_indices(']') {
            if let Some(v) = string_array(&text[start..start + end + 1]) {
                return Some(v);
            }
        }
    }
    None
}

fn quoted_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts = text.split(['"', '“', '”']);
    parts.next();
    while let Some(inside) = parts.next() {
        out.push(inside.to_string());
        // Skip what lies between this string and the next opening quote.
        if parts.next().is_none() {
            break;
        }
    }
    out
}

/// Title, description and keywords for an upload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Metadata {
    pub title: String,
    pub description: String,
    pub keywords: Vec<String>,
}

/// The metadata prompt: one JSON object with title, description and keywords.
pub fn metadata_prompt(subject: &str, script: &str, keywords: usize) -> String {
    format!(
        "Write the metadata of a YouTube Shorts video about: {subject}

Return ONLY a JSON object with exactly these keys:
\"title\": a catchy and SEO-friendly title, at most 90 characters, no hashtags;
\"description\": a brief and engaging description of two or three sentences;
\"keywords\": a JSON array of {keywords} short keywords.
Do not return anything else.

The video is based on the following script:
{script}"
    )
}

/// Metadata from a model's answer: a JSON object (the whole answer or the first `{...}` in it), else
/// `Title:` / `Description:` / `Keywords:` lines.
pub fn parse_metadata(answer: &str) -> Result<Metadata, String> {
    let text = strip_code_fences(answer);
    let text = text.trim();
    let object = serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
        .or_else(|| first_object(text));
    let mut meta = Metadata::default();
    if let Some(o) = object {
        let field = |k: &str| {
            o.as_object().and_then(|m| {
                m.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            })
        };
        meta.title = field("title")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        meta.description = field("description")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        meta.keywords = match field("keywords").or_else(|| field("tags")) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
    } else {
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.replace(['*', '#'], "").trim().to_ascii_lowercase();
            let v = v.trim();
            match k.as_str() {
                "title" => meta.title = v.to_string(),
                "description" => meta.description = v.to_string(),
                "keywords" | "tags" => {
                    meta.keywords =
                        string_array(v).unwrap_or_else(|| v.split(',').map(str::to_owned).collect())
                }
                _ => {}
            }
        }
    }
    meta.title = tidy(&meta.title);
    meta.description = meta.description.trim().to_string();
    meta.keywords = meta
        .keywords
        .iter()
        .map(|k| tidy(k).trim_start_matches('#').to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if meta.title.is_empty() {
        let shown: String = text.chars().take(120).collect();
        return Err(format!("no title in the answer `{shown}`"));
    }
    Ok(meta)
}

fn tidy(s: &str) -> String {
    s.replace(['*', '#'], "")
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '“' || c == '”')
        .trim()
        .to_string()
}

fn first_object(text: &str) -> Option<Value> {
    for (start, _) in text.match_indices('{') {
        for (end, _) in text[start..]
            .match_indices('}')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if let Ok(v @ Value::Object(_)) = serde_json::from_str(&text[start..start + end + 1]) {
                return Some(v);
            }
        }
    }
    None
}

/// Asks `llm` for a script and cleans it. An answer that cleans to nothing is a `BadAnswer`.
pub async fn write_script(
    llm: &dyn Llm,
    model: &str,
    req: &ScriptRequest<'_>,
) -> Result<String, ProviderError> {
    let answer = llm.complete(model, None, &script_prompt(req)).await?;
    let script = clean_script(&answer, req.paragraphs);
    if script.is_empty() {
        return Err(ProviderError::bad_answer(
            llm.name(),
            "the script was empty after cleaning",
        ));
    }
    Ok(script)
}

/// Asks `llm` for `amount` stock-footage search terms.
pub async fn search_terms(
    llm: &dyn Llm,
    model: &str,
    subject: &str,
    script: &str,
    amount: usize,
) -> Result<Vec<String>, ProviderError> {
    let answer = llm
        .complete(model, None, &search_terms_prompt(subject, amount, script))
        .await?;
    parse_search_terms(&answer, amount).map_err(|m| ProviderError::bad_answer(llm.name(), m))
}

/// Asks `llm` for the title, description and keywords of the video.
pub async fn metadata(
    llm: &dyn Llm,
    model: &str,
    subject: &str,
    script: &str,
) -> Result<Metadata, ProviderError> {
    let answer = llm
        .complete(model, None, &metadata_prompt(subject, script, 8))
        .await?;
    parse_metadata(&answer).map_err(|m| ProviderError::bad_answer(llm.name(), m))
}

/// The per-request deadline from the config.
pub(crate) fn timeout_of(cfg: &LlmConfig) -> Duration {
    Duration::from_secs(cfg.timeout_secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_removes_markdown_notes_labels_and_extra_paragraphs() {
        let raw = "## Octopus Hearts\n\n**Voiceover:** Octopuses have *three* hearts. [Upbeat music]\n\
                   (Cut to ocean footage)\n\nNarrator: Two pump blood through the gills (about 2 cm wide).\n\n\
                   ---\n\nThe third serves the body.\n\nA fourth paragraph.";
        let s = clean_script(raw, 3);
        assert_eq!(
            s,
            "Octopuses have three hearts.\n\nTwo pump blood through the gills (about 2 cm wide).\n\n\
             The third serves the body."
        );
        assert!(!s.contains('*') && !s.contains('#') && !s.contains('['));
    }

    #[test]
    fn custom_prompt_replaces_the_instructions() {
        let req = ScriptRequest {
            subject: "Octopus hearts",
            paragraphs: 2,
            custom_prompt: Some("Write like a pirate."),
            language: None,
        };
        let p = script_prompt(&req);
        assert!(p.starts_with("Write like a pirate."));
        assert!(p.contains("Subject: Octopus hearts") && p.contains("Number of paragraphs: 2"));
        assert!(!p.contains("NEVER USE A TITLE"));
        let builtin = script_prompt(&ScriptRequest {
            custom_prompt: Some("  "),
            ..req
        });
        assert!(builtin.contains("NEVER USE A TITLE"));
    }

    #[test]
    fn search_terms_are_parsed_tolerantly() {
        assert_eq!(
            parse_search_terms(r#"["ocean octopus", "coral reef"]"#, 5).unwrap(),
            vec!["ocean octopus", "coral reef"]
        );
        let chatty = "Sure! Here are the terms:\n```json\n[\"octopus\", \"Octopus\", \"deep sea\", \"ink\"]\n```\nEnjoy [1].";
        assert_eq!(
            parse_search_terms(chatty, 2).unwrap(),
            vec!["octopus", "deep sea"]
        );
        let broken = "Terms: \"octopus heart\", \"blue blood\" and [unfinished";
        assert_eq!(
            parse_search_terms(broken, 5).unwrap(),
            vec!["octopus heart", "blue blood"]
        );
        assert!(parse_search_terms("I cannot help with that.", 3).is_err());
    }

    #[test]
    fn metadata_is_parsed_from_json_or_lines() {
        let m = parse_metadata(
            "Here you go: {\"title\": \"Three Hearts!\", \"description\": \"Why.\", \"keywords\": [\"#octopus\", \"ocean\"]}",
        )
        .unwrap();
        assert_eq!(m.title, "Three Hearts!");
        assert_eq!(m.description, "Why.");
        assert_eq!(m.keywords, vec!["octopus", "ocean"]);
        let m =
            parse_metadata("**Title:** \"Octopus facts\"\nDescription: Hearts.\nKeywords: a, b")
                .unwrap();
        assert_eq!(m.title, "Octopus facts");
        assert_eq!(m.keywords, vec!["a", "b"]);
        assert!(parse_metadata("nothing useful").is_err());
    }
}
