//! End-to-end tests of the online providers: the real daemon talks real HTTP to small fake services on
//! 127.0.0.1 that speak each service's protocol (Ollama's `/api/chat` and `/api/tags`, Pexels'
//! `/videos/search` and file downloads, TikTok's `/media/api/text/speech/invoke/`). The media the fakes
//! serve are made here with ffmpeg and espeak-ng; renders are tiny.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const PEXELS_KEY: &str = "pexels-e2e-KEY-6d1f0a93c5";
const TIKTOK_SESSION: &str = "tiktok-e2e-SESSION-41b7c2e8f0";
const YT_CLIENT_SECRET: &str = "yt-e2e-CLIENT-SECRET-93ab";
const YT_REFRESH_TOKEN: &str = "yt-e2e-REFRESH-TOKEN-5c1d";
const YT_ACCESS_TOKEN: &str = "ya29.e2e-ACCESS-TOKEN-77f0";
const TIKTOK_PATH: &str = "/media/api/text/speech/invoke/";
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

// ---- A fake HTTP/1.1 service: one request per connection, answered by a closure. ----

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| percent_decode(v))
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Resp {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: v.to_string().into_bytes(),
        }
    }

    fn bytes(content_type: &'static str, body: Vec<u8>) -> Resp {
        Resp {
            status: 200,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    fn not_found() -> Resp {
        Resp::json(404, &json!({"error": "not found"}))
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let (handler, seen) = (handler.clone(), seen2.clone());
                std::thread::spawn(move || serve(stream, handler.as_ref(), &seen));
            }
        });
        Fake { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }

    fn hits(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

fn serve(stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<Req>>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Req {
        method,
        path,
        query,
        headers,
        body,
    };
    seen.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&resp.body);
    let _ = stream.flush();
}

/// A loopback URL nothing listens on.
fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

// ---- Media made with the real tools. ----

/// A 320x180, 3-second H.264 clip, made once.
fn clip_mp4() -> &'static [u8] {
    static CLIP: OnceLock<Vec<u8>> = OnceLock::new();
    CLIP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("clip.mp4");
        let st = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-y",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x180:rate=15",
                "-t",
                "3",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .arg(&out)
            .status()
            .expect("ffmpeg must be installed");
        assert!(st.success(), "ffmpeg could not make the test clip");
        std::fs::read(&out).expect("read clip")
    })
}

/// Spoken audio as TikTok sends it: base64 of an MP3 (espeak-ng, encoded by ffmpeg), made once.
fn speech_b64() -> &'static str {
    static B64: OnceLock<String> = OnceLock::new();
    B64.get_or_init(|| {
        let out = Command::new("sh")
            .args([
                "-c",
                "espeak-ng --stdout 'three hearts' | ffmpeg -hide_banner -loglevel error -i - -f mp3 -",
            ])
            .output()
            .expect("espeak-ng and ffmpeg must be installed");
        assert!(
            out.status.success() && out.stdout.len() > 1000,
            "could not make the test mp3"
        );
        base64::engine::general_purpose::STANDARD.encode(&out.stdout)
    })
}

// ---- The fake services. ----

const SCRIPT_ANSWER: &str = "**Narrator:** Octopuses have three hearts. Two of them pump blood through the gills.\n\n[Upbeat music]\nThe third heart sends blood to the rest of the body.";
const TITLE: &str = "Three Hearts, One Octopus";

/// Ollama: `/api/tags` lists `installed`; `/api/chat` answers MoneyPrinter's three prompts (script,
/// search terms, metadata) for an installed model, and Ollama's 404 for any other.
fn fake_ollama(installed: &'static [&'static str]) -> Fake {
    Fake::start(move |req| match req.path.as_str() {
        "/api/tags" => Resp::json(
            200,
            &json!({ "models": installed.iter().map(|m| json!({"name": m, "model": m})).collect::<Vec<_>>() }),
        ),
        "/api/chat" => {
            let body = req.json();
            let model = body["model"].as_str().unwrap_or("").to_string();
            if !installed.contains(&model.as_str()) {
                return Resp::json(
                    404,
                    &json!({"error": format!("model \"{model}\" not found, try pulling it first")}),
                );
            }
            let prompt = body["messages"][0]["content"].as_str().unwrap_or("");
            let content = if prompt.contains("search terms") {
                "Here you go:\n```json\n[\"octopus heart\", \"coral reef\"]\n```".to_string()
            } else if prompt.contains("metadata") {
                json!({"title": TITLE, "description": "Why an octopus needs three hearts.", "keywords": ["octopus", "ocean", "hearts"]}).to_string()
            } else {
                SCRIPT_ANSWER.to_string()
            };
            Resp::json(
                200,
                &json!({"model": model, "message": {"role": "assistant", "content": content}, "done": true}),
            )
        }
        _ => Resp::not_found(),
    })
}

/// The search answer for `ids`: one portrait rendition each, linking to `/files/<id>.mp4` on `base`.
fn pexels_search_json(base: &str, ids: &[u64]) -> Value {
    let videos: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id, "width": 180, "height": 320, "duration": 3,
                "url": format!("https://www.pexels.com/video/{id}/"),
                "video_files": [
                    {"id": id * 10, "quality": "sd", "file_type": "video/mp4", "width": 180, "height": 320,
                     "link": format!("{base}/files/{id}.mp4")}
                ]
            })
        })
        .collect();
    json!({"page": 1, "per_page": 15, "total_results": videos.len(), "videos": videos})
}

