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

/// Half of `$WATCHDOG_USEC` when systemd asked for watchdog pings (and they are for this process).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Who runs a job: this host and process, recorded in each attempt's `running` event so that a
/// shared store (several daemons later) can tell whose attempt it is.
pub fn owner() -> serde_json::Value {
    let mut buf = [0u8; 256];
    // gethostname writes at most buf.len() bytes and NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    };
    serde_json::json!({ "host": host, "pid": std::process::id() })
}
