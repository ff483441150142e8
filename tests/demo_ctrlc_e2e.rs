//! Ctrl-C on the demo, as a terminal sends it (issue 14): the real app binary runs in demo mode
//! inside scripts/lib.sh's `with_secret_service` (the private Secret Service run-app.sh uses on
//! a desktop without one), in a private X server, as one process group, the way a shell starts
//! a job. Once the demo is up, its profile gets a real recovery phrase in that keychain (through
//! the `latchkey` CLI, which keeps it exactly where the app's onboarding would). Then SIGINT
//! goes to the whole group, as Ctrl-C does (twice; and SIGTERM, as `kill -- -PGID` does, and
//! SIGHUP, as a closing terminal does), and:
//! the group is gone within a bound; the app removed the phrase while the keychain still
//! answered, and logged no failure to do so; nothing is left in the job's TMPDIR (no keyring
//! home, no runtime dir, no demo directory, no phrase); no process of the job survives.
//!
//! Needs Xvfb, gnome-keyring, dbus-daemon and secret-tool. Gated like tests/app_e2e.rs: it runs
//! when LATCHKEY_APP_E2E=1 (scripts/test.sh sets it), and says so and does nothing otherwise.

mod support;
#[allow(dead_code)]
#[path = "support/webdriver.rs"]
mod webdriver;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use webdriver::{require_program, start_xvfb};

const APP: &str = env!("CARGO_BIN_EXE_latchkey-app");
/// How long the whole job may take to end after the signal: the teardown stops three nodes,
/// the door and a broker, and the script then stops two daemons.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// Inside `with_secret_service`: records the private bus's address, runs the app, and once it
/// has exited (the bus and keyring must still be up) records whether the keyring answers and
/// what it still holds for the app. Its own traps only let it outlive the signal: bash runs
/// them after the app has exited, and the app itself starts with default dispositions.
const INSIDE: &str = r#"
set -u
app=$1 report=$2
trap : INT TERM HUP
printf '%s\n' "$DBUS_SESSION_BUS_ADDRESS" > "$report/bus.tmp" && mv "$report/bus.tmp" "$report/bus"
status=0
"$app" --demo || status=$?
if printf %s alive | secret-tool store --label="after the app" latchkey-test after \
  && [ "$(secret-tool lookup latchkey-test after)" = alive ]; then
  echo yes > "$report/keyring-answered"
fi
secret-tool lookup service org.latchkey.app > "$report/phrase-after" 2>&1 || true
exit "$status"
"#;

/// The job: what `./scripts/run-app.sh` does once the app is built, minus the build.
const JOB: &str = r#"
set -euo pipefail
. "$1"
with_secret_service bash -c "$2" inside "$3" "$4"
"#;

fn gated() -> bool {
    if std::env::var("LATCHKEY_APP_E2E").as_deref() != Ok("1") {
        eprintln!(
            "demo_ctrlc_e2e: not run (set LATCHKEY_APP_E2E=1, as scripts/test.sh does, to run the real app)"
        );
        return false;
    }
    true
}

#[test]
fn ctrl_c_on_the_whole_job_removes_the_demo_key_then_everything_else() {
    if !gated() {
        return;
    }
    for program in [
        "gnome-keyring-daemon",
        "dbus-daemon",
        "secret-tool",
        "setsid",
    ] {
        require_program(
            program,
            "apt-get install gnome-keyring dbus-x11 libsecret-tools",
        );
    }
    let (_xvfb, display) = start_xvfb();
    // Ctrl-C pressed twice (the second lands during the clean-up), `kill -- -PGID`, and the
    // terminal closing.
    for (signal, times) in [("INT", 2), ("TERM", 1), ("HUP", 1)] {
        let started = Instant::now();
        signal_the_job(&display, signal, times);
        eprintln!(
            "demo_ctrlc_e2e: the SIG{signal} round took {} ms in all",
            started.elapsed().as_millis()
        );
    }
}

