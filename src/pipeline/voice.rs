//! Voice stage: the voiceover, one audio file per sentence so subtitle timing is exact, and the
//! time of every word.
//!
//! MoneyPrinter's TikTok voice ids (the full list its page offers) map to espeak-ng voices through
//! the catalogue in `crate::voices` (an id not in it is refused at submit time), and to a Piper
//! model of their language; `piper:<model>` names a Piper model. Providers behind the
//! [`VoiceProvider`] trait: Piper (`piper`: the neural offline voice, one process for all
//! sentences), espeak-ng (offline; through its library, which reports where each word starts, else
//! the program) and TikTok TTS ([`TikTokVoice`]: MP3 per sentence, converted to WAV; espeak-ng
//! stands in, with a warning, when TikTok is not configured or fails for good, unless
//! `voice.fallback` is off). `voice.provider = "auto"` (the default) uses Piper when its executable
//! and a model for the voice's language are installed, else espeak-ng, and an info event
//! `Voice: ...` names the choice and why; an explicit `piper` (or a `piper:<model>` voice) that is
//! not installed fails the stage. Other engines speak at most [`PARALLEL_SYNTHESIS`] sentences at
//! once; the per-sentence WAVs are measured from their headers and joined, with a short pause
//! between sentences, into one PCM WAV whose sentence starts are exact. Word times: the engine's
//! where it reports them (espeak-ng's library), else estimated inside each sentence's speech (its
//! audio with the silence at either end cut, found by one `silencedetect` pass over the track); see
//! `timing`. Event: `Generating voiceover with <provider>` {voice, model}.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use tracing::info;

use super::espeak::{self, EspeakError};
use super::online::{self, CallSite, Failover};
use super::piper::Piper;
use super::process::{self, Tool};
use super::text::{has_words, split_sentences};
use super::timing::{self, WordMark};
use super::{EventSink, JobContext, LocalBoxFuture, SpokenSentence, StageError, StopSignal};
use crate::config::{Config, VoiceEngine};
use crate::event::NewEvent;
use crate::providers::tiktok::TikTok;
use crate::providers::RetryPolicy;
use crate::voices::{espeak_voice, piper_model_for, piper_model_name, piper_models};

/// Sentences synthesised at once.
pub const PARALLEL_SYNTHESIS: usize = 2;

/// Something that speaks one sentence into a WAV file (PCM, any rate; all sentences of a job must
/// share one format), and says where its words start when the engine reports that (`None`: the
/// word times are estimated from the audio).
pub trait VoiceProvider {
    /// Name in the event: `Generating voiceover with <name>`.
    fn name(&self) -> &'static str;
    fn speak<'a>(
        &'a self,
        stop: &'a StopSignal,
        voice: &'a str,
        text: &'a str,
        out: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<Vec<WordMark>>, StageError>>;

    /// Speaks every sentence, `sentences[i]` into `out[i]`; returns each one's word marks. By
    /// default [`PARALLEL_SYNTHESIS`] calls of `speak` at a time; an engine with a costly start
    /// (Piper loads its model for seconds) speaks them all in one run instead.
    fn speak_all<'a>(
        &'a self,
        stop: &'a StopSignal,
        voice: &'a str,
        sentences: &'a [String],
        out: &'a [PathBuf],
    ) -> LocalBoxFuture<'a, Result<Vec<Option<Vec<WordMark>>>, StageError>> {
        Box::pin(async move {
            let jobs = sentences.iter().zip(out).map(|(text, out)| async move {
                stop.check()?;
                self.speak(stop, voice, text, out).await
            });
            stream::iter(jobs)
                .buffered(PARALLEL_SYNTHESIS)
                .try_collect()
                .await
        })
    }
}

/// espeak-ng, offline: through its library (`tools.espeak_library`) when it loads, which reports
/// where each word starts, else by running the program (`tools.espeak`; word times then
/// estimated). Either way the program must be installed: it names the installation.
#[derive(Clone, Debug)]
pub struct Espeak {
    tool: Tool,
    library: String,
    speed_wpm: u32,
}

