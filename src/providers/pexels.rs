//! Pexels stock video: search (`GET /videos/search?query=..&per_page=..&orientation=portrait` with
//! `Authorization: <key>`), choice of rendition, and streamed download into the clip cache.
//!
//! Invariants: videos shorter than the minimum are skipped; a video's chosen rendition is the largest
//! that fits within the maximum frame (either orientation), else its smallest; the key is sent only
//! to the API host, never to the download host, and never appears in an error.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::cache::{CachedClip, ClipCache};
use super::http::{join_url, urlencode, HttpClient, HttpRequest};
use super::{ProviderError, Secret, PEXELS};
use crate::config::FootageConfig;

#[derive(Clone, Debug)]
pub struct PexelsSettings {
    pub base_url: String,
    pub api_key: Secret,
    /// Videos shorter than this (seconds) are skipped.
    pub min_seconds: f64,
    /// Largest rendition wanted: width and height of the frame (portrait; landscape is the transpose).
    pub max_width: u32,
    pub max_height: u32,
    /// Results asked for per search.
    pub per_page: u32,
    /// Deadline of one search request.
    pub timeout: Duration,
    /// Deadline of one clip download, and its size cap.
    pub download_timeout: Duration,
    pub download_max_bytes: u64,
}

impl PexelsSettings {
    pub fn from_config(cfg: &FootageConfig) -> PexelsSettings {
        PexelsSettings {
            base_url: cfg.pexels_base_url.clone(),
            api_key: cfg.pexels_api_key.clone(),
            min_seconds: cfg.min_clip_seconds,
            max_width: cfg.max_clip_width,
            max_height: cfg.max_clip_height,
            per_page: cfg.pexels_per_page,
            timeout: Duration::from_secs(cfg.request_timeout_secs.max(1)),
            download_timeout: Duration::from_secs(cfg.download_timeout_secs.max(1)),
            download_max_bytes: cfg.download_max_bytes,
        }
    }
}

/// One usable search result: a video and the rendition chosen for it.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoPick {
    pub video_id: u64,
    /// The rendition's download link.
    pub url: String,
    pub width: u32,
    pub height: u32,
    /// Seconds.
    pub duration: f64,
}

#[derive(Clone, Debug)]
pub struct Pexels {
    http: HttpClient,
    s: PexelsSettings,
}

impl Pexels {
    /// [`ProviderError::NotConfigured`] without an API key.
    pub fn new(settings: PexelsSettings) -> Result<Pexels, ProviderError> {
        if settings.api_key.is_empty() {
            return Err(ProviderError::NotConfigured {
                service: PEXELS.name,
                hint: "set PEXELS_API_KEY (or footage.pexels_api_key)".into(),
            });
        }
        Ok(Pexels {
            http: HttpClient::new().map_err(|e| ProviderError::http(&PEXELS, e))?,
            s: settings,
        })
    }

    pub fn from_config(cfg: &FootageConfig) -> Result<Pexels, ProviderError> {
        Pexels::new(PexelsSettings::from_config(cfg))
    }

    /// Portrait videos for `term`, long enough, each with its chosen rendition, in Pexels' order.
    pub async fn search(&self, term: &str) -> Result<Vec<VideoPick>, ProviderError> {
        let url = format!(
            "{}?query={}&per_page={}&orientation=portrait",
            join_url(&self.s.base_url, "/videos/search"),
            urlencode(term.trim()),
            self.s.per_page.clamp(1, 80)
        );
        let req = HttpRequest::get(url)
            .secret_header("authorization", self.s.api_key.expose())
            .timeout(self.s.timeout);
        let v = self
            .http
            .json(&req)
            .await
            .map_err(|e| ProviderError::http(&PEXELS, e))?;
        let videos = v.get("videos").and_then(Value::as_array).ok_or_else(|| {
            ProviderError::bad_answer(PEXELS.name, "the search answer has no `videos` list")
        })?;
        let picks: Vec<VideoPick> = videos.iter().filter_map(|video| self.pick(video)).collect();
        tracing::debug!(
            service = "pexels",
            found = videos.len(),
            usable = picks.len(),
            "search answered"
        );
        Ok(picks)
    }

