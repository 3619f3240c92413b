//! `JobRequest`: the body of `POST /api/generate`, parsed and validated at submit time.
//!
//! MoneyPrinter's page sends numbers and booleans as strings, so `"2"` and `2`, `"true"` and `true` are
//! both accepted. Every refusal names the field. The validated request is stored, as JSON, in the job's
//! first event, so a restarted daemon runs exactly what was accepted. The stored form carries a
//! `version` ([`REQUEST_VERSION`]); every version ever written stays readable.
//!
//! Unknown fields are accepted (MoneyPrinter clients may send more than we know) but each becomes a
//! [`FieldWarning`] ("unknown field subtitlePosition ignored; did you mean subtitlesPosition?"). The
//! known fields are the ones [`JobRequest::parse`] reads: every read goes through [`Fields`], which
//! records the name, so a new field is known as soon as the parser reads it.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{AspectRatio, CaptionStyle, Config};
use crate::voices;

/// Why a request was refused; the message names the field and is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Where the subtitles sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Horizontal {
    Left,
    Center,
    Right,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vertical {
    Top,
    Center,
    Bottom,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    pub video_subject: String,
    /// The model asked for (`aiModel`), if any.
    pub ai_model: Option<String>,
    /// MoneyPrinter voice id, e.g. `en_us_001`.
    pub voice: String,
    pub paragraph_number: u32,
    pub custom_prompt: Option<String>,
    /// The caller's own script: when set, no LLM writes one.
    pub script: Option<String>,
    pub use_music: bool,
    pub automate_youtube_upload: bool,
    pub threads: Option<u32>,
    pub subtitles_position: (Horizontal, Vertical),
    /// The colour as asked for (hex or name), kept for events.
    pub color: String,
    /// The colour as RGB.
    pub color_rgb: (u8, u8, u8),
    /// How the captions show the words (`subtitlesStyle`). Requests stored before it existed read
    /// as `classic`.
    #[serde(default)]
    pub subtitles_style: CaptionStyle,
    /// The video's shape (`aspectRatio`). Requests stored before it existed read as 9:16.
    #[serde(default)]
    pub aspect_ratio: AspectRatio,
    /// Where the job's webhooks go (`webhookUrl`, an http(s) URL); `None`: `webhooks.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The caller's own clips (`footage`): http(s) URLs, or canonical paths inside
    /// `footage.allowed_dirs`. Empty: the configured provider finds footage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub footage: Vec<String>,
    /// The caller's own music (`music`): a song of the library, a canonical path inside
    /// `footage.allowed_dirs`, or an http(s) URL. Implies `use_music`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub music: Option<String>,
    /// What the body held that the parser ignored: told to the caller and recorded as the job's
    /// first log event, not stored with the request.
    #[serde(skip)]
    pub warnings: Vec<FieldWarning>,
}

/// A field of the body that was ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldWarning {
    /// Not a field of the request; `suggestion` is the known field it most likely meant.
    Unknown {
        field: String,
        suggestion: Option<&'static str>,
    },
    /// More unknown fields than are listed one by one.
    MoreUnknown { count: usize },
    /// MoneyPrinter's `zipUrl` (a song archive to download): reelsmith takes songs from
    /// `POST /api/upload-songs` instead.
    ZipUrl,
}

impl fmt::Display for FieldWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldWarning::Unknown {
                field,
                suggestion: Some(s),
            } => write!(f, "unknown field {field} ignored; did you mean {s}?"),
            FieldWarning::Unknown {
                field,
                suggestion: None,
            } => write!(f, "unknown field {field} ignored"),
            FieldWarning::MoreUnknown { count } => {
                write!(f, "{count} more unknown fields ignored")
            }
            FieldWarning::ZipUrl => f.write_str(
                "zipUrl ignored: reelsmith does not download song archives; upload songs with POST /api/upload-songs",
            ),
        }
    }
}

impl FieldWarning {
    /// The payload of the warning event: the field and the suggestion, when there is one.
    pub fn payload(&self) -> Value {
        match self {
            FieldWarning::Unknown { field, suggestion } => {
                serde_json::json!({ "field": field, "suggestion": suggestion })
            }
            FieldWarning::MoreUnknown { count } => serde_json::json!({ "count": count }),
            FieldWarning::ZipUrl => serde_json::json!({ "field": "zipUrl" }),
        }
    }
}