impl Espeak {
    pub fn new(cfg: &Config) -> Espeak {
        Espeak {
            tool: Tool::espeak(cfg),
            library: cfg.tools.espeak_library.clone(),
            speed_wpm: cfg.voice.speed_wpm,
        }
    }

    /// Speaks `text` through the library into `out`; its word marks.
    async fn speak_with_library(
        &self,
        stop: &StopSignal,
        espeak_voice: &str,
        text: &str,
        out: &Path,
    ) -> Result<Vec<WordMark>, StageError> {
        let abort = Arc::new(AtomicBool::new(false));
        let (library, voice, text_owned, rate, flag) = (
            self.library.clone(),
            espeak_voice.to_string(),
            text.to_string(),
            self.speed_wpm,
            abort.clone(),
        );
        let mut task = tokio::task::spawn_blocking(move || {
            espeak::speak(&library, &voice, rate, &text_owned, flag)
        });
        let spoken = tokio::select! {
            r = &mut task => r,
            reason = stop.stopped() => {
                abort.store(true, Ordering::Relaxed);
                let _ = task.await;
                return Err(StageError::Stopped(reason));
            }
        };
        let speech = spoken
            .map_err(|e| StageError::failed("ToolFailed", format!("espeak-ng stopped: {e}")))?
            .map_err(|e| match e {
                EspeakError::Aborted => stop
                    .check()
                    .err()
                    .unwrap_or_else(|| StageError::failed("ToolFailed", "espeak-ng stopped early")),
                e => StageError::failed("ToolFailed", format!("espeak-ng: {e}")),
            })?;
        let wav = Wav {
            channels: 1,
            sample_rate: speech.sample_rate,
            bits_per_sample: 16,
            data: speech
                .samples
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect(),
        };
        tokio::fs::write(out, wav.to_bytes())
            .await
            .map_err(|e| io_failed(out, e))?;
        Ok(speech.marks)
    }
}

impl VoiceProvider for Espeak {
    fn name(&self) -> &'static str {
        "espeak-ng"
    }

    fn speak<'a>(
        &'a self,
        stop: &'a StopSignal,
        voice: &'a str,
        text: &'a str,
        out: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<Vec<WordMark>>, StageError>> {
        Box::pin(async move {
            let espeak_voice = espeak_voice(voice).ok_or_else(|| {
                StageError::failed(
                    "UnknownVoice",
                    format!("voice `{voice}` has no espeak-ng voice"),
                )
            })?;
            if !self.tool.is_available() {
                return Err(self.tool.missing());
            }
            if !self.library.is_empty() && espeak::available(&self.library) {
                return self
                    .speak_with_library(stop, espeak_voice, text, out)
                    .await
                    .map(Some);
            }
            // The text goes through a file, so nothing in it can be read as an option.
            let text_path = out.with_extension("txt");
            tokio::fs::write(&text_path, text)
                .await
                .map_err(|e| io_failed(&text_path, e))?;
            let args: Vec<std::ffi::OsString> = vec![
                "-b".into(),
                "1".into(),
                "-v".into(),
                espeak_voice.into(),
                "-s".into(),
                self.speed_wpm.to_string().into(),
                "-w".into(),
                out.into(),
                "-f".into(),
                text_path.clone().into(),
            ];
            process::run(stop, &self.tool, &args).await?;
            Ok(None)
        })
    }
}

fn io_failed(path: &Path, e: std::io::Error) -> StageError {
    StageError::failed("Io", format!("{}: {e}", path.display()))
}

/// The format and sample data of a PCM WAV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wav {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
    pub data: Vec<u8>,
}

/// Why a WAV file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWave,
    #[error("WAV is not 16-bit PCM (format {format}, {bits} bits)")]
    Unsupported { format: u16, bits: u16 },
    #[error("WAV has no `{0}` chunk")]
    MissingChunk(&'static str),
}

