#![recursion_limit = "256"]
//! reelsmith: an event-sourced daemon that turns a subject into a finished vertical short video.
//!
//! # Layout (each line is a file or folder under `src/`; a module imports only modules listed
//! above it, except the edges at the end)
//! - `event/`     Event, JobId, the job state fold (`JobView::check` / `apply`). Pure.
//! - `store/`     The redb event log: versioned record codec, typed errors, range reads, scan, backup.
//! - `views`      In-memory job views and the queue, derived from the log after each commit.
//! - `voices`     The voice catalogue (MoneyPrinter ids, espeak-ng voices, TikTok's). A leaf.
//! - `percent`    Percent-encoding of URL components. A leaf.
//! - `metrics`    The process's instruments and the `/metrics` scrape (prometheus-client). A leaf.
//! - `secret`     `Secret` (never printed) and the redactor that hides secrets in any text.
//! - `songs`      The song library: replaced whole by one rename; a job links its song into its folder. A leaf.
//! - `request`    The `POST /api/generate` body, parsed and validated.
//! - `providers/` Clients of outside services (Ollama, OpenAI-compatible, Pexels, TikTok, YouTube).
//! - `pipeline/`  The media stages: script, footage, voice, music, subtitles, render, metadata.
//! - `actors/`    `journal` (the only writer, group commit), `scheduler` (limits, routing), `job`.
//! - `service`    `Core`: the one face of the core (submit, cancel, retry, pause, reads, pages...).
//! - `webhooks`   The webhook dispatcher: follows the log, POSTs job events, records each attempt.
//! - `http/`      The hyper server: MoneyPrinter's API plus long polling, through `Core`.
//! - `control/`   The Unix control socket (through `Core`) and the `ctl` client.
//! - `generate`   The one-shot `reelsmith generate` command, through `Core`.
//! - `daemon`     The boot and shutdown sequences of `serve`.
//! - `fault_tests` (tests only) Store faults against the in-process core, HTTP and control socket.
//! - Edges: `config` (read once, passed down; imports `secret` only, and hyper's URI parser), `cli` (clap), `telemetry`,
//!   `systemd` (sd_notify). `cli` mounts `control::cli`'s `ctl` subcommands.

pub(crate) mod actors;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod event;
#[cfg(test)]
mod fault_tests;
pub mod generate;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod percent;
pub(crate) mod pipeline;
pub(crate) mod providers;
pub mod request;
pub(crate) mod secret;
pub(crate) mod service;
pub(crate) mod songs;
pub mod store;
pub(crate) mod systemd;
pub mod telemetry;
pub mod views;
pub(crate) mod voices;
pub(crate) mod webhooks;

/// Resolves once `rx` holds `true` (or its sender is gone). Holds no lock across an await, so the
/// future is `Send`.
pub async fn wait_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