/// Unknown fields listed one by one; the rest are counted.
const MAX_FIELD_WARNINGS: usize = 10;
/// Longest field name quoted in a warning, in characters.
const MAX_FIELD_NAME: usize = 64;

/// The body's fields, read by name. Every name asked for is recorded: those are the known fields.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    read: RefCell<Vec<&'static str>>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Fields<'a> {
        Fields {
            obj,
            read: RefCell::new(Vec::new()),
        }
    }

    /// The field `name`, which becomes a known field whether or not the body has it.
    pub fn get(&self, name: &'static str) -> Option<&'a Value> {
        let mut read = self.read.borrow_mut();
        if !read.contains(&name) {
            read.push(name);
        }
        self.obj.get(name)
    }

    /// The warnings for the body's fields that were never read, in the body's order.
    pub fn unknown(&self) -> Vec<FieldWarning> {
        let known = self.read.borrow();
        let unknown: Vec<&String> = self
            .obj
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        let mut out: Vec<FieldWarning> = unknown
            .iter()
            .take(MAX_FIELD_WARNINGS)
            .map(|k| FieldWarning::Unknown {
                field: clip(k, MAX_FIELD_NAME),
                suggestion: nearest(k, &known),
            })
            .collect();
        if unknown.len() > MAX_FIELD_WARNINGS {
            out.push(FieldWarning::MoreUnknown {
                count: unknown.len() - MAX_FIELD_WARNINGS,
            });
        }
        out
    }
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The known field `name` was most likely meant to be: the closest by edit distance once case,
/// `_`, `-` and spaces are ignored (`aspect_ratio` is `aspectRatio`), if it is close at all.
fn nearest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = norm(name);
    if wanted.is_empty() || wanted.len() > 2 * MAX_FIELD_NAME {
        return None;
    }
    known
        .iter()
        .map(|k| (edit_distance(&wanted, &norm(k)), *k))
        .filter(|(d, _)| *d <= 2 && 2 * *d < wanted.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, with a transposition of two neighbours counting as one edit.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev2: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The layout of a stored request (`to_json`). A field added later must read as its default when a
/// stored request lacks it (`#[serde(default)]`, or an `Option`), so that jobs queued by an older
/// daemon still start; bump the version only when old requests must be read differently, and keep
/// reading every version ever written (see the golden test).
pub const REQUEST_VERSION: u32 = 1;

/// Longest subject and custom prompt, in characters.
const MAX_SUBJECT: usize = 500;
const MAX_PROMPT: usize = 10_000;
/// Longest caller script, in characters (about 20 minutes of speech).
const MAX_SCRIPT: usize = 20_000;

impl JobRequest {
    /// Parses a JSON body. Fields it does not know are ignored, each with a warning in
    /// `warnings`. Every field is read through `obj` and unconditionally, so that what is known
    /// never depends on the values.
    pub fn parse(body: &Value, cfg: &Config) -> Result<JobRequest, RequestError> {
        let obj = &Fields::new(
            body.as_object()
                .ok_or_else(|| RequestError("The request body must be a JSON object.".into()))?,
        );
        let subject = opt_string(obj, "videoSubject")?.map(|s| s.trim().to_string());
        let video_subject = match subject {
            Some(s) if !s.is_empty() => s,
            _ => return Err(RequestError("videoSubject is required.".into())),
        };
        if video_subject.chars().count() > MAX_SUBJECT {
            return Err(RequestError(format!(
                "videoSubject is too long: at most {MAX_SUBJECT} characters."
            )));
        }
        let ai_model = opt_string(obj, "aiModel")?.filter(|s| !s.trim().is_empty());
        let voice = opt_string(obj, "voice")?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cfg.voice.default_voice.clone());
        if let Some(model) = voices::piper_model_name(&voice) {
            let models = voices::piper_models(&cfg.tools.piper, &cfg.voice.piper_model);
            if !models.iter().any(|m| m.name == model) {
                let installed: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                return Err(RequestError(if installed.is_empty() {
                    format!("voice `{voice}`: no Piper model is installed (tools.piper, voice.piper_model).")
                } else {
                    format!(
                        "voice `{voice}`: no Piper model `{model}` is installed (installed: {}).",
                        installed.join(", ")
                    )
                }));
            }
        } else if !voices::is_known_voice(&voice) {
            return Err(RequestError(format!(
                "voice `{voice}` is not a known voice id (for example en_us_001, fr_001, de_001, br_001, jp_001, or piper:<model name>)."
            )));
        }
        // MoneyPrinter's page allows 1 to 100 for both.
        let paragraph_number = opt_int(obj, "paragraphNumber", 1, 100)?.unwrap_or(1) as u32;
        let custom_prompt = opt_string(obj, "customPrompt")?.filter(|s| !s.trim().is_empty());
        if custom_prompt
            .as_ref()
            .is_some_and(|p| p.chars().count() > MAX_PROMPT)
        {
            return Err(RequestError(format!(
                "customPrompt is too long: at most {MAX_PROMPT} characters."
            )));
        }
        let script = opt_string(obj, "script")?.filter(|s| !s.trim().is_empty());
        if let Some(s) = &script {
            if s.chars().count() > MAX_SCRIPT {
                return Err(RequestError(format!(
                    "script is too long: at most {MAX_SCRIPT} characters."
                )));
            }
            if !s.chars().any(char::is_alphanumeric) {
                return Err(RequestError("script has no words to speak.".into()));
            }
        }
        let footage = match obj.get("footage") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let texts = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(RequestError(format!(
                            "footage[{i}] must be a string (a path or an http(s) URL)."
                        ))),
                    })
                    .collect::<Result<Vec<String>, RequestError>>()?;
                crate::pipeline::own_media::check_footage(&texts, cfg).map_err(RequestError)?
            }
            Some(_) => {
                return Err(RequestError(
                    "footage must be a list of paths or http(s) URLs.".into(),
                ))
            }
        };
        let music = match opt_string(obj, "music")? {
            Some(s) if !s.trim().is_empty() => {
                Some(crate::pipeline::own_media::check_music(&s, cfg).map_err(RequestError)?)
            }
            _ => None,
        };
        let use_music = opt_bool(obj, "useMusic")?.unwrap_or(false) || music.is_some();
        let automate_youtube_upload = opt_bool(obj, "automateYoutubeUpload")?.unwrap_or(false);
        let threads = opt_int(obj, "threads", 1, 100)?.map(|n| n as u32);
        let position_text = opt_string(obj, "subtitlesPosition")?
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| cfg.subtitles.position.clone());
        let subtitles_position = parse_position(&position_text).ok_or_else(|| {
            RequestError(format!(
                "subtitlesPosition `{position_text}` is not valid: use \"horizontal,vertical\" with left|center|right and top|center|bottom, e.g. \"center,bottom\"."
            ))
        })?;
        let color = opt_string(obj, "color")?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cfg.subtitles.color.clone());
        let color_rgb = parse_color(&color).ok_or_else(|| {
            RequestError(format!(
                "color `{color}` is not valid: use a CSS hex colour like #FFFF00 or a colour name like yellow."
            ))
        })?;
        let subtitles_style = match opt_string(obj, "subtitlesStyle")? {
            Some(s) if !s.trim().is_empty() => CaptionStyle::parse(&s.trim().to_ascii_lowercase())
                .ok_or_else(|| {
                    RequestError(format!(
                        "subtitlesStyle `{s}` is not valid: use classic, word or karaoke."
                    ))
                })?,
            _ => cfg.subtitles.style,
        };
        let aspect_ratio = match opt_string(obj, "aspectRatio")? {
            Some(s) if !s.trim().is_empty() => AspectRatio::parse(s.trim()).ok_or_else(|| {
                RequestError(format!(
                    "aspectRatio `{s}` is not valid: use 9:16, 16:9, 1:1 or 4:5."
                ))
            })?,
            _ => cfg.render.aspect_ratio,
        };
        let webhook_url = opt_string(obj, "webhookUrl")?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(problem) = webhook_url
            .as_deref()
            .and_then(crate::config::webhook_url_problem)
        {
            return Err(RequestError(format!("webhookUrl {problem}.")));
        }
        // MoneyPrinter's page always sends it, empty: only a real archive is worth a warning.
        let zip_url = match obj.get("zipUrl") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        };
        let mut warnings = obj.unknown();
        if zip_url {
            warnings.insert(0, FieldWarning::ZipUrl);
        }
        Ok(JobRequest {
            video_subject,
            ai_model,
            voice,
            paragraph_number,
            custom_prompt,
            script,
            use_music,
            automate_youtube_upload,
            threads,
            subtitles_position,
            color,
            color_rgb,
            warnings,
            subtitles_style,
            aspect_ratio,
            webhook_url,
            footage,
            music,
        })
    }

    /// The stored form: the fields plus `"version": REQUEST_VERSION`.
    pub fn to_json(&self) -> Value {
        // Serialising plain data into a Value cannot fail.
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("version".into(), Value::from(REQUEST_VERSION));
        }
        v
    }

    /// Reads a stored request of any version up to [`REQUEST_VERSION`]; one without `version` is
    /// version 1 (written before requests carried it). A newer version is refused, naming it,
    /// rather than run with fields this daemon does not know.
    pub fn from_json(v: &Value) -> Result<JobRequest, RequestError> {
        let version = match v.get("version") {
            None => 1,
            Some(n) => n.as_u64().ok_or_else(|| {
                RequestError(format!(
                    "stored request has a version that is not a number: {n}"
                ))
            })?,
        };
        if version == 0 || version > u64::from(REQUEST_VERSION) {
            return Err(RequestError(format!(
                "stored request has version {version}, and this reelsmith reads versions 1 to {REQUEST_VERSION}: run the reelsmith that queued it, or a newer one"
            )));
        }
        serde_json::from_value(v.clone()).map_err(|e| {
            RequestError(format!(
                "stored request (version {version}) cannot be read: {e}"
            ))
        })
    }

    /// `center,bottom` form, as the render event shows it.
    pub fn position_text(&self) -> String {
        let h = match self.subtitles_position.0 {
            Horizontal::Left => "left",
            Horizontal::Center => "center",
            Horizontal::Right => "right",
        };
        let v = match self.subtitles_position.1 {
            Vertical::Top => "top",
            Vertical::Center => "center",
            Vertical::Bottom => "bottom",
        };
        format!("{h},{v}")
    }
}