impl Wav {
    /// Parses a RIFF/WAVE file of 16-bit PCM. A data size beyond the file's end (a header written
    /// before the length was known) is clamped to the bytes present.
    pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(WavError::NotWave);
        }
        let mut pos = 12;
        let mut fmt: Option<(u16, u16, u32, u16)> = None;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let size = u32::from_le_bytes([
                bytes[pos + 4],
                bytes[pos + 5],
                bytes[pos + 6],
                bytes[pos + 7],
            ]) as usize;
            let body = pos + 8;
            if id == b"fmt " {
                if body + 16 > bytes.len() {
                    return Err(WavError::MissingChunk("fmt "));
                }
                let u16_at = |o: usize| u16::from_le_bytes([bytes[body + o], bytes[body + o + 1]]);
                let rate = u32::from_le_bytes([
                    bytes[body + 4],
                    bytes[body + 5],
                    bytes[body + 6],
                    bytes[body + 7],
                ]);
                fmt = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
            } else if id == b"data" {
                let (format, channels, sample_rate, bits) =
                    fmt.ok_or(WavError::MissingChunk("fmt "))?;
                if format != 1 || bits != 16 || channels == 0 || sample_rate == 0 {
                    return Err(WavError::Unsupported { format, bits });
                }
                let end = body.saturating_add(size).min(bytes.len());
                let frame = usize::from(channels) * 2;
                let len = (end - body) / frame * frame;
                return Ok(Wav {
                    channels,
                    sample_rate,
                    bits_per_sample: bits,
                    data: bytes[body..body + len].to_vec(),
                });
            }
            pos = body.saturating_add(size + (size & 1));
        }
        Err(WavError::MissingChunk("data"))
    }

    fn bytes_per_second(&self) -> usize {
        self.sample_rate as usize
            * usize::from(self.channels)
            * usize::from(self.bits_per_sample / 8)
    }

    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.data.len() as f64 / self.bytes_per_second() as f64
    }

    pub fn same_format(&self, other: &Wav) -> bool {
        (self.channels, self.sample_rate, self.bits_per_sample)
            == (other.channels, other.sample_rate, other.bits_per_sample)
    }

    /// Silence of `seconds` in this format.
    fn silence(&self, seconds: f64) -> Vec<u8> {
        let frame = usize::from(self.channels) * usize::from(self.bits_per_sample / 8);
        let frames = (seconds * f64::from(self.sample_rate)).round() as usize;
        vec![0; frames * frame]
    }

    /// The file's bytes (canonical 44-byte header).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(44 + self.data.len());
        let data_len = self.data.len() as u32;
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&self.channels.to_le_bytes());
        out.extend_from_slice(&self.sample_rate.to_le_bytes());
        out.extend_from_slice(&(self.bytes_per_second() as u32).to_le_bytes());
        out.extend_from_slice(&(self.channels * self.bits_per_sample / 8).to_le_bytes());
        out.extend_from_slice(&self.bits_per_sample.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(&self.data);
        out
    }
}

/// Joins per-sentence WAVs with `pause` seconds between them; returns the track and each piece's
/// (start, duration) in it.
pub fn join_wavs(parts: &[Wav], pause: f64) -> Result<(Wav, Vec<(f64, f64)>), String> {
    let first = parts.first().ok_or("no audio to join")?;
    let mut track = Wav {
        data: Vec::new(),
        ..first.clone()
    };
    let mut timings = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if !p.same_format(first) {
            return Err(format!(
                "sentence {} has audio format {} Hz x{} but the first has {} Hz x{}",
                i + 1,
                p.sample_rate,
                p.channels,
                first.sample_rate,
                first.channels
            ));
        }
        if i > 0 {
            track.data.extend(track.silence(pause));
        }
        let start = track.duration();
        track.data.extend_from_slice(&p.data);
        timings.push((start, p.duration()));
    }
    Ok((track, timings))
}

/// The sample format every sentence of a TikTok voiceover is converted to (espeak-ng's own, so a
/// fallback sentence joins the others): mono 16-bit PCM at this rate.
pub const TIKTOK_WAV_RATE: u32 = 22_050;

