//! Child processes: started under a watchdog that kills them when this process ends (tests, the
//! benchmark), or detached with a pid file (`reserve-cluster up`, stopped by `down`).
//!
//! Rust never drops statics, and a test binary may panic or abort, so cleanup cannot rely on
//! `Drop`. The first process started is a tiny `bash` watchdog that leads its own process group
//! and blocks reading a pipe from this process. When this process exits for any reason, the
//! kernel closes the pipe, `read` returns, and the watchdog SIGKILLs every process recorded in its
//! pid file and its whole process group, then removes the scratch directory (unless
//! `RESERVE_TEST_KEEP=1`).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const WATCHDOG: &str = r#"
dir=$1
trap '' TERM INT HUP
read -r _ || true
kill -KILL $(cat "$dir/pids" 2>/dev/null) 2>/dev/null
if [ "${RESERVE_TEST_KEEP:-}" != 1 ]; then rm -rf "$dir"; fi
kill -KILL -- -$$
"#;

/// The scratch directory and process group of this process.
pub struct Watchdog {
    dir: PathBuf,
    pgid: i32,
    /// Write end of the watchdog's stdin; closed only when this process exits.
    _pipe: Mutex<ChildStdin>,
    pids: Mutex<File>,
    counter: AtomicUsize,
}

/// The watchdog of this process, started on first use.
pub fn watchdog() -> &'static Watchdog {
    static WATCHDOG_CELL: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG_CELL.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
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
        let pipe = child.stdin.take().expect("piped stdin");
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
    /// Scratch directory, removed when this process exits.
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

/// How long the processes of a control plane live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the watchdog when this process exits (tests, the benchmark).
    ThisProcess,
    /// Outlive this process; found again by their pid files (`reserve-cluster up`/`down`).
    Detached,
}

/// A process started by the kit, stopped by its pid (never by name).
pub struct Proc {
    pid: u32,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path, lifetime: Lifetime) -> std::io::Result<Proc> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        match lifetime {
            Lifetime::ThisProcess => {
                let child = watchdog().spawn(cmd)?;
                Ok(Proc {
                    pid: child.id(),
                    child: Some(child),
                    exit: None,
                })
            }
            Lifetime::Detached => {
                // Its own session, so a terminal's Ctrl-C or hang-up does not reach it.
                // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::setsid();
                        Ok(())
                    });
                }
                let child = cmd.spawn()?;
                Ok(Proc {
                    pid: child.id(),
                    child: Some(child),
                    exit: None,
                })
            }
        }
    }

    /// A detached process found again by its pid; `None` unless it still runs `program` with
    /// `marker` among its arguments (a pid may have been reused since).
    pub fn find(pid: u32, program: &str, marker: &str) -> Option<Proc> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let runs = args.first().is_some_and(|a| a.ends_with(program))
            && args.iter().any(|a| a.contains(marker));
        runs.then_some(Proc {
            pid,
            child: None,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(self.pid as libc::pid_t, signal);
            }
        }
    }

    /// Whether it is still running (a zombie of ours is reaped and counts as gone).
    pub fn running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match &mut self.child {
            Some(child) => {
                self.exit = child.try_wait().ok().flatten();
                self.exit.is_none()
            }
            // Not our child: it runs while /proc has it and it is no zombie.
            None => std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .ok()
                .and_then(|stat| {
                    let state = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .next()?
                        .to_owned();
                    Some(state != "Z")
                })
                .unwrap_or(false),
        }
    }

    /// Its exit status, if it exits within `timeout` (None for a process that is not our child).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exit
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if self.wait_exit(grace).is_none() && self.running() {
            self.kill();
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(10));
    }

    /// Resident memory and CPU time so far, from /proc.
    pub fn stats(&self) -> Option<ProcStats> {
        ProcStats::of(self.pid)
    }
}

/// Memory and CPU of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_seconds: f64,
}

impl ProcStats {
    pub fn of(pid: u32) -> Option<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(ProcStats {
            rss_kib: kib("VmRSS:")?,
            peak_rss_kib: kib("VmHWM:")?,
            cpu_seconds: ticks as f64 / hz,
        })
    }
}

/// The last `n` lines of a log file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