fn wrong_type(field: &str, want: &str) -> RequestError {
    RequestError(format!("{field} must be {want}."))
}

fn opt_string(obj: &Fields, field: &'static str) -> Result<Option<String>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

fn opt_int(
    obj: &Fields,
    field: &'static str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, RequestError> {
    let want = format!("a whole number from {min} to {max}");
    let n = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(wrong_type(field, &want)),
    }
}

fn opt_bool(obj: &Fields, field: &'static str) -> Result<Option<bool>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(wrong_type(field, "true or false")),
        },
        Some(_) => Err(wrong_type(field, "true or false")),
    }
}

/// `"center,bottom"`; a single word is accepted as the vertical position when it is `top` or
/// `bottom`, and as both when it is `center`.
pub fn parse_position(s: &str) -> Option<(Horizontal, Vertical)> {
    let parts: Vec<_> = s
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    let h = |p: &str| match p {
        "left" => Some(Horizontal::Left),
        "center" | "centre" => Some(Horizontal::Center),
        "right" => Some(Horizontal::Right),
        _ => None,
    };
    let v = |p: &str| match p {
        "top" => Some(Vertical::Top),
        "center" | "centre" => Some(Vertical::Center),
        "bottom" => Some(Vertical::Bottom),
        _ => None,
    };
    match parts.as_slice() {
        [a, b] => Some((h(a)?, v(b)?)),
        [a] if a == "center" => Some((Horizontal::Center, Vertical::Center)),
        [a] => Some((Horizontal::Center, v(a)?)),
        _ => None,
    }
}