/// TikTok text-to-speech: each sentence synthesised (MP3, retried with a warning event per retry),
/// then converted by ffmpeg to the shared WAV format. When TikTok fails for good and
/// `voice.fallback` is on, espeak-ng speaks that sentence and the rest (one warning says so); with
/// the fallback off the stage fails {stage: voice, provider: tiktok}.
pub struct TikTokVoice {
    tts: TikTok,
    ffmpeg: Tool,
    policy: RetryPolicy,
    events: Rc<dyn EventSink>,
    fallback: Option<Espeak>,
    failover: Failover,
}

impl TikTokVoice {
    /// ffmpeg arguments that turn `input` (any audio) into the shared WAV format at `out`.
    pub fn convert_args(input: &Path, out: &Path) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = process::FFMPEG_QUIET.map(Into::into).to_vec();
        a.extend([
            "-i".into(),
            input.into(),
            "-vn".into(),
            "-ac".into(),
            "1".into(),
            "-ar".into(),
            TIKTOK_WAV_RATE.to_string().into(),
            "-c:a".into(),
            "pcm_s16le".into(),
            "-f".into(),
            "wav".into(),
            out.into(),
        ]);
        a
    }

    async fn convert(&self, stop: &StopSignal, input: &Path, out: &Path) -> Result<(), StageError> {
        process::run(stop, &self.ffmpeg, &Self::convert_args(input, out)).await?;
        let _ = tokio::fs::remove_file(input).await;
        Ok(())
    }
}

impl VoiceProvider for TikTokVoice {
    fn name(&self) -> &'static str {
        "TikTok TTS"
    }

    fn speak<'a>(
        &'a self,
        stop: &'a StopSignal,
        voice: &'a str,
        text: &'a str,
        out: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<Vec<WordMark>>, StageError>> {
        Box::pin(async move {
            if self.failover.online() {
                let site = CallSite {
                    events: self.events.as_ref(),
                    stop,
                    stage: "voice",
                    provider: online::TIKTOK,
                };
                let mp3 = out.with_extension("mp3");
                match online::call(site, &self.policy, |_| {
                    self.tts.synthesize(text, voice, &mp3)
                })
                .await?
                {
                    Ok(()) => return self.convert(stop, &mp3, out).await.map(|()| None),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&mp3).await;
                        self.failover.give_up(self.events.as_ref(), &e).await?;
                    }
                }
            }
            let Some(espeak) = &self.fallback else {
                return Err(StageError::failed(
                    "ProviderFailed",
                    "TikTok TTS failed and voice.fallback is off",
                ));
            };
            // espeak-ng's WAV goes through the same conversion, so every sentence shares one format.
            let raw = out.with_extension("espeak.wav");
            let marks = espeak.speak(stop, voice, text, &raw).await?;
            self.convert(stop, &raw, out).await?;
            Ok(marks)
        })
    }
}

/// The engine that speaks a job, and what to say about the choice.
struct Chosen {
    provider: Box<dyn VoiceProvider>,
    /// The Piper model, when Piper speaks.
    model: Option<String>,
    /// Events recorded after `Generating voiceover with ...`: why `auto` chose what it chose, or
    /// the warning of a fallback.
    notes: Vec<NewEvent>,
}

impl Chosen {
    fn one(provider: Box<dyn VoiceProvider>, note: Option<NewEvent>) -> Chosen {
        Chosen {
            provider,
            model: None,
            notes: note.into_iter().collect(),
        }
    }
}

/// Piper with the model that speaks `voice`, or why there is none.
fn piper_for(cfg: &Config, voice: &str) -> Result<Piper, String> {
    let tool = Tool::piper(cfg);
    if !tool.is_available() {
        return Err(format!(
            "Piper is not installed ({} = \"{}\" was not found)",
            tool.key, tool.program
        ));
    }
    let models = piper_models(&cfg.tools.piper, &cfg.voice.piper_model);
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    match piper_model_for(&models, voice) {
        Some(m) => Ok(Piper::new(tool, m.clone())),
        None if models.is_empty() => Err(match cfg.voice.piper_model.as_str() {
            "" => format!(
                "Piper has no voice model (none installed beside {}; set voice.piper_model)",
                tool.program
            ),
            m => format!("the Piper model {m} (voice.piper_model) was not found, or its .onnx.json is missing"),
        }),
        None => Err(format!(
            "Piper has no model for voice `{voice}` (installed: {})",
            names.join(", ")
        )),
    }
}

