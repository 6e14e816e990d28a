//! Child processes that never outlive the test binary.
//!
//! Rust never drops statics, and a test binary may panic or abort, so cleanup cannot rely on
//! `Drop`. Instead, the first process we start is a tiny `bash` watchdog that leads its own
//! process group and blocks reading a pipe from the test binary. When the test binary exits for
//! any reason, the kernel closes the pipe, `read` returns, and the watchdog SIGKILLs every process
//! recorded in its pid file and its whole process group (etcd, kube-apiserver and operators all
//! join that group), then removes the scratch directory (unless `RESERVE_TEST_KEEP=1`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WATCHDOG: &str = r#"
dir=$1
trap '' TERM INT HUP
read -r _ || true
kill -KILL $(cat "$dir/pids" 2>/dev/null) 2>/dev/null
if [ "${RESERVE_TEST_KEEP:-}" != 1 ]; then rm -rf "$dir"; fi
kill -KILL -- -$$
"#;

/// The scratch directory and process group of this test binary.
pub struct Watchdog {
    dir: PathBuf,
    pgid: i32,
    /// Write end of the watchdog's stdin; closed only when this process exits.
    _pipe: Mutex<ChildStdin>,
    pids: Mutex<File>,
    counter: AtomicUsize,
}

/// The watchdog of this test binary, started on first use.
pub fn watchdog() -> &'static Watchdog {
    static WATCHDOG_CELL: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG_CELL.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("reserve-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        let pids = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pids"))
            .expect("create pid file");
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("reserve-test-watchdog")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the watchdog (bash)");
        let pipe = child.stdin.take().unwrap();
        let pgid = child.id() as i32;
        // The Child handle is forgotten on purpose: the watchdog must outlive everything here.
        std::mem::forget(child);
        Watchdog {
            dir,
            pgid,
            _pipe: Mutex::new(pipe),
            pids: Mutex::new(pids),
            counter: AtomicUsize::new(0),
        }
    })
}

impl Watchdog {
    /// Scratch directory, removed when the test binary exits.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh path in the scratch directory: `<stem>-<n><ext>`.
    pub fn unique_path(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{stem}-{n}{ext}"))
    }

    /// Spawns `cmd` into the watchdog's process group and records its pid.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        let child = cmd.process_group(self.pgid).spawn()?;
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(pids, "{}", child.id())?;
        pids.flush()?;
        Ok(child)
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits for `child` to exit, up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// The last `n` lines of a log file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The operator binary of this crate, running as a child process.
///
/// stdout and stderr go to a log file in the scratch directory; `Drop` SIGKILLs it, and the
/// watchdog kills it if the test binary dies first.
pub struct OperatorProcess {
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl OperatorProcess {
    /// Runs `reserve-operator <args>` with `KUBECONFIG=<kubeconfig>`.
    pub fn spawn(kubeconfig: &Path, args: &[&str]) -> Self {
        Self::spawn_with_env(kubeconfig, args, &[])
    }

    /// Like [`OperatorProcess::spawn`], with extra environment variables (e.g. `RUST_LOG`).
    pub fn spawn_with_env(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let wd = watchdog();
        let log = wd.unique_path("operator", ".log");
        let out = File::create(&log).expect("create operator log");
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reserve-operator"));
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = wd.spawn(&mut cmd).expect("start reserve-operator");
        OperatorProcess {
            child,
            log,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Asks it to stop (SIGTERM); see [`OperatorProcess::wait_exit`].
    pub fn sigterm(&self) {
        if self.exit.is_none() {
            signal(self.pid(), libc::SIGTERM);
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Its exit status, if it exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_timeout(&mut self.child, timeout);
        }
        self.exit
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_none()
    }

    /// Everything it printed so far (stdout and stderr interleaved).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
