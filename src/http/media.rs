//! A finished job's media: `GET /api/jobs/:id/video` (the MP4, with single-range `Range` support so a
//! browser `<video>` can seek; `?download=1` adds `Content-Disposition: attachment`),
//! `.../thumbnail` (a JPEG frame, made once with ffmpeg and kept next to the video) and
//! `.../subtitles` (the captions as SRT; WebVTT with `?format=vtt` or `Accept: text/vtt`).
//!
//! Invariants: nothing is served before the job's `complete` event (404 naming the job's state); files
//! are streamed in chunks, never read whole; the thumbnail is written under a temporary name and
//! renamed, so a concurrent request never sees half a file.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, warn};

use super::error::ApiError;
use super::routes::{full, parse_job_id, query_pairs, Body};
use crate::event::{JobState, JobView};
use crate::pipeline::process::{Tool, FFMPEG_QUIET};
use crate::service::Core;

/// Bytes per chunk of a streamed file.
const CHUNK: usize = 64 * 1024;
/// Largest thumbnail width, pixels (never upscaled).
const THUMB_WIDTH: u32 = 540;
/// Longest a thumbnail's ffmpeg may run.
const THUMB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which bytes of a file to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Span {
    Whole,
    /// `start..=end`, both inside the file.
    Part(u64, u64),
    /// 416: no byte of the file is in the range asked for.
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `len` bytes. A header that is not one `bytes=` range
/// (several ranges, another unit, garbage) is ignored, as RFC 9110 allows: the whole file is sent.
fn parse_range(header: Option<&str>, len: u64) -> Span {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Span::Unsatisfiable
            } else {
                Span::Part(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(start), end) => {
            if !b.trim().is_empty() && end.is_none() {
                return Span::Whole;
            }
            if start >= len {
                return Span::Unsatisfiable;
            }
            match end {
                Some(e) if e < start => Span::Whole,
                Some(e) => Span::Part(start, e.min(len - 1)),
                None => Span::Part(start, len - 1),
            }
        }
        _ => Span::Whole,
    }
}

/// The view of a completed job, or a 404 that says why there is no media yet.
async fn completed(st: &Core, id: &str) -> Result<std::sync::Arc<JobView>, ApiError> {
    let job = parse_job_id(id)?;
    let view = st.job_view(job).await?.ok_or(ApiError::JobNotFound)?;
    if view.state != JobState::Completed {
        return Err(ApiError::NotReady(format!(
            "The video is not ready: job {job} is {}. Media is served once the job has completed.",
            view.state.as_str()
        )));
    }
    Ok(view)
}

fn result_path(view: &JobView) -> Result<PathBuf, ApiError> {
    view.result_path
        .as_deref()
        .map(PathBuf::from)
        .ok_or_else(|| {
            ApiError::Internal(format!("job {} completed without a result path", view.id))
        })
}

/// Opens `path`; a missing file is a 404 whose message names what is missing.
async fn open(path: &Path, what: &str) -> Result<(tokio::fs::File, std::fs::Metadata), ApiError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ApiError::NotReady(format!(
                "The {what} of this job is no longer on disk ({}).",
                path.display()
            ))
        } else {
            ApiError::Internal(format!("cannot open {}: {e}", path.display()))
        }
    })?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("cannot stat {}: {e}", path.display())))?;
    Ok((file, meta))
}

/// `len` bytes of `file` from where it stands, in chunks.
fn file_body(file: tokio::fs::File, len: u64) -> Body {
    let chunks = stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(left as usize)];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// A weak validator from size and modification time.
fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("W/\"{:x}-{:x}\"", meta.len(), mtime)
}

