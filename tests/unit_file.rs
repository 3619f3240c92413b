//! The systemd unit: it declares what the daemon relies on (notify readiness, a watchdog, state and
//! runtime directories, restart on failure) and `systemd-analyze verify` accepts it, checked on a
//! copy whose ExecStart/ExecReload point at the binary under test.

use std::process::Command;

const UNIT: &str = include_str!("../systemd/reelsmith.service");

fn directive(name: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_declares_notify_watchdog_directories_and_restart() {
    assert_eq!(directive("Type"), ["notify"]);
    assert_eq!(directive("StateDirectory"), ["reelsmith"]);
    assert_eq!(directive("RuntimeDirectory"), ["reelsmith"]);
    assert_eq!(directive("Restart"), ["on-failure"]);
    let watchdog = directive("WatchdogSec");
    assert_eq!(watchdog.len(), 1, "one WatchdogSec");
    assert!(
        watchdog[0]
            .trim_end_matches('s')
            .parse::<u32>()
            .is_ok_and(|s| s >= 2),
        "{watchdog:?}"
    );
    // The stop timeout leaves room for the 10 s shutdown.
    let stop = directive("TimeoutStopSec");
    assert!(
        stop.iter().all(|s| s
            .trim_end_matches('s')
            .parse::<u32>()
            .is_ok_and(|s| s >= 10)),
        "{stop:?}"
    );
    assert!(directive("ExecStart")[0].contains(" serve"));
    assert!(directive("NoNewPrivileges") == ["yes"] && directive("ProtectSystem") == ["strict"]);
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let bin = env!("CARGO_BIN_EXE_reelsmith");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("reelsmith.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/reelsmith", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is missing: install the Debian package `systemd` (see .ci/run)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify also reports problems as warnings on stderr with exit 0; only lines about other units
    // (none here) would be acceptable.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("reelsmith")).collect();
    assert!(ours.is_empty(), "warnings about the unit:\n{stderr}");
}
