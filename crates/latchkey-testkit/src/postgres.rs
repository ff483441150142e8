//! A throwaway PostgreSQL cluster for tests: Debian's `postgresql` package binaries, a data
//! directory in a temporary directory, listening on 127.0.0.1 at a free port (and a unix socket
//! in the same directory) only, trust authentication for its one superuser. `fsync` stays on:
//! the node's tests check that acknowledged writes survive.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: there the server runs as the
//! `postgres` user the package creates (or `nobody`), which owns the temporary directory.
//!
//! **The server never outlives the test process.** It is started by a small shell that waits
//! on a pipe from this process; when the pipe closes (the [`Cluster`] dropped, or the test
//! process exited or was killed, which closes every descriptor), the shell stops the server
//! (fast shutdown), waits for it and removes the directory. So a cluster kept in a `static`
//! for a whole test binary is cleaned up too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The one role of the cluster (a superuser; trust authentication, loopback only).
pub const USER: &str = "latchkey";

/// A running throwaway cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    keeper: Child,
    /// Closing it stops the server (see the module docs).
    pipe: Option<ChildStdin>,
}

/// Where Debian's PostgreSQL binaries are: `$LATCHKEY_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` that holds `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LATCHKEY_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of a user in /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == user)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

fn is_root() -> bool {
    // The effective uid of this process: /proc/self is owned by it.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl Cluster {
    /// Creates and starts a cluster; panics with the server's log when it cannot (tests only).
    pub fn start() -> Cluster {
        let bin = bin_dir().expect(
            "PostgreSQL binaries not found: install Debian's postgresql package \
             (scripts/lib.sh lists it) or set LATCHKEY_PG_BIN",
        );
        let run_as = is_root().then(|| {
            passwd_ids("postgres")
                .or_else(|| passwd_ids("nobody"))
                .expect("running as root, and neither a postgres nor a nobody user exists")
        });
        let mut last_log = String::new();
        // A new directory and port each try: a failed start's keeper removes its directory.
        for _ in 0..5 {
            let dir = init(&bin, run_as);
            match Cluster::spawn(&bin, &dir, crate::free_port(), run_as) {
                Ok(cluster) => return cluster,
                Err(log) => last_log = log,
            }
        }
        panic!("the PostgreSQL server did not start; its log:\n{last_log}");
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        port: u16,
        run_as: Option<(u32, u32)>,
    ) -> Result<Cluster, String> {
        let log = dir.join("server.log");
        // $1 = postgres binary, $2 = data dir, $3 = socket dir, $4 = port, $5 = log, $6 = the
        // directory to remove at the end.
        let script = r#"
            "$1" -D "$2" -k "$3" -p "$4" -c listen_addresses=127.0.0.1 -c fsync=on \
                -c synchronous_commit=on -c max_connections=300 </dev/null >"$5" 2>&1 &
            pid=$!
            # Wait for the pipe from the test process to close (EOF), then stop the server.
            cat >/dev/null
            kill -INT "$pid" 2>/dev/null
            wait "$pid"
            rm -rf "$6"
        "#;
        let mut keeper = Command::new("sh");
        keeper
            .args(["-c", script, "latchkey-pg-keeper"])
            .arg(bin.join("postgres"))
            .arg(dir.join("data"))
            .arg(dir)
            .arg(port.to_string())
            .arg(&log)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut keeper = as_user(&mut keeper, run_as)
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let pipe = keeper.stdin.take();
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            port,
            keeper,
            pipe,
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(cluster.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", USER, "-d", "postgres"])
                .args(["-p", &port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(cluster);
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            // The server gave up (most likely the port was taken between the pick and the bind).
            if Instant::now() > until || log_text.contains("could not create any TCP/IP sockets") {
                cluster.stop_server();
                return Err(log_text);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and waits for the keeper shell.
    fn stop_server(&mut self) {
        drop(self.pipe.take());
        let _ = self.keeper.wait();
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("server.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The URL of database `name` (which need not exist).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs `sql` in database `name` with psql and returns its unaligned, tuples-only output
    /// (one row a line). Panics when psql fails (tests only).
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.url(name))
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// A new cluster directory (owned by `run_as`) with an initialized data directory in it.
fn init(bin: &Path, run_as: Option<(u32, u32)>) -> PathBuf {
    use rand_core::RngCore;
    // Not tempfile::TempDir: the keeper shell removes the directory after the server stopped,
    // which may be after this process exited.
    let dir = std::env::temp_dir().join(format!(
        "latchkey-pg-{}-{:016x}",
        std::process::id(),
        rand_core::OsRng.next_u64()
    ));
    std::fs::create_dir(&dir).expect("create the cluster directory");
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster directory");
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C"])
        // Only initdb's own syncing of the template files is skipped (a crash while the test
        // sets up loses nothing worth keeping); the server runs with fsync on.
        .arg("--no-sync")
        .stdin(Stdio::null());
    let out = as_user(&mut initdb, run_as).output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// `command` run as `(uid, gid)` when given (this process is root), else as this process.
fn as_user(command: &mut Command, run_as: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = run_as {
        use std::os::unix::process::CommandExt;
        // std clears the supplementary groups when root changes uid.
        command.uid(uid).gid(gid);
        // A HOME the server's user may read (psqlrc, locale lookups).
        command.env("HOME", "/");
    }
    command
}
