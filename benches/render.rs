//! Render benchmark: a 38-second 1080x1920 short from five 10-second 1920x1080 30 fps clips, with
//! subtitles and music, made by a whole reelsmith job (`reelsmith generate`, the same actors as the
//! daemon), with the default render settings, MoneyPrinter's (MoviePy writes with libx264 at its
//! defaults: preset medium, CRF 23) and candidate settings, side by side.
//!
//! Each setting runs `RENDER_BENCH_REPEATS` times (3), interleaved: round r runs the settings in an
//! order rotated by r, every other round reversed, so the load of the shared machine drifts over all
//! of them alike; the table gives medians. Per run: wall time of the job, real-time factor (video
//! seconds per wall second), CPU seconds (user + system of the whole process tree, from getrusage
//! of the reaped children), the render stage's ffmpeg processes alone (wall from the first one's
//! start to the last one's end, CPU summed, sampled from /proc every 20 ms; the speed goal
//! is about these: the rest of the job is the voice, the subtitles and probes), and the peak
//! resident set of any ffmpeg of the job (VmHWM). Once per setting (x264 is
//! deterministic): SSIM (ffmpeg's `ssim` filter) against a lossless render of the same composition
//! (x264 CRF 0, which is `-qp 0`), and the difference from MoneyPrinter's SSIM, the quality bar. The
//! composition is the same in every run: the same script, voice, clips (a local folder, picked in
//! order), song and subtitles; only the render settings differ. The voice is pinned to espeak-ng
//! (`voice.provider = "espeak"`, [`BENCH_VOICE`]): the default `auto` would pick Piper wherever it
//! is installed, whose neural synthesis (about a CPU second per sentence) would count in the job's
//! figures and whose voice gives another duration, so another composition. `REELSMITH_*`
//! variables of the caller's environment are not passed on, for the same reason. The load average is printed per
//! round: on a loaded machine trust the CPU seconds over the wall times.
//!
//! The footage is test patterns encoded like stock footage ([`STOCK_ENCODE`]: x264 medium, CRF 21,
//! at most 10 Mb/s, a key frame every 2 s); `RENDER_BENCH_FOOTAGE=dense` takes the previous set
//! (the same patterns at veryfast/CRF 20, up to 79 Mb/s: far costlier to decode than anything a
//! stock site serves), `uhd` that set with the first clip replaced by a 3840x2160 60 fps one.
//!
//! Run: `cargo bench --bench render`. `RENDER_BENCH_ONCE=moneyprinter` runs the named settings
//! in the first round only (a medium-preset job is slow on a loaded machine). Other candidates,
//! `;`-separated: `RENDER_BENCH_SETTINGS="ultrafast/18/1/1/;fast=superfast/20/2/0/bframes=2"`
//! ([name=]preset/CRF/decoder threads/parts/x264 params, missing fields from the default;
//! MoneyPrinter's and the default always run; MoneyPrinter's is one process at x264's defaults). The old job-against-hand-written-ffmpeg table:
//! `RENDER_BENCH_PRESETS=veryfast,medium`. Inputs are made once under `target/bench-render/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelsmith::config::Config;

const CLIP_SOURCES: [&str; 5] = [
    "testsrc2=size=1920x1080:rate=30",
    "mandelbrot=size=1920x1080:rate=30",
    "life=size=1920x1080:rate=30:mold=10:ratio=0.2:death_color=#202040:life_color=#60c0ff",
    "cellauto=size=1920x1080:rate=30:rule=110",
    "gradients=size=1920x1080:rate=30:speed=0.02",
];

