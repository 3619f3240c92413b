//! Render benchmark: a 38-second 1080x1920 short from five 10-second 1920x1080 clips, with
//! subtitles and music, made by a whole reelsmith job (`reelsmith generate`, the same actors as the
//! daemon), with the default render settings and with MoneyPrinter's (MoviePy writes with libx264 at
//! its defaults: preset medium, CRF 23), side by side. Each is measured for wall time, real-time
//! factor (video seconds per wall second), CPU seconds (user + system of the whole process tree),
//! SSIM against a lossless render of the same composition (`preset ultrafast`, CRF 0: x264's
//! lossless mode, whose decoded frames are identical to `-qp 0`'s), file size and peak memory (the
//! sum of the resident sets of the process and all its descendants, sampled every 20 ms). The
//! composition is the same in every run: the same script, voice, clips (a local folder), song and
//! subtitles; only the encoder settings differ.
//!
//! Run: `cargo build --release && cargo bench --bench render`. More settings to compare:
//! `RENDER_BENCH_SETTINGS="ultrafast/18/2,superfast/20/2"` (preset/CRF/decoder threads). The old
//! job-against-hand-written-ffmpeg table: `RENDER_BENCH_PRESETS=veryfast,medium`. Inputs are made
//! once under `target/bench-render/`.

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

fn make_inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let clips = dir.join("clips");
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
                    "-preset",
                    "veryfast",
                    "-crf",
                    "20",
                ])
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
    (clips, song, script)
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
fn measure(cmd: Command) -> (Duration, u64, u64) {
    let m = measure_cpu(cmd);
    (m.0, m.1, m.2)
}

/// [`measure`], plus the CPU seconds of the process tree.
fn measure_cpu(mut cmd: Command) -> (Duration, u64, u64, f64) {
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
    (wall, peak, own, children_cpu() - cpu_before)
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

/// Encoder settings of one run: x264 preset, CRF, decoder threads per clip (`None`: the defaults).
#[derive(Clone, Debug)]
struct Setting {
    name: String,
    render: Option<(String, u32, u32)>,
}

/// One measured job.
struct Run {
    wall: f64,
    cpu: f64,
    peak: u64,
    size: u64,
    duration: f64,
    out: PathBuf,
}

/// Runs a whole job with `render` settings (none: the defaults) into `dir/<name>.mp4`.
fn job(
    bin: &Path,
    dir: &Path,
    clips: &Path,
    song: &Path,
    script: &Path,
    name: &str,
    render: &str,
) -> Run {
    let st = dir.join(format!("state-{name}"));
    let _ = std::fs::remove_dir_all(&st);
    std::fs::create_dir_all(st.join("songs")).expect("mkdir");
    std::fs::copy(song, st.join("songs/song.mp3")).expect("copy song");
    let cfg = dir.join(format!("bench-{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[footage]\nprovider = \"local\"\nlocal_dir = \"{}\"\nclips = 5\nseconds_per_clip = 8.0\n[render]\n{render}",
            clips.display()
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
    let (wall, peak, _, cpu) = measure_cpu(cmd);
    let _ = std::fs::remove_dir_all(&st);
    Run {
        wall: wall.as_secs_f64(),
        cpu,
        peak,
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

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/release/reelsmith");
    if !bin.exists() {
        run(
            Command::new("cargo")
                .args(["build", "--release"])
                .current_dir(&root),
            "cargo build --release",
        );
    }
    let dir = root.join("target/bench-render");
    let (clips, song, script) = make_inputs(&dir);
    let defaults = Config::default().render;

    let mut settings = vec![
        Setting {
            name: "default".into(),
            render: None,
        },
        Setting {
            name: "moneyprinter".into(),
            render: Some(("medium".into(), 23, defaults.decoder_threads)),
        },
    ];
    if let Ok(extra) = std::env::var("RENDER_BENCH_SETTINGS") {
        for s in extra.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = s.split('/').collect();
            let preset = parts.first().copied().unwrap_or("veryfast").to_string();
            let crf = parts.get(1).and_then(|c| c.parse().ok()).unwrap_or(23);
            let threads = parts
                .get(2)
                .and_then(|t| t.parse().ok())
                .unwrap_or(defaults.decoder_threads);
            settings.push(Setting {
                name: format!("{preset}-crf{crf}-dec{threads}"),
                render: Some((preset, crf, threads)),
            });
        }
    }
    let reference = job(
        &bin,
        &dir,
        &clips,
        &song,
        &script,
        "lossless",
        "preset = \"ultrafast\"\ncrf = 0\n",
    );
    println!(
        "2 cores, load average {} before the runs; lossless reference: {:.1} s of video, {:.0} MiB",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        reference.duration,
        reference.size as f64 / 1048576.0
    );
    println!("| settings | preset | CRF | decoder threads | wall s | real-time factor | CPU s | SSIM | MiB | peak MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in &settings {
        let (preset, crf, threads) = s.render.clone().unwrap_or((
            defaults.preset.to_string(),
            defaults.crf,
            defaults.decoder_threads,
        ));
        let render = format!("preset = \"{preset}\"\ncrf = {crf}\ndecoder_threads = {threads}\n");
        let r = job(&bin, &dir, &clips, &song, &script, &s.name, &render);
        let q = ssim(&r.out, &reference.out);
        println!(
            "| {} | {preset} | {crf} | {threads} | {:.1} | {:.2} | {:.1} | {q:.4} | {:.1} | {:.0} |",
            s.name,
            r.wall,
            r.duration / r.wall,
            r.cpu,
            r.size as f64 / 1048576.0,
            r.peak as f64 / 1048576.0
        );
    }
    let _ = std::fs::remove_file(&reference.out);

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
            format!("[footage]\nprovider = \"local\"\nlocal_dir = \"{}\"\nclips = 5\nseconds_per_clip = 8.0\n[render]\npreset = \"{preset}\"\n", clips.display()),
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