fn set(r: &mut Response<Body>, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// Serves `path` honouring `Range` (and `If-Range`), for GET and HEAD.
async fn serve_file(
    req: &Request<Incoming>,
    path: &Path,
    content_type: &str,
    what: &str,
    download_name: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let (mut file, meta) = open(path, what).await?;
    let len = meta.len();
    let tag = etag(&meta);
    let header_str = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let if_range_ok = header_str(header::IF_RANGE).is_none_or(|v| v.trim() == tag);
    let span = if if_range_ok {
        parse_range(header_str(header::RANGE).as_deref(), len)
    } else {
        Span::Whole
    };
    let (status, start, count) = match span {
        Span::Whole => (StatusCode::OK, 0, len),
        Span::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Span::Unsatisfiable => {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            set(&mut r, header::CONTENT_RANGE, &format!("bytes */{len}"));
            set(&mut r, header::ACCEPT_RANGES, "bytes");
            return Ok(r);
        }
    };
    let head = req.method() == Method::HEAD;
    let body = if head || count == 0 {
        full(Bytes::new())
    } else {
        if start > 0 {
            file.seek(io::SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::Internal(format!("cannot seek {}: {e}", path.display())))?;
        }
        file_body(file, count)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    set(&mut r, header::CONTENT_TYPE, content_type);
    set(&mut r, header::CONTENT_LENGTH, &count.to_string());
    set(&mut r, header::ACCEPT_RANGES, "bytes");
    set(&mut r, header::ETAG, &tag);
    set(&mut r, header::CACHE_CONTROL, "no-cache");
    if let Ok(modified) = meta.modified() {
        set(
            &mut r,
            header::LAST_MODIFIED,
            &httpdate::fmt_http_date(modified),
        );
    }
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut r,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    if let Some(name) = download_name {
        set(
            &mut r,
            header::CONTENT_DISPOSITION,
            &format!("attachment; filename=\"{name}\""),
        );
    }
    Ok(r)
}

/// A download file name from the job's subject (`why-octopuses-have-three-hearts.mp4`).
fn download_name(view: &JobView, ext: &str) -> String {
    let subject = view.subject.as_deref().unwrap_or("");
    let words: Vec<String> = subject
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let slug: String = words.join("-").chars().take(60).collect();
    let slug = if slug.is_empty() {
        "video".into()
    } else {
        slug
    };
    // Only ASCII letters and digits go into the header's quoted string.
    let slug: String = slug
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{slug}.{ext}")
}

fn wants_download(query: &str) -> bool {
    query_pairs(query)
        .iter()
        .any(|(k, v)| k == "download" && v != "0" && v != "false")
}

/// `GET|HEAD /api/jobs/:id/video`.
pub async fn video(
    st: &Core,
    req: &Request<Incoming>,
    id: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let view = completed(st, id).await?;
    let path = result_path(&view)?;
    let name = wants_download(query).then(|| download_name(&view, "mp4"));
    serve_file(req, &path, "video/mp4", "video", name).await
}

/// `GET|HEAD /api/jobs/:id/thumbnail`: a JPEG frame of the video, made on first request.
pub async fn thumbnail(
    st: &Core,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let view = completed(st, id).await?;
    let video = result_path(&view)?;
    let thumb = video.with_extension("jpg");
    let fresh = match (std::fs::metadata(&thumb), std::fs::metadata(&video)) {
        (Ok(t), Ok(v)) => match (t.modified(), v.modified()) {
            (Ok(tm), Ok(vm)) => tm >= vm,
            _ => true,
        },
        (Ok(_), Err(_)) => true,
        (Err(_), _) => false,
    };
    if !fresh {
        make_thumbnail(&st.config(), &video, &thumb).await?;
    }
    serve_file(req, &thumb, "image/jpeg", "thumbnail", None).await
}

async fn make_thumbnail(
    config: &crate::config::Config,
    video: &Path,
    thumb: &Path,
) -> Result<(), ApiError> {
    if !video.exists() {
        return Err(ApiError::NotReady(format!(
            "The video of this job is no longer on disk ({}).",
            video.display()
        )));
    }
    let tmp = thumb.with_extension(format!("jpg.{:08x}.tmp", fastrand::u32(..)));
    let mut args: Vec<String> = FFMPEG_QUIET.iter().map(|s| s.to_string()).collect();
    args.extend([
        "-i".to_string(),
        video.display().to_string(),
        "-vf".into(),
        // The most representative of the first 30 frames, at most THUMB_WIDTH wide.
        format!("thumbnail=30,scale='min({THUMB_WIDTH},iw)':-2"),
        "-frames:v".into(),
        "1".into(),
        "-q:v".into(),
        "4".into(),
        "-f".into(),
        "image2".into(),
        tmp.display().to_string(),
    ]);
    let made = run_ffmpeg(&Tool::ffmpeg(config).program, &args).await;
    if let Err(e) = made {
        let _ = tokio::fs::remove_file(&tmp).await;
        warn!(video = %video.display(), error = %e, "thumbnail failed");
        return Err(ApiError::Internal(format!(
            "could not make a thumbnail of {}: {e}",
            video.display()
        )));
    }
    tokio::fs::rename(&tmp, thumb).await.map_err(|e| {
        ApiError::Internal(format!(
            "cannot write the thumbnail {}: {e}",
            thumb.display()
        ))
    })?;
    debug!(thumbnail = %thumb.display(), "thumbnail made");
    Ok(())
}

/// Runs ffmpeg in its own process group, for at most [`THUMB_TIMEOUT`]; the group is killed when
/// the time is up or the request's future is dropped.
async fn run_ffmpeg(program: &str, args: &[String]) -> Result<(), String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pgid = child.id().map(|p| p as i32);
    let mut stderr = child.stderr.take();
    let work = async {
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        (child.wait().await, err)
    };
    match tokio::time::timeout(THUMB_TIMEOUT, work).await {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), err)) => Err(format!(
            "{program} exited with {status}: {}",
            String::from_utf8_lossy(&err).trim()
        )),
        Ok((Err(e), _)) => Err(format!("cannot wait for {program}: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid.filter(|p| *p > 1) {
                // SAFETY: kill(2) on a negative pid signals that process group; no memory is touched.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            Err(format!("{program} took longer than {THUMB_TIMEOUT:?}"))
        }
    }
}

