//! The control plane's processes: stopped, started and restarted one at a time (for the chaos
//! tests), etcd snapshotted and restored, and waited for.

use super::*;

impl ControlPlane {
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        let local = self.local("pids()");
        let pid = |slot: &Mutex<Option<Proc>>| {
            slot.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(Proc::pid)
        };
        (pid(&local.etcd), pid(&local.apiserver))
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 15 s); etcd keeps the data.
    pub fn stop_apiserver(&self) {
        Self::stop_slot(&self.local("stop_apiserver()").apiserver);
    }

    /// Starts kube-apiserver again with the same flags and port, and waits until it is ready.
    /// Nothing happens if it runs.
    pub fn start_apiserver(&self) -> Result<(), String> {
        let local = self.local("start_apiserver()");
        self.start_slot(&local.apiserver, "kube-apiserver", &local.apiserver_args)?;
        self.wait_ready()
    }

    /// Stop, then start: etcd keeps the data.
    pub fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver().expect("kube-apiserver starts again");
    }

    /// Stops etcd: the API server stays up and answers every request that needs storage with
    /// an error until etcd is back.
    pub fn stop_etcd(&self) {
        Self::stop_slot(&self.local("stop_etcd()").etcd);
    }

    /// Starts etcd again with the same data; nothing happens if it runs.
    pub fn start_etcd(&self) -> Result<(), String> {
        let local = self.local("start_etcd()");
        self.start_slot(&local.etcd, "etcd", &local.etcd_args)
    }

    /// Saves a snapshot of etcd's data to `path` (`etcdctl snapshot save`), while it runs.
    pub fn snapshot_etcd(&self, path: &Path) -> Result<(), String> {
        let out = Command::new(self.bin.join("etcdctl"))
            .args(["--endpoints", &self.etcd_url(), "snapshot", "save"])
            .arg(path)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("etcdctl snapshot save: {}", text(&out)))
    }

    /// Restores etcd from `snapshot` as etcd and Kubernetes document it: the API server and
    /// etcd stop, the data directory becomes `etcdutl snapshot restore` of the snapshot (with
    /// `--bump-revision BUMP --mark-compacted` when `bump` is given, as etcd recommends, so
    /// every version moves forward and every watch must list again), then etcd and the API
    /// server start again.
    pub fn restore_etcd(&self, snapshot: &Path, bump: Option<u64>) -> Result<(), String> {
        let local = self.local("restore_etcd()");
        Self::stop_slot(&local.apiserver);
        Self::stop_slot(&local.etcd);
        let flag = |name: &str| self.etcd_flag(name);
        let data = self.etcd_data_dir();
        let restored = data.with_extension("restored");
        let _ = std::fs::remove_dir_all(&restored);
        let mut restore = Command::new(self.bin.join("etcdutl"));
        restore
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&restored)
            .args(["--name", &flag("name")])
            .args(["--initial-cluster", &flag("initial-cluster")])
            .args([
                "--initial-advertise-peer-urls",
                &flag("initial-advertise-peer-urls"),
            ]);
        if let Some(bump) = bump {
            restore.args(["--bump-revision", &bump.to_string(), "--mark-compacted"]);
        }
        let out = restore.output().map_err(|e| format!("etcdutl: {e}"))?;
        if !out.status.success() {
            return Err(format!("etcdutl snapshot restore: {}", text(&out)));
        }
        std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        std::fs::rename(&restored, &data).map_err(|e| format!("{}: {e}", data.display()))?;
        self.start_etcd()?;
        self.start_apiserver()
    }

    /// Copies etcd's data directory to `to`, as an administrator backs it up without
    /// `etcdctl`: etcd stopped (the API server keeps running and fails what needs storage
    /// meanwhile), the directory copied cold, etcd started again.
    pub fn copy_etcd_data(&self, to: &Path) -> Result<(), String> {
        let local = self.local("copy_etcd_data()");
        Self::stop_slot(&local.etcd);
        let copied = copy_dir(&self.etcd_data_dir(), to);
        self.start_etcd()?;
        copied
    }

    /// Puts back a cold copy of etcd's data directory ([`copy_etcd_data`](Self::copy_etcd_data)):
    /// the API server and etcd stop, the data directory becomes the copy, then etcd and the API
    /// server start again. The store's versions go back to the copy's: nothing is bumped.
    pub fn restore_etcd_data(&self, from: &Path) -> Result<(), String> {
        let local = self.local("restore_etcd_data()");
        Self::stop_slot(&local.apiserver);
        Self::stop_slot(&local.etcd);
        let data = self.etcd_data_dir();
        std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        copy_dir(from, &data)?;
        self.start_etcd()?;
        self.start_apiserver()
    }

    fn etcd_data_dir(&self) -> PathBuf {
        PathBuf::from(self.etcd_flag("data-dir"))
    }

    fn etcd_flag(&self, name: &str) -> String {
        self.local("etcd_flag()")
            .etcd_args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_default()
            .to_owned()
    }

    /// Stops both servers; a detached control plane's directory is removed.
    pub fn stop(&self) {
        let Some(local) = &self.local else { return };
        Self::stop_slot(&local.apiserver);
        Self::stop_slot(&local.etcd);
        if local.lifetime == Lifetime::Detached {
            let _ = std::fs::remove_dir_all(&local.dir);
        }
    }

    fn stop_slot(slot: &Mutex<Option<Proc>>) {
        if let Some(mut proc) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            proc.stop(Duration::from_secs(15));
        }
    }

    fn start_slot(
        &self,
        slot: &Mutex<Option<Proc>>,
        program: &str,
        args: &[String],
    ) -> Result<(), String> {
        let local = self.local("start");
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_mut().is_some_and(Proc::running) {
            return Ok(());
        }
        let log = local.dir.join(format!("{program}.log"));
        let proc = Proc::spawn(
            Command::new(self.bin.join(program)).args(args),
            &log,
            local.lifetime,
        )
        .map_err(|e| format!("starting {program}: {e}"))?;
        *slot = Some(proc);
        drop(slot);
        if local.lifetime == Lifetime::Detached {
            self.save_state()?;
        }
        Ok(())
    }

    /// Waits until the API server answers `/readyz` with ok.
    pub fn wait_ready(&self) -> Result<(), String> {
        let local = self.local("wait_ready()");
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = local.dir.join("kube-apiserver.log");
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return Ok(());
            }
            let exited = local
                .apiserver
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .is_some_and(|p| !p.running());
            if exited {
                return Err(format!("kube-apiserver exited:\n{}", tail(&log, 40)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}: {}\n{}",
                    text(&out),
                    tail(&log, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `cp -a from to`: a directory copied with its modes (etcd refuses a data directory others may
/// read).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| format!("cp -a {} {}: {}", from.display(), to.display(), text(&out)))
}

impl ControlPlane {
    /// kube-controller-manager running only `controllers` (its `--controllers` list), e.g. the
    /// storage version migrator, against this control plane as its admin. Stop it with
    /// [`Proc::stop`]; the test process's end stops it otherwise.
    pub fn controller_manager(&self, controllers: &str) -> Result<Proc, String> {
        let local = self.local("controller_manager()");
        let bin = crate::tools::node_bin_dir()?;
        let admin = self.kubeconfig().display().to_string();
        let ca = local.dir.join(crate::certs::CA_CERT).display().to_string();
        let key = local.dir.join(crate::certs::SERVICE_ACCOUNT_KEY);
        Proc::spawn(
            Command::new(bin.join("kube-controller-manager")).args([
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                format!("--root-ca-file={ca}"),
                format!("--service-account-private-key-file={}", key.display()),
                format!("--controllers={controllers}"),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", crate::free_port()),
                "--v=1".into(),
            ]),
            &local.dir.join("kube-controller-manager.log"),
            local.lifetime,
        )
        .map_err(|e| format!("starting kube-controller-manager: {e}"))
    }
}