    fn pick(&self, video: &Value) -> Option<VideoPick> {
        let video_id = video.get("id")?.as_u64()?;
        let duration = video.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
        if duration < self.s.min_seconds {
            return None;
        }
        let (url, width, height) = best_rendition(
            video.get("video_files")?,
            self.s.max_width,
            self.s.max_height,
        )?;
        Some(VideoPick {
            video_id,
            url,
            width,
            height,
            duration,
        })
    }

    /// Streams `url` into `dest` within the size cap and deadline (no key sent).
    pub async fn download(&self, url: &str, dest: &Path) -> Result<u64, ProviderError> {
        let req = HttpRequest::get(url).timeout(self.s.download_timeout);
        self.http
            .download(&req, dest, self.s.download_max_bytes)
            .await
            .map_err(|e| ProviderError::http(&PEXELS, e))
    }

    /// The pick's clip through the cache (downloaded at most once across jobs).
    pub async fn fetch(
        &self,
        cache: &ClipCache,
        pick: &VideoPick,
    ) -> Result<CachedClip, ProviderError> {
        cache
            .fetch(&pick.url, |part| async move {
                self.download(&pick.url, &part).await
            })
            .await
    }
}

/// The largest mp4 rendition fitting `max_w` x `max_h` (or its transpose); else the smallest one.
pub fn best_rendition(files: &Value, max_w: u32, max_h: u32) -> Option<(String, u32, u32)> {
    let (lo, hi) = (max_w.min(max_h), max_w.max(max_h));
    let mut all: Vec<(String, u32, u32)> = files
        .as_array()?
        .iter()
        .filter(|f| {
            f.get("file_type")
                .and_then(Value::as_str)
                .is_none_or(|t| t.eq_ignore_ascii_case("video/mp4"))
        })
        .filter_map(|f| {
            let link = f.get("link")?.as_str()?.to_string();
            let w = u32::try_from(f.get("width")?.as_u64()?).ok()?;
            let h = u32::try_from(f.get("height")?.as_u64()?).ok()?;
            Some((link, w, h))
        })
        .collect();
    all.sort_by_key(|(_, w, h)| u64::from(*w) * u64::from(*h));
    let fits = |(_, w, h): &&(String, u32, u32)| (*w).min(*h) <= lo && (*w).max(*h) <= hi;
    all.iter().rev().find(fits).or_else(|| all.first()).cloned()
}