const NAMED_COLORS: &[(&str, (u8, u8, u8))] = &[
    ("white", (255, 255, 255)),
    ("black", (0, 0, 0)),
    ("yellow", (255, 255, 0)),
    ("red", (255, 0, 0)),
    ("green", (0, 128, 0)),
    ("lime", (0, 255, 0)),
    ("blue", (0, 0, 255)),
    ("cyan", (0, 255, 255)),
    ("aqua", (0, 255, 255)),
    ("magenta", (255, 0, 255)),
    ("fuchsia", (255, 0, 255)),
    ("orange", (255, 165, 0)),
    ("purple", (128, 0, 128)),
    ("pink", (255, 192, 203)),
    ("gold", (255, 215, 0)),
    ("silver", (192, 192, 192)),
    ("gray", (128, 128, 128)),
    ("grey", (128, 128, 128)),
    ("brown", (165, 42, 42)),
    ("navy", (0, 0, 128)),
    ("teal", (0, 128, 128)),
    ("maroon", (128, 0, 0)),
    ("olive", (128, 128, 0)),
    ("violet", (238, 130, 238)),
    ("indigo", (75, 0, 130)),
    ("coral", (255, 127, 80)),
    ("salmon", (250, 128, 114)),
    ("turquoise", (64, 224, 208)),
    ("crimson", (220, 20, 60)),
    ("khaki", (240, 230, 140)),
    ("lavender", (230, 230, 250)),
    ("beige", (245, 245, 220)),
];

