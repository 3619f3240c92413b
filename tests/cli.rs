//! Command-line conventions of the real binary: `completions <shell>` prints scripts a shell
//! loads (bash's is sourced and asked to complete commands and options), a bad shell is refused
//! with the choices, `man` prints a page `man` renders and `man --dir` writes one page per command,
//! and `generate` draws a progress bar (stage, percentage, ETA, redrawn in place) on a terminal (a
//! pseudo-terminal from util-linux's `script`) while a pipe gets plain lines without control
//! characters.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run reelsmith")
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What bash's completion offers for the words typed so far (the last one being completed).
fn bash_complete(words: &[&str]) -> Vec<String> {
    let script = format!(
        "source <('{BIN}' completions bash) || exit 3\n\
         COMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         _reelsmith reelsmith \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$((COMP_CWORD-1))]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_load_in_their_shells_and_complete_commands_and_options() {
    let offered = bash_complete(&["reelsmith", "ge"]);
    assert_eq!(offered, vec!["generate"], "{offered:?}");
    let offered = bash_complete(&["reelsmith", "generate", "--sub"]);
    assert_eq!(offered, vec!["--subtitles-style"], "{offered:?}");
    let offered = bash_complete(&["reelsmith", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(offered.iter().any(|o| o == shell), "{offered:?}");
    }
    let offered = bash_complete(&["reelsmith", "ctl", "pa"]);
    assert!(offered.iter().any(|o| o == "pause"), "{offered:?}");

    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.status.success());
    let text = String::from_utf8_lossy(&zsh.stdout);
    assert!(text.starts_with("#compdef reelsmith"), "{text}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.status.success());
    let text = String::from_utf8_lossy(&fish.stdout);
    assert!(
        text.contains("complete -c reelsmith") && text.contains("generate"),
        "{text}"
    );
    // Where the shells are installed, their parsers accept the scripts.
    for (shell, out, check) in [("zsh", &zsh, "-n"), ("fish", &fish, "--no-execute")] {
        if !has(shell) {
            eprintln!("{shell} not installed: its script's syntax is not checked");
            continue;
        }
        let mut child = Command::new(shell)
            .arg(check)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let r = child.wait_with_output().unwrap();
        assert!(
            r.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }

    let bad = run(&["completions", "powershell"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("powershell") && err.contains("bash, zsh, fish"),
        "{err}"
    );
}

#[test]
fn man_prints_a_page_and_writes_one_per_command() {
    let out = run(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(page.contains(".TH reelsmith 1"), "{page}");
    if has("man") {
        let mut child = Command::new("man")
            .args(["-l", "-"])
            .env("MANWIDTH", "100")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let r = child.wait_with_output().unwrap();
        // Without a terminal man still overstrikes (bold is `X\bX`): drop what a backspace erases.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&r.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(r.status.success());
        assert!(
            text.contains("NAME") && text.contains("SUBCOMMANDS"),
            "{text}"
        );
        assert!(text.contains("generate"), "{text}");
    } else {
        eprintln!("man not installed: the page is not rendered");
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("man1");
    let out = run(&["man", "--dir", target.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    for name in [
        "reelsmith.1",
        "reelsmith-generate.1",
        "reelsmith-ctl-pause.1",
    ] {
        let p = target.join(name);
        assert!(p.is_file(), "{name} missing");
        assert!(listed.contains(&p.display().to_string()), "{listed}");
    }
    let generate = std::fs::read_to_string(target.join("reelsmith-generate.1")).unwrap();
    assert!(generate.contains("subtitles\\-style"), "{generate}");
}

fn generate_args(dir: &Path, out: &str) -> Vec<String> {
    let cfg = dir.join("cfg.toml");
    std::fs::write(
        &cfg,
        offline_config(&format!("{SMALL_RENDER}[voice]\nprovider = \"espeak\"\n")),
    )
    .unwrap();
    let script = dir.join("script.txt");
    std::fs::write(
        &script,
        "Octopuses have three hearts. Two pump blood to the gills. One pumps it to the body.",
    )
    .unwrap();
    [
        "generate",
        "--config",
        cfg.to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
        "--script",
        script.to_str().unwrap(),
        "--out",
        dir.join(out).to_str().unwrap(),
        "Octopus hearts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn generate_draws_a_bar_on_a_terminal_and_plain_lines_in_a_pipe() {
    require_media_tools();
    assert!(
        has("script"),
        "util-linux's `script` is missing (Debian's bsdutils)"
    );
    let dir = tempfile::tempdir().unwrap();

    // A terminal: `script` runs it on a pseudo-terminal and copies what it drew to stdout.
    let args = generate_args(dir.path(), "tty.mp4");
    let line = std::iter::once(BIN.to_string())
        .chain(args)
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("COLUMNS", "100")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let tty = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "generate on a terminal: {tty}");
    assert!(dir.path().join("tty.mp4").is_file());
    // The bar is redrawn in place: carriage return and erase-line before each drawing.
    let drawings: Vec<&str> = tty.split("\r\x1b[2K").skip(1).collect();
    assert!(drawings.len() >= 5, "{tty:?}");
    let bars: Vec<&str> = drawings
        .iter()
        .map(|d| d.split(['\r', '\n']).next().unwrap_or(""))
        .filter(|d| d.contains('['))
        .collect();
    assert!(
        bars.iter()
            .any(|b| b.starts_with("render ") && b.contains("ETA")),
        "no render stage drawn: {bars:?}"
    );
    assert!(
        bars.iter().any(|b| b.starts_with("voice ")),
        "no voice stage drawn: {bars:?}"
    );
    for b in &bars {
        assert!(b.chars().count() <= 99, "wider than the terminal: {b:?}");
    }
    let pcts: Vec<u32> = bars
        .iter()
        .filter_map(|b| b.split('%').next()?.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        pcts.windows(2).all(|w| w[0] <= w[1]),
        "the bar went back: {pcts:?}"
    );
    assert!(
        bars.last()
            .is_some_and(|b| b.starts_with("done ") && b.contains("100%")),
        "{bars:?}"
    );
    assert!(tty.contains("[SUCCESS] Video generation complete"), "{tty}");

    // A pipe: the same story as plain lines.
    let args = generate_args(dir.path(), "pipe.mp4");
    let out = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{plain}");
    assert!(
        !plain.contains('\r') && !plain.contains('\x1b'),
        "{plain:?}"
    );
    assert!(plain.contains("  rendering: 100%"), "{plain}");
    assert!(
        plain.contains("[SUCCESS] Video generation complete"),
        "{plain}"
    );
    assert!(dir.path().join("pipe.mp4").is_file());
}