const SCRIPT: &str = "Octopuses have three hearts, and each one has a job. Two of them pump blood \
through the gills, where it picks up oxygen from the water. The third heart sends that blood to \
the rest of the body. When an octopus swims, the main heart actually stops beating, which is one \
reason these animals prefer to crawl. Their blood is blue, because it carries oxygen with copper \
instead of iron. Copper works better in cold water with little oxygen, but it is less efficient, \
so the extra hearts help make up the difference. Three hearts, blue blood, and a brain in every \
arm. The octopus is a marvel of the deep sea.";

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How the `stock` footage set is encoded from the test patterns: x264 medium at CRF 21, capped
/// at 10 Mb/s, like the 1080p H.264 files stock-footage sites serve (1-11 Mb/s here).
const STOCK_ENCODE: [&str; 10] = [
    "-preset", "medium", "-crf", "21", "-maxrate", "10M", "-bufsize", "20M", "-g", "60",
];

fn make_inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let footage = std::env::var("RENDER_BENCH_FOOTAGE").unwrap_or_default();
    let stock = !matches!(footage.as_str(), "dense" | "uhd");
    let clips = dir.join(if stock { "clips-stock" } else { "clips" });
    std::fs::create_dir_all(&clips).expect("mkdir");
    for (i, src) in CLIP_SOURCES.iter().enumerate() {
        let out = clips.join(format!("clip{i}.mp4"));
        if out.exists() {
            continue;
        }
        eprintln!("making {}", out.display());
        run(
            Command::new("ffmpeg")
                .args([
                    "-nostdin",
                    "-y",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    src,
                    "-t",
                    "10",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:v",
                    "libx264",
                ])
                .args(if stock {
                    &STOCK_ENCODE[..]
                } else {
                    &["-preset", "veryfast", "-crf", "20"][..]
                })
                .arg(&out),
            "clip",
        );
    }
    let song = dir.join("song.mp3");
    if !song.exists() {
        run(
            Command::new("ffmpeg")
                .args([
                    "-nostdin",
                    "-y",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=220:duration=60",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=330:duration=60",
                    "-filter_complex",
                    "amix=inputs=2,volume=0.8",
                    "-c:a",
                    "libmp3lame",
                    "-b:a",
                    "128k",
                ])
                .arg(&song),
            "song",
        );
    }
    let script = dir.join("script.txt");
    std::fs::write(&script, SCRIPT).expect("script");
    if footage == "uhd" {
        return (uhd_clips(dir, &clips), song, script);
    }
    (clips, song, script)
}

/// The clips of `clips` with the first one replaced by a 3840x2160 60 fps clip.
fn uhd_clips(dir: &Path, clips: &Path) -> PathBuf {
    let uhd = dir.join("clips-uhd");
    std::fs::create_dir_all(&uhd).expect("mkdir");
    let big = uhd.join("clip0.mp4");
    if !big.exists() {
        eprintln!("making {}", big.display());
        run(
            Command::new("ffmpeg")
                .args([
                    "-nostdin",
                    "-y",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=3840x2160:rate=60",
                    "-t",
                    "10",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "20",
                ])
                .arg(&big),
            "uhd clip",
        );
    }
    for i in 1..CLIP_SOURCES.len() {
        let to = uhd.join(format!("clip{i}.mp4"));
        if !to.exists() {
            std::fs::hard_link(clips.join(format!("clip{i}.mp4")), &to).expect("link clip");
        }
    }
    uhd
}

/// User plus system CPU seconds of every descendant this process has waited for (a reaped
/// process's own reaped descendants included).
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Runs `cmd`, sampling the summed RSS of its process tree. Returns (wall, peak of the tree, peak of
/// the process itself).
fn measure(mut cmd: Command) -> (Duration, u64, u64) {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let root = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let sampler = std::thread::spawn(move || {
        let (mut peak, mut own) = (0u64, 0u64);
        while !done2.load(Ordering::Relaxed) {
            peak = peak.max(tree_rss(root));
            own = own.max(rss_of(root));
            std::thread::sleep(Duration::from_millis(20));
        }
        (peak, own)
    });
    let out = child.wait_with_output().expect("wait");
    let wall = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let (peak, own) = sampler.join().unwrap_or((0, 0));
    assert!(
        out.status.success(),
        "command failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, peak, own)
}

/// Sum of VmRSS of `root` and all its descendants.
fn tree_rss(root: u32) -> u64 {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The field after the command name (which may hold spaces) is the state, then the ppid.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                    parent.insert(pid, ppid);
                }
            }
        }
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .filter(|&&p| in_tree(p))
        .map(|&p| rss_of(p))
        .sum()
}