/// The first candidate whose video was not used yet; marks it used.
pub fn take_unseen(candidates: &[VideoPick], seen: &mut HashSet<u64>) -> Option<VideoPick> {
    let pick = candidates.iter().find(|c| !seen.contains(&c.video_id))?;
    seen.insert(pick.video_id);
    Some(pick.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fake::{FakeRequest, FakeServer, Reply};
    use crate::providers::retry::{retry, RetryPolicy};
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const KEY: &str = "pexels-test-key-5678";

    fn settings(base: &str) -> PexelsSettings {
        PexelsSettings {
            base_url: base.into(),
            api_key: Secret::from(KEY),
            min_seconds: 5.0,
            max_width: 1080,
            max_height: 1920,
            per_page: 15,
            timeout: Duration::from_secs(5),
            download_timeout: Duration::from_secs(5),
            download_max_bytes: 1000,
        }
    }

    fn search_json(base: &str, ids: &[(u64, f64)]) -> String {
        let videos: Vec<Value> = ids
            .iter()
            .map(|(id, dur)| {
                serde_json::json!({
                    "id": id, "duration": dur, "width": 2160, "height": 3840,
                    "video_files": [
                        {"id": 1, "quality": "sd", "file_type": "video/mp4", "width": 540, "height": 960, "link": format!("{base}/files/{id}-540.mp4")},
                        {"id": 2, "quality": "uhd", "file_type": "video/mp4", "width": 2160, "height": 3840, "link": format!("{base}/files/{id}-2160.mp4")},
                        {"id": 3, "quality": "hd", "file_type": "video/mp4", "width": 1080, "height": 1920, "link": format!("{base}/files/{id}-1080.mp4")},
                        {"id": 4, "quality": "hd", "file_type": "video/webm", "width": 1080, "height": 1920, "link": format!("{base}/files/{id}-1080.webm")},
                    ]
                })
            })
            .collect();
        serde_json::json!({"page": 1, "per_page": 15, "videos": videos}).to_string()
    }

    fn authorized(req: &FakeRequest) -> bool {
        req.header("authorization") == Some(KEY)
    }

    #[tokio::test]
    async fn search_picks_the_largest_fitting_rendition_skips_short_and_never_repeats() {
        let server = Arc::new(std::sync::OnceLock::<String>::new());
        let s2 = server.clone();
        let fake = FakeServer::start(move |req| {
            let base = s2.get().cloned().unwrap_or_default();
            if !authorized(req) {
                return Reply::json(401, r#"{"error":"bad key"}"#);
            }
            assert_eq!(req.param("orientation").as_deref(), Some("portrait"));
            assert_eq!(req.param("per_page").as_deref(), Some("15"));
            match req.param("query").as_deref() {
                Some("deep sea") => {
                    Reply::json(200, &search_json(&base, &[(1, 3.0), (2, 12.0), (3, 20.0)]))
                }
                Some("octopus") => Reply::json(200, &search_json(&base, &[(2, 12.0), (4, 8.0)])),
                _ => Reply::json(200, r#"{"videos":[]}"#),
            }
        })
        .await;
        server.set(fake.url("")).unwrap();
        let p = Pexels::new(settings(&fake.url(""))).unwrap();
        let mut seen = HashSet::new();
        let first = p.search("deep sea").await.unwrap();
        // Video 1 (3 s) is too short.
        assert_eq!(
            first.iter().map(|v| v.video_id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!((first[0].width, first[0].height), (1080, 1920));
        assert!(first[0].url.ends_with("/files/2-1080.mp4"));
        let a = take_unseen(&first, &mut seen).unwrap();
        let second = p.search("octopus").await.unwrap();
        let b = take_unseen(&second, &mut seen).unwrap();
        assert_eq!(
            (a.video_id, b.video_id),
            (2, 4),
            "video 2 must not be used twice"
        );
        assert!(p.search("nothing").await.unwrap().is_empty());
    }

    #[test]
    fn without_a_fitting_rendition_the_smallest_is_taken() {
        let files = serde_json::json!([
            {"file_type": "video/mp4", "width": 3840, "height": 2160, "link": "big"},
            {"file_type": "video/mp4", "width": 2560, "height": 1440, "link": "smaller"},
        ]);
        assert_eq!(best_rendition(&files, 1080, 1920).unwrap().0, "smaller");
        let landscape = serde_json::json!([
            {"file_type": "video/mp4", "width": 1920, "height": 1080, "link": "fits"},
            {"file_type": "video/mp4", "width": 3840, "height": 2160, "link": "big"},
        ]);
        assert_eq!(best_rendition(&landscape, 1080, 1920).unwrap().0, "fits");
    }

    #[tokio::test]
    async fn rate_limits_are_retried_honouring_retry_after() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        let fake = FakeServer::start(move |_req| {
            match c2.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::json(429, r#"{"error":"Rate limit exceeded"}"#).header("retry-after", "1"),
                1 => Reply::json(503, "{}"),
                _ => Reply::json(200, r#"{"videos":[{"id":9,"duration":30,"video_files":[{"file_type":"video/mp4","width":720,"height":1280,"link":"http://x/9.mp4"}]}]}"#),
            }
        })
        .await;
        let p = Pexels::new(settings(&fake.url(""))).unwrap();
        let policy = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(2),
        };
        let notices = RefCell::new(Vec::new());
        let started = std::time::Instant::now();
        let found = retry(
            &policy,
            |_| p.search("octopus"),
            |n, e: &ProviderError, d| {
                notices.borrow_mut().push((n, e.code(), e.to_string(), d));
                std::future::ready(())
            },
        )
        .await
        .unwrap();
        assert_eq!(found[0].video_id, 9);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let notices = notices.into_inner();
        assert_eq!(notices.len(), 2);
        assert_eq!((notices[0].0, notices[0].1), (1, "RateLimited"));
        assert!(
            notices[0].3 >= Duration::from_secs(1),
            "Retry-After ignored: {:?}",
            notices[0].3
        );
        assert_eq!((notices[1].0, notices[1].1), (2, "ServerError"));
        assert!(notices[1].3 < Duration::from_millis(10));
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(
            notices[0].2.contains("Pexels rate limit"),
            "{}",
            notices[0].2
        );
    }

    #[tokio::test]
    async fn a_refused_key_is_not_retried_and_not_shown() {
        let fake = FakeServer::start(|_req| {
            Reply::json(401, &format!(r#"{{"error":"key {KEY} invalid"}}"#))
        })
        .await;
        let p = Pexels::new(settings(&fake.url(""))).unwrap();
        let policy = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let retries = RefCell::new(0);
        let err = retry(
            &policy,
            |_| p.search("x"),
            |_, _: &ProviderError, _| {
                *retries.borrow_mut() += 1;
                std::future::ready(())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(*retries.borrow(), 0);
        assert_eq!(fake.hits("/videos/search"), 1);
        let shown = format!("{err} {err:?} {p:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("PEXELS_API_KEY"), "{shown}");
        assert!(Pexels::new(PexelsSettings {
            api_key: Secret::default(),
            ..settings("http://x")
        })
        .unwrap_err()
        .is_not_configured());
    }

    #[tokio::test]
    async fn downloads_stop_at_the_size_cap() {
        let fake = FakeServer::start(|req| match req.path.as_str() {
            "/small.mp4" => Reply::bytes(200, "video/mp4", bytes::Bytes::from(vec![1u8; 900])),
            "/redirect.mp4" => Reply::status(302).header("location", "/small.mp4"),
            _ => Reply::bytes(200, "video/mp4", bytes::Bytes::from(vec![1u8; 5000])),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let p = Pexels::new(settings(&fake.url(""))).unwrap();
        let ok = dir.path().join("ok.mp4");
        assert_eq!(
            p.download(&fake.url("/redirect.mp4"), &ok).await.unwrap(),
            900
        );
        assert_eq!(std::fs::metadata(&ok).unwrap().len(), 900);
        let big = dir.path().join("big.mp4");
        let err = p.download(&fake.url("/big.mp4"), &big).await.unwrap_err();
        assert_eq!(err.code(), "TooLarge");
        assert!(!big.exists(), "partial download left behind");
        // The key never travels to the download host.
        assert!(fake
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none()));
    }

    #[tokio::test]
    async fn two_concurrent_fetches_of_one_url_download_once() {
        let fake = FakeServer::start(|_req| {
            Reply::bytes(200, "video/mp4", bytes::Bytes::from(vec![3u8; 400]))
                .delay(Duration::from_millis(200))
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cache = ClipCache::new(dir.path(), 10_000);
        let p = Pexels::new(settings(&fake.url(""))).unwrap();
        let pick = VideoPick {
            video_id: 1,
            url: fake.url("/v/1.mp4"),
            width: 1080,
            height: 1920,
            duration: 9.0,
        };
        let (a, b) = tokio::join!(p.fetch(&cache, &pick), p.fetch(&cache, &pick));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(fake.hits("/v/1.mp4"), 1);
        assert_eq!(a.path, b.path);
        assert!(
            a.downloaded != b.downloaded,
            "exactly one of them downloads"
        );
        assert_eq!(std::fs::metadata(&a.path).unwrap().len(), 400);
        let dest = dir.path().join("job-clip.mp4");
        ClipCache::place(&a.path, &dest).await.unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 400);
    }
}