/// The provider for this job (`voice.provider`, or Piper for a `piper:<model>` voice).
fn choose_provider(
    cfg: &Config,
    voice: &str,
    events: &Rc<dyn EventSink>,
) -> Result<Chosen, StageError> {
    let piper = |p: Piper, note: Option<NewEvent>| Chosen {
        model: Some(p.model().name.clone()),
        provider: Box::new(p),
        notes: note.into_iter().collect(),
    };
    let engine = if piper_model_name(voice).is_some() {
        VoiceEngine::Piper
    } else {
        cfg.voice.provider
    };
    match engine {
        VoiceEngine::Espeak => Ok(Chosen::one(Box::new(Espeak::new(cfg)), None)),
        VoiceEngine::Piper => match piper_for(cfg, voice) {
            Ok(p) => Ok(piper(p, None)),
            Err(why) if !Tool::piper(cfg).is_available() => Err(StageError::failed(
                "ToolMissing",
                format!("{why}. {}", Tool::piper(cfg).missing_message()),
            )),
            Err(why) => Err(StageError::failed("UnknownVoice", why)),
        },
        VoiceEngine::Auto => match piper_for(cfg, voice) {
            Ok(p) => {
                let name = p.model().name.clone();
                let note = NewEvent::info(format!(
                    "Voice: Piper with the model {name} (voice.provider = auto)."
                ))
                .with_payload(json!({ "provider": "piper", "model": name, "choice": "auto" }));
                Ok(piper(p, Some(note)))
            }
            Err(why) => {
                info!(reason = %why, "voice: espeak-ng instead of Piper");
                let note = NewEvent::info(format!(
                    "Voice: espeak-ng (voice.provider = auto): {why}. Install Piper for a natural voice (see the README)."
                ))
                .with_payload(json!({ "provider": "espeak-ng", "choice": "auto", "reason": why }));
                Ok(Chosen::one(Box::new(Espeak::new(cfg)), Some(note)))
            }
        },
        VoiceEngine::Tiktok => match TikTok::from_config(&cfg.voice, &cfg.tools) {
            Ok(tts) => Ok(Chosen::one(
                Box::new(TikTokVoice {
                    tts,
                    ffmpeg: Tool::ffmpeg(cfg),
                    policy: RetryPolicy::for_provider(
                        cfg.voice.retries,
                        Duration::from_secs(cfg.voice.tiktok_timeout_secs.max(1)),
                    ),
                    events: events.clone(),
                    fallback: cfg.voice.fallback.then(|| Espeak::new(cfg)),
                    failover: Failover::new(
                        "voice",
                        online::TIKTOK,
                        cfg.voice
                            .fallback
                            .then_some("espeak-ng speaks the rest of the voiceover."),
                    ),
                }),
                None,
            )),
            Err(e) if cfg.voice.fallback => Ok(Chosen::one(
                Box::new(Espeak::new(cfg)),
                Some(online::fallback_warning(
                    &e,
                    "espeak-ng speaks instead.",
                    "voice",
                    online::TIKTOK,
                )),
            )),
            Err(e) => Err(StageError::provider(online::TIKTOK, &e)),
        },
    }
}

