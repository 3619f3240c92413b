//! `POST /api/upload-songs`: a multipart upload (field `songs`, `.mp3` files) that replaces the song
//! library. Files are streamed to a fresh staging folder next to the library, under the configured
//! size limit, and swapped in with one rename (`songs::replace`) only when the whole upload
//! succeeded: a failed upload leaves the old library intact, and two concurrent uploads end as
//! exactly one of them. File names are reduced to a safe base name (no path traversal).

use std::path::Path;

use futures_util::StreamExt;
use http_body_util::BodyStream;
use hyper::body::Incoming;
use hyper::{header, Request, Response};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use super::routes::{json_response, Body};
use crate::service::Core;

pub async fn upload_songs(st: &Core, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let config = st.config();
    let limit = config.server.max_upload_bytes;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let boundary = multer::parse_boundary(&content_type).map_err(|_| {
        ApiError::BadRequest(
            "No files uploaded. Send multipart/form-data with the field `songs`.".into(),
        )
    })?;
    super::routes::check_declared_length(&req, limit)?;
    let stream = BodyStream::new(req.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok::<_, hyper::Error>),
            Err(e) => Some(Err(e)),
        }
    });
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);

    let library = crate::songs::resolve(&config.songs_dir());
    let staging = crate::songs::staging_dir(&library);
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", staging.display())))?;
    let result = receive(&mut multipart, &staging, limit).await;
    let (files, mp3s) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
    };
    if files == 0 || mp3s.is_empty() {
        let _ = tokio::fs::remove_dir_all(&staging).await;
        return Err(ApiError::BadRequest(if files == 0 {
            "No files uploaded.".into()
        } else {
            "No MP3 files found.".into()
        }));
    }
    let (from, to) = (staging.clone(), library.clone());
    let swapped = tokio::task::spawn_blocking(move || crate::songs::replace(&from, &to))
        .await
        .map_err(|e| ApiError::Internal(format!("the song library task failed: {e}")));
    match swapped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(ApiError::Internal(format!(
                "{e}; the song library is unchanged"
            )));
        }
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
    }
    Ok(json_response(
        hyper::StatusCode::OK,
        &json!({
            "status": "success",
            "message": format!("Uploaded {} song(s).", mp3s.len()),
            "songs": mp3s,
        }),
    ))
}

/// Streams every file of the `songs` field into `staging`. Returns (files seen, mp3 names kept).
async fn receive(
    multipart: &mut multer::Multipart<'_>,
    staging: &Path,
    limit: u64,
) -> Result<(usize, Vec<String>), ApiError> {
    let mut files = 0;
    let mut names: Vec<String> = Vec::new();
    let map_err = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            ApiError::TooLarge { limit }
        }
        other => ApiError::BadRequest(format!("The upload is not valid multipart data: {other}.")),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(map_err)? {
        if field.name() != Some("songs") {
            continue;
        }
        let Some(raw_name) = field.file_name().map(str::to_string) else {
            continue;
        };
        files += 1;
        let Some(name) = sanitize(&raw_name) else {
            continue;
        };
        if !name.to_ascii_lowercase().ends_with(".mp3") {
            // Drain the field: the stream must move past it.
            while field.chunk().await.map_err(map_err)?.is_some() {}
            continue;
        }
        let name = unique(&names, name);
        let path = staging.join(&name);
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
        while let Some(chunk) = field.chunk().await.map_err(map_err)? {
            out.write_all(&chunk)
                .await
                .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
        }
        out.flush()
            .await
            .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
        names.push(name);
    }
    Ok((files, names))
}

/// The last path component, with anything but letters, digits, `.`, `-`, `_` and spaces replaced;
/// no leading dots. `None` when nothing usable is left.
pub fn sanitize(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    let cleaned: String = cleaned.chars().take(120).collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.' || c == '_') {
        None
    } else {
        Some(cleaned)
    }
}

fn unique(taken: &[String], name: String) -> String {
    if !taken.contains(&name) {
        return name;
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
    (1..)
        .map(|i| format!("{stem}-{i}.{ext}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_library() {
        assert_eq!(
            sanitize("../../etc/passwd.mp3").as_deref(),
            Some("passwd.mp3")
        );
        assert_eq!(sanitize("..\\..\\win.mp3").as_deref(), Some("win.mp3"));
        assert_eq!(sanitize("..mp3").as_deref(), Some("mp3"));
        assert_eq!(sanitize("a/b/..").as_deref(), None);
        assert_eq!(
            sanitize("my song (1).mp3").as_deref(),
            Some("my song _1_.mp3")
        );
        assert_eq!(unique(&["a.mp3".into()], "a.mp3".into()), "a-1.mp3");
    }
}