/// Pexels: the search answers `videos_for(query)` (after the key check, and after `rate_limited`
/// answers of 429 to the first searches); files are served from `/files/`.
fn fake_pexels(
    rate_limited: usize,
    videos_for: impl Fn(&str) -> Vec<u64> + Send + Sync + 'static,
) -> Fake {
    let base = Arc::new(OnceLock::<String>::new());
    let b2 = base.clone();
    let searches = AtomicUsize::new(0);
    let fake = Fake::start(move |req| {
        if req.path == "/videos/search" {
            if req.header("authorization") != Some(PEXELS_KEY) {
                return Resp::json(401, &json!({"error": "Unauthorized"}));
            }
            if searches.fetch_add(1, Ordering::SeqCst) < rate_limited {
                return Resp::json(429, &json!({"error": "Rate limit exceeded"}));
            }
            let query = req.param("query").unwrap_or_default();
            let base = b2.get().cloned().unwrap_or_default();
            return Resp::json(200, &pexels_search_json(&base, &videos_for(&query)));
        }
        if req.path.starts_with("/files/") && req.method == "GET" {
            return Resp::bytes("video/mp4", clip_mp4().to_vec());
        }
        Resp::not_found()
    });
    base.set(fake.url("")).expect("base set once");
    fake
}

/// TikTok's own API: the session id in the cookie, base64 MP3 in `data.v_str`.
fn fake_tiktok() -> Fake {
    Fake::start(|req| {
        if req.path != TIKTOK_PATH {
            return Resp::not_found();
        }
        if req.header("cookie") != Some(format!("sessionid={TIKTOK_SESSION}").as_str()) {
            return Resp::json(
                200,
                &json!({"status_code": 1, "status_msg": "Couldn't load speech. Try again."}),
            );
        }
        Resp::json(
            200,
            &json!({"status_code": 0, "status_msg": "", "data": {"v_str": speech_b64(), "duration": "1", "speaker": req.param("text_speaker")}}),
        )
    })
}

/// YouTube: the OAuth refresh-token exchange at `/token`, a resumable upload session opened at
/// `/upload/youtube/v3/videos` (its URL in `Location`), and the file `PUT` to the session.
fn fake_youtube() -> Fake {
    let base = Arc::new(OnceLock::<String>::new());
    let b2 = base.clone();
    let fake = Fake::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/token") => {
            let form = String::from_utf8_lossy(&req.body).to_string();
            if !form.contains("grant_type=refresh_token")
                || !form.contains(&format!("refresh_token={YT_REFRESH_TOKEN}"))
            {
                return Resp::json(400, &json!({"error": "invalid_grant"}));
            }
            Resp::json(
                200,
                &json!({"access_token": YT_ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            )
        }
        ("POST", "/upload/youtube/v3/videos") => {
            let mut r = Resp::json(200, &json!({}));
            let session = format!("{}/upload/session/1", b2.get().cloned().unwrap_or_default());
            r.headers.push(("Location", session));
            r
        }
        ("PUT", "/upload/session/1") => {
            if req.header("authorization") != Some(format!("Bearer {YT_ACCESS_TOKEN}").as_str()) {
                return Resp::json(401, &json!({"error": "unauthorized"}));
            }
            Resp::json(200, &json!({"id": "e2eVideo01", "snippet": {}}))
        }
        _ => Resp::not_found(),
    });
    base.set(fake.url("")).expect("base set once");
    fake
}

// ---- Config, daemon and assertions. ----

/// A tiny render plus the given `[llm]`, `[footage]` and `[voice]` keys.
fn config(llm: &str, footage: &str, voice: &str) -> String {
    format!(
        "[render]\nwidth = 180\nheight = 320\nfps = 15\npreset = \"ultrafast\"\ncrf = 30\n\
         [llm]\n{llm}\n\
         [footage]\nseconds_per_clip = 2.0\nmin_clip_seconds = 1.0\n{footage}\n\
         [voice]\nspeed_wpm = 220\n{voice}\n"
    )
}

fn start(cfg: &str, env: &[(&str, &str)]) -> (Daemon, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_env(tmp.path(), cfg, &[], env);
    (d, tmp)
}

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

fn find<'a>(events: &'a [Value], prefix: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no event `{prefix}...` in {:#?}", messages(events)))
}

fn warnings(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["level"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

fn run_job(d: &Daemon, body: Value, want: &str) -> (String, Value, Vec<Value>) {
    let id = d.submit(&body);
    let job = d.wait_for_state(&id, &["completed", "failed", "cancelled"], JOB_TIMEOUT);
    let events = d.events(&id);
    assert_eq!(
        job["state"],
        want,
        "{job}\n{:#?}\nlogs:\n{}",
        messages(&events),
        d.logs()
    );
    (id, job, events)
}

fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

fn assert_playable_vertical_video(job: &Value) {
    let path = PathBuf::from(job["resultPath"].as_str().expect("resultPath"));
    let probe = ffprobe(&path);
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    assert_eq!(video["codec_name"], "h264", "{probe}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(180), Some(320))
    );
    assert!(
        streams.iter().any(|s| s["codec_type"] == "audio"),
        "no audio: {probe}"
    );
    let secs: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(secs > 1.0, "video of {secs} s");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// No secret in any byte of the state directory (event log included), the logs or the events.
fn assert_no_secrets(d: &Daemon, ids: &[&str], secrets: &[&str]) {
    let files = files_under(&d.state_dir());
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "redb")),
        "no event log among {files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} found in {}",
                f.display()
            );
        }
    }
    let logs = d.logs();
    assert!(!logs.is_empty());
    for id in ids {
        let shown = format!("{}{}", Value::Array(d.events(id)), d.job(id));
        for s in secrets {
            assert!(!shown.contains(s), "{s} in the events or job of {id}");
        }
    }
    for s in secrets {
        assert!(!logs.contains(s), "{s} in the daemon's logs");
    }
}

// ---- The tests. ----

