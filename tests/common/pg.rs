//! A real PostgreSQL server for tests (Debian's `postgresql`, binaries in `PG_BIN`): a cluster in a
//! temp dir made by `initdb`, run by `postgres -D dir -k dir -p PORT` as the `postgres` account
//! when the tests run as root (PostgreSQL refuses root), stopped on drop. It can be stopped and
//! started again on the same data and port (an outage under a running daemon).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgServer {
    child: Option<Child>,
    pub port: u16,
    data: PathBuf,
    dir: tempfile::TempDir,
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn as_pg(cmd: &str) -> Command {
    if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    }
}

/// Whether PostgreSQL is installed; tests that need it say so and skip when it is not (CI installs
/// it, so there they always run).
pub fn available() -> bool {
    let ok = Path::new(&format!("{PG_BIN}/initdb")).exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is missing ({PG_BIN}); .ci/run installs it"
        );
        eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql)");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let st = as_pg(&format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb (apt-get install postgresql)");
        assert!(st.success(), "initdb failed");
        let mut s = PgServer {
            child: None,
            port: free_port(),
            data,
            dir,
        };
        s.run();
        s
    }

    /// Starts the server on its data and port.
    pub fn run(&mut self) {
        assert!(self.child.is_none());
        let child = as_pg(&format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args(["-c", "max_connections=200", "-c", "fsync=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ok = Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("postgres did not start within 60 s");
    }

    /// Stops the server (fast shutdown: connections are closed) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The postmaster's pid (the child may be `runuser`, which waits for it).
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            // SAFETY: signalling a process we started.
            unsafe { libc::kill(pid, libc::SIGINT) };
        } else {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement as the superuser (psql over TCP).
    pub fn sql(&self, db: &str, statement: &str) -> String {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-At", "-c", statement])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new empty database; answers its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