/// Resident set of one process, bytes.
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 4096
}

fn probe_duration(p: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(p)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

/// The hand-written command: same inputs, same work, same preset, one ffmpeg pass.
fn hand_written(dir: &Path, clips: &Path, song: &Path, preset: &str, out: &Path) -> Command {
    // Voice and subtitles made outside the timed command (the job makes its own inside its timing).
    let voice = dir.join("voice.wav");
    if !voice.exists() {
        run(
            Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "165", "-w"])
                .arg(&voice)
                .arg(SCRIPT),
            "espeak",
        );
    }
    let dur = probe_duration(&voice);
    let ass = dir.join("subs.ass");
    let words: Vec<&str> = SCRIPT.split_whitespace().collect();
    let cues: Vec<String> = words.chunks(4).map(|c| c.join(" ")).collect();
    let per = dur / cues.len() as f64;
    let ts = |t: f64| {
        format!(
            "{}:{:02}:{:05.2}",
            (t / 3600.0) as u32,
            ((t % 3600.0) / 60.0) as u32,
            t % 60.0
        )
    };
    let mut text = String::from("[Script Info]\nScriptType: v4.00+\nPlayResX: 1080\nPlayResY: 1920\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\nStyle: Default,DejaVu Sans,74,&H0000FFFF,&H0000FFFF,&H00000000,&H80000000,-1,0,0,0,100,100,0,0,1,4,0,2,60,60,200,1\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n");
    for (i, c) in cues.iter().enumerate() {
        text.push_str(&format!(
            "Dialogue: 0,{},{},Default,,0,0,0,,{c}\n",
            ts(i as f64 * per),
            ts((i + 1) as f64 * per)
        ));
    }
    std::fs::write(&ass, text).expect("ass");
    let seg = dur / 5.0;
    let mut f = String::new();
    for i in 0..5 {
        f.push_str(&format!("[{i}:v]trim=0:{seg:.3},setpts=PTS-STARTPTS,crop=ih*9/16:ih,scale=1080:1920,setsar=1,fps=30,format=yuv420p[v{i}];"));
    }
    f.push_str(&format!(
        "[v0][v1][v2][v3][v4]concat=n=5:v=1:a=0,ass=filename={}[vout];",
        ass.display()
    ));
    f.push_str("[5:a]aresample=48000[voice];[6:a]aresample=48000,volume=0.1[music];[voice][music]amix=inputs=2:duration=first:normalize=0[aout]");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-y", "-hide_banner", "-loglevel", "error"]);
    for i in 0..5 {
        cmd.args(["-threads", "1", "-i"])
            .arg(clips.join(format!("clip{i}.mp4")));
    }
    cmd.arg("-i")
        .arg(&voice)
        .args(["-stream_loop", "-1", "-i"])
        .arg(song);
    cmd.args([
        "-filter_complex",
        &f,
        "-map",
        "[vout]",
        "-map",
        "[aout]",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        "23",
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        "-movflags",
        "+faststart",
        "-t",
        &format!("{dur:.3}"),
    ])
    .arg(out);
    cmd
}

/// One candidate: x264 preset, CRF, decoder threads per clip, and the footage folder it renders.
#[derive(Clone, Debug)]
struct Setting {
    name: String,
    preset: String,
    crf: u32,
    decoder_threads: u32,
    /// `render.parts` (0: one per core).
    parts: u32,
    /// `render.x264_params`.
    x264: String,
    clips: PathBuf,
}

