//! Metadata and upload stages, after the render.
//!
//! Metadata: title, description and keywords of the video, from the language model that wrote the
//! script (`artifacts.llm`, retried per `llm.retries`), else made offline from the subject and the
//! script; a model that fails or answers nothing usable falls back to the offline metadata with a
//! warning. Recorded as one `metadata` event {title, description, keywords}, which the job view keeps
//! (`GET /api/jobs/:id` shows it). Upload (only with `automateYoutubeUpload`): the finished video to
//! YouTube; without credentials, or when the upload fails, a warning event and the job still
//! completes (the video exists); on success a success event with the video's URL.

use serde_json::json;
use tracing::info;

use super::online::{self, CallSite};
use super::script::llm_client;
use super::script::offline::subject_sentence;
use super::script::terms::offline_search_terms;
use super::text::{collapse_whitespace, split_sentences};
use super::{JobContext, StageError};
use crate::event::{Kind, Level, NewEvent};
use crate::providers::llm::{self, Metadata};
use crate::providers::youtube::YouTube;
use crate::providers::RetryPolicy;

/// Longest title YouTube accepts is 100 characters; keep some room.
const MAX_TITLE: usize = 90;
/// Longest offline description, in characters.
const MAX_DESCRIPTION: usize = 300;
/// Keywords made offline.
const KEYWORDS: usize = 8;

/// Title, description and keywords made without a model: the subject as the title, the script's
/// first sentences as the description, the subject's and script's main words as keywords.
pub fn offline_metadata(subject: &str, script: &str) -> Metadata {
    let (title, question) = subject_sentence(subject);
    let mut title = if question { format!("{title}?") } else { title };
    if title.chars().count() > MAX_TITLE {
        title = title.chars().take(MAX_TITLE - 1).collect::<String>() + "…";
    }
    let mut description = String::new();
    for s in split_sentences(script) {
        let s = collapse_whitespace(&s);
        if !description.is_empty()
            && description.chars().count() + s.chars().count() + 1 > MAX_DESCRIPTION
        {
            break;
        }
        if !description.is_empty() {
            description.push(' ');
        }
        description.push_str(&s);
        if description.chars().count() >= MAX_DESCRIPTION / 2 {
            break;
        }
    }
    if description.chars().count() > MAX_DESCRIPTION {
        description = description
            .chars()
            .take(MAX_DESCRIPTION - 1)
            .collect::<String>()
            + "…";
    }
    Metadata {
        title,
        description,
        keywords: offline_search_terms(subject, script, KEYWORDS),
    }
}

/// The metadata stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    let cfg = cx.config.clone();
    let subject = cx.request.video_subject.clone();
    let script = cx.artifacts.script.clone().unwrap_or_default();
    let mut meta = None;
    if let Some(choice) = cx.artifacts.llm.clone() {
        let (client, provider) = llm_client(&cfg.llm)?;
        let site = CallSite {
            events: cx.events.as_ref(),
            stop: &cx.stop,
            stage: "metadata",
            provider,
        };
        let policy = RetryPolicy::for_provider(cfg.llm.retries, llm::timeout_of(&cfg.llm));
        let (client, model) = (client.as_ref(), choice.model.as_str());
        let (subject, script) = (subject.as_str(), script.as_str());
        match online::call(site, &policy, |_| {
            llm::metadata(client, model, subject, script)
        })
        .await?
        {
            Ok(m) => meta = Some(m),
            Err(e) => {
                let warning = online::provider_warning(
                    format!("No metadata from the model ({e}); the title, description and keywords were made from the subject and script."),
                    &e,
                    "metadata",
                    provider,
                );
                cx.emit("metadata", warning).await?;
            }
        }
    }
    let mut meta = meta.unwrap_or_else(|| offline_metadata(&subject, &script));
    if meta.description.trim().is_empty() {
        meta.description = offline_metadata(&subject, &script).description;
    }
    if meta.keywords.is_empty() {
        meta.keywords = offline_search_terms(&subject, &script, KEYWORDS);
    }
    cx.stop.check()?;
    info!(job = %cx.job.0, stage = "metadata", title = %meta.title, "metadata ready");
    cx.emit(
        "metadata",
        NewEvent::new(
            Kind::Metadata,
            Level::Info,
            "Generated title, description and keywords",
        )
        .with_payload(json!({
            "title": meta.title,
            "description": meta.description,
            "keywords": meta.keywords,
        })),
    )
    .await?;
    cx.artifacts.metadata = Some(meta);
    Ok(())
}

/// The upload stage: a no-op unless the request sets `automateYoutubeUpload`.
pub async fn upload(cx: &mut JobContext) -> Result<(), StageError> {
    if !cx.request.automate_youtube_upload {
        return Ok(());
    }
    // The video exists either way: a skipped or failed upload is a warning, not a failure.
    let skipped = |what: &str, e: &crate::providers::ProviderError| {
        online::provider_warning(
            online::and_then(
                &format!("YouTube upload {what}: {e}"),
                "The video was made but not uploaded.",
            ),
            e,
            "upload",
            online::YOUTUBE,
        )
    };
    let yt = match YouTube::from_config(&cx.config.youtube) {
        Ok(yt) => yt,
        Err(e) => {
            cx.emit("upload", skipped("skipped", &e)).await?;
            return Ok(());
        }
    };
    let video = cx
        .artifacts
        .output
        .clone()
        .unwrap_or_else(|| cx.output_path.clone());
    let meta = cx.artifacts.metadata.clone().unwrap_or_else(|| {
        offline_metadata(
            &cx.request.video_subject,
            cx.artifacts.script.as_deref().unwrap_or(""),
        )
    });
    cx.emit("upload", NewEvent::info("Uploading video to YouTube"))
        .await?;
    let result = tokio::select! {
        r = yt.upload(&video, &meta) => r,
        reason = cx.stop.stopped() => return Err(StageError::Stopped(reason)),
    };
    match result {
        Ok(up) => {
            info!(job = %cx.job.0, stage = "upload", video_id = %up.video_id, "uploaded");
            cx.emit(
                "upload",
                NewEvent::success(format!("Uploaded to YouTube: {}", up.url))
                    .with_payload(json!({ "videoId": up.video_id, "url": up.url })),
            )
            .await?;
        }
        Err(e) => {
            cx.emit("upload", skipped("failed", &e)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_metadata_comes_from_the_subject_and_script() {
        let m = offline_metadata(
            "why octopuses have three hearts",
            "Octopuses have three hearts. Two pump blood through the gills. The third serves the body.",
        );
        assert_eq!(m.title, "Why octopuses have three hearts?");
        assert!(
            m.description.starts_with("Octopuses have three hearts."),
            "{m:?}"
        );
        assert!(m.description.chars().count() <= MAX_DESCRIPTION);
        assert_eq!(m.keywords.len(), KEYWORDS);
        assert_eq!(m.keywords[0], "octopuses");
        let long = offline_metadata(&"word ".repeat(60), "");
        assert!(long.title.chars().count() <= MAX_TITLE, "{}", long.title);
    }
}
