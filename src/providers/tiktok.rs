//! TikTok text-to-speech, in the two protocols MoneyPrinter's `tiktokvoice` module has used:
//! - TikTok's own API: `POST <endpoint>?text_speaker=<voice>&req_text=<text>&speaker_map_type=0&aid=1233`
//!   with `Cookie: sessionid=<TIKTOK_SESSION_ID>`, answering
//!   `{"status_code":0,"data":{"v_str":"<base64 mp3>"}}`;
//! - community relays: `POST <endpoint>` with `{"text","voice"}`, answering `{"data":"<base64>"}` or
//!   `{"success":true,"data":...}` (a `data:audio/mpeg;base64,` prefix is accepted).
//!
//! Text goes in chunks of at most [`CHUNK_CHARS`] characters, split at word boundaries; each chunk
//! tries the endpoints in order; the decoded MP3 chunks are joined (one chunk: written as is; more:
//! ffmpeg's concat demuxer, stream copy). The session id travels only in the cookie, never in a URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::http::{urlencode, HttpClient, HttpRequest};
use super::{ProviderError, Secret, TIKTOK};
use crate::config::{ToolsConfig, VoiceConfig};

/// The most characters TikTok accepts in one request.
pub const CHUNK_CHARS: usize = 300;
/// TikTok's own endpoint, used when a session id is set and no endpoint is configured.
pub const OFFICIAL_ENDPOINT: &str =
    "https://api16-normal-v6.tiktokv.com/media/api/text/speech/invoke/";
const OFFICIAL_PATH: &str = "/media/api/text/speech/invoke";
const APP_USER_AGENT: &str =
    "com.zhiliaoapp.musically/2022600030 (Linux; U; Android 7.1.2; es_ES; SM-G988N; Build/NRD90M;tt-ok/3.12.13.1)";