#[test]
fn a_whole_job_with_ollama_pexels_and_tiktok_names_model_terms_clips_and_voice() {
    let ollama = fake_ollama(&["llama3.1:8b", "mistral:latest"]);
    let pexels = fake_pexels(0, |q| match q {
        "octopus heart" => vec![11, 12],
        "coral reef" => vec![11, 13],
        _ => vec![],
    });
    let tiktok = fake_tiktok();
    let youtube = fake_youtube();
    let mut cfg = config(
        &format!(
            "provider = \"ollama\"\nollama_base_url = \"{}\"",
            ollama.url("")
        ),
        &format!(
            "provider = \"pexels\"\nclips = 2\npexels_base_url = \"{}\"\nfallback = false",
            pexels.url("")
        ),
        &format!(
            "provider = \"tiktok\"\ntiktok_endpoints = [\"{}\"]\nfallback = false",
            tiktok.url(TIKTOK_PATH)
        ),
    );
    cfg.push_str(&format!(
        "[youtube]\nclient_id = \"e2e-client\"\ntoken_url = \"{}\"\nupload_url = \"{}\"\n",
        youtube.url("/token"),
        youtube.url("/upload/youtube/v3/videos")
    ));
    let (d, _tmp) = start(
        &cfg,
        &[
            ("PEXELS_API_KEY", PEXELS_KEY),
            ("TIKTOK_SESSION_ID", TIKTOK_SESSION),
            ("YOUTUBE_CLIENT_SECRET", YT_CLIENT_SECRET),
            ("YOUTUBE_REFRESH_TOKEN", YT_REFRESH_TOKEN),
            ("RUST_LOG", "debug"),
        ],
    );
    let (id, job, events) = run_job(
        &d,
        json!({
            "videoSubject": "Why octopuses have three hearts",
            "aiModel": "mistral:latest",
            "paragraphNumber": 2,
            "voice": "en_us_002",
            "automateYoutubeUpload": true,
        }),
        "completed",
    );
    let msgs = messages(&events);

    // Script: the model asked for, cleaned of markdown and notes.
    assert_eq!(
        find(&events, "Generating script with model: ")["message"],
        "Generating script with model: mistral:latest"
    );
    assert_eq!(
        find(&events, "Generating script with model: ")["payload"],
        json!({"model": "mistral:latest", "paragraphs": 2})
    );
    let chats: Vec<Value> = ollama
        .requests()
        .iter()
        .filter(|r| r.path == "/api/chat")
        .map(Req::json)
        .collect();
    assert_eq!(chats.len(), 3, "script, search terms, metadata: {chats:#?}");
    assert!(chats
        .iter()
        .all(|c| c["model"] == "mistral:latest" && c["stream"] == false));
    assert!(
        find(&events, "Script generated successfully")["payload"]["wordCount"]
            .as_u64()
            .is_some_and(|n| n >= 20)
    );

    // Footage: one search per model term, distinct videos, downloaded with the key only on searches.
    let searched: Vec<&str> = events
        .iter()
        .filter_map(|e| e["payload"]["searchTerm"].as_str())
        .collect();
    assert_eq!(searched, vec!["octopus heart", "coral reef"], "{msgs:#?}");
    assert_eq!(
        find(&events, "Downloaded ")["message"],
        "Downloaded 2 video clips"
    );
    assert_eq!(find(&events, "Downloaded ")["payload"]["clipCount"], 2);
    let downloads: Vec<String> = pexels
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/files/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    assert_ne!(downloads[0], downloads[1], "the same video twice");
    assert!(pexels
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/files/"))
        .all(|r| r.header("authorization").is_none()));

    // Voice: TikTok, the voice asked for, one request per sentence.
    let voice = find(&events, "Generating voiceover with ");
    assert_eq!(voice["message"], "Generating voiceover with TikTok TTS");
    assert_eq!(voice["payload"]["voice"], "en_us_002");
    let tts = tiktok.requests();
    assert!(tts.len() >= 3, "one request per sentence: {}", tts.len());
    assert!(tts
        .iter()
        .all(|r| r.param("text_speaker").as_deref() == Some("en_us_002")));
    assert!(tts.iter().all(|r| !r.query.contains(TIKTOK_SESSION)));

    // Metadata from the model, after the render and before the end; the job view shows it.
    let meta = find(&events, "Generated title, description and keywords");
    assert_eq!(meta["type"], "metadata");
    assert_eq!(meta["payload"]["title"], TITLE);
    assert_eq!(job["metadata"]["title"], TITLE);
    assert_eq!(
        job["metadata"]["keywords"],
        json!(["octopus", "ocean", "hearts"])
    );
    let at = |m: &str| {
        msgs.iter()
            .position(|x| x.starts_with(m))
            .unwrap_or(usize::MAX)
    };
    assert!(at("Rendering final video") < at("Generated title"));
    assert!(at("Generated title") < at("Uploaded to YouTube"));
    assert!(at("Uploaded to YouTube") < at("Video generation complete"));
    assert_eq!(
        msgs.last().map(String::as_str),
        Some("Video generation complete")
    );
    assert!(warnings(&events).is_empty(), "{:#?}", warnings(&events));

    // Upload: the whole MP4 went to the session, with the model's title.
    let uploaded = find(&events, "Uploaded to YouTube: ");
    assert_eq!(uploaded["level"], "success");
    assert_eq!(uploaded["payload"]["videoId"], "e2eVideo01");
    assert!(uploaded["payload"]["url"]
        .as_str()
        .is_some_and(|u| u.contains("e2eVideo01")));
    let yt = youtube.requests();
    let opened = yt
        .iter()
        .find(|r| r.path == "/upload/youtube/v3/videos")
        .expect("an upload session");
    assert_eq!(opened.json()["snippet"]["title"], TITLE);
    let put = yt
        .iter()
        .find(|r| r.path == "/upload/session/1")
        .expect("the video sent");
    let output = std::fs::read(job["resultPath"].as_str().unwrap_or("")).unwrap_or_default();
    assert!(
        !output.is_empty() && put.body == output,
        "the uploaded bytes differ"
    );

    assert_playable_vertical_video(&job);
    assert_no_secrets(
        &d,
        &[&id],
        &[
            PEXELS_KEY,
            TIKTOK_SESSION,
            YT_CLIENT_SECRET,
            YT_REFRESH_TOKEN,
            YT_ACCESS_TOKEN,
        ],
    );
}

