//! `exec:/path`: runs a program with the command's arguments as argv entries (split on NUL
//! bytes), never through a shell, with a time limit; on timeout its whole process group is
//! killed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{ActionRequest, Actuator, ActuatorError, MAX_OUTPUT};

#[derive(Debug)]
pub struct ExecActuator {
    pub program: PathBuf,
    /// Placed before the command's own arguments.
    pub fixed_args: Vec<String>,
    pub timeout: Duration,
}

/// The command's arguments as argv entries: empty means none; otherwise NUL separates entries.
pub fn argv_from_args(args: &[u8]) -> Vec<&OsStr> {
    if args.is_empty() {
        return Vec::new();
    }
    args.split(|b| *b == 0).map(OsStr::from_bytes).collect()
}

impl Actuator for ExecActuator {
    fn run<'a>(
        &'a self,
        request: &'a ActionRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ActuatorError>> {
        Box::pin(self.exec(request))
    }
}

impl ExecActuator {
    async fn exec(&self, request: &ActionRequest) -> Result<Vec<u8>, ActuatorError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.fixed_args)
            .args(argv_from_args(&request.args))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LATCHKEY_ACTION", &request.action)
            .env("LATCHKEY_SENDER", request.sender.to_string())
            .env("LATCHKEY_DEVICE", request.device.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| ActuatorError::Start(format!("{}: {e}", self.program.display())))?;
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s)));
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(status) => status.map_err(|e| ActuatorError::Failed(e.to_string()))?,
            Err(_) => {
                if let Some(pid) = child.id() {
                    // The program and anything it started share its process group.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill().await;
                return Err(ActuatorError::TimedOut(self.timeout));
            }
        };
        let collect = |task: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
            match task {
                // A grandchild that keeps the pipe open must not hold the answer back.
                Some(t) => tokio::time::timeout(Duration::from_millis(200), t)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        };
        let out = collect(stdout).await;
        let err = collect(stderr).await;
        if status.success() {
            Ok(out)
        } else {
            let text = String::from_utf8_lossy(&err);
            let text = text.trim();
            let shown: String = text.chars().take(100).collect();
            Err(ActuatorError::Failed(format!(
                "{} exited with {status}{}{shown}",
                self.program.display(),
                if shown.is_empty() { "" } else { ": " }
            )))
        }
    }
}

async fn read_capped(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::{person, TestDevice};
    use std::os::unix::fs::PermissionsExt;

    fn request(args: &[u8]) -> ActionRequest {
        ActionRequest {
            action: "unlock".into(),
            args: args.to_vec(),
            sender: person(1).public_key(),
            device: TestDevice::new(1, "d").keys.device_id(),
        }
    }

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let path = dir.join("act.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn args_split_on_nul_only() {
        assert!(argv_from_args(b"").is_empty());
        assert_eq!(argv_from_args(b"a b;$(x)"), vec![OsStr::new("a b;$(x)")]);
        assert_eq!(argv_from_args(b"a\0\0b").len(), 3);
    }

    #[tokio::test]
    async fn arguments_are_argv_not_shell() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("pwned");
        let program = script(
            tmp.path(),
            "printf '%s|' \"$@\"; printf '%s' \"$LATCHKEY_ACTION\"",
        );
        let a = ExecActuator {
            program,
            fixed_args: vec!["--door".into()],
            timeout: Duration::from_secs(10),
        };
        let evil = format!(
            "x; touch {}\0$(touch {})",
            marker.display(),
            marker.display()
        );
        let out = a.run(&request(evil.as_bytes())).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("--door|x; touch "), "{out}");
        assert!(out.ends_with("|unlock"), "{out}");
        assert!(!marker.exists(), "no shell interpreted the arguments");
    }

    #[tokio::test]
    async fn failure_and_timeout_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let a = ExecActuator {
            program: script(tmp.path(), "echo jammed >&2; exit 3"),
            fixed_args: vec![],
            timeout: Duration::from_secs(10),
        };
        let e = a.run(&request(b"")).await.unwrap_err();
        assert!(e.to_string().contains("jammed"), "{e}");

        let b = ExecActuator {
            program: script(tmp.path(), "sleep 30 & sleep 30"),
            fixed_args: vec![],
            timeout: Duration::from_millis(300),
        };
        let started = std::time::Instant::now();
        assert_eq!(
            b.run(&request(b"")).await.unwrap_err(),
            ActuatorError::TimedOut(Duration::from_millis(300))
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let missing = ExecActuator {
            program: tmp.path().join("nope"),
            fixed_args: vec![],
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            missing.run(&request(b"")).await,
            Err(ActuatorError::Start(_))
        ));
    }
}