/// Splits `text` into chunks of at most `max` characters at word boundaries (a word longer than
/// `max` is cut). Whitespace inside a chunk becomes single spaces.
pub fn split_chunks(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > max {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            out.push(word.drain(..max).collect());
        }
        if word.is_empty() {
            continue;
        }
        let need = if cur.is_empty() {
            word.len()
        } else {
            cur_len + 1 + word.len()
        };
        if need > max {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if !cur.is_empty() {
            cur.push(' ');
            cur_len += 1;
        }
        cur.extend(word.iter());
        cur_len += word.len();
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
enum Style {
    Official,
    Community,
}

#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    style: Style,
}

#[derive(Clone, Debug)]
pub struct TikTokSettings {
    pub session_id: Secret,
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    /// ffmpeg, to join the chunks of a long sentence.
    pub ffmpeg: String,
}

impl TikTokSettings {
    pub fn from_config(voice: &VoiceConfig, tools: &ToolsConfig) -> TikTokSettings {
        TikTokSettings {
            session_id: voice.tiktok_session_id.clone(),
            endpoints: voice.tiktok_endpoints.clone(),
            timeout: Duration::from_secs(voice.tiktok_timeout_secs.max(1)),
            ffmpeg: tools.ffmpeg.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TikTok {
    http: HttpClient,
    endpoints: Vec<Endpoint>,
    session_id: Secret,
    timeout: Duration,
    ffmpeg: String,
}

impl TikTok {
    /// [`ProviderError::NotConfigured`] when no endpoint is usable (TikTok's own API needs the
    /// session id).
    pub fn new(s: TikTokSettings) -> Result<TikTok, ProviderError> {
        let has_session = !s.session_id.is_empty();
        let urls: Vec<String> = if s.endpoints.is_empty() && has_session {
            vec![OFFICIAL_ENDPOINT.to_string()]
        } else {
            s.endpoints.clone()
        };
        let endpoints: Vec<Endpoint> = urls
            .into_iter()
            .map(|url| {
                let style = if url
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('/')
                    .ends_with(OFFICIAL_PATH)
                {
                    Style::Official
                } else {
                    Style::Community
                };
                Endpoint { url, style }
            })
            .filter(|e| has_session || e.style == Style::Community)
            .collect();
        if endpoints.is_empty() {
            return Err(ProviderError::NotConfigured {
                service: TIKTOK.name,
                hint: "set TIKTOK_SESSION_ID (voice.tiktok_session_id) or voice.tiktok_endpoints"
                    .into(),
            });
        }
        Ok(TikTok {
            http: HttpClient::new().map_err(|e| ProviderError::http(&TIKTOK, e))?,
            endpoints,
            session_id: s.session_id,
            timeout: s.timeout,
            ffmpeg: s.ffmpeg,
        })
    }

    pub fn from_config(voice: &VoiceConfig, tools: &ToolsConfig) -> Result<TikTok, ProviderError> {
        TikTok::new(TikTokSettings::from_config(voice, tools))
    }

    /// MP3 bytes of one chunk (at most [`CHUNK_CHARS`] characters), trying each endpoint in order;
    /// the last endpoint's error is returned when all fail.
    pub async fn synthesize_chunk(
        &self,
        text: &str,
        voice: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut last = None;
        for ep in &self.endpoints {
            let result = match ep.style {
                Style::Official => self.official(ep, text, voice).await,
                Style::Community => self.community(ep, text, voice).await,
            };
            match result {
                Ok(audio) => return Ok(audio),
                Err(e) => {
                    tracing::debug!(service = "tiktok", error = %e, "endpoint failed");
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| ProviderError::bad_answer(TIKTOK.name, "no endpoint configured")))
    }

    async fn official(
        &self,
        ep: &Endpoint,
        text: &str,
        voice: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let sep = if ep.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}text_speaker={}&req_text={}&speaker_map_type=0&aid=1233",
            ep.url,
            urlencode(voice),
            urlencode(text)
        );
        let req = HttpRequest::post(url)
            .header("user-agent", APP_USER_AGENT)
            .secret_header("cookie", format!("sessionid={}", self.session_id.expose()))
            .timeout(self.timeout);
        let v = self
            .http
            .json(&req)
            .await
            .map_err(|e| ProviderError::http(&TIKTOK, e))?;
        let code = v.get("status_code").and_then(Value::as_i64).unwrap_or(-1);
        if code != 0 {
            let why = match code {
                1 => "the session id was refused; set a fresh TIKTOK_SESSION_ID".to_string(),
                2 => "the text is too long".to_string(),
                4 => format!("voice `{voice}` does not exist"),
                5 => "no session id was accepted; set TIKTOK_SESSION_ID".to_string(),
                _ => format!(
                    "status_code {code}: {}",
                    v.get("status_msg")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                ),
            };
            return Err(ProviderError::bad_answer(
                TIKTOK.name,
                self.session_id.scrub(&why),
            ));
        }
        let b64 = v
            .pointer("/data/v_str")
            .and_then(Value::as_str)
            .unwrap_or("");
        decode_audio(b64)
    }

    async fn community(
        &self,
        ep: &Endpoint,
        text: &str,
        voice: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let req = HttpRequest::post(ep.url.clone())
            .json(&json!({"text": text, "voice": voice}))
            .timeout(self.timeout);
        let v = self
            .http
            .json(&req)
            .await
            .map_err(|e| ProviderError::http(&TIKTOK, e))?;
        if v.get("success").and_then(Value::as_bool) == Some(false) {
            let why = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the relay reported a failure");
            return Err(ProviderError::bad_answer(TIKTOK.name, why.to_string()));
        }
        let data = v.get("data").and_then(|d| {
            d.as_str()
                .or_else(|| d.get("v_str").and_then(Value::as_str))
        });
        match data {
            Some("error") | None => Err(ProviderError::bad_answer(
                TIKTOK.name,
                format!("voice `{voice}` is unavailable right now (no audio in the answer)"),
            )),
            Some(b64) => decode_audio(b64),
        }
    }

    /// Speaks `text` (one sentence, any length) with `voice` into the MP3 file `out`.
    pub async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        out: &Path,
    ) -> Result<(), ProviderError> {
        let chunks = split_chunks(text, CHUNK_CHARS);
        if chunks.is_empty() {
            return Err(ProviderError::bad_answer(
                TIKTOK.name,
                "nothing to say (empty text)",
            ));
        }
        let mut audio = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            audio.push(self.synthesize_chunk(chunk, voice).await?);
        }
        let io = |path: &Path, source| ProviderError::Io {
            service: TIKTOK.name,
            path: path.to_owned(),
            source,
        };
        if audio.len() == 1 {
            return tokio::fs::write(out, &audio[0])
                .await
                .map_err(|e| io(out, e));
        }
        let dir = out.parent().unwrap_or(Path::new(".")).to_path_buf();
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "voice".into());
        let mut parts: Vec<PathBuf> = Vec::new();
        let mut list = String::new();
        for (i, bytes) in audio.iter().enumerate() {
            let p = dir.join(format!(".{stem}.chunk{i}.mp3"));
            tokio::fs::write(&p, bytes).await.map_err(|e| io(&p, e))?;
            list.push_str(&format!(
                "file '{}'\n",
                p.display().to_string().replace('\'', "'\\''")
            ));
            parts.push(p);
        }
        let list_path = dir.join(format!(".{stem}.chunks.txt"));
        tokio::fs::write(&list_path, list)
            .await
            .map_err(|e| io(&list_path, e))?;
        let result = self.concat(&list_path, out).await;
        for p in parts.iter().chain(std::iter::once(&list_path)) {
            let _ = tokio::fs::remove_file(p).await;
        }
        result
    }

    async fn concat(&self, list: &Path, out: &Path) -> Result<(), ProviderError> {
        let mut cmd = tokio::process::Command::new(&self.ffmpeg);
        cmd.args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
        ])
        .arg(list)
        .args(["-c", "copy"])
        .arg(out)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        // Its own process group, like every subprocess of the daemon.
        .process_group(0);
        let output = cmd.output().await.map_err(|e| ProviderError::Tool {
            service: TIKTOK.name,
            message: format!("cannot run {} to join the audio chunks: {e}", self.ffmpeg),
        })?;
        if !output.status.success() {
            let err = String::from_utf8_lossy(&output.stderr);
            return Err(ProviderError::Tool {
                service: TIKTOK.name,
                message: format!(
                    "{} could not join the audio chunks: {}",
                    self.ffmpeg,
                    err.trim().chars().take(300).collect::<String>()
                ),
            });
        }
        Ok(())
    }
}