/// The voice stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    let cfg = cx.config.clone();
    let voice = cx.request.voice.clone();
    let chosen = choose_provider(&cfg, &voice, &cx.events)?;
    let provider = chosen.provider;
    let mut payload = json!({ "voice": voice });
    if let Some(model) = &chosen.model {
        payload["model"] = json!(model);
    }
    cx.emit(
        "voice",
        NewEvent::info(format!("Generating voiceover with {}", provider.name()))
            .with_payload(payload),
    )
    .await?;
    for ev in chosen.notes {
        cx.emit("voice", ev).await?;
    }
    let script = cx.artifacts.script.clone().unwrap_or_default();
    let sentences: Vec<String> = split_sentences(&script)
        .into_iter()
        .filter(|s| has_words(s))
        .collect();
    if sentences.is_empty() {
        return Err(StageError::failed(
            "EmptyScript",
            "the script has no sentences to speak",
        ));
    }
    let dir = cx.work_dir.join("voice");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io_failed(&dir, e))?;

    let files: Vec<PathBuf> = (0..sentences.len())
        .map(|i| dir.join(format!("sentence-{i:04}.wav")))
        .collect();
    let marks = provider
        .speak_all(&cx.stop, &voice, &sentences, &files)
        .await?;
    cx.stop.check()?;
    let marks: Vec<Option<Vec<WordMark>>> = marks
        .into_iter()
        .map(|m| m.filter(|m| !m.is_empty()))
        .collect();
    let mut parts: Vec<Wav> = Vec::with_capacity(files.len());
    for out in &files {
        let bytes = tokio::fs::read(out).await.map_err(|e| io_failed(out, e))?;
        parts.push(Wav::parse(&bytes).map_err(|e| {
            StageError::failed(
                "BadAudio",
                format!("{} wrote {}: {e}", provider.name(), out.display()),
            )
        })?);
    }

    let pause = f64::from(cfg.voice.sentence_pause_ms) / 1000.0;
    let (track, timings) =
        join_wavs(&parts, pause).map_err(|m| StageError::failed("BadAudio", m))?;
    let track_path: PathBuf = cx.work_dir.join("voice.wav");
    tokio::fs::write(&track_path, track.to_bytes())
        .await
        .map_err(|e| io_failed(&track_path, e))?;
    // The speech inside each sentence's audio: where the engine's last word ends, and the span
    // the words are estimated over when the engine did not time them.
    let silent = timing::silences(&cx.stop, &Tool::ffmpeg(&cfg), &track_path).await?;
    cx.artifacts.sentences = sentences
        .into_iter()
        .zip(timings)
        .zip(marks)
        .map(|((text, (start, duration)), marks)| {
            let speech = timing::trim_silence(start, start + duration, &silent);
            let marks = marks.unwrap_or_default();
            SpokenSentence {
                words: timing::word_times(&text, &marks, start, speech),
                exact_words: !marks.is_empty(),
                text,
                start,
                duration,
            }
        })
        .collect();
    cx.artifacts.duration = track.duration();
    cx.artifacts.voice_track = Some(track_path);
    info!(
        job = %cx.job.0,
        stage = "voice",
        sentences = cx.artifacts.sentences.len(),
        duration = cx.artifacts.duration,
        "voiceover ready"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, samples: usize) -> Wav {
        Wav {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            data: vec![1; samples * 2],
        }
    }

    #[test]
    fn wavs_round_trip_and_join_with_exact_timings() {
        let a = wav(16000, 16000);
        let b = wav(16000, 8000);
        assert_eq!(Wav::parse(&a.to_bytes()).unwrap(), a);
        let (track, t) = join_wavs(&[a.clone(), b], 0.25).unwrap();
        assert_eq!(t, vec![(0.0, 1.0), (1.25, 0.5)]);
        assert!((track.duration() - 1.75).abs() < 1e-9);
        assert!(join_wavs(&[a, wav(44100, 10)], 0.1).is_err());
    }

    #[test]
    fn a_streamed_header_with_a_huge_data_size_is_clamped() {
        let mut bytes = wav(16000, 1600).to_bytes();
        bytes[40..44].copy_from_slice(&0x7fff_f000u32.to_le_bytes());
        let w = Wav::parse(&bytes).unwrap();
        assert!((w.duration() - 0.1).abs() < 1e-9);
        assert_eq!(
            Wav::parse(b"RIFF0000WAVEjunk"),
            Err(WavError::MissingChunk("data"))
        );
        assert_eq!(Wav::parse(b"nope"), Err(WavError::NotWave));
    }
}