#[test]
fn with_ollama_down_the_model_list_falls_back_and_an_explicit_ollama_fails_the_script() {
    let base = closed_port_url();
    let cfg = config(
        &format!("provider = \"ollama\"\nollama_base_url = \"{base}\"\nretries = 1"),
        "clips = 1",
        "",
    );
    let (d, _tmp) = start(&cfg, &[]);
    let (s, models) = d.get("/api/models");
    assert_eq!(s, 200);
    assert_eq!(
        models,
        json!({
            "status": "error",
            "message": "Could not fetch Ollama models. Is Ollama running?",
            "models": ["llama3.1:8b"],
            "default": "llama3.1:8b",
        })
    );

    let (_, job, events) = run_job(&d, json!({"videoSubject": "Honey bees"}), "failed");
    let expected = format!(
        "Failed to generate script: Ollama connection refused at {base}. Is Ollama running?"
    );
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error");
    assert_eq!(last["message"], expected);
    assert_eq!(
        last["payload"],
        json!({"error": "ConnectionRefused", "retryable": true, "stage": "script", "provider": "ollama"})
    );
    assert_eq!(job["errorMessage"], expected);
    // One retry (llm.retries = 1), announced by a warning before it.
    let w = warnings(&events);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("Ollama refused the connection; retrying in ")
            && w[0].ends_with("(attempt 2 of 2)"),
        "{}",
        w[0]
    );
    let retry = find(&events, "Ollama refused the connection");
    assert_eq!(retry["payload"]["provider"], "ollama");
    assert_eq!(retry["payload"]["stage"], "script");
    assert!(!messages(&events)
        .iter()
        .any(|m| m.starts_with("Searching for footage")));
}

#[test]
fn with_auto_and_ollama_down_the_offline_writer_makes_the_video_and_says_why() {
    let base = closed_port_url();
    let cfg = config(
        &format!("provider = \"auto\"\nollama_base_url = \"{base}\""),
        "clips = 1",
        "",
    );
    let (d, _tmp) = start(&cfg, &[]);
    let (_, job, events) = run_job(
        &d,
        json!({"videoSubject": "Honey bees", "automateYoutubeUpload": true}),
        "completed",
    );
    assert_eq!(
        find(&events, "Generating script with model: ")["message"],
        "Generating script with model: offline"
    );
    let w = warnings(&events);
    let expected = format!(
        "Ollama is not reachable at {base} (connection refused); the built-in offline writer wrote the script."
    );
    assert!(w.contains(&expected), "{w:#?}");
    // Without YouTube credentials the upload is skipped with a warning, and the job completes.
    assert!(
        w.iter()
            .any(|m| m.starts_with("YouTube upload skipped: YouTube is not configured")),
        "{w:#?}"
    );
    // Metadata made offline from the subject and script.
    assert_eq!(job["metadata"]["title"], "Honey bees");
    assert!(job["metadata"]["keywords"]
        .as_array()
        .is_some_and(|k| k.iter().any(|k| k == "honey bees")));
    assert_playable_vertical_video(&job);
}

#[test]
fn pexels_rate_limits_are_retried_and_shown_as_warnings() {
    let pexels = fake_pexels(2, |_| vec![21, 22, 23]);
    let cfg = config(
        "provider = \"offline\"",
        &format!(
            "provider = \"pexels\"\nclips = 2\npexels_base_url = \"{}\"\nfallback = false",
            pexels.url("")
        ),
        "",
    );
    let (d, _tmp) = start(&cfg, &[("PEXELS_API_KEY", PEXELS_KEY)]);
    let (_, job, events) = run_job(&d, json!({"videoSubject": "Octopus hearts"}), "completed");
    let retries: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["level"] == "warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Pexels returned HTTP 429; retrying in "))
        })
        .collect();
    assert_eq!(retries.len(), 2, "{:#?}", messages(&events));
    for r in &retries {
        assert_eq!(r["payload"]["error"], "RateLimited");
        assert_eq!(r["payload"]["retryable"], true);
        assert_eq!(r["payload"]["stage"], "footage");
        assert_eq!(r["payload"]["provider"], "pexels");
    }
    assert_eq!(
        pexels.hits("/videos/search"),
        4,
        "two refused, two answered"
    );
    assert_eq!(
        find(&events, "Downloaded ")["message"],
        "Downloaded 2 video clips"
    );
    assert_eq!(job["state"], "completed");
}

#[test]
fn pexels_with_fewer_videos_than_asked_warns_only_found() {
    // Every term finds the same two videos: the third clip has no unused video.
    let pexels = fake_pexels(0, |_| vec![31, 32]);
    let cfg = config(
        "provider = \"offline\"",
        &format!(
            "provider = \"pexels\"\nclips = 3\npexels_base_url = \"{}\"",
            pexels.url("")
        ),
        "",
    );
    let (d, _tmp) = start(&cfg, &[("PEXELS_API_KEY", PEXELS_KEY)]);
    let (_, job, events) = run_job(&d, json!({"videoSubject": "Octopus hearts"}), "completed");
    let only = find(&events, "Only found ");
    assert_eq!(only["message"], "Only found 2 video clips, requested 3");
    assert_eq!(only["level"], "warning");
    assert_eq!(only["payload"], json!({"found": 2, "requested": 3}));
    assert!(!messages(&events)
        .iter()
        .any(|m| m.starts_with("Downloaded ")));
    assert_playable_vertical_video(&job);
}

#[test]
fn a_model_that_is_not_installed_fails_naming_the_installed_ones() {
    let ollama = fake_ollama(&["llama3.1:8b", "mistral:latest"]);
    let cfg = config(
        &format!(
            "provider = \"ollama\"\nollama_base_url = \"{}\"",
            ollama.url("")
        ),
        "clips = 1",
        "",
    );
    let (d, _tmp) = start(&cfg, &[]);
    let (s, models) = d.get("/api/models");
    assert_eq!(s, 200);
    assert_eq!(
        models,
        json!({"status": "success", "models": ["llama3.1:8b", "mistral:latest"], "default": "llama3.1:8b"})
    );
    let (_, job, events) = run_job(
        &d,
        json!({"videoSubject": "Honey bees", "aiModel": "nope:1b"}),
        "failed",
    );
    let last = events.last().expect("events");
    let msg = last["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("Failed to generate script: Ollama has no model `nope:1b`. Installed models: llama3.1:8b, mistral:latest."),
        "{msg}"
    );
    assert_eq!(
        last["payload"],
        json!({"error": "ModelNotFound", "retryable": false, "stage": "script", "provider": "ollama"})
    );
    assert_eq!(job["errorMessage"], msg);
    // Not retryable: asked once.
    assert_eq!(ollama.hits("/api/chat"), 1);
}

