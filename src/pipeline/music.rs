//! Music stage (only when the request has `useMusic`): picks a random `.mp3` from the song library.
//!
//! The render loops it to the video's length and mixes it at `music.volume` under the voice. An
//! empty or missing library is not a failure: a warning event says so and the job goes on without
//! music. Events: `Adding background music`, then possibly `No songs found in <dir>; continuing
//! without music` (warning).

use std::path::{Path, PathBuf};

use serde_json::json;
use tracing::info;

use super::{JobContext, StageError};
use crate::event::NewEvent;

/// The `.mp3` files (any case) directly in `dir`, sorted; empty when it does not exist.
pub async fn list_songs(dir: &Path) -> Vec<PathBuf> {
    let mut songs = Vec::new();
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return songs;
    };
    while let Ok(Some(entry)) = rd.next_entry().await {
        let path = entry.path();
        let mp3 = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("mp3"));
        if mp3
            && entry
                .metadata()
                .await
                .is_ok_and(|m| m.is_file() && m.len() > 0)
        {
            songs.push(path);
        }
    }
    songs.sort();
    songs
}

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

/// The music stage.
pub async fn run(cx: &mut JobContext) -> Result<(), StageError> {
    if !cx.request.use_music {
        return Ok(());
    }
    cx.emit("music", NewEvent::info("Adding background music"))
        .await?;
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
    info!(job = %cx.job.0, stage = "music", song = %song.display(), "music chosen");
    cx.artifacts.music = Some(song);
    Ok(())
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