/// An ffmpeg process of a job, as the sampler last saw it.
#[derive(Clone, Debug, Default)]
struct Ffmpeg {
    first: Option<Instant>,
    last: Option<Instant>,
    /// Peak resident set (VmHWM), bytes.
    hwm: u64,
    /// User + system CPU seconds at the last sample.
    cpu: f64,
    /// Of the render stage (it writes the job's `render.*` files), not a probe or a silence scan.
    render: bool,
}

/// One measured job.
struct Run {
    wall: f64,
    cpu: f64,
    /// The render stage's ffmpeg processes: wall (first start to last end) and CPU seconds (summed).
    render_wall: f64,
    render_cpu: f64,
    ffmpeg_peak: u64,
    size: u64,
    duration: f64,
    out: PathBuf,
}

/// User + system CPU seconds of `pid` so far.
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

/// Peak resident set (VmHWM) of `pid`, bytes.
fn hwm_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Descendants of `root` (itself excluded).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                    parent.insert(pid, ppid);
                }
            }
        }
    }
    let under = |mut p: u32| {
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == root => return true,
                Some(&pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent.keys().copied().filter(|&p| under(p)).collect()
}

/// Runs `cmd` to its end, following its ffmpeg descendants every 20 ms. Returns the wall time, the
/// CPU seconds of the whole tree (getrusage of the reaped children) and the ffmpeg processes seen.
fn measure_job(mut cmd: Command) -> (f64, f64, Vec<Ffmpeg>) {
    let cpu_before = children_cpu();
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let root = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut seen: HashMap<u32, Ffmpeg> = HashMap::new();
        while !done2.load(Ordering::Relaxed) {
            for pid in descendants(root) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() != "ffmpeg" {
                    continue;
                }
                let now = Instant::now();
                let f = seen.entry(pid).or_insert_with(|| Ffmpeg {
                    render: std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains("/render."))
                        .unwrap_or(false),
                    ..Ffmpeg::default()
                });
                f.first.get_or_insert(now);
                let (cpu, hwm) = (cpu_of(pid), hwm_of(pid));
                if let Some(cpu) = cpu {
                    f.cpu = f.cpu.max(cpu);
                    f.hwm = f.hwm.max(hwm);
                    f.last = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen.into_values().collect::<Vec<_>>()
    });
    let out = child.wait_with_output().expect("wait");
    let wall = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let seen = sampler.join().unwrap_or_default();
    assert!(
        out.status.success(),
        "command failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, children_cpu() - cpu_before, seen)
}

/// Runs a whole job of `s` into `dir/<name>.mp4`.
fn job(bin: &Path, dir: &Path, song: &Path, script: &Path, s: &Setting) -> Run {
    let name = &s.name;
    let st = dir.join(format!("state-{name}"));
    let _ = std::fs::remove_dir_all(&st);
    std::fs::create_dir_all(st.join("songs")).expect("mkdir");
    std::fs::copy(song, st.join("songs/song.mp3")).expect("copy song");
    let cfg = dir.join(format!("bench-{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[footage]\nprovider = \"local\"\nlocal_dir = \"{}\"\nclips = 5\nseconds_per_clip = 8.0\n\
             [voice]\nprovider = \"{BENCH_VOICE}\"\n\
             [render]\npreset = \"{}\"\ncrf = {}\ndecoder_threads = {}\nparts = {}\nx264_params = \"{}\"\n",
            s.clips.display(),
            s.preset,
            s.crf,
            s.decoder_threads,
            s.parts,
            s.x264
        ),
    )
    .expect("config");
    let out = dir.join(format!("{name}.mp4"));
    let mut cmd = Command::new(bin);
    cmd.args([
        "generate",
        "Why octopuses have three hearts",
        "--music",
        "--script",
    ])
    .arg(script)
    .arg("--out")
    .arg(&out)
    .arg("--config")
    .arg(&cfg)
    .arg("--state-dir")
    .arg(&st);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REELSMITH_") {
            cmd.env_remove(k);
        }
    }
    let (wall, cpu, ffmpegs) = measure_job(cmd);
    let _ = std::fs::remove_dir_all(&st);
    let renders: Vec<&Ffmpeg> = ffmpegs.iter().filter(|f| f.render).collect();
    let first = renders.iter().filter_map(|f| f.first).min();
    let last = renders.iter().filter_map(|f| f.last).max();
    Run {
        wall,
        cpu,
        render_wall: match (first, last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        },
        render_cpu: renders.iter().map(|f| f.cpu).sum(),
        ffmpeg_peak: ffmpegs.iter().map(|f| f.hwm).max().unwrap_or(0),
        size: std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        duration: probe_duration(&out),
        out,
    }
}

