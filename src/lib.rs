//! reelsmith: an event-sourced daemon that turns a subject into a finished vertical short video.
//!
//! # Layout
//! - `event`     Event, JobId, the job state fold (`JobView::check` / `apply`). Pure.
//! - `store`     The redb event log: versioned record codec, range reads, scan, backup. No actix.
//! - `views`     In-memory job views rebuilt from the log, updated by the journal after each commit.
//! - `actors`    `journal` (the only writer, group commit), `scheduler` (queue, limits), `job`.
//! - `pipeline`  The media stages: script, footage, voice, music, subtitles, render, metadata, upload.
//! - `providers` Clients of outside services (Ollama, ...).
//! - `request`   The `POST /api/generate` body, parsed and validated.
//! - `voices`    The voice catalogue (MoneyPrinter ids, espeak-ng voices, TikTok's). A leaf.
//! - `http`      The hyper server: MoneyPrinter's API plus long polling.
//! - `control`   The Unix control socket and the `ctl` client.
//! - `daemon`    Boot and shutdown sequences (`serve`); `generate` is the one-shot command.
//! - `config`, `cli`, `telemetry`, `systemd`: the edges.

pub(crate) mod actors;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod event;
pub mod generate;
pub(crate) mod http;
pub(crate) mod pipeline;
pub(crate) mod providers;
pub mod request;
pub(crate) mod service;
pub mod store;
pub(crate) mod systemd;
pub mod telemetry;
pub mod views;
pub(crate) mod voices;

/// Resolves once `rx` holds `true` (or its sender is gone). Holds no lock across an await, so the
/// future is `Send`.
pub async fn wait_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