/// `GET|HEAD /api/jobs/:id/subtitles`: SRT, or WebVTT with `?format=vtt` / `Accept: text/vtt`.
pub async fn subtitles(
    st: &Core,
    req: &Request<Incoming>,
    id: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let view = completed(st, id).await?;
    let srt_path = result_path(&view)?.with_extension("srt");
    let pairs = query_pairs(query);
    let format = match pairs.iter().rev().find(|(k, _)| k == "format") {
        Some((_, f)) => f.to_ascii_lowercase(),
        None => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.contains("text/vtt") {
                "vtt".into()
            } else {
                "srt".into()
            }
        }
    };
    let name = wants_download(query).then(|| download_name(&view, &format));
    match format.as_str() {
        "srt" => {
            serve_file(
                req,
                &srt_path,
                "application/x-subrip; charset=utf-8",
                "subtitles",
                name,
            )
            .await
        }
        "vtt" => {
            let srt = match tokio::fs::read_to_string(&srt_path).await {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ApiError::NotReady(format!(
                        "The subtitles of this job are no longer on disk ({}).",
                        srt_path.display()
                    )))
                }
                Err(e) => {
                    return Err(ApiError::Internal(format!(
                        "cannot read {}: {e}",
                        srt_path.display()
                    )))
                }
            };
            let vtt = crate::pipeline::captions::srt_to_vtt(&srt);
            let len = vtt.len();
            let body = if req.method() == Method::HEAD {
                full(Bytes::new())
            } else {
                full(vtt)
            };
            let mut r = Response::new(body);
            set(&mut r, header::CONTENT_TYPE, "text/vtt; charset=utf-8");
            set(&mut r, header::CONTENT_LENGTH, &len.to_string());
            set(&mut r, header::CACHE_CONTROL, "no-cache");
            if let Some(name) = name {
                set(
                    &mut r,
                    header::CONTENT_DISPOSITION,
                    &format!("attachment; filename=\"{name}\""),
                );
            }
            Ok(r)
        }
        other => Err(ApiError::BadRequest(format!(
            "Query parameter `format` must be srt or vtt; got `{other}`."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Span::Whole);
        assert_eq!(r("bytes=0-"), Span::Part(0, 999));
        assert_eq!(r("bytes=0-0"), Span::Part(0, 0));
        assert_eq!(r("bytes=100-199"), Span::Part(100, 199));
        assert_eq!(r("bytes=900-5000"), Span::Part(900, 999));
        assert_eq!(r("bytes=-100"), Span::Part(900, 999));
        assert_eq!(r("bytes=-5000"), Span::Part(0, 999));
        assert_eq!(r("bytes=1000-"), Span::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Span::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Span::Unsatisfiable);
        // Ignored: several ranges, other units, garbage, a reversed range.
        for h in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=5-x",
            "bytes=",
        ] {
            assert_eq!(r(h), Span::Whole, "{h}");
        }
    }
}