/// SSIM ("All") of `video` against `reference`, frame by frame.
fn ssim(video: &Path, reference: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(video)
        .arg("-i")
        .arg(reference)
        .args(["-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    err.rsplit("All:")
        .next()
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `preset/crf/decoder threads/parts/x264 params`, optionally after `name=`; missing fields from
/// `base`.
fn parse_setting(spec: &str, base: &Setting) -> Setting {
    let (name, body) = match spec.split_once('=') {
        Some((n, b)) => (Some(n.trim().to_string()), b),
        None => (None, spec),
    };
    let parts: Vec<&str> = body.split('/').map(str::trim).collect();
    let preset = parts
        .first()
        .filter(|p| !p.is_empty())
        .map_or(base.preset.clone(), |p| p.to_string());
    let crf = parts
        .get(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(base.crf);
    let decoder_threads = parts
        .get(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or(base.decoder_threads);
    let n_parts = parts
        .get(3)
        .and_then(|t| t.parse().ok())
        .unwrap_or(base.parts);
    let x264 = parts.get(4).map_or(base.x264.clone(), |x| x.to_string());
    Setting {
        name: name.unwrap_or_else(|| {
            format!("{preset}-crf{crf}-dec{decoder_threads}-parts{n_parts}-{x264}")
        }),
        preset,
        crf,
        decoder_threads,
        parts: n_parts,
        x264,
        clips: base.clips.clone(),
    }
}

/// The candidates compared with the default and MoneyPrinter's setting when
/// `RENDER_BENCH_SETTINGS` names none: the previous default (veryfast, CRF 23) and the fastest
/// settings whose SSIM reached MoneyPrinter's when encoding a lossless 10-second excerpt of this
/// composition (ultrafast at CRF 18 and 17: about a quarter of medium's CPU; superfast and veryfast
/// needed more CPU for the same SSIM, ultrafast at CRF 19 fell short).
/// The voice engine of every bench job (`voice.provider`): espeak-ng, installed wherever reelsmith
/// runs, cheap, and the same duration in every run.
const BENCH_VOICE: &str = "espeak";

const CANDIDATES: &str = "previous=ultrafast/17/1/1/;one-process=ultrafast/19/1/1/deblock=0,0:bframes=3;crf20=ultrafast/20/1/0/deblock=0,0:bframes=3";

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Built by cargo for this bench, from the same sources: never a stale binary.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_reelsmith"));
    let dir = root.join("target/bench-render");
    let (clips, song, script) = make_inputs(&dir);
    let repeats: usize = std::env::var("RENDER_BENCH_REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let defaults = Config::default().render;
    let default = Setting {
        name: "default".into(),
        preset: defaults.preset.as_str().into(),
        crf: defaults.crf,
        decoder_threads: defaults.decoder_threads,
        parts: defaults.parts,
        x264: defaults.x264_params.clone(),
        clips: clips.clone(),
    };
    let mut settings = vec![
        default.clone(),
        Setting {
            name: "moneyprinter".into(),
            preset: "medium".into(),
            crf: 23,
            // One process at x264's defaults, as MoviePy writes.
            parts: 1,
            x264: String::new(),
            ..default.clone()
        },
    ];
    let extra = std::env::var("RENDER_BENCH_SETTINGS").unwrap_or_else(|_| CANDIDATES.into());
    for spec in extra.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let s = parse_setting(spec, &default);
        let same_as = |o: &Setting| {
            (&o.preset, o.crf, o.decoder_threads, o.parts, &o.x264)
                == (&s.preset, s.crf, s.decoder_threads, s.parts, &s.x264)
        };
        if !settings.iter().any(same_as) {
            settings.push(s);
        }
    }
    println!(
        "2 cores, load average {} before the reference; {} candidates x {repeats} rounds, interleaved; \
         voice: espeak-ng in every job (voice.provider = \"{BENCH_VOICE}\")",
        loadavg(),
        settings.len()
    );
    let reference = job(
        &bin,
        &dir,
        &song,
        &script,
        &Setting {
            name: "lossless".into(),
            preset: "ultrafast".into(),
            crf: 0,
            parts: 1,
            x264: String::new(),
            ..default.clone()
        },
    );
    println!(
        "lossless reference (x264 CRF 0 = -qp 0): {:.2} s of video, {:.0} MiB, {:.1} s wall",
        reference.duration,
        reference.size as f64 / 1048576.0,
        reference.wall
    );

    // Settings measured in the first round only (their SSIM and size are the point, and on a
    // loaded machine a medium-preset job takes many minutes).
    let once_list = std::env::var("RENDER_BENCH_ONCE").unwrap_or_default();
    let once: Vec<&str> = once_list.split(',').map(str::trim).collect();
    // Round r runs the candidates rotated by r, every other round reversed, so that no setting
    // always runs first, or always after the same one, while the machine's load drifts.
    let mut runs: Vec<Vec<Run>> = settings.iter().map(|_| Vec::new()).collect();
    let mut quality: Vec<Option<f64>> = vec![None; settings.len()];
    for r in 0..repeats {
        let mut order: Vec<usize> = (0..settings.len()).collect();
        order.rotate_left(r % settings.len());
        if r % 2 == 1 {
            order.reverse();
        }
        if r > 0 {
            order.retain(|&i| !once.contains(&settings[i].name.as_str()));
        }
        let load = loadavg();
        for &i in &order {
            let run = job(&bin, &dir, &song, &script, &settings[i]);
            eprintln!(
                "round {} {}: wall {:.1} s, CPU {:.1} s, render {:.1} s wall / {:.1} s CPU",
                r + 1,
                settings[i].name,
                run.wall,
                run.cpu,
                run.render_wall,
                run.render_cpu
            );
            if quality[i].is_none() {
                // The encodes are deterministic: one SSIM per setting.
                quality[i] = Some(ssim(&run.out, &reference.out));
            }
            let _ = std::fs::remove_file(&run.out);
            runs[i].push(run);
        }
        println!(
            "round {}: load average {load} before, {} after",
            r + 1,
            loadavg()
        );
    }
    let _ = std::fs::remove_file(&reference.out);

    let mp_ssim = quality[1].unwrap_or(0.0);
    println!();
    println!(
        "Medians of the runs (n). render = the render stage's ffmpeg processes alone (the issue's \
         goal: render RT >= 1.5); RT = video seconds per wall second; CPU RT = video seconds per \
         CPU second x 2 (what 2 idle cores would give if fully used); job = the whole job."
    );
    println!("| settings | preset | CRF | x264 params | parts | dec threads | n | render wall s (min-max) | render RT | render CPU s | render CPU RT | job wall s | job RT | job CPU s | SSIM | vs MoneyPrinter | MiB | ffmpeg peak MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, s) in settings.iter().enumerate() {
        let rs = &runs[i];
        let rwalls: Vec<f64> = rs.iter().map(|r| r.render_wall).collect();
        let rwall = median(&rwalls);
        let rcpu = median(&rs.iter().map(|r| r.render_cpu).collect::<Vec<_>>());
        let wall = median(&rs.iter().map(|r| r.wall).collect::<Vec<_>>());
        let cpu = median(&rs.iter().map(|r| r.cpu).collect::<Vec<_>>());
        let dur = median(&rs.iter().map(|r| r.duration).collect::<Vec<_>>());
        let q = quality[i].unwrap_or(0.0);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {rwall:.1} ({:.1}-{:.1}) | {:.2} | {rcpu:.1} | {:.2} | {wall:.1} | {:.2} | {cpu:.1} | {q:.5} | {:+.5} | {:.1} | {:.0} |",
            s.name,
            s.preset,
            s.crf,
            s.x264,
            s.parts,
            s.decoder_threads,
            rs.len(),
            rwalls.iter().copied().fold(f64::INFINITY, f64::min),
            rwalls.iter().copied().fold(0.0, f64::max),
            dur / rwall.max(1e-9),
            dur / (rcpu / 2.0).max(1e-9),
            dur / wall.max(1e-9),
            q - mp_ssim,
            median(&rs.iter().map(|r| r.size as f64).collect::<Vec<_>>()) / 1048576.0,
            rs.iter().map(|r| r.ffmpeg_peak).max().unwrap_or(0) as f64 / 1048576.0
        );
    }

    if let Ok(presets) = std::env::var("RENDER_BENCH_PRESETS") {
        hand_written_table(&bin, &dir, &clips, &song, &script, &presets);
    }
}

/// The job against one hand-written ffmpeg command doing the same work, per preset.
fn hand_written_table(
    bin: &Path,
    dir: &Path,
    clips: &Path,
    song: &Path,
    script: &Path,
    presets: &str,
) {
    println!("| preset | what | wall s | peak MiB (tree RSS) | own peak MiB | output s |");
    println!("|---|---|---|---|---|---|");
    for preset in presets.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // The whole job, as a user runs it.
        let st = dir.join(format!("state-{preset}"));
        let _ = std::fs::remove_dir_all(&st);
        std::fs::create_dir_all(st.join("songs")).expect("mkdir");
        std::fs::copy(song, st.join("songs/song.mp3")).expect("copy song");
        let cfg = dir.join(format!("bench-{preset}.toml"));
        std::fs::write(
            &cfg,
            format!("[footage]\nprovider = \"local\"\nlocal_dir = \"{}\"\nclips = 5\nseconds_per_clip = 8.0\n[voice]\nprovider = \"{BENCH_VOICE}\"\n[render]\npreset = \"{preset}\"\n", clips.display()),
        )
        .expect("config");
        let out = dir.join(format!("job-{preset}.mp4"));
        let mut cmd = Command::new(bin);
        cmd.args([
            "generate",
            "Why octopuses have three hearts",
            "--music",
            "--script",
        ])
        .arg(script)
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&st);
        let (jw, jp, jo) = measure(cmd);
        let jd = probe_duration(&out);
        println!(
            "| {preset} | reelsmith job | {:.1} | {:.0} | {:.0} | {jd:.1} |",
            jw.as_secs_f64(),
            jp as f64 / 1048576.0,
            jo as f64 / 1048576.0
        );
        let hout = dir.join(format!("hand-{preset}.mp4"));
        let (hw, hp, _) = measure(hand_written(dir, clips, song, preset, &hout));
        let hd = probe_duration(&hout);
        println!(
            "| {preset} | hand-written ffmpeg | {:.1} | {:.0} | | {hd:.1} |",
            hw.as_secs_f64(),
            hp as f64 / 1048576.0
        );
        println!(
            "| {preset} | ratio job/hand | {:.2} | {:.2} | | |",
            jw.as_secs_f64() / hw.as_secs_f64(),
            jp as f64 / hp.max(1) as f64
        );
    }
}
