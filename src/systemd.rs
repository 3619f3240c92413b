//! sd_notify: READY, STATUS, STOPPING, WATCHDOG and EXTEND_TIMEOUT_USEC datagrams to
//! `$NOTIFY_SOCKET`. Without that variable (not under systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification (`"READY=1"`, `"STATUS=..."`). Errors are ignored: systemd may be gone.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    // Never wait for a reader: a full notify queue (systemd busy, or nobody reading) drops this
    // message instead of stalling the thread that sent it (often the actor system's).
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let path = path.to_string_lossy().to_string();
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr).is_ok(),
            Err(_) => false,
        }
    } else {
        sock.send_to(state.as_bytes(), &path).is_ok()
    }
}

/// Shortest watchdog ping period: a `WATCHDOG_USEC` below twice this cannot be honoured anyway, and
/// a zero period would make `tokio::time::interval` panic.
pub const MIN_WATCHDOG_PERIOD: Duration = Duration::from_millis(10);

/// Half of `$WATCHDOG_USEC` when systemd asked for watchdog pings (and they are for this process).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_period(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from the variables' values: `None` unless `usec` is a positive whole
/// number and `pid` (when set and a number) is `me`; never shorter than [`MIN_WATCHDOG_PERIOD`].
/// No value of either variable panics.
pub fn watchdog_period(
    usec: Option<&std::ffi::OsStr>,
    pid: Option<&std::ffi::OsStr>,
    me: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if let Some(pid) = pid.and_then(|p| p.to_str()?.trim().parse::<u32>().ok()) {
        if pid != me {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(MIN_WATCHDOG_PERIOD))
}

/// Who runs a job: this host and process, recorded in each attempt's `running` event so that a
/// shared store (several daemons later) can tell whose attempt it is.
pub fn owner() -> serde_json::Value {
    serde_json::json!({ "host": hostname(), "pid": std::process::id() })
}

/// This machine's host name (`unknown` if the system will not say).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn watchdog_period_is_never_zero_and_follows_the_pid() {
        let p = |u: &str, pid: Option<&str>| {
            watchdog_period(Some(OsStr::new(u)), pid.map(OsStr::new), 42)
        };
        assert_eq!(p("1", None), Some(MIN_WATCHDOG_PERIOD));
        assert_eq!(p("0", None), None);
        assert_eq!(p("30000000", None), Some(Duration::from_secs(15)));
        assert_eq!(p("30000000", Some("42")), Some(Duration::from_secs(15)));
        assert_eq!(p("30000000", Some("41")), None);
        assert_eq!(p("-5", None), None);
        assert_eq!(p("lots", None), None);
        assert!(p(&u64::MAX.to_string(), None).is_some());
        assert_eq!(watchdog_period(None, None, 42), None);
    }
}
