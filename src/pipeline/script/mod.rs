//! Script stage: the words of the video, and the footage search terms taken from them.
//!
//! The caller's own script (`request.script`) wins and no model is asked anything. Otherwise a
//! [`Writer`] writes one: a language model ([`LlmWriter`]: Ollama or an OpenAI-compatible
//! server, each call retried per `llm.retries` with a warning event per retry) or the built-in
//! offline writer ([`offline`]: templates, seeded by the subject so a subject always gets the same
//! script). `llm.provider`: `auto` asks Ollama's model list (a short deadline) and uses Ollama when
//! it answers, else the offline writer with a warning event saying why; an explicit `ollama`/`openai`
//! that fails fails the stage {error, retryable, stage, provider}; `offline` uses the offline writer.
//! Search terms come from the same writer (a model's unusable answer falls back to the offline
//! terms of [`terms`], with a warning). Events: `Generating script with model: <model>` {model,
//! paragraphs}, then `Script generated successfully` (success) {wordCount, duration}. The stage
//! leaves the script in `artifacts.script`, exactly `footage.clips` search terms in
//! `artifacts.search_terms`, and the model it used in `artifacts.llm`.

pub mod offline;
pub mod terms;
mod words;

use std::rc::Rc;

use serde_json::json;
use tracing::info;

use self::offline::offline_script;
use self::terms::offline_search_terms;
use super::online::{self, CallSite};
use super::text::{estimated_speech_seconds, has_words, paragraphs_of, word_count};
use super::{EventSink, JobContext, LlmChoice, StageError, StopSignal};
use crate::config::{Config, LlmConfig, LlmProvider};
use crate::event::NewEvent;
use crate::providers::http::origin_of;
use crate::providers::llm::{self, Llm, ScriptRequest};
use crate::providers::{ollama, RetryPolicy};
use crate::voices::language_of_voice;

/// What writes a job's script and search terms.
pub enum Writer {
    /// The built-in writer: readable, subject-specific text from templates, no network.
    Offline,
    /// A language model.
    Llm(LlmWriter),
}

impl Writer {
    /// Provider name for logs and `artifacts.llm` (`offline`, `ollama`, `openai`).
    pub fn name(&self) -> &'static str {
        match self {
            Writer::Offline => "offline",
            Writer::Llm(w) => w.provider,
        }
    }

    /// The model as the event names it (`offline`, `llama3.1:8b`).
    pub fn model(&self) -> &str {
        match self {
            Writer::Offline => "offline",
            Writer::Llm(w) => &w.model,
        }
    }

    /// `paragraphs` paragraphs of plain text, separated by blank lines.
    pub async fn write(&self, req: &ScriptRequest<'_>) -> Result<String, StageError> {
        let w = match self {
            Writer::Offline => return Ok(offline_script(req.subject, req.paragraphs)),
            Writer::Llm(w) => w,
        };
        let (llm, model) = (w.llm.as_ref(), w.model.as_str());
        online::call(w.site(), &w.policy, |_| llm::write_script(llm, model, req))
            .await?
            .map_err(|e| StageError::provider(w.provider, &e))
    }

    /// `count` short stock-footage search terms for the subject and script.
    pub async fn search_terms(
        &self,
        subject: &str,
        script: &str,
        count: usize,
    ) -> Result<Vec<String>, StageError> {
        let w = match self {
            Writer::Offline => return Ok(offline_search_terms(subject, script, count)),
            Writer::Llm(w) => w,
        };
        let (llm, model) = (w.llm.as_ref(), w.model.as_str());
        online::call(w.site(), &w.policy, |_| {
            llm::search_terms(llm, model, subject, script, count)
        })
        .await?
        .map_err(|e| StageError::provider(w.provider, &e))
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

/// The language model client that `llm.provider` names, with its short name (`auto` is Ollama).
pub fn llm_client(cfg: &LlmConfig) -> Result<(Box<dyn Llm>, &'static str), StageError> {
    let provider = match cfg.provider {
        LlmProvider::Openai => online::OPENAI,
        LlmProvider::Auto | LlmProvider::Ollama | LlmProvider::Offline => online::OLLAMA,
    };
    llm::from_config(cfg)
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
) -> Result<(Writer, Option<NewEvent>), StageError> {
    let llm_cfg = &cfg.llm;
    let online = || -> Result<Writer, StageError> {
        let (llm, provider) = llm_client(llm_cfg)?;
        Ok(Writer::Llm(LlmWriter {
            llm,
            provider,
            model: llm::model_for(llm_cfg, requested_model).to_string(),
            policy: RetryPolicy::for_provider(llm_cfg.retries, llm::timeout_of(llm_cfg)),
            events: events.clone(),
            stop: stop.clone(),
        }))
    };
    match llm_cfg.provider {
        LlmProvider::Offline => Ok((
            Writer::Offline,
            Some(NewEvent::info(
                "No language model is configured (llm.provider = offline); the built-in offline writer wrote the script.",
            )),
        )),
        LlmProvider::Auto => {
            let answer = tokio::select! {
                r = ollama::list_models(llm_cfg) => r,
                reason = stop.stopped() => return Err(StageError::Stopped(reason)),
            };
            match answer {
                Ok(_) => Ok((online()?, None)),
                Err(e) => {
                    info!(error = %e, "Ollama unreachable; using the offline writer");
                    let warning = online::provider_warning(
                        format!(
                            "Ollama is not reachable at {} ({}); the built-in offline writer wrote the script.",
                            origin_of(&llm_cfg.ollama_base_url),
                            online::unreachable_reason(&e)
                        ),
                        &e,
                        "script",
                        online::OLLAMA,
                    );
                    Ok((Writer::Offline, Some(warning)))
                }
            }
        }
        LlmProvider::Ollama | LlmProvider::Openai => Ok((online()?, None)),
    }
}

/// The script stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    let cfg = cx.config.clone();
    let caller_script = cx.request.script.clone();
    let from_caller = caller_script.is_some();
    let (writer, note) = match caller_script {
        Some(_) => (Writer::Offline, None),
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
            let prompt = ScriptRequest {
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
    if !from_caller && matches!(writer, Writer::Llm(_)) {
        cx.artifacts.llm = Some(LlmChoice {
            provider: writer.name().to_string(),
            model: writer.model().to_string(),
        });
    }
    Ok(())
}
