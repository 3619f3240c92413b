//! Finding the media tools (ffmpeg, ffprobe, espeak-ng) and naming the Debian package that provides a
//! missing one. A lookup only searches `PATH`; it runs nothing.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The configured tools, with the config key and Debian package of each.
pub fn tools(cfg: &Config) -> [(&str, &str, &str); 3] {
    [
        ("tools.ffmpeg", cfg.tools.ffmpeg.as_str(), "ffmpeg"),
        ("tools.ffprobe", cfg.tools.ffprobe.as_str(), "ffmpeg"),
        ("tools.espeak", cfg.tools.espeak.as_str(), "espeak-ng"),
    ]
}

/// Where `program` would be run from: itself when it contains a slash, else the first match on PATH.
pub fn resolve(program: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
}

/// One line per missing tool: `ffmpeg (tools.ffmpeg = "ffmpeg") not found: apt-get install ffmpeg`.
pub fn missing(cfg: &Config) -> Vec<String> {
    tools(cfg)
        .iter()
        .filter(|(_, prog, _)| resolve(prog).is_none())
        .map(|(key, prog, pkg)| {
            format!("{prog} ({key} = \"{prog}\") not found: install the Debian package `{pkg}` (apt-get install {pkg})")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_their_package() {
        let mut cfg = Config::default();
        cfg.tools.espeak = "/nonexistent/espeak-ng".into();
        cfg.tools.ffmpeg = "sh".into();
        let m = missing(&cfg);
        assert!(m
            .iter()
            .any(|l| l.contains("tools.espeak") && l.contains("apt-get install espeak-ng")));
        assert!(!m.iter().any(|l| l.contains("tools.ffmpeg")));
    }
}