#[test]
fn two_jobs_using_the_same_clip_url_download_it_once() {
    let pexels = fake_pexels(0, |_| vec![41]);
    let cfg = config(
        "provider = \"offline\"",
        &format!(
            "provider = \"pexels\"\nclips = 1\npexels_base_url = \"{}\"",
            pexels.url("")
        ),
        "",
    );
    let (d, _tmp) = start(&cfg, &[("PEXELS_API_KEY", PEXELS_KEY)]);
    for subject in ["Octopus hearts", "Coral reefs"] {
        let (_, _, events) = run_job(&d, json!({"videoSubject": subject}), "completed");
        assert_eq!(
            find(&events, "Downloaded ")["message"],
            "Downloaded 1 video clips"
        );
    }
    assert_eq!(pexels.hits("/videos/search"), 2);
    assert_eq!(
        pexels.hits("/files/41.mp4"),
        1,
        "the clip was downloaded twice"
    );
    let cached = files_under(&d.state_dir().join("cache"));
    assert_eq!(cached.len(), 1, "{cached:?}");
}

#[test]
fn refused_keys_fall_back_offline_and_no_key_appears_in_events_logs_or_state() {
    // Both services refuse the credentials and quote them back; the job falls back to generated
    // footage and espeak-ng, and the keys appear nowhere.
    let pexels = Fake::start(|_req| {
        Resp::json(
            401,
            &json!({"error": format!("Authorization {PEXELS_KEY} is not a valid key")}),
        )
    });
    let tiktok = Fake::start(|_req| {
        Resp::json(
            200,
            &json!({"status_code": 1, "status_msg": format!("session {TIKTOK_SESSION} expired")}),
        )
    });
    let cfg = config(
        "provider = \"offline\"",
        &format!(
            "provider = \"pexels\"\nclips = 2\npexels_base_url = \"{}\"",
            pexels.url("")
        ),
        &format!(
            "provider = \"tiktok\"\ntiktok_endpoints = [\"{}\"]",
            tiktok.url(TIKTOK_PATH)
        ),
    );
    let (d, _tmp) = start(
        &cfg,
        &[
            ("PEXELS_API_KEY", PEXELS_KEY),
            ("TIKTOK_SESSION_ID", TIKTOK_SESSION),
            ("RUST_LOG", "debug"),
        ],
    );
    let (id, job, events) = run_job(&d, json!({"videoSubject": "Octopus hearts"}), "completed");
    let w = warnings(&events);
    assert!(
        w.iter()
            .any(|m| m.starts_with("Pexels refused the credentials")
                && m.contains("PEXELS_API_KEY")
                && m.ends_with("Using generated backgrounds for the remaining clips.")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|m| m.contains("TIKTOK_SESSION_ID")
            && m.ends_with("espeak-ng speaks the rest of the voiceover.")),
        "{w:#?}"
    );
    let fallback = find(&events, "Pexels refused the credentials");
    assert_eq!(fallback["payload"]["provider"], "pexels");
    assert_eq!(fallback["payload"]["stage"], "footage");
    assert_eq!(fallback["payload"]["retryable"], false);
    // A refused key is not retried: at most one search per clip (two run at once), one warning.
    assert!(
        pexels.hits("/videos/search") <= 2,
        "{}",
        pexels.hits("/videos/search")
    );
    assert!(!w.iter().any(|m| m.contains("retrying")), "{w:#?}");
    assert_eq!(
        w.iter().filter(|m| m.starts_with("Pexels refused")).count(),
        1,
        "{w:#?}"
    );
    assert!(tiktok
        .requests()
        .iter()
        .all(|r| r.header("cookie").is_some()));
    assert_playable_vertical_video(&job);
    assert_no_secrets(&d, &[&id], &[PEXELS_KEY, TIKTOK_SESSION]);
}

#[test]
fn with_openai_the_model_list_and_the_script_come_from_the_openai_server() {
    const KEY: &str = "sk-e2e-OPENAI-KEY-0a1b2c";
    let server = Fake::start(|req| {
        if req.header("authorization") != Some(format!("Bearer {KEY}").as_str()) {
            return Resp::json(401, &json!({"error": {"message": "bad key"}}));
        }
        match req.path.as_str() {
            "/v1/models" => Resp::json(
                200,
                &json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}, {"id": "local-llama", "object": "model"}]}),
            ),
            "/v1/chat/completions" => Resp::json(
                503,
                &json!({"error": {"message": "overloaded", "type": "server_error"}}),
            ),
            _ => Resp::not_found(),
        }
    });
    let cfg = config(
        &format!(
            "provider = \"openai\"\nopenai_base_url = \"{}\"\nopenai_api_key_env = \"E2E_OPENAI_KEY\"\nretries = 1",
            server.url("/v1")
        ),
        "clips = 1",
        "",
    );
    let (d, _tmp) = start(&cfg, &[("E2E_OPENAI_KEY", KEY)]);
    let (s, models) = d.get("/api/models");
    assert_eq!(s, 200);
    assert_eq!(
        models,
        json!({"status": "success", "models": ["gpt-4o-mini", "local-llama"], "default": "gpt-4o-mini"})
    );
    let (id, _, events) = run_job(
        &d,
        json!({"videoSubject": "Honey bees", "aiModel": "local-llama"}),
        "failed",
    );
    assert_eq!(
        find(&events, "Generating script with model: ")["message"],
        "Generating script with model: local-llama"
    );
    let chats: Vec<Value> = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(Req::json)
        .collect();
    assert_eq!(chats.len(), 2, "one attempt and one retry");
    assert!(chats.iter().all(|c| c["model"] == "local-llama"));
    let w = warnings(&events);
    assert!(
        w.len() == 1
            && w[0].starts_with("OpenAI-compatible server returned HTTP 503; retrying in "),
        "{w:#?}"
    );
    let last = events.last().expect("events");
    assert!(
        last["message"].as_str().is_some_and(|m| m.starts_with(
            "Failed to generate script: OpenAI-compatible server server error (HTTP 503"
        )),
        "{last}"
    );
    assert_eq!(
        last["payload"],
        json!({"error": "ServerError", "retryable": true, "stage": "script", "provider": "openai"})
    );
    assert_no_secrets(&d, &[&id], &[KEY]);
}