/// A CSS hex colour (`#FF0`, `#FFFF00`, with or without `#`) or a common CSS colour name.
pub fn parse_color(s: &str) -> Option<(u8, u8, u8)> {
    let t = s.trim().to_ascii_lowercase();
    if let Some((_, rgb)) = NAMED_COLORS.iter().find(|(n, _)| *n == t) {
        return Some(*rgb);
    }
    let hex = t.strip_prefix('#').unwrap_or(&t);
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    match hex.len() {
        6 => Some((byte(0)?, byte(2)?, byte(4)?)),
        3 => {
            let d = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).ok().map(|v| v * 17);
            Some((d(0)?, d(1)?, d(2)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<JobRequest, RequestError> {
        JobRequest::parse(&v, &Config::default())
    }

    #[test]
    fn moneyprinter_page_body_is_accepted() {
        let r = parse(json!({
            "videoSubject": "Why octopuses have three hearts",
            "aiModel": "llama3.1:8b",
            "voice": "en_us_001",
            "paragraphNumber": "2",
            "automateYoutubeUpload": false,
            "useMusic": "true",
            "zipUrl": "",
            "threads": "2",
            "subtitlesPosition": "center,bottom",
            "customPrompt": "",
            "color": "#FFFF00"
        }))
        .unwrap();
        assert_eq!(r.paragraph_number, 2);
        assert!(r.use_music);
        assert_eq!(r.threads, Some(2));
        assert_eq!(r.color_rgb, (255, 255, 0));
        assert_eq!(r.custom_prompt, None);
        assert_eq!(r.warnings, vec![], "the page's own fields are all known");
        assert_eq!(JobRequest::from_json(&r.to_json()).unwrap(), r);
    }

    fn warnings(v: Value) -> Vec<String> {
        parse(v)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect()
    }

    #[test]
    fn unknown_fields_are_ignored_with_a_warning_naming_the_likely_field() {
        assert_eq!(
            warnings(json!({"videoSubject": "x", "subtitlePosition": "center,top"})),
            vec!["unknown field subtitlePosition ignored; did you mean subtitlesPosition?"]
        );
        assert_eq!(
            warnings(
                json!({"videoSubject": "x", "paragraph_number": 2, "colour": "red", "vioce": "en_us_001", "videosubject": "y"})
            ),
            vec![
                "unknown field colour ignored; did you mean color?",
                "unknown field paragraph_number ignored; did you mean paragraphNumber?",
                "unknown field videosubject ignored; did you mean videoSubject?",
                "unknown field vioce ignored; did you mean voice?",
            ]
        );
        assert_eq!(
            warnings(json!({"videoSubject": "x", "banana": 1, "id": 2})),
            vec!["unknown field banana ignored", "unknown field id ignored"]
        );
        assert_eq!(
            warnings(json!({"videoSubject": "x", "zipUrl": "https://example.com/songs.zip"})),
            vec!["zipUrl ignored: reelsmith does not download song archives; upload songs with POST /api/upload-songs"]
        );
        // The warnings are not part of the stored request.
        let r = parse(json!({"videoSubject": "x", "nope": 1})).unwrap();
        assert!(!r.to_json().to_string().contains("nope"));
    }

    #[test]
    fn every_field_the_parser_reads_is_known() {
        let known = [
            "videoSubject",
            "aiModel",
            "voice",
            "paragraphNumber",
            "customPrompt",
            "script",
            "useMusic",
            "automateYoutubeUpload",
            "threads",
            "subtitlesPosition",
            "color",
            "zipUrl",
            "webhookUrl",
        ];
        let body: Map<String, Value> = known
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .chain([("videoSubject".to_string(), json!("x"))])
            .collect();
        assert_eq!(parse(Value::Object(body)).unwrap().warnings, vec![]);
    }

    #[test]
    fn a_flood_of_unknown_fields_gives_a_bounded_list() {
        let mut body = json!({"videoSubject": "x"});
        for i in 0..500 {
            body[format!("junk{i:03}{}", "z".repeat(100))] = json!(i);
        }
        let w = parse(body).unwrap().warnings;
        assert_eq!(w.len(), MAX_FIELD_WARNINGS + 1);
        assert_eq!(w.last(), Some(&FieldWarning::MoreUnknown { count: 490 }));
        assert!(w[0].to_string().len() < 120, "{}", w[0]);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (json!({}), "videoSubject is required."),
            (json!({"videoSubject": "  "}), "videoSubject is required."),
            (json!({"videoSubject": 5}), "videoSubject"),
            (
                json!({"videoSubject": "x", "paragraphNumber": "two"}),
                "paragraphNumber",
            ),
            (
                json!({"videoSubject": "x", "paragraphNumber": 0}),
                "paragraphNumber",
            ),
            (
                json!({"videoSubject": "x", "paragraphNumber": 2.5}),
                "paragraphNumber",
            ),
            (
                json!({"videoSubject": "x", "useMusic": "maybe"}),
                "useMusic",
            ),
            (json!({"videoSubject": "x", "threads": 1000}), "threads"),
            (
                json!({"videoSubject": "x", "subtitlesPosition": "middle,earth"}),
                "subtitlesPosition",
            ),
            (json!({"videoSubject": "x", "color": "#GG0000"}), "color"),
            (json!({"videoSubject": "x", "voice": "xx_404"}), "voice"),
            (json!({"videoSubject": "x", "script": "..."}), "script"),
            (
                json!({"videoSubject": "x", "subtitlesStyle": "fancy"}),
                "subtitlesStyle",
            ),
            (
                json!({"videoSubject": "x", "aspectRatio": "2:1"}),
                "aspectRatio",
            ),
            (
                json!({"videoSubject": "x", "aspectRatio": 1}),
                "aspectRatio",
            ),
            (
                json!({"videoSubject": "x", "webhookUrl": "ftp://example.com/hook"}),
                "webhookUrl must be an http:// or https:// URL",
            ),
            (
                json!({"videoSubject": "x", "webhookUrl": "file:///etc/passwd"}),
                "webhookUrl",
            ),
            (
                json!({"videoSubject": "x", "webhookUrl": "http://"}),
                "webhookUrl",
            ),
            (json!({"videoSubject": "x", "webhookUrl": 7}), "webhookUrl"),
            (json!([1, 2]), "JSON object"),
        ];
        for (body, needle) in cases {
            let err = parse(body.clone()).unwrap_err().0;
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn caption_style_and_aspect_ratio_default_from_the_config_and_old_requests_still_read() {
        let r =
            parse(json!({"videoSubject": "x", "subtitlesStyle": "Karaoke", "aspectRatio": "16:9"}))
                .unwrap();
        assert_eq!(r.subtitles_style, CaptionStyle::Karaoke);
        assert_eq!(r.aspect_ratio, AspectRatio::Landscape);
        let mut cfg = Config::default();
        cfg.subtitles.style = CaptionStyle::Word;
        cfg.render.aspect_ratio = AspectRatio::Square;
        let d = JobRequest::parse(&json!({"videoSubject": "x"}), &cfg).unwrap();
        assert_eq!(
            (d.subtitles_style, d.aspect_ratio),
            (CaptionStyle::Word, AspectRatio::Square)
        );
        // A request stored before the fields existed reads as classic 9:16.
        let mut old = r.to_json();
        let obj = old.as_object_mut().unwrap();
        obj.remove("subtitlesStyle");
        obj.remove("aspectRatio");
        let back = JobRequest::from_json(&old).unwrap();
        assert_eq!(
            (back.subtitles_style, back.aspect_ratio),
            (CaptionStyle::Classic, AspectRatio::Portrait)
        );
    }

    #[test]
    fn colours_and_positions() {
        assert_eq!(parse_color("yellow"), Some((255, 255, 0)));
        assert_eq!(parse_color("#0f0"), Some((0, 255, 0)));
        assert_eq!(parse_color("FF8800"), Some((255, 136, 0)));
        assert_eq!(parse_color("#12345"), None);
        assert_eq!(
            parse_position("right, top"),
            Some((Horizontal::Right, Vertical::Top))
        );
        assert_eq!(
            parse_position("bottom"),
            Some((Horizontal::Center, Vertical::Bottom))
        );
        assert_eq!(parse_position("left,left"), None);
    }

    /// A request exactly as daemons before `version` stored it in the `queued` event's payload.
    /// If this stops decoding, jobs queued before an upgrade no longer start.
    pub(crate) const GOLDEN_V1: &str = r##"{"videoSubject":"Why octopuses have three hearts","aiModel":"llama3.1:8b","voice":"en_us_001","paragraphNumber":2,"customPrompt":null,"script":"Octopuses have three hearts. Two pump blood to the gills.","useMusic":true,"automateYoutubeUpload":false,"threads":2,"subtitlesPosition":["center","bottom"],"color":"#FFFF00","colorRgb":[255,255,0]}"##;

    #[test]
    fn version_1_stored_requests_still_decode() {
        let v: Value = serde_json::from_str(GOLDEN_V1).unwrap();
        let r = JobRequest::from_json(&v).unwrap();
        assert_eq!(r.video_subject, "Why octopuses have three hearts");
        assert_eq!(r.ai_model.as_deref(), Some("llama3.1:8b"));
        assert_eq!(r.voice, "en_us_001");
        assert_eq!(r.paragraph_number, 2);
        assert_eq!(r.custom_prompt, None);
        assert_eq!(
            r.script.as_deref(),
            Some("Octopuses have three hearts. Two pump blood to the gills.")
        );
        assert!(r.use_music && !r.automate_youtube_upload);
        assert_eq!(r.threads, Some(2));
        assert_eq!(r.subtitles_position, (Horizontal::Center, Vertical::Bottom));
        assert_eq!((r.color.as_str(), r.color_rgb), ("#FFFF00", (255, 255, 0)));
        // Written again, it says its version and reads back the same.
        let again = r.to_json();
        assert_eq!(again["version"], REQUEST_VERSION);
        assert_eq!(JobRequest::from_json(&again).unwrap(), r);
        // An explicit version 1 is the same request.
        let mut v1 = v.clone();
        v1["version"] = json!(1);
        assert_eq!(JobRequest::from_json(&v1).unwrap(), r);
    }

    #[test]
    fn a_stored_request_from_a_newer_daemon_is_refused_naming_its_version() {
        let mut v: Value = serde_json::from_str(GOLDEN_V1).unwrap();
        v["version"] = json!(REQUEST_VERSION + 1);
        v["futureField"] = json!("only version 2 knows me");
        let err = JobRequest::from_json(&v).unwrap_err().0;
        assert!(
            err.contains(&format!("version {}", REQUEST_VERSION + 1)),
            "{err}"
        );
        for bad in [json!(0), json!("1"), json!(-1)] {
            v["version"] = bad.clone();
            assert!(JobRequest::from_json(&v).is_err(), "version {bad}");
        }
    }
}
