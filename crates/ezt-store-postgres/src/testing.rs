//! A PostgreSQL for tests (feature `testing`): `database_url().await` answers the URL of an
//! empty schema of its own on a shared server.
//!
//! The server is `EZT_TEST_DATABASE_URL` when set; otherwise one is started per test process
//! with `scripts/pg.sh attach` (initdb in a temp dir, own port, stopped and removed when the
//! process ends, however it ends: the script waits for its stdin, a pipe from this process, to
//! close). No PostgreSQL is a test failure with the reason, never a skip.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The server of this process: its URL, and the script and pipe that keep it alive.
struct Server {
    url: String,
    _keep: Mutex<Option<(Child, ChildStdin)>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("EZT_TEST_DATABASE_URL") {
            if !url.is_empty() {
                return Server {
                    url,
                    _keep: Mutex::new(None),
                };
            }
        }
        start_server()
    })
}

fn start_server() -> Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg.sh");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("ezt-pg-{}-{nanos}", std::process::id()));
    let mut child = Command::new("bash")
        .arg(script)
        .arg("attach")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the URL from pg.sh");
    let url = line.trim().to_string();
    assert!(
        url.starts_with("postgres://"),
        "PostgreSQL did not start for the tests (scripts/pg.sh attach {}; see its message above). \
         Install it (scripts/test-deps.sh) or set EZT_TEST_DATABASE_URL",
        dir.display()
    );
    let stdin = child.stdin.take().expect("piped stdin");
    Server {
        url,
        _keep: Mutex::new(Some((child, stdin))),
    }
}

/// The URL of the test server's own database (`postgres`), shared by every caller.
pub fn server_url() -> String {
    server().url.clone()
}

/// A URL whose connections see a fresh, empty schema only (`search_path`), so every test gets
/// a database of its own without the cost of `CREATE DATABASE`.
pub async fn database_url() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = server_url();
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL at {base}: {e}"));
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap_or_else(|e| panic!("create schema {schema}: {e}"));
    drop(client);
    let _ = task.await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// A PostgreSQL server of one test's own, for tests that stop, crash or restart it (the shared
/// server of [`database_url`] must stay up). Started by `scripts/pg.sh start` in a temp dir;
/// stopped and removed when dropped. A restart keeps the port, so the URL stays valid.
pub struct OwnServer {
    dir: std::path::PathBuf,
    url: String,
}

impl OwnServer {
    /// Starts one (initdb + start, a few seconds).
    pub fn start() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ezt-pg-own-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let url = pg_sh("start", &dir);
        assert!(url.starts_with("postgres://"), "{url}");
        Self { dir, url }
    }

    /// Its URL (the `postgres` database).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `pg_ctl stop` (clean shutdown).
    pub fn stop(&self) {
        pg_sh("stop", &self.dir);
    }

    /// `pg_ctl stop -m immediate`: no shutdown checkpoint, crash recovery at the next start.
    pub fn crash(&self) {
        pg_sh("crash", &self.dir);
    }

    /// Starts it again, on the same port.
    pub fn restart(&self) {
        let url = pg_sh("start", &self.dir);
        assert_eq!(url, self.url, "a restart keeps the URL");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `scripts/pg.sh CMD DIR`, failing the test with its message; answers what it printed.
fn pg_sh(cmd: &str, dir: &std::path::Path) -> String {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg.sh"))
        .arg(cmd)
        .arg(dir)
        .output()
        .expect("run scripts/pg.sh");
    assert!(
        out.status.success(),
        "pg.sh {cmd} {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
