//! Music stage (only when the request has `useMusic`): picks a random `.mp3` from the song library,
//! or takes the request's own `music` (see `own_media`).
//!
//! The render loops it to the video's length and mixes it at `music.volume` under the voice. An
//! empty or missing library is not a failure: a warning event says so and the job goes on without
//! music. The chosen song is hard-linked (or copied) into the job's folder at once, and the render
//! reads that file, never the library. Events: `Adding background music`, then possibly `No songs found in <dir>; continuing
//! without music` (warning).

use std::path::{Path, PathBuf};

use serde_json::json;
use tracing::info;

use super::{JobContext, StageError};
use crate::event::NewEvent;

/// The `.mp3` files (any case, non-empty) directly in `dir`, sorted; empty when it does not exist.
pub async fn list_songs(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::songs::list(&dir))
        .await
        .unwrap_or_default()
}

/// How many times a job chooses again when an upload replaced the library under it.
const CHOICES: usize = 3;

/// A random index below `n` (n > 0), from the clock and the job id: no RNG crate needed.
fn random_index(n: usize, salt: u128) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut x = (nanos ^ salt ^ (salt >> 64)) as u64 | 1;
    // xorshift64*: spreads the low-entropy clock bits.
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
}

/// The job folder's subfolder that holds the job's own link to its song.
pub const SONG_DIR: &str = "music";

/// The music stage: chooses a song and takes it into the job's folder (see [`crate::songs`]), so
/// an upload that replaces the library later never breaks this job's render.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    if !cx.request.use_music {
        return Ok(());
    }
    if let Some(own) = cx.request.music.clone() {
        return super::own_media::music_stage(cx, &own).await;
    }
    cx.emit("music", NewEvent::info("Adding background music"))
        .await?;
    let dest = cx.work_dir.join(SONG_DIR);
    for _ in 0..CHOICES {
        let songs = list_songs(&cx.songs_dir).await;
        if songs.is_empty() {
            let dir = cx.songs_dir.display().to_string();
            cx.emit(
                "music",
                NewEvent::warning(format!("No songs found in {dir}; continuing without music"))
                    .with_payload(json!({ "songsDir": dir })),
            )
            .await?;
            return Ok(());
        }
        let song = songs[random_index(songs.len(), cx.job.as_u128())].clone();
        let dest = dest.clone();
        let from = song.clone();
        let taken = tokio::task::spawn_blocking(move || crate::songs::take_song(&from, &dest))
            .await
            .map_err(|e| StageError::failed("Io", format!("the song task failed: {e}")))?;
        match taken {
            Ok(own) => {
                info!(job = %cx.job.0, stage = "music", song = %song.display(), copy = %own.display(), "music chosen");
                cx.artifacts.music = Some(own);
                return Ok(());
            }
            // An upload replaced the library between the listing and the link: choose again.
            Err(e) if e.io().kind() == std::io::ErrorKind::NotFound => {
                info!(job = %cx.job.0, stage = "music", error = %e, "song vanished; choosing again");
            }
            Err(e) => return Err(StageError::failed("Io", e.to_string())),
        }
    }
    Err(StageError::retryable(
        "SongLibraryChanging",
        format!(
            "the song library {} changed {CHOICES} times while a song was chosen",
            cx.songs_dir.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_non_empty_mp3_files_are_songs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.MP3"), b"id3").unwrap();
        std::fs::write(dir.path().join("a.mp3"), b"id3").unwrap();
        std::fs::write(dir.path().join("empty.mp3"), b"").unwrap();
        std::fs::write(dir.path().join("c.wav"), b"riff").unwrap();
        std::fs::create_dir(dir.path().join("d.mp3")).unwrap();
        let songs = list_songs(dir.path()).await;
        let names: Vec<_> = songs
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        assert_eq!(names, vec!["a.mp3", "b.MP3"]);
        assert!(list_songs(&dir.path().join("missing")).await.is_empty());
        for salt in 0..50 {
            assert!(random_index(3, salt) < 3);
        }
    }
}
