//! Piper, the neural offline voice: one `piper` process speaks every sentence of a job.
//!
//! Loading a model takes seconds, so the sentences go to one run (`-i <file>`, one sentence a line,
//! `-d <folder>`: one WAV a line, named by a monotonic timestamp, so their order is the lines'
//! order). The process runs in its own process group like every tool (`process`), killed with it
//! on a stop. Piper's command line reports no word or phoneme times (its Python API can, with a
//! model patched for alignments), so word times are estimated inside each sentence's audio.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::process::{self, Tool};
use super::timing::WordMark;
use super::voice::VoiceProvider;
use super::{LocalBoxFuture, StageError, StopSignal};
use crate::voices::PiperModel;

/// The Piper engine with one model.
#[derive(Clone, Debug)]
pub struct Piper {
    tool: Tool,
    model: PiperModel,
}

impl Piper {
    pub fn new(tool: Tool, model: PiperModel) -> Piper {
        Piper { tool, model }
    }

    pub fn model(&self) -> &PiperModel {
        &self.model
    }

    /// The arguments of one run: the model and its config, the sentences file, the output folder.
    pub fn args(&self, input: &Path, out_dir: &Path) -> Vec<OsString> {
        let mut config = self.model.path.clone().into_os_string();
        config.push(".json");
        vec![
            "-m".into(),
            self.model.path.clone().into(),
            "-c".into(),
            config,
            "-i".into(),
            input.into(),
            "-d".into(),
            out_dir.into(),
        ]
    }

    /// Speaks `sentences` into `out[i]` (WAV), in one run whose files live in `work`.
    async fn speak_into(
        &self,
        stop: &StopSignal,
        sentences: &[String],
        work: &Path,
        out: &[PathBuf],
    ) -> Result<(), StageError> {
        let io =
            |p: &Path, e: std::io::Error| StageError::failed("Io", format!("{}: {e}", p.display()));
        let input = work.join("piper-input.txt");
        let out_dir = work.join("piper-out");
        let _ = tokio::fs::remove_dir_all(&out_dir).await;
        tokio::fs::create_dir_all(&out_dir)
            .await
            .map_err(|e| io(&out_dir, e))?;
        // One sentence a line: a line break inside one would make two.
        let text: String = sentences
            .iter()
            .map(|s| s.replace(['\n', '\r'], " ") + "\n")
            .collect();
        tokio::fs::write(&input, text)
            .await
            .map_err(|e| io(&input, e))?;
        process::run(stop, &self.tool, &self.args(&input, &out_dir)).await?;
        let mut written: Vec<(u128, PathBuf)> = Vec::new();
        let mut rd = tokio::fs::read_dir(&out_dir)
            .await
            .map_err(|e| io(&out_dir, e))?;
        while let Ok(Some(entry)) = rd.next_entry().await {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "wav") {
                let stamp = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u128>().ok())
                    .unwrap_or(u128::MAX);
                written.push((stamp, path));
            }
        }
        written.sort();
        if written.len() != sentences.len() {
            return Err(StageError::failed(
                "BadAudio",
                format!(
                    "piper wrote {} audio files for {} sentences in {}",
                    written.len(),
                    sentences.len(),
                    out_dir.display()
                ),
            ));
        }
        for ((_, from), to) in written.iter().zip(out) {
            tokio::fs::rename(from, to).await.map_err(|e| io(to, e))?;
        }
        Ok(())
    }
}

impl VoiceProvider for Piper {
    fn name(&self) -> &'static str {
        "Piper"
    }

    fn speak<'a>(
        &'a self,
        stop: &'a StopSignal,
        _voice: &'a str,
        text: &'a str,
        out: &'a Path,
    ) -> LocalBoxFuture<'a, Result<Option<Vec<WordMark>>, StageError>> {
        Box::pin(async move {
            let work = out.with_extension("piper");
            tokio::fs::create_dir_all(&work)
                .await
                .map_err(|e| StageError::failed("Io", format!("{}: {e}", work.display())))?;
            let sentences = [text.to_string()];
            self.speak_into(stop, &sentences, &work, &[out.to_path_buf()])
                .await?;
            let _ = tokio::fs::remove_dir_all(&work).await;
            Ok(None)
        })
    }

    fn speak_all<'a>(
        &'a self,
        stop: &'a StopSignal,
        _voice: &'a str,
        sentences: &'a [String],
        out: &'a [PathBuf],
    ) -> LocalBoxFuture<'a, Result<Vec<Option<Vec<WordMark>>>, StageError>> {
        Box::pin(async move {
            let work = match out.first().and_then(|p| p.parent()) {
                Some(dir) => dir.to_path_buf(),
                None => return Ok(Vec::new()),
            };
            self.speak_into(stop, sentences, &work, out).await?;
            Ok(vec![None; sentences.len()])
        })
    }
}