// ---- Operability: the daemon's log says why. ----

/// The daemon's log lines that contain every one of `needles`, once there is one: the daemon writes
/// a line before it records the event, but the thread reading its stderr may lag behind.
fn log_lines(d: &Daemon, needles: &[&str]) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = d
            .logs()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect();
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failures_retries_and_fallbacks_are_logged_with_job_stage_provider_and_error() {
    let ollama = fake_ollama(&["llama3.1:8b"]);
    let pexels = Fake::start(|_req| Resp::json(500, &json!({"error": "pexels is down"})));
    let cfg = config(
        &format!(
            "provider = \"ollama\"\nollama_base_url = \"{}\"",
            ollama.url("")
        ),
        &format!(
            "provider = \"pexels\"\nclips = 1\npexels_base_url = \"{}\"\nretries = 1\nfallback = true",
            pexels.url("")
        ),
        "",
    );
    let (d, _tmp) = start(&cfg, &[("PEXELS_API_KEY", PEXELS_KEY)]);

    // Fails at the script stage: one error line with the fields and the job's errorMessage.
    let (failed, job, _) = run_job(
        &d,
        json!({"videoSubject": "Honey bees", "aiModel": "nope:1b"}),
        "failed",
    );
    let message = job["errorMessage"].as_str().expect("errorMessage");
    let lines = log_lines(&d, &["job failed", &failed]);
    assert_eq!(lines.len(), 1, "{lines:#?}\n{}", d.logs());
    let line = &lines[0];
    for field in [
        "ERROR",
        &format!("job={failed}"),
        "stage=\"script\"",
        "provider=\"ollama\"",
        "retryable=false",
        "code=\"ModelNotFound\"",
        &format!("error={message}"),
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }

    // Falls back at the footage stage after one retry: both at warn, with the same fields.
    let fell_back = d.submit(&json!({"videoSubject": "Honey bees"}));
    let fallback = d.wait_for_event(&fell_back, JOB_TIMEOUT, |e| {
        e["level"] == "warning"
            && e["payload"]["provider"] == "pexels"
            && e["payload"].get("attempt").is_none()
    });
    let (s, _) = d.post(&format!("/api/jobs/{fell_back}/cancel"), &json!({}));
    assert_eq!(s, 200);
    d.wait_for_state(
        &fell_back,
        &["cancelled", "completed", "failed"],
        JOB_TIMEOUT,
    );
    let retry = log_lines(&d, &["provider call failed; retrying", &fell_back]);
    assert_eq!(retry.len(), 1, "{retry:#?}\n{}", d.logs());
    let fallback_line = log_lines(&d, &["provider failed; falling back", &fell_back]);
    assert_eq!(fallback_line.len(), 1, "{fallback_line:#?}\n{}", d.logs());
    for line in [&retry[0], &fallback_line[0]] {
        for field in [
            " WARN ",
            &format!("job={fell_back}"),
            "stage=\"footage\"",
            "provider=\"pexels\"",
            "code=\"ServerError\"",
            "Pexels server error (HTTP 500",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    assert!(retry[0].contains("retryable=true"), "{}", retry[0]);
    assert!(
        fallback_line[0].contains(&format!(
            "error={}",
            fallback["message"].as_str().unwrap_or("?")
        )),
        "{}",
        fallback_line[0]
    );
}

// ---- Operability: every configured secret hidden, wherever a service echoes it. ----

#[test]
fn every_configured_secret_is_hidden_when_any_service_echoes_it_in_a_500() {
    const OPENAI_KEY: &str = "sk-e2e-ECHOED-OPENAI-7d3e";
    let all = [
        PEXELS_KEY,
        TIKTOK_SESSION,
        YT_CLIENT_SECRET,
        YT_REFRESH_TOKEN,
        OPENAI_KEY,
    ];
    // Each service answers 500 and quotes every secret the daemon holds, sent to it or not.
    let leak = move |_req: &Req| {
        Resp::json(
            500,
            &json!({"error": format!("upstream failed; saw {}", all.join(" and "))}),
        )
    };
    let (ollama, pexels, tiktok, youtube) = (
        Fake::start(leak),
        Fake::start(leak),
        Fake::start(leak),
        Fake::start(leak),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    // The client secret only in Google's client_secrets.json, as many installs keep it.
    let client_file = tmp.path().join("client_secrets.json");
    std::fs::write(
        &client_file,
        json!({"installed": {"client_id": "e2e-client", "client_secret": YT_CLIENT_SECRET}})
            .to_string(),
    )
    .unwrap();
    let mut cfg = config(
        &format!(
            "provider = \"auto\"\nollama_base_url = \"{}\"\nopenai_api_key_env = \"E2E_OPENAI_KEY\"\nretries = 1",
            ollama.url("")
        ),
        &format!(
            "provider = \"pexels\"\nclips = 1\npexels_base_url = \"{}\"\nretries = 1",
            pexels.url("")
        ),
        &format!(
            "provider = \"tiktok\"\ntiktok_endpoints = [\"{}\"]\nretries = 1",
            tiktok.url(TIKTOK_PATH)
        ),
    );
    cfg.push_str(&format!(
        "[youtube]\nclient_secrets_file = \"{}\"\ntoken_url = \"{}\"\nupload_url = \"{}\"\nretries = 1\n",
        client_file.display(),
        youtube.url("/token"),
        youtube.url("/upload/youtube/v3/videos")
    ));
    let d = Daemon::start_with_env(
        tmp.path(),
        &cfg,
        &[],
        &[
            ("PEXELS_API_KEY", PEXELS_KEY),
            ("TIKTOK_SESSION_ID", TIKTOK_SESSION),
            ("YOUTUBE_REFRESH_TOKEN", YT_REFRESH_TOKEN),
            ("E2E_OPENAI_KEY", OPENAI_KEY),
            ("RUST_LOG", "debug"),
        ],
    );
    let (s, models) = d.get("/api/models");
    assert_eq!((s, &models["status"]), (200, &json!("error")), "{models}");
    let (id, job, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "automateYoutubeUpload": true}),
        "completed",
    );
    // Every service was asked, and its echo reached the events, hidden.
    for (name, fake) in [
        ("ollama", &ollama),
        ("pexels", &pexels),
        ("tiktok", &tiktok),
        ("youtube", &youtube),
    ] {
        assert!(!fake.requests().is_empty(), "{name} was never asked");
    }
    let w = warnings(&events);
    for provider in ["Pexels", "TikTok", "YouTube"] {
        assert!(
            w.iter().any(|m| m.contains(provider)
                && m.contains("upstream failed; saw [redacted] and [redacted]")),
            "no hidden echo from {provider}: {w:#?}"
        );
    }
    assert!(d.logs().contains("[redacted]"), "{}", d.logs());
    assert_playable_vertical_video(&job);
    assert_no_secrets(&d, &[&id], &all);
}

// ---- Operability: Retry-After honoured both ways. ----

#[test]
fn retry_after_zero_or_past_retries_soon_and_one_over_the_budget_fails_at_once() {
    // Searches 1-3: 429 asking to retry now (0, a date in the past, 0); search 4: a refused key, so
    // the first job ends at the footage stage. Every later search: 429 asking for an hour.
    let searches = Arc::new(AtomicUsize::new(0));
    let seen = searches.clone();
    let pexels = Fake::start(move |req| {
        if req.path != "/videos/search" {
            return Resp::not_found();
        }
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let mut r = match n {
            1..=3 => Resp::json(429, &json!({"error": "Rate limit exceeded"})),
            4 => return Resp::json(401, &json!({"error": "Unauthorized"})),
            _ => Resp::json(429, &json!({"error": "Slow down"})),
        };
        let after = match n {
            2 => "Thu, 01 Jan 1970 00:00:00 GMT".to_string(),
            1 | 3 => "0".to_string(),
            _ => "3600".to_string(),
        };
        r.headers.push(("Retry-After", after));
        r
    });
    let cfg = config(
        "provider = \"offline\"",
        &format!(
            "provider = \"pexels\"\nclips = 1\npexels_base_url = \"{}\"\nretries = 3\nfallback = false\nrequest_timeout_secs = 30",
            pexels.url("")
        ),
        "",
    );
    let (d, _tmp) = start(&cfg, &[("PEXELS_API_KEY", PEXELS_KEY)]);

    let (_, _, events) = run_job(&d, json!({"videoSubject": "Octopus hearts"}), "failed");
    assert_eq!(searches.load(Ordering::SeqCst), 4);
    let is_retry = |e: &&Value| e["level"] == "warning" && e["payload"]["delaySeconds"].is_f64();
    let delays: Vec<f64> = events
        .iter()
        .filter(is_retry)
        .map(|e| e["payload"]["delaySeconds"].as_f64().unwrap_or(-1.0))
        .collect();
    // The minimum backoff (footage: 1 s base, jittered to 0.5..1 s) for each retry; without
    // Retry-After the third retry would wait 2..4 s.
    assert_eq!(delays.len(), 3, "{:#?}", messages(&events));
    assert!(delays.iter().all(|d| (0.5..=1.0).contains(d)), "{delays:?}");

    // An hour asked for, 30 s allowed: one search, no retry, a message giving the wait.
    let (_, job, events) = run_job(&d, json!({"videoSubject": "Coral reefs"}), "failed");
    assert_eq!(searches.load(Ordering::SeqCst), 5, "retried after all");
    assert!(
        !events.iter().any(|e| is_retry(&e)),
        "{:#?}",
        messages(&events)
    );
    let msg = job["errorMessage"].as_str().unwrap_or("");
    let want = format!(
        "Pexels asked to wait 3600 s before trying again (HTTP 429 at {}), longer than the 30 s this call may take; try again later.",
        pexels.url("/videos/search")
    );
    assert!(msg.ends_with(&want), "{msg}");
    let last = events.last().expect("events");
    assert_eq!(last["payload"]["error"], "RetryAfterTooLong", "{last}");
    assert_eq!(last["payload"]["stage"], "footage", "{last}");
    assert_eq!(last["payload"]["retryable"], false, "{last}");
}

// ---- Resume after the last completed stage. ----

/// Chat requests to the fake Ollama that asked for a script (not terms, not metadata).
fn script_prompts(ollama: &Fake) -> usize {
    ollama
        .requests()
        .iter()
        .filter(|r| r.path == "/api/chat")
        .filter(|r| {
            let prompt = r.json()["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .to_string();
            !prompt.contains("search terms") && !prompt.contains("metadata")
        })
        .count()
}

fn count(events: &[Value], prefix: &str) -> usize {
    events
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .count()
}

/// `reelsmith ctl retry ID` against the daemon's socket.
fn ctl_retry(d: &Daemon, id: &str) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .args(["retry", id])
        .output()
        .expect("run reelsmith ctl");
    assert!(
        out.status.success(),
        "ctl retry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_job_killed_during_the_render_resumes_after_its_completed_stages_and_redoes_a_damaged_one() {
    let ollama = fake_ollama(&["llama3.1:8b"]);
    let pexels = fake_pexels(0, |q| match q {
        "octopus heart" => vec![21, 22],
        _ => vec![23, 24],
    });
    let tiktok = fake_tiktok();
    // Long pauses and a slow preset make a render long enough to be interrupted on purpose.
    let cfg = format!(
        "[render]\nwidth = 360\nheight = 640\nfps = 30\npreset = \"slower\"\nthreads = 1\ncrf = 30\n\
         [llm]\nprovider = \"ollama\"\nollama_base_url = \"{}\"\n\
         [footage]\nprovider = \"pexels\"\nclips = 2\nseconds_per_clip = 2.0\nmin_clip_seconds = 1.0\npexels_base_url = \"{}\"\nfallback = false\n\
         [voice]\nprovider = \"tiktok\"\ntiktok_endpoints = [\"{}\"]\nfallback = false\nsentence_pause_ms = 3000\n",
        ollama.url(""),
        pexels.url(""),
        tiktok.url(TIKTOK_PATH)
    );
    let env = [
        ("PEXELS_API_KEY", PEXELS_KEY),
        ("TIKTOK_SESSION_ID", TIKTOK_SESSION),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start_with_env(tmp.path(), &cfg, &[], &env);
    let body = json!({"videoSubject": "Why octopuses have three hearts", "paragraphNumber": 2});

    // 1. kill -9 once the render has started: every stage before it has completed.
    let id = d.submit(&body);
    d.wait_for_event(&id, JOB_TIMEOUT, |e| {
        e["message"] == "Rendering final video with subtitles..."
    });
    d.kill9_with_children();
    let (scripts, searches, downloads, speeches) = (
        script_prompts(&ollama),
        pexels.hits("/videos/search"),
        pexels
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/files/"))
            .count(),
        tiktok.hits(TIKTOK_PATH),
    );
    assert_eq!(scripts, 1);
    assert!(
        searches >= 1 && downloads == 2 && speeches >= 3,
        "{searches} {downloads} {speeches}"
    );

    let mut d = Daemon::start_with_env(tmp.path(), &cfg, &[], &env);
    let job = d.wait_for_state(&id, &["completed", "failed", "cancelled"], JOB_TIMEOUT);
    let events = d.events(&id);
    assert_eq!(job["state"], "completed", "{job}\n{:#?}", messages(&events));
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(
        job["completedStages"],
        json!([
            "script",
            "footage",
            "voice",
            "music",
            "subtitles",
            "render",
            "metadata",
            "upload"
        ]),
        "{job}"
    );
    // No second script, footage or voice request, and no second voiceover.
    assert_eq!(script_prompts(&ollama), scripts);
    assert_eq!(pexels.hits("/videos/search"), searches);
    assert_eq!(
        pexels
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/files/"))
            .count(),
        downloads
    );
    assert_eq!(tiktok.hits(TIKTOK_PATH), speeches);
    assert_eq!(
        count(&events, "Generating voiceover with "),
        1,
        "{:#?}",
        messages(&events)
    );
    assert_eq!(count(&events, "Generating script with model"), 1);
    assert_eq!(count(&events, "Rendering final video"), 2);
    let resumed = find(&events, "Resuming after ");
    assert_eq!(
        resumed["message"],
        "Resuming after subtitles: reusing the script and 2 search terms, 2 footage clips, the voiceover (3 sentences) and the subtitles.",
    );
    assert_eq!(
        resumed["payload"]["reused"],
        json!(["script", "footage", "voice", "music", "subtitles"])
    );
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "stage_completed")
        .collect();
    assert_eq!(done[0]["payload"]["stage"], "script");
    assert_eq!(
        done[0]["payload"]["searchTerms"],
        json!(["octopus heart", "coral reef"])
    );
    assert!(done[0]["payload"]["result"]["sha256"]
        .as_str()
        .is_some_and(|s| s.len() == 64));
    assert_playable_vertical_video_of(&job, 360, 640);
    // A completed job never runs again: its folder is gone, the output stays.
    assert!(!d.state_dir().join("jobs").join(&id).exists());

    // 2. Cancel another job during its render, damage its kept voiceover, retry it: the script
    // and footage are reused, the voice (and what follows it) is redone.
    let id2 = d.submit(&body);
    d.wait_for_event(&id2, JOB_TIMEOUT, |e| {
        e["message"] == "Rendering final video with subtitles..."
    });
    let (s, v) = d.post(&format!("/api/jobs/{id2}/cancel"), &json!({}));
    assert_eq!(s, 200, "{v}");
    d.wait_for_state(&id2, &["cancelled"], JOB_TIMEOUT);
    let track = d.state_dir().join("jobs").join(&id2).join("voice.wav");
    let mut bytes = std::fs::read(&track).expect("the kept voice track");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x55;
    }
    std::fs::write(&track, &bytes).expect("damage the voice track");
    let (scripts, speeches) = (script_prompts(&ollama), tiktok.hits(TIKTOK_PATH));
    ctl_retry(&d, &id2);
    let job = d.wait_for_state(&id2, &["completed", "failed"], JOB_TIMEOUT);
    let events = d.events(&id2);
    assert_eq!(job["state"], "completed", "{job}\n{:#?}", messages(&events));
    assert_eq!(
        script_prompts(&ollama),
        scripts,
        "the script was asked for again"
    );
    assert!(
        tiktok.hits(TIKTOK_PATH) >= speeches + 3,
        "the voice was not redone"
    );
    assert_eq!(count(&events, "Generating voiceover with "), 2);
    let damaged = find(&events, "The kept result of the voice stage is damaged");
    assert_eq!(damaged["level"], "warning");
    assert!(
        damaged["message"]
            .as_str()
            .unwrap_or("")
            .contains("voice.wav"),
        "{damaged}"
    );
    assert_eq!(
        find(&events, "Resuming after ")["message"],
        "Resuming after footage: reusing the script and 2 search terms and 2 footage clips."
    );
    d.terminate(Duration::from_secs(10));
}

fn assert_playable_vertical_video_of(job: &Value, w: u64, h: u64) {
    let path = PathBuf::from(job["resultPath"].as_str().expect("resultPath"));
    let probe = ffprobe(&path);
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(w), Some(h))
    );
    assert!(
        streams.iter().any(|s| s["codec_type"] == "audio"),
        "no audio: {probe}"
    );
}