fn signal_the_job(display: &str, signal: &str, times: usize) {
    let outer = tempfile::tempdir().unwrap();
    // The job's TMPDIR: every mktemp of the script and the app's demo directory land here, so
    // whatever is left afterwards is a leak.
    let job_tmp = outer.path().join("tmp");
    let report = outer.path().join("report");
    std::fs::create_dir_all(&job_tmp).unwrap();
    std::fs::create_dir_all(&report).unwrap();
    let log_path = outer.path().join("job.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh");

    // `env --default-signal`: a terminal's job starts with default dispositions, whatever
    // this test runner was started with (a background job ignores SIGINT, and bash could not
    // trap it then).
    let child = Command::new("env")
        .args(["--default-signal=INT,TERM,HUP", "bash", "-c", JOB, "job"])
        .arg(&lib)
        .arg(INSIDE)
        .arg(APP)
        .arg(&report)
        .env("TMPDIR", &job_tmp)
        .env("DISPLAY", display)
        .env("RUST_LOG", "latchkey_app_lib=info")
        .env_remove("LATCHKEY_DEMO")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("bash did not start");
    let mut job = Job::new(child);
    let pgid = job.pid();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Up: the app logs this once its signal handlers are in place.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !read_log().contains("demo running;") {
        assert!(
            job.still_running(),
            "the job ended before the demo was up:\n{}",
            read_log()
        );
        assert!(
            Instant::now() < deadline,
            "the demo did not come up:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let bus = std::fs::read_to_string(report.join("bus"))
        .unwrap()
        .trim()
        .to_owned();
    let demo_dirs: Vec<PathBuf> = entries(&job_tmp)
        .into_iter()
        .filter(|p| name_starts_with(p, "latchkey-demo-"))
        .collect();
    assert_eq!(demo_dirs.len(), 1, "one demo directory: {demo_dirs:?}");
    assert!(
        entries(&job_tmp).len() >= 3,
        "the keyring's home and runtime dir are in the job's TMPDIR too: {:?}",
        entries(&job_tmp)
    );

    // A real recovery phrase for the demo profile, in the job's keychain.
    let init = Command::new(support::workspace_bin("latchkey"))
        .arg("--profile")
        .arg(demo_dirs[0].join("profile"))
        .arg("init")
        .env("DBUS_SESSION_BUS_ADDRESS", &bus)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "latchkey init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let lookup = Command::new("secret-tool")
        .args(["lookup", "service", "org.latchkey.app"])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus)
        .output()
        .unwrap();
    let phrase = String::from_utf8(lookup.stdout).unwrap();
    let words: Vec<&str> = phrase.split_whitespace().collect();
    assert_eq!(
        words.len(),
        24,
        "the demo profile's phrase is in the keychain"
    );

    // Ctrl-C, as a terminal sends it: to every process of the job.
    let signalled = Instant::now();
    for i in 0..times {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // A later signal may find the job already gone.
        assert!(sent.success() || i > 0);
    }
    // The job's leader may end first (bash dies of SIGTERM at once; only a subshell with
    // traps waits for the app): the job is over when its whole group is.
    let status = job.wait_within(EXIT_WITHIN).unwrap_or_else(|| {
        panic!(
            "the job's leader did not end within {EXIT_WITHIN:?} of SIG{signal}:\n{}",
            read_log()
        )
    });
    while !group_members(pgid).is_empty() {
        assert!(
            signalled.elapsed() < EXIT_WITHIN,
            "the job's processes {:?} did not end within {EXIT_WITHIN:?} of SIG{signal}:\n{}",
            group_members(pgid),
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "demo_ctrlc_e2e: SIG{signal}: the job ended in {} ms (leader: {status})",
        signalled.elapsed().as_millis()
    );
    let log = read_log();

    assert!(
        log.contains("the demo's recovery phrase was removed from the keychain"),
        "the app removed the demo's phrase:\n{log}"
    );
    assert!(
        !log.contains("could not be removed"),
        "the keychain was there when the app removed the demo's phrase:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(report.join("keyring-answered"))
            .unwrap_or_default()
            .trim(),
        "yes",
        "the keyring still answered after the app had exited:\n{log}"
    );
    let after = std::fs::read_to_string(report.join("phrase-after")).unwrap_or_default();
    assert!(
        after.trim().is_empty(),
        "the keychain holds nothing for the app any more: {} bytes left",
        after.len()
    );
    // No secret in the logs: no line carries a good part of the phrase.
    assert!(
        log.lines()
            .all(|line| words.iter().filter(|w| line.contains(*w)).count() < 6),
        "the job's log shows the phrase"
    );

    // Nothing left in the job's TMPDIR; if something is, say whether the phrase is in it.
    let left = walk(&job_tmp);
    if !left.is_empty() {
        let with_phrase: Vec<&PathBuf> = left
            .iter()
            .filter(|p| {
                std::fs::read(p).is_ok_and(|bytes| {
                    let text = String::from_utf8_lossy(&bytes);
                    words.iter().filter(|w| text.contains(*w)).count() >= 12
                })
            })
            .collect();
        panic!(
            "left in the job's TMPDIR after SIG{signal}: {left:?}; holding the phrase: {with_phrase:?}\n{log}"
        );
    }
    assert!(
        entries(&job_tmp).is_empty(),
        "empty directories left in the job's TMPDIR: {:?}",
        entries(&job_tmp)
    );

    // No process of the job lives on: not in its group, and none anywhere that was started
    // for it (the daemons run in sessions of their own; each names the job's TMPDIR).
    // The app's own helpers (WebKit's processes) notice its exit a moment later.
    let settle = Instant::now() + Duration::from_secs(3);
    let mut survivors = survivors(pgid, &job_tmp);
    while !survivors.is_empty() && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        survivors = self::survivors(pgid, &job_tmp);
    }
    assert!(
        survivors.is_empty(),
        "processes of the job survived SIG{signal}: {survivors:?}"
    );
}

fn name_starts_with(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Every file (not directory) under `dir`, sockets included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in entries(dir) {
        if path.is_dir() && !path.is_symlink() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn group_members(pgid: u32) -> Vec<String> {
    processes(|pid_pgid, _| pid_pgid == pgid)
}

/// Live processes in process group `pgid`, or whose command line or environment names
/// `job_tmp`.
fn survivors(pgid: u32, job_tmp: &Path) -> Vec<String> {
    let needle = job_tmp.to_string_lossy().into_owned();
    processes(|group, proc_dir| {
        let mentions = |file: &str| {
            std::fs::read(proc_dir.join(file))
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle))
        };
        group == pgid || mentions("cmdline") || mentions("environ")
    })
}

/// `pid comm` of each live process that `pick(its process group, its /proc dir)` picks
/// (zombies are dead: only their exit status waits to be read).
fn processes(pick: impl Fn(u32, &Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for proc_dir in entries(Path::new("/proc")) {
        let Some(pid) = proc_dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so split after its `)`.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let group = fields.get(2).and_then(|g| g.parse::<u32>().ok());
        if group.is_some_and(|g| pick(g, &proc_dir)) {
            let comm = head.split_once(" (").map_or("?", |(_, c)| c);
            found.push(format!("{pid} {comm}"));
        }
    }
    found
}

/// The job's leader and its process group id; whichever way the test ends, the whole group
/// is then killed (SIGKILL) and the leader reaped, so a failure leaves no app running.
struct Job(Option<Child>, u32);

impl Job {
    fn new(child: Child) -> Job {
        let pgid = child.id();
        Job(Some(child), pgid)
    }

    fn pid(&self) -> u32 {
        self.1
    }

    fn still_running(&mut self) -> bool {
        matches!(self.0.as_mut().unwrap().try_wait(), Ok(None))
    }

    fn wait_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.0.as_mut().unwrap().try_wait() {
                self.0 = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The group may outlive its leader (a stray the test just reported).
        let group = format!("-{}", self.1);
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.0.take() {
            let _ = child.wait();
        }
    }
}