fn decode_audio(b64: &str) -> Result<Vec<u8>, ProviderError> {
    let b64 = b64.trim();
    let b64 = match b64.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).unwrap_or(rest),
        None => b64,
    };
    if b64.is_empty() {
        return Err(ProviderError::bad_answer(
            TIKTOK.name,
            "the answer has no audio",
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| {
            ProviderError::bad_answer(TIKTOK.name, format!("the audio is not base64 ({e})"))
        })?;
    if bytes.len() < 16 {
        return Err(ProviderError::bad_answer(TIKTOK.name, "the audio is empty"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fake::{FakeServer, Reply};
    use std::process::Command;
    use std::sync::OnceLock;

    const SESSION: &str = "sess-abcdef0123456789";

    /// A real MP3 of spoken audio, made once with espeak-ng and ffmpeg.
    fn hello_mp3() -> &'static [u8] {
        static MP3: OnceLock<Vec<u8>> = OnceLock::new();
        MP3.get_or_init(|| {
            let out = Command::new("sh")
                .args(["-c", "espeak-ng --stdout 'hello there' | ffmpeg -hide_banner -loglevel error -i - -f mp3 -"])
                .output()
                .expect("espeak-ng and ffmpeg are installed");
            assert!(out.status.success() && out.stdout.len() > 1000, "could not make the test mp3");
            out.stdout
        })
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn duration_of(path: &Path) -> f64 {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    #[test]
    fn chunks_are_at_most_300_characters_and_split_at_words() {
        let text = "octopus ".repeat(100) + &"x".repeat(320);
        let chunks = split_chunks(&text, CHUNK_CHARS);
        assert!(chunks.iter().all(|c| c.chars().count() <= CHUNK_CHARS));
        // 100 words of 7 letters: 37 fit in 300 characters (37*8-1 = 295).
        assert_eq!(chunks[0].split(' ').count(), 37);
        assert!(chunks
            .iter()
            .take(3)
            .all(|c| c.split(' ').all(|w| w == "octopus")));
        assert_eq!(chunks.last().unwrap(), &"x".repeat(20));
        let words: Vec<&str> = chunks.iter().flat_map(|c| c.split(' ')).collect();
        assert_eq!(words.iter().filter(|w| **w == "octopus").count(), 100);
        assert_eq!(split_chunks("  ", 300), Vec::<String>::new());
        assert!(
            crate::voices::is_tiktok_voice("en_us_001")
                && crate::voices::is_tiktok_voice("br_003")
                && !crate::voices::is_tiktok_voice("xx")
        );
    }

    #[tokio::test]
    async fn the_official_api_speaks_long_text_in_chunks_and_joins_them() {
        let mp3 = b64(hello_mp3());
        let fake = FakeServer::start(move |req| {
            if req.header("cookie") != Some(format!("sessionid={SESSION}").as_str()) {
                return Reply::json(
                    200,
                    r#"{"status_code":1,"status_msg":"Couldn't load speech. Try again."}"#,
                );
            }
            let text = req.param("req_text").unwrap_or_default();
            assert!(
                text.chars().count() <= CHUNK_CHARS,
                "chunk of {} chars",
                text.chars().count()
            );
            assert_eq!(req.param("text_speaker").as_deref(), Some("en_us_002"));
            assert_eq!(req.param("aid").as_deref(), Some("1233"));
            Reply::json(
                200,
                &format!(r#"{{"status_code":0,"data":{{"v_str":"{mp3}","duration":"1"}}}}"#),
            )
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let tts = TikTok::new(TikTokSettings {
            session_id: Secret::from(SESSION),
            endpoints: vec![fake.url("/media/api/text/speech/invoke/")],
            timeout: Duration::from_secs(5),
            ffmpeg: "ffmpeg".into(),
        })
        .unwrap();
        let one = dir.path().join("one.mp3");
        tts.synthesize("Octopuses have three hearts.", "en_us_002", &one)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&one).unwrap(), hello_mp3());
        let long = "Octopuses have three hearts and blue blood, and they taste with their arms. "
            .repeat(6);
        let two = dir.path().join("two.mp3");
        tts.synthesize(&long, "en_us_002", &two).await.unwrap();
        assert_eq!(fake.hits("/media/api/text/speech/invoke/"), 3);
        let (d1, d2) = (duration_of(&one), duration_of(&two));
        assert!(
            (d2 - 2.0 * d1).abs() < 0.3,
            "joined {d2} s from chunks of {d1} s"
        );
        // Only the result is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // The session id is in no URL the server saw, and in no error.
        assert!(fake.requests().iter().all(|r| !r.query.contains(SESSION)));
        let wrong = TikTok::new(TikTokSettings {
            session_id: Secret::from("sess-wrong-999999"),
            endpoints: vec![fake.url("/media/api/text/speech/invoke/")],
            timeout: Duration::from_secs(5),
            ffmpeg: "ffmpeg".into(),
        })
        .unwrap();
        let err = wrong
            .synthesize("hi", "en_us_002", &dir.path().join("x.mp3"))
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?} {wrong:?}");
        assert!(
            shown.contains("TIKTOK_SESSION_ID") && !shown.contains("sess-wrong-999999"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn community_endpoints_are_tried_in_order() {
        let mp3 = b64(hello_mp3());
        let fake = FakeServer::start(move |req| match req.path.as_str() {
            "/down" => Reply::status(503),
            "/api/generation" => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                assert_eq!(body["voice"], "fr_001");
                Reply::json(
                    200,
                    &format!(
                        r#"{{"success":true,"data":"data:audio/mpeg;base64,{mp3}","error":null}}"#
                    ),
                )
            }
            _ => Reply::status(404),
        })
        .await;
        let tts = TikTok::new(TikTokSettings {
            session_id: Secret::default(),
            endpoints: vec![fake.url("/down"), fake.url("/api/generation")],
            timeout: Duration::from_secs(5),
            ffmpeg: "ffmpeg".into(),
        })
        .unwrap();
        assert_eq!(
            tts.synthesize_chunk("bonjour", "fr_001").await.unwrap(),
            hello_mp3()
        );
        assert_eq!((fake.hits("/down"), fake.hits("/api/generation")), (1, 1));
        // Without a session id and without endpoints: not configured.
        let none = TikTok::new(TikTokSettings {
            session_id: Secret::default(),
            endpoints: vec![],
            timeout: Duration::from_secs(5),
            ffmpeg: "ffmpeg".into(),
        });
        assert!(none.unwrap_err().is_not_configured());
    }
}
